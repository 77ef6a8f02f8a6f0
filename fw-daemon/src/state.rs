//! What must survive a daemon restart, under the state directory, written atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory): a
//! crash leaves either the old or the new version, never a torn one.
//!
//! - `last-good/*.toml`: a copy of the last rule files that loaded without error, so a
//!   restart while the rules directory is broken still enforces the last good policy.
//! - `status.json`: that policy's hash and load time, and the errors of the last rejected
//!   reload (for the status command).
//! - `last-good-inventory.toml`: the same for the static inventory.
//! - `blocks.json`: the operator blocks in force.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::SourceFile;

#[derive(Debug, thiserror::Error)]
#[error("state directory {path}: {what}: {source}")]
pub struct StateError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Hash of the policy being enforced (see `Policy::hash`).
    pub policy_hash: String,
    /// Unix time it was loaded.
    pub loaded_at: i64,
    /// `path:line:col: error: ...` lines of the last rejected reload; empty once a reload
    /// succeeds.
    pub rejected: Vec<String>,
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        fs::create_dir_all(dir.join("last-good")).map_err(err(dir, "create"))?;
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn write_status(&self, status: &Status) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(status).expect("Status serializes");
        write_atomic(&self.dir.join("status.json"), &json)
    }

    pub fn read_status(&self) -> Option<Status> {
        serde_json::from_slice(&fs::read(self.dir.join("status.json")).ok()?).ok()
    }

    /// Replaces the last-good copy with `files` (file names only; rule files are flat).
    pub fn save_last_good(&self, files: &[SourceFile]) -> Result<(), StateError> {
        let dir = self.dir.join("last-good");
        let mut keep = Vec::new();
        for f in files {
            let Some(name) = f.path.file_name() else { continue };
            write_atomic(&dir.join(name), f.text.as_bytes())?;
            keep.push(name.to_os_string());
        }
        for entry in fs::read_dir(&dir).map_err(err(&dir, "list"))?.flatten() {
            if !keep.contains(&entry.file_name()) {
                fs::remove_file(entry.path()).map_err(err(&entry.path(), "remove"))?;
            }
        }
        sync_dir(&dir)
    }

    /// Active operator blocks, with their expiries (`blocks.json`).
    pub fn write_blocks(&self, blocks: &crate::blocks::BlockList) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(blocks).expect("blocks serialize");
        write_atomic(&self.dir.join("blocks.json"), &json)
    }

    /// The saved blocks; a missing file is none, an unreadable one is an error (blocks must
    /// not silently vanish across a restart).
    pub fn read_blocks(&self) -> Result<crate::blocks::BlockList, StateError> {
        let path = self.dir.join("blocks.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError {
                path,
                what: "parse",
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(source) => Err(StateError { path, what: "read", source }),
        }
    }

    pub fn last_good_dir(&self) -> PathBuf {
        self.dir.join("last-good")
    }

    /// The last inventory file that loaded (`last-good-inventory.toml`): enforced at a
    /// start on an invalid file, so a typo does not leave every container unmanaged.
    pub fn save_last_good_inventory(&self, text: &str) -> Result<(), StateError> {
        let path = self.last_good_inventory();
        if fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        write_atomic(&path, text.as_bytes())
    }

    pub fn last_good_inventory(&self) -> PathBuf {
        self.dir.join("last-good-inventory.toml")
    }
}

fn err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError { path, what, source }
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir, "fsync directory"))
}

/// write, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut f = fs::File::create(&tmp).map_err(err(&tmp, "create"))?;
    f.write_all(bytes).map_err(err(&tmp, "write"))?;
    f.sync_all().map_err(err(&tmp, "fsync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(err(path, "rename"))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fw-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn status_round_trips_and_last_good_mirrors_the_files() {
        let d = tmpdir("rt");
        let s = StateDir::open(&d).unwrap();
        let st = Status { policy_hash: "abc".into(), loaded_at: 7, rejected: vec!["x:1:1: error: y".into()] };
        s.write_status(&st).unwrap();
        assert_eq!(s.read_status(), Some(st));
        let f = |n: &str, t: &str| SourceFile { path: PathBuf::from("rules").join(n), text: t.into() };
        s.save_last_good(&[f("a.toml", "1"), f("b.toml", "2")]).unwrap();
        s.save_last_good(&[f("b.toml", "3")]).unwrap();
        let mut names: Vec<_> =
            fs::read_dir(s.last_good_dir()).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("b.toml")]);
        assert_eq!(fs::read_to_string(s.last_good_dir().join("b.toml")).unwrap(), "3");
        fs::remove_dir_all(&d).unwrap();
    }
}
