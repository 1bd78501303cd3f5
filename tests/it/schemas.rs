//! `schemas/*.md` is generated from `src/data/schema.rs`; this test fails when
//! the two drift apart. Regenerate with `UPDATE_SCHEMAS=1 cargo test --test it schemas::`.

use std::path::Path;

#[test]
fn schema_files_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (table, stage, schema) in augment::data::schema::all_tables() {
        let path = dir.join(format!("{table}.md"));
        let want = augment::data::schema::render_markdown(table, stage, &schema);
        if update {
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run UPDATE_SCHEMAS=1 cargo test --test it schemas::): {stale:?}"
    );
}
