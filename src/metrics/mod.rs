//! Metrics: pure functions from images or arrays to numbers, each checked
//! against its reference implementation. Metrics know no Arrow and no TOML.
//!
//! - [`msssim`]: SSIM, MS-SSIM (adapted to small images) and PSNR.

pub mod msssim;
