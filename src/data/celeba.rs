//! Parsing of CelebA's annotation files.
//!
//! The official files use CRLF line endings and pad values with runs of
//! spaces; we accept CRLF or LF and any whitespace. Anything else (a truncated
//! line, a value other than 1/-1, a duplicate image, or an HTML page saved
//! under the file's name, as failed Google Drive downloads produce) is a
//! [`UserError::Data`](crate::error::UserError) naming file, line and problem.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use crate::data::schema::{ATTRIBUTES, N_ATTRIBUTES};
use crate::data_error;

/// Labels of one image as a bit set: bit `i` is attribute `ATTRIBUTES[i]`.
pub type Labels = u64;

/// Size of CelebA's aligned faces (`img_align_celeba/`), for which the
/// default crop box is placed.
pub const ALIGNED_WIDTH: u32 = 178;
pub const ALIGNED_HEIGHT: u32 = 218;

pub fn label(labels: Labels, i: usize) -> bool {
    labels >> i & 1 == 1
}

/// `list_attr_celeba.txt`, parsed.
#[derive(Debug, Clone)]
pub struct Attributes {
    pub image_ids: Vec<String>,
    pub labels: Vec<Labels>,
    /// md5 of the file's bytes (recorded in the Parquet metadata).
    pub md5: String,
}

/// The official split, by image number, used when `list_eval_partition.txt` is absent.
pub fn official_partition(image_id: &str) -> Option<Partition> {
    let n: u32 = image_id.split('.').next()?.parse().ok()?;
    Some(match n {
        0 => return None,
        1..=162_770 => Partition::Train,
        162_771..=182_637 => Partition::Val,
        _ => Partition::Test,
    })
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    Train,
    Val,
    Test,
}

impl Partition {
    pub fn name(self) -> &'static str {
        match self {
            Partition::Train => "train",
            Partition::Val => "val",
            Partition::Test => "test",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Partition::Train),
            "val" => Some(Partition::Val),
            "test" => Some(Partition::Test),
            _ => None,
        }
    }
}

/// Reads a text annotation file into lines (CR stripped), refusing HTML pages
/// and binary files with a line the user can act on.
/// A UTF-8 byte-order mark (as Windows editors save) is skipped.
fn read_lines(path: &Path) -> Result<(Vec<u8>, Vec<String>)> {
    let bytes = crate::limits::read_file(path, crate::limits::MAX_TEXT_FILE_BYTES)
        .map_err(|e| data_error!("{}: cannot read: {e}", path.display()))?;
    let lines = text_lines(path, &bytes)?;
    Ok((bytes, lines))
}

/// The lines of an annotation file's bytes (see [`read_lines`]).
fn text_lines(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let head: Vec<u8> = bytes
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(512)
        .collect();
    let head_lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if head_lower.starts_with('<')
        || head_lower.contains("<html")
        || head_lower.contains("<!doctype")
    {
        return Err(data_error!(
            "{}: line 1: this is an HTML page, not a CelebA annotation file (a failed download, e.g. a Google Drive quota page); download the file again",
            path.display()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        data_error!(
            "{}: not a text file ({e}); expected CelebA's plain-text annotations",
            path.display()
        )
    })?;
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// Parses `list_attr_celeba.txt`: a count line, the 40 names, then one row per image.
pub fn parse_attributes(path: &Path) -> Result<Attributes> {
    let (bytes, lines) = read_lines(path)?;
    let file = path.display();
    let first = lines.first().map(|l| l.trim()).unwrap_or("");
    let declared: usize = first.parse().map_err(|_| {
        data_error!(
            "{file}: line 1: expected the number of images, found {:?}",
            truncate(first)
        )
    })?;
    let names: Vec<&str> = lines
        .get(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    if names.len() != N_ATTRIBUTES {
        return Err(data_error!(
            "{file}: line 2: expected the 40 CelebA attribute names (5_o_Clock_Shadow ... Young), found {} names",
            names.len()
        ));
    }
    for (i, (got, want)) in names.iter().zip(ATTRIBUTES.iter()).enumerate() {
        if got != want {
            return Err(data_error!(
                "{file}: line 2: attribute {} is {got:?}, expected {want:?}",
                i + 1
            ));
        }
    }
    let rows = &lines[2.min(lines.len())..];
    let mut image_ids = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    for (k, line) in rows.iter().enumerate() {
        let line_no = k + 3;
        let mut fields = line.split_whitespace();
        let Some(id) = fields.next() else {
            return Err(data_error!(
                "{file}: line {line_no}: empty line inside the table"
            ));
        };
        let mut bits: Labels = 0;
        let mut n = 0;
        for (i, v) in fields.enumerate() {
            if i >= N_ATTRIBUTES {
                n = i + 1;
                continue;
            }
            match v {
                "1" => bits |= 1 << i,
                "-1" => {}
                other => {
                    return Err(data_error!(
                        "{file}: line {line_no}: value {:?} for {} (column {}); expected 1 or -1",
                        truncate(other),
                        ATTRIBUTES[i],
                        i + 2
                    ));
                }
            }
            n = i + 1;
        }
        if n != N_ATTRIBUTES {
            return Err(data_error!(
                "{file}: line {line_no}: expected an image name and 40 values, found {n} values (truncated line?)"
            ));
        }
        if let Some(prev) = seen.insert(id, line_no) {
            return Err(data_error!(
                "{file}: line {line_no}: image {id} is listed twice (first on line {prev})"
            ));
        }
        image_ids.push(id.to_string());
        labels.push(bits);
    }
    if image_ids.len() != declared {
        return Err(data_error!(
            "{file}: line 1 declares {declared} images but the file has {} rows (truncated file?)",
            image_ids.len()
        ));
    }
    Ok(Attributes {
        image_ids,
        labels,
        md5: md5_hex(&bytes),
    })
}

/// Parses `list_eval_partition.txt` (`image 0|1|2` per line).
pub fn parse_partitions(path: &Path) -> Result<(HashMap<String, Partition>, String)> {
    let (bytes, lines) = read_lines(path)?;
    let file = path.display();
    let mut map = HashMap::with_capacity(lines.len());
    for (k, line) in lines.iter().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(id), Some(p), None) = (f.next(), f.next(), f.next()) else {
            return Err(data_error!(
                "{file}: line {}: expected `<image> <0|1|2>`",
                k + 1
            ));
        };
        let part = match p {
            "0" => Partition::Train,
            "1" => Partition::Val,
            "2" => Partition::Test,
            other => {
                return Err(data_error!(
                    "{file}: line {}: partition {:?}; expected 0 (train), 1 (val) or 2 (test)",
                    k + 1,
                    truncate(other)
                ));
            }
        };
        if map.insert(id.to_string(), part).is_some() {
            return Err(data_error!(
                "{file}: line {}: image {id} is listed twice",
                k + 1
            ));
        }
    }
    Ok((map, md5_hex(&bytes)))
}

/// Parses `identity_CelebA.txt` (`image identity` per line), with or without
/// the `image identity` header line some copies carry.
pub fn parse_identities(path: &Path) -> Result<(HashMap<String, i32>, String)> {
    let (bytes, lines) = read_lines(path)?;
    let file = path.display();
    let mut map = HashMap::with_capacity(lines.len());
    for (k, line) in lines.iter().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(id), Some(v), None) = (f.next(), f.next(), f.next()) else {
            return Err(data_error!(
                "{file}: line {}: expected `<image> <identity>`",
                k + 1
            ));
        };
        if k == 0 && id == "image" && v == "identity" {
            continue;
        }
        let n: i32 = v.parse().map_err(|_| {
            data_error!(
                "{file}: line {}: identity {:?} is not an integer",
                k + 1,
                truncate(v)
            )
        })?;
        if map.insert(id.to_string(), n).is_some() {
            return Err(data_error!(
                "{file}: line {}: image {id} is listed twice",
                k + 1
            ));
        }
    }
    Ok((map, md5_hex(&bytes)))
}

/// Parses the bbox or landmark files: a count line, a header with `columns`
/// (the bbox file also names `image_id` first), then `image v1 .. vk` rows.
pub fn parse_int_table(
    path: &Path,
    columns: &[&str],
) -> Result<(HashMap<String, Vec<i32>>, String)> {
    let (bytes, lines) = read_lines(path)?;
    let file = path.display();
    let declared: usize = lines
        .first()
        .map(|l| l.trim())
        .unwrap_or("")
        .parse()
        .map_err(|_| data_error!("{file}: line 1: expected the number of images"))?;
    let header: Vec<&str> = lines
        .get(1)
        .map(|l| l.split_whitespace().filter(|h| *h != "image_id").collect())
        .unwrap_or_default();
    if header.len() != columns.len() {
        return Err(data_error!(
            "{file}: line 2: expected the header {:?}, found {:?}",
            columns.join(" "),
            header.join(" ")
        ));
    }
    let mut map = HashMap::with_capacity(lines.len());
    for (k, line) in lines.iter().enumerate().skip(2) {
        let mut f = line.split_whitespace();
        let id = f.next().unwrap_or("");
        let vals: Result<Vec<i32>, _> = f.map(|v| v.parse::<i32>()).collect();
        match vals {
            Ok(v) if v.len() == columns.len() => {
                map.insert(id.to_string(), v);
            }
            _ => {
                return Err(data_error!(
                    "{file}: line {}: expected an image name and {} integers",
                    k + 1,
                    columns.len()
                ));
            }
        }
    }
    if map.len() != declared {
        return Err(data_error!(
            "{file}: line 1 declares {declared} images but the file has {} rows",
            map.len()
        ));
    }
    Ok((map, md5_hex(&bytes)))
}

fn truncate(s: &str) -> String {
    if s.len() > 40 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(40).map(|c| c.0).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

/// Writes labels in CelebA's exact layout (used by the demo data and tests).
pub fn write_attributes(out: &mut impl std::io::Write, rows: &[(String, Labels)]) -> Result<()> {
    write!(out, "{}\r\n", rows.len())?;
    for a in ATTRIBUTES {
        write!(out, "{a} ")?;
    }
    write!(out, "\r\n")?;
    for (id, bits) in rows {
        write!(out, "{id}")?;
        for i in 0..N_ATTRIBUTES {
            let v = if label(*bits, i) { 1 } else { -1 };
            if i == 0 {
                write!(out, " {v}")?;
            } else {
                write!(out, " {v:>2}")?;
            }
        }
        write!(out, "\r\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tmp(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    fn sample(rows: &[(String, Labels)]) -> Vec<u8> {
        let mut v = Vec::new();
        write_attributes(&mut v, rows).unwrap();
        v
    }

    #[test]
    fn roundtrip_crlf_and_lf() {
        let rows = vec![
            ("000001.jpg".to_string(), 0b101u64),
            ("000002.jpg".to_string(), 1u64 << 39),
        ];
        let crlf = sample(&rows);
        let a = parse_attributes(write_tmp(&crlf).path()).unwrap();
        assert_eq!(a.labels, vec![0b101, 1 << 39]);
        let lf: Vec<u8> = crlf.iter().copied().filter(|b| *b != b'\r').collect();
        let b = parse_attributes(write_tmp(&lf).path()).unwrap();
        assert_eq!(b.image_ids, a.image_ids);
    }

    #[test]
    fn bad_value_names_line_and_attribute() {
        let rows = vec![("000001.jpg".to_string(), 0u64)];
        let mut text = String::from_utf8(sample(&rows)).unwrap();
        // Make Bald (the 5th value) read -2.
        let row_start = text.find("000001.jpg").unwrap();
        let mut fields: Vec<String> = text[row_start..]
            .split_whitespace()
            .map(String::from)
            .collect();
        fields[5] = "-2".into();
        text.replace_range(row_start.., &(fields.join(" ") + "\r\n"));
        let err = parse_attributes(write_tmp(text.as_bytes()).path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("\"-2\"") && err.contains("Bald"),
            "{err}"
        );
    }

    #[test]
    fn html_page_is_named() {
        let err = parse_attributes(
            write_tmp(b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title>").path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HTML page"), "{err}");
    }

    #[test]
    fn official_partition_boundaries() {
        assert_eq!(official_partition("162770.jpg"), Some(Partition::Train));
        assert_eq!(official_partition("162771.jpg"), Some(Partition::Val));
        assert_eq!(official_partition("182637.jpg"), Some(Partition::Val));
        assert_eq!(official_partition("182638.jpg"), Some(Partition::Test));
        assert_eq!(official_partition("abc.jpg"), None);
    }
}
