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
        // Every model's own keys, with their defaults filled in.
        StageKind::TrainGenerator => {
            let mut all = serde_json::Map::new();
            for model in augment::generators::model_file::Model::all() {
                let c = train_generator::Config::from_toml(
                    toml::from_str(&format!("model = \"{model}\"")).unwrap(),
                )
                .unwrap();
                all.extend(
                    serde_json::to_value(&c)
                        .unwrap()
                        .as_object()
                        .unwrap()
                        .clone(),
                );
            }
            serde_json::Value::Object(all)
        }
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

// ------------------------------------------------- commands that the docs show

/// One `augment ...` command shown in a document: where, and its arguments
/// after the program name.
#[derive(Debug)]
struct Shown {
    at: String,
    args: Vec<String>,
}

/// Splits a shell line into words: single and double quotes, backslash
/// escapes inside double quotes and outside quotes.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut has) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                has = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            '#' if cur.is_empty() && !has => break,
            c => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Whether `line` ends inside a double-quoted string.
fn unclosed_quote(line: &str) -> bool {
    let (mut open, mut escaped) = (false, false);
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => open = !open,
            _ => {}
        }
    }
    open
}

/// Every `augment` command in the README's and docs' shell blocks and in
/// the pipelines' comments (`# augment ...`), continuation lines joined.
fn shown_commands() -> Vec<Shown> {
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    let mut md = vec!["README.md".to_string()];
    let mut toml = Vec::new();
    for (dir, list, ext) in [("docs", &mut md, ".md"), ("pipelines", &mut toml, ".toml")] {
        let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        list.extend(names);
    }
    for f in md {
        let mut lines = Vec::new();
        let mut in_shell = false;
        for l in read(&f).lines() {
            if let Some(lang) = l.trim_start().strip_prefix("```") {
                in_shell = !in_shell && matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
                continue;
            }
            if in_shell {
                lines.push(l.trim().trim_start_matches("$ ").to_string());
            }
        }
        sources.push((f, lines));
    }
    for f in toml {
        let lines = read(&f)
            .lines()
            .filter_map(|l| l.trim().strip_prefix('#'))
            .map(|l| l.trim().to_string())
            .collect();
        sources.push((f, lines));
    }
    let mut out = Vec::new();
    for (f, lines) in sources {
        let mut joined = String::new();
        for l in lines {
            if let Some(head) = l.strip_suffix('\\') {
                joined.push_str(head);
                joined.push(' ');
                continue;
            }
            joined.push_str(&l);
            // A double quote still open: the shell reads on.
            if unclosed_quote(&joined) {
                joined.push(' ');
                continue;
            }
            let line = std::mem::take(&mut joined);
            let words = shell_words(&line);
            let program = words.first().map(String::as_str);
            if matches!(
                program,
                Some("augment" | "target/debug/augment" | "target/release/augment")
            ) {
                out.push(Shown {
                    at: format!("{f}: {line}"),
                    args: words[1..].to_vec(),
                });
            }
        }
    }
    out
}

/// The run folders of the shipped pipelines (as paths from the repository
/// root, e.g. `runs/celeba`), each with the stages of every pipeline that
/// writes there: (stage name, kind).
fn run_folders() -> std::collections::BTreeMap<String, Vec<(String, StageKind)>> {
    let mut out: std::collections::BTreeMap<String, Vec<(String, StageKind)>> = Default::default();
    let root = Path::new(ROOT).canonicalize().unwrap();
    // A stand-in CelebA folder: loading checks only that the attribute file exists.
    let celeba = tempfile::tempdir().unwrap();
    std::fs::write(celeba.path().join("list_attr_celeba.txt"), "").unwrap();
    let set_root = format!("stages.ingest.root={}", celeba.path().display());
    for e in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let demo = std::fs::read_to_string(&path)
            .unwrap()
            .contains("source = \"demo\"");
        let mut overrides = vec!["run.device=cpu".to_string()];
        if !demo {
            overrides.push(set_root.clone());
        }
        let p = augment::pipeline::config::load(&path, &overrides)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let dir = lexical(&path.parent().unwrap().join(&p.run.dir));
        let rel = dir.strip_prefix(&root).unwrap_or(&dir);
        let stages = out.entry(rel.display().to_string()).or_default();
        stages.extend(p.stages.iter().map(|s| (s.name.clone(), s.kind())));
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn lexical(p: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The tables a stage of `kind` may write (from `schema::all_tables`).
fn tables_of(kind: StageKind) -> Vec<&'static str> {
    augment::data::schema::all_tables()
        .into_iter()
        .filter(|(_, kinds, _)| {
            kinds
                .split(", ")
                .any(|k| k.split(' ').next() == Some(kind.name()))
        })
        .map(|(t, _, _)| t)
        .collect()
}

/// The SQL names a run folder's stages may register: `<stage>_<table>`
/// and each bare table name.
fn sql_names(stages: &[(String, StageKind)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut writers: std::collections::BTreeMap<&str, usize> = Default::default();
    for (s, k) in stages {
        for t in tables_of(*k) {
            out.insert(format!("{s}_{t}"));
            *writers.entry(t).or_default() += 1;
        }
    }
    // A bare name is registered when one stage writes the table, or for
    // the union tables (`metrics`).
    for (t, n) in writers {
        if n == 1 || augment::query::UNION_TABLES.contains(&t) {
            out.insert(t.to_string());
        }
    }
    out
}

/// The tables a query reads: the word after each FROM and JOIN.
fn tables_read(query: &str) -> Vec<String> {
    let words: Vec<&str> = query.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if (w[0].eq_ignore_ascii_case("from") || w[0].eq_ignore_ascii_case("join"))
            && !w[1].starts_with('(')
        {
            let t: String = w[1]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(t);
        }
    }
    out
}

/// Every `augment sql | show | report <folder>` the docs show names the run
/// folder of a shipped pipeline (resolved as the runner resolves `dir`:
/// relative to the pipeline file), every table its SQL reads is one that a
/// stage of that folder's pipelines writes, every `augment run <file>`
/// names a file that exists, and every `runs/<run>/<stage>/<file>.parquet`
/// path in the docs names a stage of that run and one of its tables.
#[test]
fn commands_in_the_docs_name_real_folders_stages_and_tables() {
    let runs = run_folders();
    let mut bad = Vec::new();
    let shown = shown_commands();
    assert!(shown.len() > 10, "found only {} commands", shown.len());
    for c in &shown {
        let (Some(sub), Some(target)) = (c.args.first(), c.args.get(1)) else {
            continue;
        };
        if target.contains('$') || target.starts_with('-') || target.contains('<') {
            continue;
        }
        match sub.as_str() {
            "run" if !Path::new(ROOT).join(target).is_file() => {
                bad.push(format!("{}: no file {target}", c.at));
            }
            "sql" | "show" | "report" | "chart" => {
                let Some(stages) = runs.get(target.trim_end_matches('/')) else {
                    bad.push(format!(
                        "{}: {target} is no shipped pipeline's run folder (they are: {})",
                        c.at,
                        runs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                };
                if sub == "sql" {
                    let names = sql_names(stages);
                    for q in c.args[2..].iter().filter(|a| !a.starts_with('-')) {
                        for t in tables_read(q) {
                            if !names.contains(&t) {
                                bad.push(format!("{}: no table `{t}` in {target}", c.at));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Parquet paths inside a run folder (Python examples, prose).
    let mut files = vec!["README.md".to_string()];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n.ends_with(".md") {
            files.push(format!("docs/{n}"));
        }
    }
    for f in &files {
        let text = read(f);
        for (i, _) in text.match_indices("runs/") {
            let path: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || "/_.-".contains(*c))
                .collect();
            let parts: Vec<&str> = path.split('/').collect();
            let [_, run, stage, file] = parts[..] else {
                continue;
            };
            let Some(table) = file.strip_suffix(".parquet") else {
                continue;
            };
            let Some(stages) = runs.get(&format!("runs/{run}")) else {
                bad.push(format!(
                    "{f}: {path}: runs/{run} is no shipped pipeline's run folder"
                ));
                continue;
            };
            match stages.iter().find(|(s, _)| s == stage) {
                Some((_, k)) if tables_of(*k).contains(&table) => {}
                Some((_, k)) => bad.push(format!(
                    "{f}: {path}: a `{}` stage writes no {table} table",
                    k.name()
                )),
                None => bad.push(format!("{f}: {path}: runs/{run} has no stage `{stage}`")),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The quickstart's commands, as the README, docs and pipeline comments
/// show them, run against a real (reduced) quickstart run: every `augment
/// sql`, `show` and `report` on `runs/quickstart` must succeed, and every
/// query must return rows.
#[test]
fn quickstart_commands_in_the_docs_run() {
    let shown: Vec<Shown> = shown_commands()
        .into_iter()
        .filter(|c| {
            matches!(
                c.args.first().map(String::as_str),
                Some("sql" | "show" | "report" | "chart")
            ) && c.args.get(1).map(|d| d.trim_end_matches('/')) == Some("runs/quickstart")
        })
        .collect();
    assert!(
        shown.len() >= 4,
        "found only {} quickstart commands",
        shown.len()
    );
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("pipelines")).unwrap();
    std::fs::copy(
        Path::new(ROOT).join("pipelines/quickstart.toml"),
        d.path().join("pipelines/quickstart.toml"),
    )
    .unwrap();
    // The reduced sizes CI runs the quickstart at, without FID.
    let script = Path::new(ROOT).join("scripts/cuda-device-check.sh");
    let flags = std::process::Command::new("bash")
        .arg(&script)
        .arg("--reduced-quickstart-flags")
        .output()
        .expect("bash");
    let flags = String::from_utf8(flags.stdout).unwrap();
    // The docs query the size sweep's stages, so the sweep keeps its sizes.
    let flags: Vec<&str> = flags.lines().collect();
    let mut args: Vec<&str> = vec!["run", "pipelines/quickstart.toml", "-q"];
    for pair in flags.chunks(2) {
        if !pair.iter().any(|f| f.starts_with("stages.dynamic.sizes")) {
            args.extend(pair);
        }
    }
    args.extend(["--set", "stages.evaluate.fid=false"]);
    {
        crate::common::augment_ok(&args, d.path());
    }
    let mut bad = Vec::new();
    for c in &shown {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let (code, out, err) = crate::common::augment(&args, d.path());
        if code != 0 {
            bad.push(format!("{}\n  exit {code}: {}", c.at, err.trim()));
        } else if args[0] == "sql" && out.trim().lines().count() < 2 {
            bad.push(format!("{}\n  no rows:\n{out}", c.at));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
