//! Metrics: pure functions from images or arrays to numbers, each checked
//! against its reference implementation. Metrics know no Arrow and no TOML.
//!
//! - [`accuracy`]: the paper's accuracy, per-attribute accuracy, balanced accuracy, F1.
//! - [`msssim`]: SSIM, MS-SSIM (adapted to small images) and PSNR.
//! - [`inception`]: the FID InceptionV3 (pool3 features).
//! - [`fid`]: FID and KID with pytorch-fid's input conventions.
//! - [`translation`]: editing accuracy, untouched-attribute accuracy,
//!   background MS-SSIM of translated images.
//! - [`imbalance`]: IRLbl, MeanIR and CVIR of multi-label counts.
//! - [`stats`]: bootstrap intervals, paired differences and their p-values,
//!   Holm's correction.

pub mod accuracy;
pub mod fid;
pub mod imbalance;
pub mod inception;
pub mod msssim;
pub mod stats;
pub mod translation;
