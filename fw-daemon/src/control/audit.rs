//! The audit trail: one JSON line per mutating request and per policy reload, appended and
//! fsync'd before the request is answered. The file is opened for each record (O_APPEND),
//! so when logrotate renames it, the next record goes to a new file: rotation by rename
//! loses nothing. Reading returns the rotated file (`PATH.1`) and the current one.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fw_proto::control::AuditRecord;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub struct AuditLog {
    path: PathBuf,
    /// Serialises appends: one record per write, never interleaved.
    lock: Mutex<()>,
}

impl AuditLog {
    /// Creates the directory if needed (0750) and checks the file can be appended to.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |source| AuditError { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        OpenOptions::new().create(true).append(true).mode(0o640).open(path).map_err(err)?;
        Ok(AuditLog { path: path.to_path_buf(), lock: Mutex::new(()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and fsyncs it.
    pub fn append(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let err = |source| AuditError { path: self.path.clone(), source };
        let mut line = serde_json::to_vec(rec).map_err(|e| err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(err)?;
        // A crash mid-write leaves a line without its newline: start on a fresh line so the
        // torn record costs only itself.
        let len = f.metadata().map_err(err)?.len();
        let mut last = [b'\n'];
        if len > 0 {
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1).map_err(err)?;
        }
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
        f.write_all(&line).map_err(err)?;
        f.sync_data().map_err(err)
    }

    /// Records at or after `since_ms`, oldest first, at most the last `limit`. Lines that
    /// do not parse (a torn write from a crash, a hand edit) are skipped.
    pub fn read(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        let mut out = std::collections::VecDeque::new();
        for p in [PathBuf::from(rotated), self.path.clone()] {
            let f = match std::fs::File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(AuditError { path: p, source }),
            };
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(rec) = serde_json::from_str::<AuditRecord>(&line) else { continue };
                if since_ms.is_some_and(|s| rec.time_ms < s) {
                    continue;
                }
                out.push_back(rec);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64) -> AuditRecord {
        AuditRecord {
            time_ms: t,
            peer: None,
            role: None,
            actor: None,
            op: "block".into(),
            target: Some("quarantine web-1 (egress)".into()),
            block: Some(1),
            reason: None,
            ttl_secs: None,
            result: "ok".into(),
            policy_hash: None,
            summary: None,
        }
    }

    #[test]
    fn rotation_by_rename_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("fw-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open(&dir.join("sub/audit.jsonl")).unwrap();
        log.append(&rec(1)).unwrap();
        log.append(&rec(2)).unwrap();
        std::fs::rename(log.path(), dir.join("sub/audit.jsonl.1")).unwrap();
        log.append(&rec(3)).unwrap();
        let all: Vec<i64> = log.read(None, 100).unwrap().iter().map(|r| r.time_ms).collect();
        assert_eq!(all, vec![1, 2, 3]);
        assert_eq!(log.read(Some(2), 100).unwrap().len(), 2);
        assert_eq!(log.read(None, 1).unwrap()[0].time_ms, 3);
        // A torn line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"time_ms\":4,")
            .unwrap();
        log.append(&rec(5)).unwrap();
        let all: Vec<i64> = log.read(None, 100).unwrap().iter().map(|r| r.time_ms).collect();
        assert_eq!(all, vec![1, 2, 3, 5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
