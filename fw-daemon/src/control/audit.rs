//! The audit trail: one JSON line per mutating request and per policy reload, appended and
//! fsync'd before the request is answered. The file is opened for each record (O_APPEND),
//! so when logrotate renames it, the next record goes to a new file: rotation by rename
//! loses nothing. Reading returns the rotated file (`PATH.1`) and the current one.
//!
//! Each record is a link of a hash chain (`fw_proto::audit_chain`): its `seq` and the hash
//! of the line before it, so `fw-tui audit verify` finds an edited, deleted or reordered
//! record. The daemon rotates the file itself at a size (`Rotation`), keeping a number of
//! files and deleting those past an age; each new file starts with a checkpoint record
//! linked to the last one of the file before, so the chain runs across files.
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

use fw_proto::control::{AlertKind, AuditHead, AuditOp, AuditRecord, AuditResult, AuditStatus};
use tracing::error;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Since when the trail is broken, why, and how many of the daemon's own records it lost;
/// and the newest record's `seq` and link, which the next one carries.
#[derive(Debug, Default)]
struct Health {
    broken_since_ms: Option<i64>,
    error: Option<String>,
    lost: u64,
    head: Option<(u64, String)>,
}

/// When the daemon rotates its trail, and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`).
    pub keep: usize,
    /// Rotated files last written longer ago are deleted.
    pub max_age: Option<std::time::Duration>,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 64 << 20, keep: 20, max_age: None }
    }
}

pub struct AuditLog {
    path: PathBuf,
    rotation: Rotation,
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
        Self::open_rotating(path, Rotation::default(), alerts)
    }

    pub fn open_rotating(
        path: &Path,
        rotation: Rotation,
        alerts: Option<Arc<crate::alerts::Alerts>>,
    ) -> AuditLog {
        let health = Health { head: last_link(path, rotation.keep), ..Health::default() };
        let log = AuditLog { path: path.to_path_buf(), rotation, health: Mutex::new(health), alerts };
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
            head: h.head.as_ref().map(|(seq, link)| Box::new(AuditHead { seq: *seq, link: link.clone() })),
        }
    }

    /// The newest record's `seq` and link (what `audit verify` checks the file's end by).
    pub fn head(&self) -> Option<(u64, String)> {
        self.lock().head.clone()
    }

    fn append_locked(&self, h: &mut Health, rec: &AuditRecord) -> Result<(), AuditError> {
        if h.broken_since_ms.is_some() {
            self.resume(h)?;
        }
        self.write(h, rec).inspect_err(|e| self.broke(h, e))
    }

    /// Writes the gap record; on success the trail is whole again.
    fn resume(&self, h: &mut Health) -> Result<(), AuditError> {
        let since = h.broken_since_ms.unwrap_or_default();
        let gap = AuditRecord {
            reason: h.error.clone(),
            ..self.trail_record(
                AuditOp::AuditResumed,
                format!(
                    "the trail could not be written from unix ms {since}: {} record(s) of the daemon's own actions are missing; requests were refused meanwhile",
                    h.lost
                ),
            )
        };
        self.write(h, &gap).inspect_err(|e| self.broke(h, e))?;
        let lost = std::mem::take(&mut h.lost);
        *h = Health { head: h.head.take(), ..Health::default() };
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

    /// A record the trail writes about itself (a gap, a new file).
    fn trail_record(&self, op: AuditOp, summary: String) -> AuditRecord {
        AuditRecord {
            time_ms: now_ms(),
            peer: None,
            role: None,
            actor: None,
            op,
            target: None,
            path: Some(self.path.display().to_string()),
            block: None,
            reason: None,
            ttl_ms: None,
            result: AuditResult::Ok,
            policy_hash: None,
            summary: Some(summary),
        }
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

    /// Writes `rec` as the chain's next link (after a checkpoint when it starts a file),
    /// rotating first when the file is full.
    fn write(&self, h: &mut Health, rec: &AuditRecord) -> Result<(), AuditError> {
        let err = |source| AuditError { path: self.path.clone(), source };
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.rotation.max_bytes) {
            self.rotate().map_err(err)?;
        }
        // A new file (or one a failed first write left empty) starts with the checkpoint.
        if std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0) {
            if let Some((seq, _)) = &h.head {
                let checkpoint = self.trail_record(
                    AuditOp::AuditCheckpoint,
                    format!("a new file: the trail continues from record {seq} of the file before"),
                );
                self.write_link(h, &checkpoint)?;
            }
        }
        self.write_link(h, rec)
    }

    fn write_link(&self, h: &mut Health, rec: &AuditRecord) -> Result<(), AuditError> {
        let err = |source| AuditError { path: self.path.clone(), source };
        let (seq, prev) = match &h.head {
            Some((seq, link)) => (seq + 1, link.clone()),
            None => (0, fw_proto::audit_chain::GENESIS.to_string()),
        };
        let mut v = serde_json::to_value(rec).map_err(|e| err(std::io::Error::other(e)))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("seq".into(), seq.into());
            o.insert("prev".into(), prev.into());
        }
        let text = serde_json::to_string(&v).map_err(|e| err(std::io::Error::other(e)))?;
        let mut line = text.clone().into_bytes();
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
        h.head = Some((seq, fw_proto::audit_chain::link(&text)));
        Ok(())
    }

    /// `PATH.N` -> `PATH.N+1` (the last one kept is deleted), `PATH` -> `PATH.1`; then the
    /// rotated files past the age limit go.
    fn rotate(&self) -> std::io::Result<()> {
        let keep = self.rotation.keep;
        let _ = std::fs::remove_file(rotated(&self.path, keep));
        for n in (1..keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        if let Some(age) = self.rotation.max_age {
            let now = std::time::SystemTime::now();
            for n in 1..=keep {
                let p = rotated(&self.path, n);
                let old = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
                if old {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        Ok(())
    }

    /// The trail's files, oldest first: the rotated ones kept, then the current one.
    pub fn files(&self) -> Vec<PathBuf> {
        files(&self.path, self.rotation.keep)
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

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// The trail's files that exist, oldest first.
pub fn files(path: &Path, keep: usize) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=keep).rev().map(|n| rotated(path, n)).filter(|p| p.exists()).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// The newest chained record's `seq` and link, from the newest file that has one.
fn last_link(path: &Path, keep: usize) -> Option<(u64, String)> {
    for p in files(path, keep).iter().rev() {
        let Ok(text) = std::fs::read_to_string(p) else { continue };
        for line in text.lines().rev() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
                return Some((seq, fw_proto::audit_chain::link(line)));
            }
        }
    }
    None
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
        let recs = log.read(None, 100).unwrap();
        // The new file starts with the checkpoint that keeps the chain.
        assert_eq!(recs.iter().filter(|r| r.op == AuditOp::AuditCheckpoint).count(), 1);
        let all: Vec<i64> =
            recs.iter().filter(|r| r.op != AuditOp::AuditCheckpoint).map(|r| r.time_ms).collect();
        assert_eq!(all, vec![1, 2, 3]);
        assert_eq!(log.read(Some(2), 100).unwrap().len(), 3, "2, the checkpoint, 3");
        assert_eq!(log.read(None, 1).unwrap()[0].time_ms, 3);
        assert!(fw_proto::audit_chain::verify(&texts(&log.files()), None).is_ok());
        // A torn line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"time_ms\":4,")
            .unwrap();
        log.append(&rec(5)).unwrap();
        let all: Vec<i64> = log
            .read(None, 100)
            .unwrap()
            .iter()
            .filter(|r| r.op != AuditOp::AuditCheckpoint)
            .map(|r| r.time_ms)
            .collect();
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
            AuditStatus {
                path: log.path().display().to_string(),
                head: log.head().map(|(seq, link)| Box::new(AuditHead { seq, link })),
                ..Default::default()
            }
        );
        log.append(&rec(4)).unwrap();
        let recs = log.read(None, 10).unwrap();
        assert_eq!(recs.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(), vec!["audit-resumed", "block"]);
        assert!(recs[0].summary.as_deref().is_some_and(|s| s.contains("2 record(s)")), "{recs:?}");
        assert_eq!(alerts.recent(None, None).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn texts(paths: &[PathBuf]) -> Vec<(String, String)> {
        paths
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(p).unwrap())
            })
            .collect()
    }

    /// The daemon's own rotation keeps the chain across files (each new file starts with a
    /// checkpoint), keeps `keep` files, and a restart continues the chain where it was; any
    /// edit, deletion or reordering of the written files is then named by the verifier.
    #[test]
    fn the_chain_survives_rotation_and_restarts_and_shows_tampering() {
        use fw_proto::audit_chain::{verify, Break};
        let dir = std::env::temp_dir().join(format!("fw-audit-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let rotation = Rotation { max_bytes: 4096, keep: 3, max_age: None };
        let log = AuditLog::open_rotating(&path, rotation, None);
        for t in 0..150 {
            log.append(&rec(t)).unwrap();
        }
        drop(log);
        // A restart picks the chain up from the newest record on disk.
        let log = AuditLog::open_rotating(&path, rotation, None);
        for t in 150..170 {
            log.append(&rec(t)).unwrap();
        }
        let files = log.files();
        assert_eq!(files.len(), 4, "three rotated files kept, and the current one: {files:?}");
        let v = verify(&texts(&files), None).expect("a whole chain");
        let head = log.head().unwrap();
        assert_eq!(v.head.as_ref(), Some(&head));
        assert!(v.starts_at_checkpoint, "the oldest files were rotated away: it starts at a checkpoint");
        assert!(verify(&texts(&files), Some((head.0, &head.1))).is_ok());
        assert_eq!(log.status().head.map(|h| h.seq), Some(head.0));

        // Tampering with the files on disk, each way.
        let mut t = texts(&files);
        t[1].1 = t[1].1.replacen("\"block\":1", "\"block\":2", 1);
        assert!(matches!(verify(&t, None), Err(Break::Edited { .. })), "{:?}", verify(&t, None));
        let mut t = texts(&files);
        let lines: Vec<&str> = t[2].1.lines().collect();
        t[2].1 = lines.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| format!("{l}\n")).collect();
        assert!(matches!(verify(&t, None), Err(Break::Deleted { .. })));
        let mut t = texts(&files);
        t.swap(1, 2);
        assert!(matches!(verify(&t, None), Err(Break::Deleted { .. } | Break::Reordered { .. })));
        // Retention deleting the oldest file is fine (the next starts at a checkpoint)...
        assert!(verify(&texts(&files[1..]), None).is_ok_and(|v| v.starts_at_checkpoint));
        // ...deleting the head of one is not.
        let mut t = texts(&files);
        t[0].1 = t[0].1.split_once('\n').unwrap().1.to_string();
        assert!(matches!(verify(&t, None), Err(Break::StartsMidChain { .. })), "{:?}", verify(&t, None));
        let mut t = texts(&files);
        let last = t.last_mut().unwrap();
        let cut: Vec<&str> = last.1.lines().collect();
        last.1 = cut[..cut.len() - 1].iter().map(|l| format!("{l}\n")).collect();
        assert!(verify(&t, None).is_ok(), "the newest record gone: the chain alone holds");
        assert!(matches!(verify(&t, Some((head.0, &head.1))), Err(Break::Head { .. })), "the head shows it");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
