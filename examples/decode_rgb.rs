//! Writes the RGB pixels `augment` decodes from an image file (raw, row-major,
//! 3 bytes per pixel), preceded by a line "WIDTH HEIGHT". Used by
//! tests/fixtures/fid/make_reference.py so that the PyTorch reference sees
//! exactly the pixels our JPEG decoder produces (PIL's libjpeg differs by a
//! level here and there).
//!
//! cargo run --example decode_rgb -- IN.jpg OUT.rgb

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: decode_rgb IN OUT");
    let img =
        augment::data::images::decode_rgb(&std::fs::read(&args[1])?).map_err(anyhow::Error::msg)?;
    let mut out = format!("{} {}\n", img.width(), img.height()).into_bytes();
    out.extend_from_slice(img.as_raw());
    std::fs::write(&args[2], out)?;
    Ok(())
}
