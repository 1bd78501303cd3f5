//! The fuzz pass of issue #34 (property-based, `proptest`): the CelebA
//! annotation parsers, the pipeline loader with `--set` overrides, and the
//! image decoder path, fed random and mutated inputs. Each input must give
//! a result or a user error ([`crate::error::UserError`], or a
//! [`crate::data::images::Reject`] for an image): no panic, no abort (an
//! allocation abort would end the test process, failing the run).
//!
//! [`CASES`] inputs per property, seeded by proptest's default
//! (deterministic per run with `PROPTEST_RNG_SEED`); the README's fault
//! table gives the total.

#![cfg(test)]

use proptest::prelude::*;
use std::io::Write;

use crate::data::celeba;
use crate::data::images::decode_checked;
use crate::data::schema::ATTRIBUTES;
use crate::error::UserError;

/// Inputs per property.
const CASES: u32 = 1500;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A failure is fine only as a user error.
fn user_error<T>(r: anyhow::Result<T>) -> Result<(), TestCaseError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.downcast_ref::<UserError>().is_some() => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("not a user error: {e:#}"))),
    }
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// Tokens an annotation row may hold, valid and not.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("2".to_string()),
        Just("000001.jpg".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("-99999999999".to_string()),
        Just("\u{feff}".to_string()),
        Just("é日本".to_string()),
        Just("\r".to_string()),
        Just("image".to_string()),
        Just("identity".to_string()),
        "[a-z0-9_.]{0,12}".prop_map(|s| s),
        proptest::sample::select(ATTRIBUTES.to_vec()).prop_map(String::from),
    ]
}

/// An annotation file: a count line, a names line, rows of tokens, joined
/// by a line ending chosen per file; sometimes behind a byte-order mark.
fn annotation_text() -> impl Strategy<Value = Vec<u8>> {
    let row = proptest::collection::vec(token(), 0..45).prop_map(|t| t.join(" "));
    (
        any::<bool>(),
        prop_oneof![Just(0usize), Just(3), Just(usize::MAX), 0..10_000usize],
        any::<bool>(),
        proptest::collection::vec(row, 0..6),
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
    )
        .prop_map(|(bom, count, real_names, rows, eol)| {
            let mut lines = vec![count.to_string()];
            lines.push(if real_names {
                ATTRIBUTES.join(" ")
            } else {
                "5_o_Clock_Shadow Arched_Eyebrows".to_string()
            });
            lines.extend(rows);
            let mut out = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            out.extend(lines.join(eol).into_bytes());
            out
        })
}

fn parse_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    let f = file_with(bytes);
    user_error(celeba::parse_attributes(f.path()))?;
    user_error(celeba::parse_partitions(f.path()))?;
    user_error(celeba::parse_identities(f.path()))?;
    user_error(celeba::parse_int_table(f.path(), &["x_1", "y_1"]))?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn annotation_parsers_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parse_all(&bytes)?;
    }

    #[test]
    fn annotation_parsers_on_structured_text(bytes in annotation_text()) {
        parse_all(&bytes)?;
    }

    #[test]
    fn set_overrides_give_a_pipeline_or_a_user_error(
        key in prop_oneof![
            Just("run.dir".to_string()),
            Just("run.seed".to_string()),
            Just("run.device".to_string()),
            Just("stages.ingest.n".to_string()),
            Just("stages.ingest.image_size".to_string()),
            Just("stages.ingest.crop".to_string()),
            Just("stages.generator.batch_size".to_string()),
            Just("stages.generator.autoencoder.steps".to_string()),
            Just("stages.dynamic.sizes".to_string()),
            Just("stages.synthesize_doubling.grid_rows".to_string()),
            Just("stages.evaluate.kid_subset_size".to_string()),
            Just("stages.sggan.translation.steps".to_string()),
            Just("stages".to_string()),
            Just("stages.ingest".to_string()),
            "[a-z_.]{0,30}",
        ],
        value in prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551615".to_string()),
            Just("99999999999999999999".to_string()),
            Just("1e308".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("[]".to_string()),
            Just("[1.5, 1e12]".to_string()),
            Just("{ top = 1, left = 2, size = 99999999999 }".to_string()),
            Just("{}".to_string()),
            Just("\"\"".to_string()),
            Just("cuda:99".to_string()),
            "[ -~]{0,24}",
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| v.to_string()),
        ],
    ) {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.toml");
        user_error(crate::pipeline::config::load(&file, &[format!("{key}={value}")]))?;
    }

    #[test]
    fn image_decoder_on_random_bytes(
        head in prop_oneof![
            Just(vec![0xFFu8, 0xD8, 0xFF]),
            Just(b"\x89PNG\r\n\x1a\n".to_vec()),
            Just(Vec::new()),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = head;
        bytes.extend(tail);
        let _ = decode_checked(&bytes);
    }

    #[test]
    fn image_decoder_on_mutated_real_files(
        png in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = sample(if png { image::ImageFormat::Png } else { image::ImageFormat::Jpeg });
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = decode_checked(&bytes);
    }
}

fn sample_image() -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 11) as u8, (x * y) as u8])
    }))
}

/// The sample image encoded as `format`.
fn sample(format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    sample_image()
        .write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

/// Headers that declare a huge image in a few bytes: refused before the
/// decoder allocates for them (a 60,000² RGB buffer is 10.8 GB).
#[test]
fn images_declaring_huge_sizes_are_rejected_without_allocating() {
    // PNG: the IHDR's width and height, then its CRC recomputed.
    let mut png = sample(image::ImageFormat::Png);
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let r = decode_checked(&png).unwrap_err();
    assert_eq!(r.reason, "corrupt", "{r}");
    // JPEG: the SOF0 marker's height and width.
    let mut jpeg = sample(image::ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    jpeg[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let r = decode_checked(&jpeg).unwrap_err();
    assert!(r.detail.contains("JPEG decoder"), "{r}");
}

/// PNG's CRC-32 (ISO 3309), for the edited header above.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
