//! The integration tests: one binary, one module per area, so the suite
//! links the crate (and DataFusion, candle) once instead of once per file.
//! Each module runs the real `augment` binary in a temp dir or calls the
//! library; `common` holds the helpers they share.
//!
//! libtest starts tests in name order, two at a time on 2 cores; the long
//! training tests are spread over the order so that none runs alone at the
//! end with a core idle (the SG-GAN / StarGAN test, the longest on one
//! thread, is `image_translation` rather than `translation` for that: last
//! in the order it ran alone for its final two minutes).
//!
//! `tests/gradient_penalty.rs` stays a binary of its own: it sets and removes
//! `CANDLE_GRAD_DO_NOT_DETACH`, which candle reads per thread, so it needs a
//! process whose environment no other test touches.

mod common;

mod architecture;
mod balance;
mod bridgegan;
mod celeba;
mod classifier;
mod cli;
mod conv_kernels;
mod docs;
mod face_parsing;
mod faults;
mod generator;
mod image_translation;
mod metrics;
mod schemas;
mod secgan;
mod st_gan;
mod weights;
