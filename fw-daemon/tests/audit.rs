//! The audit trail fails closed, tried with the three ways a log file stops taking writes:
//! its filesystem full (a small tmpfs), remounted read-only, and the file `chattr +i`. Each
//! time a block and an unblock are refused with `audit-unavailable` and change nothing
//! (real packets check the tables), while what the daemon does on its own (a reload from
//! files) goes on, with an alert and the trail shown broken in status until it can be
//! written again. Also: blocks that lapse while the daemon is down are recorded at start,
//! dated when they lapsed.

mod common;

use fw_proto::control::AuditOp;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::Client;
use common::daemon::{eventually, Daemon};
use common::lab::{tcp_probe, Lab, Probe};
use fw_proto::control::*;

const WAIT: Duration = Duration::from_millis(400);

/// A small tmpfs mounted for one test; immutable flags cleared and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: &Path) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, how: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{how}")]).arg(&self.0).status().unwrap();
        assert!(st.success(), "remount {how}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("mount").args(["-o", "remount,rw"]).arg(&self.0).status();
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(&self.0).status();
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn chattr(flag: &str, p: &Path) {
    let st = Command::new("chattr").arg(flag).arg(p).status().unwrap();
    assert!(st.success(), "chattr {flag} {}", p.display());
}

/// Fills a filesystem until it refuses another byte.
fn fill(p: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(p).unwrap();
    let chunk = [0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn records(path: &Path) -> Vec<AuditRecord> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn quarantine(c: &str) -> BlockTarget {
    BlockTarget::Quarantine { container: c.into(), direction: BlockDirection::Egress }
}

fn block_op(target: BlockTarget) -> Op {
    Op::Block { target, ttl_secs: None, ttl_ms: None, reason: Some("audit test".into()) }
}

struct Setup {
    lab: Lab,
    d: PathBuf,
    fs: Tmpfs,
    log: PathBuf,
    daemon: Daemon,
}

/// The demo lab with api-1 serving 8080 and 9001, the daemon's audit log on its own tmpfs,
/// and one block already placed (web-1 may not reach api-1:9001).
fn setup(tag: &str) -> (Setup, Client, BlockInfo) {
    let (mut lab, d) = common::demo_lab("audit", tag);
    lab.serve_tcp("api-1", &[8080, 9001]);
    let fs = Tmpfs::new(&d.join("auditfs"));
    let log = d.join("auditfs/audit.jsonl");
    let daemon = Daemon::run_in_dir(&d, "1", &["--audit-log", log.to_str().unwrap()]);
    let mut c = Client::connect(&daemon.socket);
    eventually("containers programmed", &daemon, || {
        let s = c.status();
        (s.containers.len() == 3 && s.containers.iter().all(|c| c.programmed)).then_some(())
    });
    let api = lab.addr("api-1");
    let first = c.block(
        BlockTarget::Destination {
            scope: Scope::Container("web-1".into()),
            net: api.into(),
            proto: Some(Proto::Tcp),
            port: Some(9001),
        },
        None,
    );
    (Setup { lab, d, fs, log, daemon }, c, first)
}

impl Setup {
    fn probe(&self, port: u16) -> Probe {
        tcp_probe(&self.lab.node("web-1").path(), SocketAddr::new(self.lab.addr("api-1"), port), WAIT)
    }

    /// While the trail cannot be written: mutations refused, nothing changed, the daemon's
    /// own reload goes on, status and alerts say so.
    fn check_refused(&self, c: &mut Client, first: &BlockInfo, why: &str) {
        let blocks_json = fs::read(self.d.join("state/blocks.json")).unwrap();
        let before = records(&self.log).len();
        for target in [quarantine("web-1"), quarantine("api-1")] {
            match c.call(block_op(target)) {
                Err((ErrorCode::AuditUnavailable, m)) => assert!(m.contains("nothing changed"), "{m}"),
                other => panic!("{why}: a block without its record: {other:?}"),
            }
        }
        match c.call(Op::Unblock { block: first.id }) {
            Err((ErrorCode::AuditUnavailable, _)) => {}
            other => panic!("{why}: an unblock without its record: {other:?}"),
        }
        // Nothing changed: the refused quarantine cut nothing, the block still cuts.
        assert_eq!(self.probe(8080), Probe::Connected, "{why}: web-1 is not quarantined");
        assert_eq!(self.probe(9001), Probe::TimedOut, "{why}: block {} still holds", first.id);
        assert_eq!(c.blocks().iter().map(|b| b.id).collect::<Vec<_>>(), vec![first.id]);
        assert_eq!(fs::read(self.d.join("state/blocks.json")).unwrap(), blocks_json);
        let st = c.status();
        let a = st.audit.clone().expect("audit status");
        assert!(a.broken_since_ms.is_some() && a.error.is_some(), "{why}: {a:?}");
        let alerts = c.alerts(None, None);
        assert!(
            alerts.iter().any(|x| x.kind == AlertKind::Audit && x.message.contains("refused")),
            "{why}: {alerts:#?}"
        );
        // The daemon's own work goes on: a reload from files, recorded nowhere but counted.
        let hash = st.policy_hash.clone();
        let extra = format!("[[policy]]\nid = \"audit-{}\"\nfrom = \"api\"\nto = \"db\"\nproto = \"tcp\"\nports = 6543\naction = \"allow\"\n", why.len());
        fs::write(self.d.join("rules/90-extra.toml"), extra).unwrap();
        let st = eventually("the reload while the trail is broken", &self.daemon, || {
            let s = c.status();
            (s.policy_hash != hash).then_some(s)
        });
        assert!(st.audit.as_ref().is_some_and(|a| a.lost >= 1), "{why}: {:?}", st.audit);
        assert_eq!(records(&self.log).len(), before, "{why}: nothing reached the file");
    }

    /// Once the cause is gone: the trail clears by itself, notes its gap, and works.
    fn check_recovered(&self, c: &mut Client, why: &str) {
        eventually("the trail to work again", &self.daemon, || {
            c.status().audit.filter(|a| a.broken_since_ms.is_none()).map(|_| ())
        });
        let recs = records(&self.log);
        let gap = recs.iter().rev().find(|r| r.op == AuditOp::AuditResumed).expect("a record of the gap");
        assert!(gap.summary.as_deref().is_some_and(|s| s.contains("record(s)")), "{why}: {gap:?}");
        let b = c.block(quarantine("web-1"), Some(60));
        assert_eq!(self.probe(8080), Probe::TimedOut, "{why}: the quarantine is in force");
        assert!(records(&self.log)
            .iter()
            .any(|r| r.op == AuditOp::Block && r.block == Some(b.id) && r.result.is_ok()));
        assert!(matches!(c.call(Op::Unblock { block: b.id }), Ok(Answer::Unblocked { .. })));
        assert_eq!(self.probe(8080), Probe::Connected);
        // The trail, gap and all, is one hash chain that ends at the daemon's newest record.
        let mut files = Vec::new();
        for name in ["audit.jsonl.1", "audit.jsonl"] {
            if let Ok(text) = fs::read_to_string(self.log.with_file_name(name)) {
                files.push((name.to_string(), text));
            }
        }
        let head = c.status().audit.and_then(|a| a.head).expect("the daemon's head");
        let v = fw_proto::audit_chain::verify(&files, Some((head.seq, &head.link)))
            .unwrap_or_else(|e| panic!("{why}: {e}"));
        // The current file alone verifies too: it starts at the checkpoint of its rotation.
        let current = files.last().cloned().into_iter().collect::<Vec<_>>();
        assert!(fw_proto::audit_chain::verify(&current, None).is_ok(), "{why}: {:?}", current);
        assert!(v.records >= 3 && v.unchained == 0, "{why}: {v:?}");
    }
}

fn privileged() -> bool {
    common::require(common::lab::available(), "root with iproute2 (network namespaces)")
}

#[test]
#[ignore = "needs root"]
fn a_full_filesystem_refuses_mutations() {
    if !privileged() {
        return;
    }
    let (s, mut c, first) = setup("full");
    // Rotated away, as logrotate does: the new file needs space the filesystem no longer has.
    fs::rename(&s.log, s.d.join("auditfs/audit.jsonl.1")).unwrap();
    fill(&s.d.join("auditfs/filler"));
    s.check_refused(&mut c, &first, "full");
    fs::remove_file(s.d.join("auditfs/filler")).unwrap();
    s.check_recovered(&mut c, "full");
    drop(s.fs);
}

#[test]
#[ignore = "needs root"]
fn a_read_only_filesystem_refuses_mutations() {
    if !privileged() {
        return;
    }
    let (s, mut c, first) = setup("ro");
    s.fs.remount("ro");
    s.check_refused(&mut c, &first, "read-only");
    s.fs.remount("rw");
    s.check_recovered(&mut c, "read-only");
}

#[test]
#[ignore = "needs root"]
fn an_immutable_file_refuses_mutations() {
    if !privileged() {
        return;
    }
    let (s, mut c, first) = setup("immutable");
    chattr("+i", &s.log);
    s.check_refused(&mut c, &first, "immutable");
    chattr("-i", &s.log);
    s.check_recovered(&mut c, "immutable");
}

/// A block that lapses while the daemon is down is recorded when it starts again, dated
/// when it lapsed.
#[test]
#[ignore = "needs root"]
fn blocks_that_lapse_while_down_are_recorded_at_start() {
    if !privileged() {
        return;
    }
    let (_lab, d) = common::demo_lab("audit", "lapsed");
    let mut daemon = Daemon::run_in_dir(&d, "1", &[]);
    let mut c = Client::connect(&daemon.socket);
    let b = c.block(quarantine("web-1"), Some(1));
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let daemon = Daemon::run_in_dir(&d, "2", &[]);
    let mut c = Client::connect(&daemon.socket);
    assert!(c.blocks().is_empty());
    let recs = records(&d.join("audit.jsonl"));
    let exp = recs
        .iter()
        .find(|r| r.op == AuditOp::Expire && r.block == Some(b.id))
        .unwrap_or_else(|| panic!("no expire record for block {}: {recs:#?}", b.id));
    let at = b.expires_at_ms.expect("a TTL");
    assert_eq!(exp.time_ms, at, "dated when it lapsed");
    assert!(exp.summary.as_deref().is_some_and(|s| s.contains("not running")), "{exp:?}");
    assert_eq!(exp.reason.as_deref(), Some("test"));
}
