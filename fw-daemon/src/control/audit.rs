//! The audit trail: one JSON line per mutating request and per policy reload, appended and
//! fsync'd before the request is answered. The file is opened for each record (O_APPEND),
//! so when logrotate renames it, the next record goes to a new file: rotation by rename
//! loses nothing. Reading returns the rotated file (`PATH.1`) and the current one.
//!
//! It fails closed. [`AuditLog::append`] is for records a change depends on: the caller
//! refuses the change when it fails (`audit-unavailable`). [`AuditLog::record`] is for what
//! the daemon does on its own (reloads from files, expiries, inspection cuts): those go on,
//! and a record that cannot be written is counted. Either failure marks the trail broken
//! (an alert, and status says so) until a write succeeds again; that first write is preceded
//! by a record of the gap, so a reader of the file knows what it does not hold.

use crate::clock::now_ms;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fw_proto::control::{AlertKind, AuditOp, AuditRecord, AuditResult, AuditStatus};
use tracing::error;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Since when the trail is broken, why, and how many of the daemon's own records it lost.
#[derive(Debug, Default)]
struct Health {
    broken_since_ms: Option<i64>,
    error: Option<String>,
    lost: u64,
}

pub struct AuditLog {
    path: PathBuf,
    /// Serialises appends (one record per write, never interleaved) and holds the health.
    health: Mutex<Health>,
    /// Where "broken" and "works again" are announced.
    alerts: Option<Arc<crate::alerts::Alerts>>,
}

impl AuditLog {
    /// Creates the directory if needed (0750) and checks the file can be appended to. A
    /// trail that cannot be opened does not stop the daemon (enforcement must go on): it
    /// starts broken, so every request that needs it is refused until it works.
    pub fn open(path: &Path, alerts: Option<Arc<crate::alerts::Alerts>>) -> AuditLog {
        let log = AuditLog { path: path.to_path_buf(), health: Mutex::new(Health::default()), alerts };
        let opened = (|| {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new().create(true).append(true).mode(0o640).open(path).map(drop)
        })();
        if let Err(source) = opened {
            let e = AuditError { path: path.to_path_buf(), source };
            log.broke(&mut log.lock(), &e);
        }
        log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record and fsyncs it; an error means it is not in the trail, and the
    /// change it stands for must not be made.
    pub fn append(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let mut h = self.lock();
        self.append_locked(&mut h, rec)
    }

    /// Appends a record of the daemon's own doing; when that fails the action stands, the
    /// record is counted as lost, and the trail is marked broken. True when written.
    pub fn record(&self, rec: &AuditRecord) -> bool {
        let mut h = self.lock();
        match self.append_locked(&mut h, rec) {
            Ok(()) => true,
            Err(_) => {
                h.lost += 1;
                false
            }
        }
    }

    /// While broken, tries to write the record of the gap, so the status clears as soon as
    /// the cause is fixed, not only at the next mutation. True when the trail works.
    pub fn retry(&self) -> bool {
        let mut h = self.lock();
        if h.broken_since_ms.is_none() {
            return true;
        }
        self.resume(&mut h).is_ok()
    }

    pub fn status(&self) -> AuditStatus {
        let h = self.lock();
        AuditStatus {
            path: self.path.display().to_string(),
            broken_since_ms: h.broken_since_ms,
            error: h.error.clone(),
            lost: h.lost,
        }
    }

    fn append_locked(&self, h: &mut Health, rec: &AuditRecord) -> Result<(), AuditError> {
        if h.broken_since_ms.is_some() {
            self.resume(h)?;
        }
        self.write(rec).inspect_err(|e| self.broke(h, e))
    }

    /// Writes the gap record; on success the trail is whole again.
    fn resume(&self, h: &mut Health) -> Result<(), AuditError> {
        let since = h.broken_since_ms.unwrap_or_default();
        let gap = AuditRecord {
            time_ms: now_ms(),
            peer: None,
            role: None,
            actor: None,
            op: AuditOp::AuditResumed,
            target: None,
            path: Some(self.path.display().to_string()),
            block: None,
            reason: h.error.clone(),
            ttl_ms: None,
            result: AuditResult::Ok,
            policy_hash: None,
            summary: Some(format!(
                "the trail could not be written from unix ms {since}: {} record(s) of the daemon's own actions are missing; requests were refused meanwhile",
                h.lost
            )),
        };
        self.write(&gap).inspect_err(|e| self.broke(h, e))?;
        let lost = std::mem::take(&mut h.lost);
        *h = Health::default();
        if let Some(a) = &self.alerts {
            a.raise(
                AlertKind::Audit,
                None,
                None,
                None,
                format!(
                    "audit log {} is writable again ({lost} record(s) of the daemon's own actions lost while broken)",
                    self.path.display()
                ),
            );
        }
        Ok(())
    }

    fn broke(&self, h: &mut Health, e: &AuditError) {
        let first = h.broken_since_ms.is_none();
        h.error = Some(e.source.to_string());
        if first {
            h.broken_since_ms = Some(now_ms());
            match &self.alerts {
                Some(a) => {
                    a.raise(
                        AlertKind::Audit,
                        None,
                        None,
                        None,
                        format!("{e}: mutations are refused until the trail can be written"),
                    );
                }
                None => error!("{e}: mutations are refused until the trail can be written"),
            }
        }
    }

    fn write(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let err = |source| AuditError { path: self.path.clone(), source };
        let mut line = serde_json::to_vec(rec).map_err(|e| err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let created = !self.path.exists();
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
        f.sync_data().map_err(err)?;
        // A new file (first record, or after rotation) exists only once its directory
        // entry is on disk too.
        if created {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
            }
        }
        Ok(())
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
                let Some(rec) = parse_record(&line) else { continue };
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

/// One line of the trail, as any version wrote it: before protocol 2 a record's target was
/// text (kept as its summary, or for a reload as its path) and a TTL could be in seconds.
fn parse_record(line: &str) -> Option<AuditRecord> {
    let mut v: serde_json::Value = serde_json::from_str(line).ok()?;
    let o = v.as_object_mut()?;
    if let Some(serde_json::Value::String(t)) = o.get("target").cloned() {
        o.remove("target");
        let key = if o.get("op").and_then(|x| x.as_str()) == Some("reload") { "path" } else { "summary" };
        if !o.get(key).is_some_and(|x| x.is_string()) {
            o.insert(key.into(), serde_json::Value::String(t));
        }
    }
    if let Some(secs) = o.remove("ttl_secs").and_then(|x| x.as_u64()) {
        o.entry("ttl_ms").or_insert_with(|| secs.saturating_mul(1000).into());
    }
    serde_json::from_value(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_older_versions_read_in_todays_shape() {
        let old = r#"{"time_ms":5,"peer":null,"role":null,"op":"block","target":"quarantine web-1 (both)","block":3,"ttl_secs":60,"result":"ok"}"#;
        let r = parse_record(old).unwrap();
        assert_eq!(
            (r.target, r.summary.as_deref(), r.ttl_ms),
            (None, Some("quarantine web-1 (both)"), Some(60_000))
        );
        let old =
            r#"{"time_ms":5,"peer":null,"role":null,"op":"reload","target":"/etc/fw/rules","result":"ok"}"#;
        assert_eq!(parse_record(old).unwrap().path.as_deref(), Some("/etc/fw/rules"));
        assert!(parse_record("{torn").is_none());
    }

    fn rec(t: i64) -> AuditRecord {
        AuditRecord {
            time_ms: t,
            peer: None,
            role: None,
            actor: None,
            op: "block".into(),
            target: Some(fw_proto::control::BlockTarget::Quarantine {
                container: "web-1".into(),
                direction: fw_proto::control::BlockDirection::Egress,
            }),
            path: None,
            block: Some(1),
            reason: None,
            ttl_ms: None,
            result: "ok".into(),
            policy_hash: None,
            summary: None,
        }
    }

    #[test]
    fn rotation_by_rename_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("fw-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open(&dir.join("sub/audit.jsonl"), None);
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

    /// Unprivileged stand-in for the mount tests (tests/audit.rs): a path whose parent is a
    /// file can never be written. Broken from the start, counted, then whole again with a
    /// record of the gap once the obstacle goes.
    #[test]
    fn a_broken_trail_refuses_counts_and_records_its_gap() {
        let dir = std::env::temp_dir().join(format!("fw-audit-broken-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("logs"), "not a directory").unwrap();
        let alerts = Arc::new(crate::alerts::Alerts::default());
        let log = AuditLog::open(&dir.join("logs/audit.jsonl"), Some(alerts.clone()));
        let st = log.status();
        assert!(st.broken_since_ms.is_some() && st.error.is_some(), "{st:?}");
        assert!(log.append(&rec(1)).is_err());
        assert!(!log.record(&rec(2)));
        assert!(!log.record(&rec(3)));
        assert_eq!(log.status().lost, 2);
        assert!(!log.retry());
        assert_eq!(alerts.recent(None, None).len(), 1, "one alert when it breaks, not one per record");
        std::fs::remove_file(dir.join("logs")).unwrap();
        std::fs::create_dir(dir.join("logs")).unwrap();
        assert!(log.retry());
        assert_eq!(
            log.status(),
            AuditStatus { path: log.path().display().to_string(), ..Default::default() }
        );
        log.append(&rec(4)).unwrap();
        let recs = log.read(None, 10).unwrap();
        assert_eq!(recs.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(), vec!["audit-resumed", "block"]);
        assert!(recs[0].summary.as_deref().is_some_and(|s| s.contains("2 record(s)")), "{recs:?}");
        assert_eq!(alerts.recent(None, None).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
