//! Fault injection for `tests/it/faults.rs`: named points where a test can
//! stop the process (and then SIGKILL it there, at a known moment), and a
//! write that fails as on a full disk. Inert unless the variables below are
//! set; they are not for users.
//!
//! - `AUGMENT_TEST_PAUSE_AT=<point>`: at the named point the process writes
//!   the point's name to `$AUGMENT_TEST_PAUSED_FILE` and sleeps until it is
//!   killed. Points are `<stage>:<where>` (`ingest:chunk:2`, `balance:write`,
//!   `gen:autoencoder:step:7`, `gen:autoencoder:checkpoint:10`,
//!   `synthesize:chunk:1`, `evaluate:fid:2`, ...).
//! - `AUGMENT_TEST_FAIL_WRITE=<text>`: writing a Parquet table or an atomic
//!   file whose path contains `<text>` fails with ENOSPC ("No space left on
//!   device").

use std::path::Path;
use std::sync::OnceLock;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn pause_at() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| var("AUGMENT_TEST_PAUSE_AT")).as_deref()
}

/// A named point: stops here for good when a test asked for this one.
pub fn point(name: impl FnOnce() -> String) {
    let Some(at) = pause_at() else {
        return;
    };
    let name = name();
    if name != at {
        return;
    }
    if let Some(file) = var("AUGMENT_TEST_PAUSED_FILE") {
        let _ = std::fs::write(file, &name);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// An injected "disk full" for writes to `path`, when a test asked for one.
pub fn check_write(path: &Path) -> std::io::Result<()> {
    static FAIL: OnceLock<Option<String>> = OnceLock::new();
    match FAIL.get_or_init(|| var("AUGMENT_TEST_FAIL_WRITE")) {
        Some(text) if path.to_string_lossy().contains(text.as_str()) => {
            // ENOSPC on Linux and macOS.
            Err(std::io::Error::from_raw_os_error(28))
        }
        _ => Ok(()),
    }
}
