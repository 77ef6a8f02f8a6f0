//! The daemon's decisions on the in-memory kernel and a hand-moved clock, without root:
//! the block lifecycle (placed, refused and rolled back, audited, persisted, expired),
//! reload decisions (refused files change nothing; errors reported once), drift repair and
//! tamper escalation. The same behaviour runs against the real kernel in control.rs,
//! daemon_run.rs, audit.rs and containment.rs; here nothing sleeps and nothing is skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fw_daemon::clock::FakeClock;
use fw_daemon::control::{Command, Credentials};
use fw_daemon::daemon::{Config, Core, Deps, Event};
use fw_daemon::kernel::fake::{Commit, FakeKernel};
use fw_daemon::ruleset::ir::{KeyValue, SetElem, TableFamily, TABLE};
use fw_proto::control::{
    AlertKind, Answer, AuditOp, AuditResult, BlockDirection, BlockTarget, ErrorCode, Op, Peer, Role,
};

const T0: i64 = 1_790_000_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct World {
    dir: PathBuf,
    kernel: FakeKernel,
    clock: FakeClock,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo rules and inventory in a scratch directory; every demo namespace in the fake.
fn world(name: &str) -> World {
    let dir = std::env::temp_dir().join(format!("fw-logic-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    for f in std::fs::read_dir(root().join("rules/demo")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join("rules").join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(root().join("rules/demo-inventory.toml"), dir.join("inventory.toml")).unwrap();
    let clock = FakeClock::at(T0);
    let kernel = FakeKernel::with_clock(Arc::new(clock.clone()));
    let inv = fw_daemon::inventory::load_inventory(&dir.join("inventory.toml")).unwrap();
    for c in &inv.containers {
        kernel.add_netns(c.netns.clone().unwrap());
    }
    World { dir, kernel, clock }
}

impl World {
    fn config(&self) -> Config {
        Config {
            rules: self.dir.join("rules"),
            inventory: Some(self.dir.join("inventory.toml")),
            docker: None,
            cri: None,
            kube: None,
            unknown_containers: fw_daemon::config::Unknown::DefaultZone,
            state_dir: self.dir.join("state"),
            opts: Default::default(),
            tick: Duration::from_secs(1),
            resync: Duration::from_secs(10),
            socket: None,
            socket_group: "fw-viewer".into(),
            roles: Default::default(),
            audit_log: Some(self.dir.join("audit.jsonl")),
            max_flows: 1000,
            containment: Default::default(),
            read_limits: Default::default(),
            max_inventory_bytes: 1 << 20,
            own_namespace: false,
            audit_rotation: Default::default(),
            pod_info: None,
        }
    }

    fn start(&self) -> Core {
        self.start_with(self.config())
    }

    fn start_with(&self, cfg: Config) -> Core {
        let deps = Deps {
            kernel: Arc::new(self.kernel.clone()),
            clock: Arc::new(self.clock.clone()),
            collect_flows: false,
        };
        let (mut core, report) = Core::start(cfg, deps).expect("daemon starts");
        core.converged(&report);
        core
    }

    fn ns(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/fwdemo-{name}"))
    }

    fn table(&self, name: &str) -> fw_daemon::ruleset::Ruleset {
        self.kernel.table(&self.ns(name), TableFamily::Inet, TABLE).expect("programmed")
    }

    fn audit(&self) -> Vec<fw_proto::control::AuditRecord> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit line"))
            .collect()
    }
}

fn operator() -> Credentials {
    Credentials {
        peer: Peer { uid: 1000, gid: 1000, pid: 4242, user: "alice".into(), process: Some("fw-tui".into()) },
        gids: vec![1000],
    }
}

/// Sends one request through the event path and returns the answer.
fn request(core: &mut Core, op: Op) -> Result<Answer, (ErrorCode, String)> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    assert!(core.handle(vec![Event::Control(Command {
        op,
        who: operator(),
        role: Role::Operator,
        reply: tx
    })]));
    rx.try_recv().expect("answered before handle returned")
}

fn quarantine(container: &str, ttl_secs: Option<u64>) -> Op {
    Op::Block {
        target: BlockTarget::Quarantine { container: container.into(), direction: BlockDirection::Both },
        ttl_secs,
        ttl_ms: None,
        reason: Some("incident 7".into()),
    }
}

fn alerts_of(core: &Core, kind: AlertKind) -> Vec<fw_proto::control::Alert> {
    core.alerts().recent(None, None).into_iter().filter(|a| a.kind == kind).collect()
}

fn quarantine_elems(rs: &fw_daemon::ruleset::Ruleset) -> usize {
    rs.sets.iter().filter(|s| s.name.starts_with("quarantine")).map(|s| s.elements.len()).sum()
}

#[test]
fn a_block_is_applied_audited_persisted_and_expires_by_the_clock() {
    let w = world("lifecycle");
    let mut core = w.start();
    assert_eq!(quarantine_elems(&w.table("api-1")), 0);
    let Ok(Answer::Blocked { block }) = request(&mut core, quarantine("api-1", Some(60))) else {
        panic!("blocked")
    };
    assert_eq!(block.containers, ["api-1"]);
    // In api-1's table as elements with the block's expiry, nowhere else.
    let t = w.table("api-1");
    assert!(quarantine_elems(&t) > 0);
    assert!(t.sets.iter().any(|s| s.expires.values().any(|at| *at == T0 + 60_000)), "kernel-side expiry");
    assert_eq!(quarantine_elems(&w.table("web-1")), 0);
    // Audited with who and why; persisted; alerted.
    let rec = w.audit().into_iter().find(|r| r.op == AuditOp::Block).expect("a block record");
    assert_eq!(
        (rec.result, rec.reason.as_deref(), rec.block),
        (AuditResult::Ok, Some("incident 7"), Some(block.id))
    );
    assert_eq!(rec.peer.as_ref().map(|p| p.user.as_str()), Some("alice"));
    let saved = std::fs::read_to_string(w.dir.join("state/blocks.json")).unwrap();
    assert!(saved.contains("incident 7"), "{saved}");
    assert_eq!(alerts_of(&core, AlertKind::Blocked).len(), 1);
    // A restart restores it (the state file), before any request.
    drop(core);
    let mut core = w.start();
    assert_eq!(core.block_infos().len(), 1);
    // 59 s later it still holds; after 60 s the kernel dropped the elements and the daemon
    // forgets the block, records its expiry dated when it lapsed, and alerts.
    w.clock.advance(Duration::from_secs(59));
    core.resync();
    assert_eq!(core.block_infos().len(), 1);
    assert!(quarantine_elems(&w.table("api-1")) > 0);
    w.clock.advance(Duration::from_secs(2));
    core.resync();
    assert!(core.block_infos().is_empty());
    assert_eq!(quarantine_elems(&w.table("api-1")), 0);
    let exp = w.audit().into_iter().find(|r| r.op == AuditOp::Expire).expect("an expiry record");
    assert_eq!(exp.time_ms, T0 + 60_000);
    assert_eq!(alerts_of(&core, AlertKind::Unblocked).len(), 1);
    assert!(!std::fs::read_to_string(w.dir.join("state/blocks.json")).unwrap().contains("incident 7"));
}

#[test]
fn a_block_a_namespace_refuses_is_rolled_back_everywhere() {
    let w = world("rollback");
    let mut core = w.start();
    // Every web container is cut: web-2's namespace refuses the commit.
    w.kernel.refuse_commits(&w.ns("web-2"), libc::ENOMEM);
    let web1_before = w.table("web-1");
    let op = Op::Block {
        target: BlockTarget::Destination {
            scope: fw_proto::control::Scope::Zone("web".into()),
            net: "10.77.0.31/32".parse().unwrap(),
            proto: None,
            port: None,
        },
        ttl_secs: None,
        ttl_ms: None,
        reason: None,
    };
    let err = request(&mut core, op).expect_err("refused");
    assert_eq!(err.0, ErrorCode::Internal, "{err:?}");
    assert!(err.1.contains("web-2"), "{}", err.1);
    // web-1 took the block and gave it back: its table is what it was.
    assert_eq!(w.table("web-1"), web1_before);
    assert!(core.block_infos().is_empty());
    let rec = w.audit().into_iter().find(|r| r.op == AuditOp::Block).expect("the refusal is recorded");
    assert!(rec.result.to_string().starts_with("error: internal"), "{}", rec.result);
    assert!(
        !w.dir.join("state/blocks.json").exists() || {
            let s = std::fs::read_to_string(w.dir.join("state/blocks.json")).unwrap();
            !s.contains("10.77.0.31")
        }
    );
}

#[test]
fn without_an_audit_trail_a_request_changes_nothing() {
    let w = world("noaudit");
    let mut cfg = w.config();
    // A directory where the trail's file should be: every write fails.
    std::fs::create_dir_all(w.dir.join("audit-dir")).unwrap();
    cfg.audit_log = Some(w.dir.join("audit-dir"));
    let mut core = w.start_with(cfg);
    let before = w.table("api-1");
    let err = request(&mut core, quarantine("api-1", None)).expect_err("refused");
    assert_eq!(err.0, ErrorCode::AuditUnavailable, "{err:?}");
    assert_eq!(w.table("api-1"), before, "the elements went in and came out again");
    assert!(core.block_infos().is_empty());
}

#[test]
fn refused_rule_files_change_nothing_and_are_reported_once() {
    let w = world("reload");
    let mut core = w.start();
    let commits = w.kernel.commits(&w.ns("web-1")).len();
    let hash = core.status_info().policy_hash;
    std::fs::write(w.dir.join("rules/30-broken.toml"), "[[policy]]\nid = \"x\"\nfrom = \"nowhere\"\n")
        .unwrap();
    assert!(core.handle(vec![Event::Rules]));
    let st = core.status_info();
    assert_eq!(st.policy_hash, hash, "the last good policy stays");
    assert!(st.last_reload_errors[0].contains("30-broken.toml:"), "{:?}", st.last_reload_errors);
    assert_eq!(w.kernel.commits(&w.ns("web-1")).len(), commits, "no namespace touched");
    assert_eq!(alerts_of(&core, AlertKind::ReloadFailed).len(), 1);
    // The same errors again (an editor saving twice): not a second alert or record.
    assert!(core.handle(vec![Event::Rules]));
    assert_eq!(alerts_of(&core, AlertKind::ReloadFailed).len(), 1);
    assert_eq!(w.audit().iter().filter(|r| r.op == AuditOp::Reload).count(), 1);
    // Fixed: the same policy, said so; status clean again.
    std::fs::remove_file(w.dir.join("rules/30-broken.toml")).unwrap();
    assert!(core.handle(vec![Event::Rules]));
    assert!(core.status_info().last_reload_errors.is_empty());
    let fixed = alerts_of(&core, AlertKind::Reload);
    assert!(fixed.iter().any(|a| a.message.contains("rule files fixed")), "{fixed:?}");
}

#[test]
fn a_policy_change_is_enforced_and_audited_with_what_it_did() {
    let w = world("policy");
    let mut core = w.start();
    let policies = std::fs::read_dir(w.dir.join("rules")).unwrap().map(|e| e.unwrap().path());
    let file =
        policies.into_iter().find(|p| std::fs::read_to_string(p).unwrap().contains("web-to-api")).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"web-to-api\"", "\"web-to-api-v2\"")).unwrap();
    assert!(core.handle(vec![Event::Rules]));
    assert!(matches!(w.kernel.commits(&w.ns("web-1")).last(), Some(Commit::Replace { .. })));
    let rec = w.audit().into_iter().find(|r| r.op == AuditOp::Reload).expect("a reload record");
    assert_eq!(rec.result, AuditResult::Ok);
    assert!(rec.summary.as_deref().unwrap_or_default().contains("tables replaced"), "{rec:?}");
    assert_eq!(rec.policy_hash.as_deref(), Some(core.status_info().policy_hash.as_str()));
}

#[test]
fn a_tamperer_is_repaired_then_quarantined_and_spread_repairs_are_not_escalated() {
    let w = world("tamper");
    let mut core = w.start();
    let api1 = w.ns("api-1");
    let flush = |k: &FakeKernel| k.tamper(&api1, TableFamily::Inet, TABLE, |rs| rs.chains.clear());
    // Three repairs 20 s apart: outside any 10 s window, no escalation.
    for _ in 0..3 {
        flush(&w.kernel);
        assert!(core.handle(vec![Event::Drift("api-1".into())]));
        assert!(w.kernel.table(&api1, TableFamily::Inet, TABLE).is_some(), "repaired");
        w.clock.advance(Duration::from_secs(20));
    }
    assert!(core.block_infos().is_empty());
    // Three within 10 s: quarantined at the floor by the daemon, audited as its own act.
    for _ in 0..3 {
        flush(&w.kernel);
        assert!(core.handle(vec![Event::Drift("api-1".into())]));
        w.clock.advance(Duration::from_secs(1));
    }
    let blocks = core.block_infos();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].created_by, "fw-daemon tamper escalation");
    assert_eq!(alerts_of(&core, AlertKind::Escalated).len(), 1);
    let rec = w.audit().into_iter().find(|r| r.op == AuditOp::Block).unwrap();
    assert_eq!(rec.actor.as_deref(), Some("fw-daemon tamper escalation"));
    // Tamper alerts were limited to one per window, with the count.
    let tamper = alerts_of(&core, AlertKind::Tamper);
    assert!(tamper.len() <= 5, "{}", tamper.len());
    // Quarantined, its notifications wait for the periodic check: still repaired there.
    flush(&w.kernel);
    assert!(core.handle(vec![Event::Drift("api-1".into())]));
    assert!(w.kernel.table(&api1, TableFamily::Inet, TABLE).is_none(), "not chased on every change");
    core.tick();
    assert!(w.kernel.table(&api1, TableFamily::Inet, TABLE).is_some());
}

#[test]
fn an_inventory_change_is_an_element_update_for_peers() {
    let w = world("inventory");
    let mut core = w.start();
    let mut text = std::fs::read_to_string(w.dir.join("inventory.toml")).unwrap();
    text.push_str(
        "\n[[container]]\nname = \"web-3\"\nnetns = \"/run/netns/fwdemo-web-3\"\nimage = \"nginx:1.25\"\n\
         labels = { tier = \"web\" }\naddresses = [\"10.77.0.13\"]\n",
    );
    w.kernel.add_netns("/run/netns/fwdemo-web-3");
    std::fs::write(w.dir.join("inventory.toml"), text).unwrap();
    assert!(core.handle(vec![Event::Inventory]));
    assert!(matches!(w.kernel.commits(&w.ns("api-1")).last(), Some(Commit::Elements { added: 1, .. })));
    let t = w.table("api-1");
    assert!(t.set("z_web_4").unwrap().elements.contains(&SetElem::Addr("10.77.0.13".parse().unwrap())));
    assert!(core.status_info().containers.iter().any(|c| c.name == "web-3" && c.programmed));
}

#[test]
fn a_lapsed_block_is_no_duplicate_before_the_resync_notices() {
    let w = world("lapsed");
    let mut core = w.start();
    let Ok(Answer::Blocked { block: first }) = request(&mut core, quarantine("api-1", Some(1))) else {
        panic!("blocked")
    };
    // While it holds, the same block again is refused as a duplicate.
    let again = request(&mut core, quarantine("api-1", Some(1)));
    assert!(matches!(again, Err((ErrorCode::Conflict, _))), "{again:?}");
    // Its second is up: the kernel dropped its elements; no resync ran yet. Placing it again
    // is a new block, not "already blocked by" the lapsed one.
    w.clock.advance(Duration::from_millis(1500));
    let Ok(Answer::Blocked { block: second }) = request(&mut core, quarantine("api-1", Some(1))) else {
        panic!("the lapsed block still counted")
    };
    assert_ne!(first.id, second.id);
    assert!(
        w.audit().iter().any(|r| r.op == AuditOp::Expire && r.block == Some(first.id)),
        "its expiry is recorded"
    );
}

/// The node agent's two Kubernetes sources meet in one inventory: pods from the CRI
/// runtime (their tables), namespace labels and pods on other nodes from the API (zone
/// membership and peers). A skipped pod is alerted once, not at every snapshot.
#[test]
fn cri_pods_take_namespace_labels_and_remote_peers_from_the_api() {
    use fw_daemon::discovery::{cri, kube};
    use fw_daemon::inventory::{Container, KubeMeta};
    let w = world("kube");
    std::fs::write(
        w.dir.join("rules/00-k8s.toml"),
        "[zone.pay]\nmatch = { namespace_labels = { team = \"pay\" }, labels = { app = \"web\" } }\n\
         [zone.payapi]\nmatch = { namespace = \"shop\", labels = { app = \"api\" } }\n\
         [[policy]]\nid = \"pay-to-api\"\nfrom = \"pay\"\nto = \"payapi\"\nproto = \"tcp\"\nports = [8080]\naction = \"allow\"\n",
    )
    .unwrap();
    let mut core = w.start();
    let pod = |name: &str, netns: Option<&str>, app: &str, ip: &str| Container {
        name: name.into(),
        netns: netns.map(PathBuf::from),
        labels: vec![("app".into(), app.into())],
        addresses: vec![ip.parse().unwrap()],
        kube: Some(KubeMeta { namespace: "shop".into(), namespace_labels: Vec::new() }),
        ..Container::default()
    };
    w.kernel.add_netns("/run/netns/fwk-web");
    let web = pod("shop/web", Some("/run/netns/fwk-web"), "web", "10.99.0.2");
    let skipped = vec![cri::Skipped { pod: "kube-system/proxy".into(), why: cri::SkipReason::HostNetwork }];
    let snapshot = || cri::Update::Snapshot { pods: vec![web.clone()], skipped: skipped.clone() };
    assert!(core.handle(vec![Event::Cri(snapshot())]));
    assert!(core.handle(vec![Event::Cri(snapshot())]));
    let skips: Vec<_> = alerts_of(&core, AlertKind::Unenforced)
        .into_iter()
        .filter(|a| a.message.contains("kube-system/proxy"))
        .collect();
    assert_eq!(skips.len(), 1, "alerted once: {skips:?}");
    let zone = |core: &Core| {
        core.status_info()
            .containers
            .into_iter()
            .find(|c| c.name == "shop/web")
            .map(|c| (c.zone, c.programmed))
    };
    assert_eq!(zone(&core), Some(("default".into(), true)), "namespace labels unknown yet");

    let remote = pod("shop/api-0", None, "api", "10.99.1.5");
    // The API lists this node's pod too: the runtime's entry stays, once.
    let again = pod("shop/web", None, "web", "10.99.0.2");
    let namespaces = std::collections::BTreeMap::from([(
        "shop".to_string(),
        vec![("team".to_string(), "pay".to_string())],
    )]);
    // A Service in front of the remote pod: its address stands for it, on its target port.
    let service = fw_daemon::inventory::ServiceVip {
        name: "shop/api".into(),
        addresses: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![fw_daemon::inventory::ServicePort {
            proto: fw_daemon::inventory::SvcProto::Tcp,
            port: 80,
            backends: vec![("10.99.1.5".parse().unwrap(), 8080)],
            incomplete: false,
        }],
    };
    assert!(core.handle(vec![Event::Kube(kube::Update::Snapshot {
        namespaces,
        remote: vec![remote, again],
        services: vec![service],
        local_labels: Default::default(),
    })]));
    assert_eq!(zone(&core), Some(("pay".into(), true)), "the namespace's labels admit it to pay");
    let names: Vec<String> = core.status_info().containers.into_iter().map(|c| c.name).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("shop/")).collect::<Vec<_>>(),
        ["shop/web"],
        "remote pods are peers, not status rows"
    );
    let t = w.kernel.table(Path::new("/run/netns/fwk-web"), TableFamily::Inet, TABLE).expect("programmed");
    assert!(
        t.set("z_payapi_4")
            .is_some_and(|s| s.elements.contains(&SetElem::Addr("10.99.1.5".parse().unwrap()))),
        "the remote pod is a member of its zone's set"
    );
    let vip = SetElem::Tuple(vec![
        KeyValue::Addr("10.96.0.10".parse().unwrap()),
        KeyValue::Proto(6),
        KeyValue::Port(80),
    ]);
    assert!(
        t.sets.iter().any(|s| s.name.starts_with("vip_pay_p") && s.elements == [vip.clone()]),
        "the Service's address and port are decided by pay-to-api: {:?}",
        t.sets.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}
