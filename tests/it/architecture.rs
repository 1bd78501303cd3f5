//! The dependency direction of `docs/design.md`, checked: every `crate::`
//! (and `super::` reaching the crate root) path in `src/` is compared with
//! the "may use" table of that page, so the page and the code cannot drift.
//! Also checks that `lib.rs` and every `mod.rs` list each of their modules in
//! their `//!` header.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DESIGN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md");
const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Items exported at the crate root by `#[macro_export]` or `pub use`, and
/// the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("config_error", "error"),
    ("data_error", "error"),
    ("VERSION", "data"),
    ("configure_allocator", "ops"),
];

/// The "may use" table: `| `module` | `a`, `b` |` rows between the
/// `<!-- dependency table -->` markers.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(DESIGN).expect("docs/design.md");
    let start = text
        .find("<!-- dependency table -->")
        .expect("docs/design.md has a `<!-- dependency table -->` marker");
    let end = text
        .find("<!-- end dependency table -->")
        .expect("docs/design.md has an `<!-- end dependency table -->` marker");
    let mut table = BTreeMap::new();
    for line in text[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let names = |c: &str| -> BTreeSet<String> {
            c.split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty() && s != "—")
                .collect()
        };
        let module = cells[1].trim_matches('`').to_string();
        table.insert(module, names(cells[2]));
    }
    assert!(
        table.len() > 5,
        "docs/design.md: dependency table not found"
    );
    table
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/stages/mod.rs` → [stages],
/// `src/train/translation/sggan.rs` → [train, translation, sggan].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(SRC).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// Code without `//` comments (strings holding `//` only hide paths after
/// them on that line, which errs towards passing, never towards a false alarm).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Top-level crate items a file names: `crate::x`, `crate::{x, y::z}`, and
/// `super::` paths that climb to the crate root.
fn crate_refs(file: &Path, code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                if depth == 1 && c == ',' {
                    refs.insert(ident_at(item.trim()));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            refs.insert(ident_at(item.trim()));
        } else {
            refs.insert(ident_at(after));
        }
        rest = after;
    }
    let depth = module_path(file).len();
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        let mut after = &rest[i..];
        let mut n = 0;
        while let Some(a) = after.strip_prefix("super::") {
            after = a;
            n += 1;
        }
        // From `src/x/y.rs` (depth 2), `super::` is `x`; from `src/x.rs`
        // (depth 1), `super::` is the crate root.
        if n >= depth {
            refs.insert(ident_at(after));
        }
        rest = &rest[i + "super::".len() * n..];
    }
    refs.retain(|r| !r.is_empty() && r != "self");
    refs
}

#[test]
fn modules_import_only_downwards() {
    let table = allowed();
    let root: BTreeMap<&str, &str> = ROOT_ITEMS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for f in &files {
        let path = module_path(f);
        let Some(module) = path.first() else {
            continue; // lib.rs and main.rs wire everything together
        };
        let rel = f.strip_prefix(SRC).unwrap().display().to_string();
        let Some(may_use) = table.get(module) else {
            wrong.push(format!(
                "src/{rel}: module `{module}` is missing from docs/design.md's table"
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        for r in crate_refs(f, &code) {
            let target = root.get(r.as_str()).map(|s| s.to_string()).unwrap_or(r);
            if &target != module && !may_use.contains(&target) {
                wrong.push(format!("src/{rel}: `{module}` uses `{target}`"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against docs/design.md's dependency direction:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn module_headers_list_their_modules() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut missing = Vec::new();
    for f in files.iter().filter(|f| {
        let n = f.file_name().unwrap();
        n == "mod.rs" || n == "lib.rs"
    }) {
        let text = std::fs::read_to_string(f).unwrap();
        let header: String = text
            .lines()
            .filter(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for line in text.lines() {
            let Some(m) = line
                .trim()
                .strip_prefix("pub mod ")
                .or_else(|| line.trim().strip_prefix("mod "))
            else {
                continue;
            };
            let m = m.trim_end_matches(';').trim();
            if m == "tests" || m.contains('{') {
                continue;
            }
            if !header.contains(&format!("[`{m}`]")) {
                missing.push(format!(
                    "{}: `{m}` is not listed as [`{m}`] in the //! header",
                    f.strip_prefix(SRC).unwrap().display()
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_super_paths() {
    let f = Path::new(SRC).join("stages/balance.rs");
    let refs = crate_refs(
        &f,
        "use crate::{data::schema, models::{a, b}};\nlet x = crate::train::f();\nuse super::super::report;",
    );
    let want: BTreeSet<String> = ["data", "models", "train", "report"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
}

/// The generator families, as `src/generators/` registers them.
fn families() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(SRC).join("generators/mod.rs")).unwrap();
    let start = text.find("pub const FAMILIES").expect("the registry");
    let end = start + text[start..].find("];").expect("the registry's end");
    let names: Vec<String> = text[start..end]
        .split('&')
        .filter(|s| s.contains("::FAMILY"))
        .filter_map(|s| s.split("::FAMILY").next())
        .map(|s| s.trim().to_string())
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    names
}

/// Stages reach generators only through the registry and the `Generator`
/// trait: no file under `src/stages/` names a family's module (in
/// `generators`, `train` or `models`), picks a model (`Model::…`) or reads
/// a family's part of `model.json` (`model_file::…`, `.layout(`).
#[test]
fn stages_never_name_a_generator_family() {
    let fams = families();
    let mut files = Vec::new();
    rust_files(&Path::new(SRC).join("stages"), &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let mut names: Vec<String> = Vec::new();
        for m in ["generators", "train", "models"] {
            names.extend(fams.iter().map(|fam| format!("{m}::{fam}")));
        }
        names.extend(["Model::", "model_file::", ".layout("].map(String::from));
        for n in &names {
            for (i, _) in code.match_indices(n.as_str()) {
                let after = code[i + n.len()..].chars().next().unwrap_or(' ');
                if n.ends_with("::")
                    || n.ends_with('(')
                    || !(after.is_alphanumeric() || after == '_')
                {
                    let line = code[..i].lines().count();
                    bad.push(format!("{}:{line}: `{n}`", f.display()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "stages name a generator family outside the registry (src/generators/mod.rs):\n  {}",
        bad.join("\n  ")
    );
}
