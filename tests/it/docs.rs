//! The documentation cannot drift from the code: every key of every stage
//! kind's config (read from the config structs themselves, through serde) is
//! documented in `docs/stages.md` under that kind's heading, every table of
//! `schemas/` is linked from `docs/tables.md`, and no link in the README or
//! `docs/` leaves the repository.

use std::collections::BTreeSet;
use std::path::Path;

use augment::stages::{
    StageKind, balance, evaluate, ingest, parse_faces, synthesize, train_classifier,
    train_generator,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Dotted keys of a serialized config (`translation.steps`, ...).
fn keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Object(_) => keys(v, &key, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
}

/// A stage config with its defaults (plus the keys a kind requires), as
/// serde writes it.
fn config_keys(kind: StageKind) -> BTreeSet<String> {
    fn ser<T: serde::Serialize + serde::de::DeserializeOwned>(toml: &str) -> serde_json::Value {
        let c: T = toml::from_str(toml).expect("a minimal stage config");
        serde_json::to_value(&c).unwrap()
    }
    let v = match kind {
        StageKind::Ingest => ser::<ingest::Config>("source = \"demo\""),
        StageKind::Balance => ser::<balance::Config>("strategy = \"none\""),
        StageKind::TrainGenerator => ser::<train_generator::Config>(""),
        StageKind::Synthesize => ser::<synthesize::Config>(""),
        StageKind::TrainClassifier => ser::<train_classifier::Config>(""),
        StageKind::Evaluate => ser::<evaluate::Config>(""),
        StageKind::ParseFaces => ser::<parse_faces::Config>(""),
    };
    let mut out = BTreeSet::new();
    keys(&v, "", &mut out);
    out
}

/// The text of `docs/stages.md` from the heading of `kind` to the next kind.
fn section(doc: &str, kind: StageKind) -> &str {
    let head = format!("## `kind = \"{}\"`", kind.name());
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("docs/stages.md has no heading {head}"));
    let rest = &doc[start + head.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// `key` appears in backticks; a nested `table.leaf` may also be written as
/// its table's row (`table` = `{ leaf = ... }`) or as `leaf` in the text.
fn documented(text: &str, key: &str) -> bool {
    let quoted = |k: &str| text.contains(&format!("`{k}`")) || text.contains(&format!("`{k} "));
    if quoted(key) {
        return true;
    }
    match key.rsplit_once('.') {
        Some((table, leaf)) => {
            quoted(table) && (quoted(leaf) || text.contains(&format!("{leaf} = ")))
        }
        None => false,
    }
}

#[test]
fn every_stage_key_is_documented() {
    let doc = read("docs/stages.md");
    let mut missing = Vec::new();
    for kind in StageKind::ALL {
        let text = section(&doc, kind);
        for key in config_keys(kind) {
            if !documented(text, &key) {
                missing.push(format!("{}: `{key}`", kind.name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys of the stage configs missing from docs/stages.md:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_table_schema_is_linked() {
    let doc = read("docs/tables.md");
    for e in std::fs::read_dir(Path::new(ROOT).join("schemas")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            doc.contains(&format!("../schemas/{name}")),
            "docs/tables.md does not link schemas/{name}"
        );
    }
}

#[test]
fn links_stay_inside_the_repository() {
    let mut files = vec!["README.md".to_string()];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    let mut bad = Vec::new();
    for f in &files {
        let text = read(f);
        let dir = Path::new(ROOT).join(f);
        let dir = dir.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|&c| c != ')').collect();
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() {
                continue;
            }
            if path.contains("://") || path.starts_with("mailto:") {
                bad.push(format!("{f}: {target} leaves the repository"));
            } else if !dir.join(path).exists() {
                bad.push(format!("{f}: {target} does not exist"));
            } else if !dir
                .join(path)
                .canonicalize()
                .unwrap()
                .starts_with(Path::new(ROOT).canonicalize().unwrap())
            {
                bad.push(format!("{f}: {target} is outside the repository"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
