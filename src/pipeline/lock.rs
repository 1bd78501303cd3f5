//! One `augment run` at a time per run folder.
//!
//! The lock is `<run dir>/.lock`, created with `O_EXCL` and holding the pid
//! and start time of the run that owns it. It is removed when the run ends;
//! a lock whose pid is gone (the run was killed) is taken over. `augment sql`
//! and `augment show` take no lock: they read only the manifest, which a run
//! updates by rename after each stage's outputs are in place.
//!
//! After the lock is taken, [`clean_leftovers`] removes what a killed earlier
//! run left behind (temporary stage folders, a half-written manifest) and
//! puts back a stage folder that was moved aside but not yet replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config_error;

pub const FILE: &str = ".lock";

#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    /// Seconds since the Unix epoch.
    started_at: u64,
}

/// Held for the whole run; removes the lock file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Creates `run_dir` if needed and takes its lock.
    pub fn acquire_creating(run_dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| config_error!("cannot create run folder {}: {e}", run_dir.display()))?;
        RunLock::acquire(run_dir)
    }

    /// Takes the lock of `run_dir` (which must exist), or says who holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        let path = run_dir.join(FILE);
        let me = Owner {
            pid: std::process::id(),
            started_at: super::manifest::now_unix(),
        };
        // Two tries: the second after removing a dead owner's lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(serde_json::to_string(&me)?.as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match serde_json::from_str::<Owner>(&text) {
                        Ok(o) if o.pid != me.pid && owner_alive(&o) => {
                            return Err(config_error!(
                                "run folder {} is in use by pid {} (started {}); \
                                 wait for it or pass a different run.dir \
                                 (if no augment run is using it, the pid now belongs to another program: delete {})",
                                run_dir.display(),
                                o.pid,
                                describe_time(o.started_at),
                                path.display()
                            ));
                        }
                        // Dead owner, or a lock file cut short by a kill while
                        // it was written: take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(config_error!(
                        "cannot lock run folder {}: creating {}: {e}",
                        run_dir.display(),
                        path.display()
                    ));
                }
            }
        }
        Err(config_error!(
            "run folder {}: another run took the lock {} at the same moment; try again",
            run_dir.display(),
            path.display()
        ))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only our own lock: never one a later run took over.
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<Owner>(&t).ok())
            .is_some_and(|o| o.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the lock's owner still runs: its pid exists and (where the
/// start time can be read) that process started no later than the lock was
/// taken; a later one got the pid after the owner died.
fn owner_alive(o: &Owner) -> bool {
    if !pid_alive(o.pid) {
        return false;
    }
    // The lock's time is whole seconds, written just after the owner began;
    // the boot time in /proc/stat is whole seconds too: 2 s of slack.
    process_start_unix(o.pid).is_none_or(|started| started <= o.started_at + 2)
}

/// When process `pid` started, in seconds since the Unix epoch (Linux:
/// the boot time in `/proc/stat` plus the start tick in `/proc/<pid>/stat`).
fn process_start_unix(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, starttime field 22.
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf reads a constant of the C library; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(boot + ticks / hz)
}

/// Whether process `pid` exists (Linux: `/proc/<pid>`; elsewhere `kill -0`).
fn pid_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        // A zombie (killed, not yet reaped by its parent) holds no lock.
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z"),
            Err(_) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe_time(unix: u64) -> String {
    let ago = super::manifest::now_unix().saturating_sub(unix);
    match ago {
        0..120 => format!("{ago} s ago"),
        120..7200 => format!("{} min ago", ago / 60),
        _ => format!("{:.1} h ago", ago as f64 / 3600.0),
    }
}

/// A name that a run leaves at the top of its folder while it works (or
/// after a kill): `.<stage>.tmp.<pid>`, `.<stage>.old`, `.<stage>.resume`,
/// `.<file>.tmp.<pid>` of an atomic write.
pub fn is_leftover_name(name: &str) -> bool {
    name.starts_with('.')
        && (name.contains(".tmp") || name.ends_with(".old") || name.ends_with(".resume"))
}

/// The temporary output folder of stage `name` for this process.
pub fn tmp_dir(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!(".{name}.tmp.{}", std::process::id()))
}

/// Removes what a killed run left in `run_dir` (call it holding the lock):
/// `.<stage>.tmp*` folders, `.<stage>.old` folders, `manifest.json.tmp`. A
/// `.<stage>.old` whose `<stage>` is missing (killed between the two renames
/// of a replacement) is moved back instead. Resume folders are kept: they
/// hold checkpoints. Returns what it removed or restored, for the log.
pub fn clean_leftovers(run_dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(_) => return Ok(done),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !name.starts_with('.') && name != format!("{}.tmp", super::manifest::FILE) {
            continue;
        }
        let stem = name.trim_start_matches('.');
        if let Some(stage) = stem.strip_suffix(".old") {
            let dest = run_dir.join(stage);
            if !dest.exists() {
                std::fs::rename(&path, &dest)
                    .with_context(|| format!("restoring {}", dest.display()))?;
                done.push(format!("restored {stage}/ from {name}"));
                continue;
            }
        } else if !(stem.contains(".tmp") || name == format!("{}.tmp", super::manifest::FILE)) {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing the leftover {}", path.display()))?;
        done.push(format!("removed the leftover {name}"));
    }
    done.sort();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_while_the_owner_lives_and_taken_over_after() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // The parent of this test process is alive: a lock it held is refused.
        let parent = Owner {
            pid: std::os::unix::process::parent_id(),
            started_at: crate::pipeline::manifest::now_unix(),
        };
        drop(first);
        assert!(!dir.path().join(FILE).exists(), "released on drop");
        std::fs::write(
            dir.path().join(FILE),
            serde_json::to_string(&parent).unwrap(),
        )
        .unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("is in use by pid {}", parent.pid))
                && err.contains("pass a different run.dir"),
            "{err}"
        );
        // A pid that cannot exist (above Linux's pid_max): taken over.
        let dead = Owner {
            pid: 4_194_304 + 17,
            started_at: 0,
        };
        std::fs::write(dir.path().join(FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        drop(lock);
        // A lock file cut short by a kill is taken over too.
        std::fs::write(dir.path().join(FILE), "{\"pid\": 12").unwrap();
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_whose_pid_was_reused_by_a_later_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // The parent lives, but started long after this (invented) lock.
        let stale = Owner {
            pid: std::os::unix::process::parent_id(),
            started_at: 1_000_000,
        };
        assert!(process_start_unix(stale.pid).is_some_and(|t| t > 1_000_000));
        std::fs::write(
            dir.path().join(FILE),
            serde_json::to_string(&stale).unwrap(),
        )
        .unwrap();
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn leftovers_are_removed_and_a_moved_aside_stage_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for p in [
            ".ingest.tmp",
            ".ingest.tmp.123",
            ".balance.old",
            ".gen.old",
            ".gen.resume",
            "balance",
        ] {
            std::fs::create_dir(d.join(p)).unwrap();
        }
        std::fs::write(d.join("manifest.json.tmp"), "{").unwrap();
        std::fs::write(d.join("manifest.json"), "{}").unwrap();
        let done = clean_leftovers(d).unwrap();
        assert_eq!(done.len(), 5, "{done:?}");
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".gen.resume", "balance", "gen", "manifest.json"]);
    }
}
