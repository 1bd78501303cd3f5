//! MS-SSIM and PSNR between real test faces and their reconstructions by a
//! generator that reconstructs (Zhang et al., SG-GAN Sec. 4.2; ST-GAN eq. 10).

use super::*;

/// What reconstructs a real face for a generator stage: attr2face's
/// autoencoder G_de(G_en(x)), or ST-GAN's G(E(x)).
pub(super) fn reconstruction(
    out: &mut Rows,
    io: &StageIo,
    g: &InputStage,
    faces: &Path,
    n: usize,
    dev: &Device,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if !generators::abilities(&g.dir)?.reconstruct {
        return Ok(());
    }
    let generator = generators::load(&g.dir, dev)?;
    let Some(what) = generator.reconstruction() else {
        return Ok(());
    };
    let size = generator.image_size();
    let set = FaceSet::load(faces, &[Partition::Test], Some(n), size)?;
    if set.is_empty() {
        return Ok(());
    }
    let mut ms = Vec::new();
    let mut ps = Vec::new();
    let mut setting = None;
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(64) {
        let x = set.images(chunk, dev)?;
        let rec = tensor_to_rgb(&generator.reconstruct(&x)?)?;
        for (k, &i) in chunk.iter().enumerate() {
            let a = msssim::Planar::from_rgb(&set.rgb(i));
            let b = msssim::Planar::from_rgb(&rec[k]);
            let m = msssim::ms_ssim(&a, &b, 255.0).map_err(|e| data_error!("{e}"))?;
            setting = Some((m.levels, m.window));
            ms.push(m.value);
            if let Ok(p) = msssim::psnr(&a, &b, 255.0)
                && p.is_finite()
            {
                ps.push(p);
            }
        }
    }
    let (levels, window) = setting.unwrap_or((0, 0));
    let mut d = serde_json::json!({
        "images": what.images,
        "image_size": size,
        "levels": levels,
        "window": window,
        "data_range": 255,
    });
    for (key, note) in what.notes {
        d[*key] = (*note).into();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    out.push(
        &g.name,
        "reconstruction_ms_ssim",
        mean(&ms),
        ms.len(),
        d.clone(),
    );
    if !ps.is_empty() {
        out.push(&g.name, "reconstruction_psnr", mean(&ps), ps.len(), d);
    }
    io.say(format!(
        "`{}`: reconstruction MS-SSIM {:.4} ({levels} levels, window {window}), PSNR {:.2} dB on {} test faces",
        g.name,
        mean(&ms),
        mean(&ps),
        ms.len()
    ));
    Ok(())
}
