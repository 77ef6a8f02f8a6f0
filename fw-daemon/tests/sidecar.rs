//! `fw-daemon run --self`, the sidecar mode: the daemon runs inside a pod's network
//! namespace with CAP_NET_ADMIN and nothing else, and programs that namespace alone, as the
//! one container the pod's downward API describes. Here the pod is a lab namespace: the
//! daemon is started in it with `nsenter --net`, in a PID namespace of its own (`unshare`,
//! as a pod's), and `setpriv` dropping every other capability, as a container with
//! `capabilities: { add: [NET_ADMIN], drop: [ALL] }` is. Real probes from another node
//! check what it enforces. And it refuses the host's namespace, or one it cannot tell from
//! the host's.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::client::Client;
use common::daemon::{eventually, Daemon};
use common::lab::{has_fw_table, tcp_probe, Lab, Probe};

const RULES: &str = r#"
[defaults]
action = "deny"

[zone.api]
match = { namespace = "prod", labels = { app = "api" } }

[zone.clients]
cidrs = ["10.81.0.3/32"]

[[policy]]
id = "clients-to-api"
from = "clients"
to = "api"
proto = "tcp"
ports = [8080]
action = "allow"
"#;

fn available() -> bool {
    let tools =
        ["nsenter", "setpriv", "unshare"].iter().all(|t| Command::new(t).arg("--version").output().is_ok());
    common::require(common::lab::available() && tools, "root, iproute2, nsenter, unshare and setpriv")
}

#[test]
#[ignore = "needs root"]
fn a_sidecar_with_net_admin_alone_programs_its_own_namespace_only() {
    if !available() {
        return;
    }
    let mut lab = Lab::new();
    lab.add("pod", &["10.81.0.2".parse().unwrap()]);
    lab.add("client", &["10.81.0.3".parse().unwrap()]);
    lab.add("other", &["10.81.0.4".parse().unwrap()]);
    lab.serve_tcp("pod", &[8080, 9090]);
    let dir = common::work_dir("sidecar", "1");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/zones.toml"), RULES).unwrap();
    // The downward API volume: labels as kubelet writes them, the name and namespace.
    let info = dir.join("podinfo");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("labels"), "app=\"api\"\npod-template-hash=\"7f9c\"\n").unwrap();
    std::fs::write(info.join("name"), "api-7f9c-x2").unwrap();
    std::fs::write(info.join("namespace"), "prod").unwrap();

    let pod = lab.node("pod").path();
    let wrapper: Vec<std::ffi::OsString> = [
        "nsenter".to_string(),
        format!("--net={}", pod.display()),
        // A pod's own PID namespace: no kthreadd in it, so no host to tell apart.
        "unshare".into(),
        "--pid".into(),
        "--fork".into(),
        "--mount-proc".into(),
        "--kill-child".into(),
        "setpriv".into(),
        "--inh-caps=-all,+net_admin".into(),
        "--ambient-caps=-all,+net_admin".into(),
        "--bounding-set=-all,+net_admin".into(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    let args: Vec<std::ffi::OsString> = [
        "run".into(),
        "--self".into(),
        "--pod-info".into(),
        info.clone().into_os_string(),
        "--rules".into(),
        dir.join("rules").into_os_string(),
        "--state-dir".into(),
        dir.join("state").into_os_string(),
        "--socket-group".into(),
        "root".into(),
        "--tick".into(),
        "0.2".into(),
        "--resync".into(),
        "0.5".into(),
    ]
    .to_vec();
    let d = Daemon::spawn_via(&wrapper, args, dir.join("daemon.log"));
    d.wait_ready();
    let mut c = Client::connect(&d.socket);
    let s = eventually("the pod programmed", &d, || {
        let s = c.status();
        s.containers.iter().any(|x| x.programmed).then_some(s)
    });
    assert_eq!(s.containers.len(), 1, "one container, the pod itself: {:?}", s.containers);
    let me = &s.containers[0];
    assert_eq!(
        (me.name.as_str(), me.zone.as_str()),
        ("api-7f9c-x2", "api"),
        "identity from the downward API"
    );
    assert_eq!(me.addresses, vec!["10.81.0.2".parse::<std::net::IpAddr>().unwrap()]);

    let client = lab.node("client").path();
    let at = |port| SocketAddr::new("10.81.0.2".parse().unwrap(), port);
    let wait = Duration::from_millis(500);
    assert_eq!(
        tcp_probe(&client, at(8080), wait),
        Probe::Connected,
        "clients -> api:8080 allowed\n{}",
        d.log_tail(30)
    );
    assert_eq!(tcp_probe(&client, at(9090), wait), Probe::TimedOut, "api:9090 is denied by default");
    let other = lab.node("other").path();
    assert_eq!(tcp_probe(&other, at(8080), wait), Probe::TimedOut, "a peer outside `clients` is denied");

    // Its own namespace only: no other namespace got a table, and nothing on the bridge.
    assert!(has_fw_table(&lab.node("pod").ns), "the pod's own table");
    for n in ["client", "other"] {
        assert!(!has_fw_table(&lab.node(n).ns), "{n} was not touched");
    }
    let hub =
        Command::new("ip").args(["netns", "exec", lab.hub_ns(), "nft", "list", "tables"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&hub.stdout).trim().is_empty(),
        "no floor: the host side is not the sidecar's"
    );
    // It ran with CAP_NET_ADMIN alone (bit 12), in every set: the daemon is unshare's child.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", d.pid())).expect("children");
    let daemon = children.split_whitespace().next().expect("the daemon under unshare");
    let status = std::fs::read_to_string(format!("/proc/{daemon}/status")).expect("daemon status");
    let caps = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
    };
    assert_eq!((caps("CapEff:"), caps("CapBnd:")), (Some(1 << 12), Some(1 << 12)), "{status}");
    // Relabelled: kubelet rewrites the labels file, and the pod leaves zone api, no restart.
    std::fs::write(info.join(".labels.tmp"), "app=\"batch\"\n").unwrap();
    std::fs::rename(info.join(".labels.tmp"), info.join("labels")).unwrap();
    eventually("the relabelled pod leaves zone api", &d, || {
        (c.status().containers.first().map(|x| x.zone.clone()).as_deref() == Some("default")).then_some(())
    });
    eventually("clients -> api:8080 denied once it is no longer api", &d, || {
        (tcp_probe(&client, at(8080), wait) == Probe::TimedOut).then_some(())
    });
    let log = d.log();
    assert!(!log.contains("NET_ADMIN, SYS_ADMIN") && !log.contains("panicked"), "{log}");
    drop(d);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// `--self` where it would be the host's: refused before anything is programmed, both when
/// the namespace is the host's and when it cannot be told from the host's (no
/// CAP_SYS_PTRACE to compare it with kthreadd's). The daemon runs here, in the test's own
/// namespace, so it gets no CAP_NET_ADMIN at all: were the refusal gone it could program
/// nothing, and would fail later with another error.
#[test]
#[ignore = "needs root"]
fn self_mode_refuses_the_host_namespace_and_one_it_cannot_tell_apart() {
    if !available() {
        return;
    }
    let host = std::fs::read_link("/proc/2/ns/net").ok() == std::fs::read_link("/proc/self/ns/net").ok()
        && std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if !common::require(host, "running in the host's network and PID namespaces") {
        return;
    }
    let dir = common::work_dir("sidecar", "host");
    let info = dir.join("podinfo");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("name"), "api-0").unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    for (caps, says) in [
        ("+sys_ptrace", "this is the host's network namespace"),
        ("", "cannot compare its network namespace"),
    ] {
        let set = format!("-all{}", if caps.is_empty() { String::new() } else { format!(",{caps}") });
        let out = Command::new("setpriv")
            .args([
                format!("--inh-caps={set}"),
                format!("--ambient-caps={set}"),
                format!("--bounding-set={set}"),
            ])
            .arg(common::daemon::bin())
            .args(["run", "--self", "--pod-info"])
            .arg(&info)
            .arg("--rules")
            .arg(dir.join("rules.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("fw.sock"))
            .output()
            .expect("run fw-daemon");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "refused (caps {set}): {err}");
        assert!(err.contains("error: --self:") && err.contains(says), "caps {set}: {err}");
    }
    assert!(!has_fw_table_here(), "the host's namespace has no table of fw's");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the namespace the test runs in has an `inet fw` table (read through nft, which
/// only reads).
fn has_fw_table_here() -> bool {
    let out = Command::new("nft").args(["list", "table", "inet", "fw"]).output().expect("nft");
    out.status.success()
}
