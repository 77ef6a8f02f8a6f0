//! The Kubernetes node agent against a real CRI runtime: `fw-daemon run --cri-socket` on an
//! own containerd (see `common::cri`), whose sandboxes are created here the way the kubelet
//! creates them (`RunPodSandbox` with the pod's labels and the kubelet's identity labels).
//! The daemon finds each pod, names it `namespace/name`, zones it by Kubernetes namespace
//! and labels, and programs its network namespace and the host side of its veth (in the
//! node's namespace); real connections between the pods agree with `fw-daemon explain`.
//! No kube-apiserver is involved: the CRI side is the real one.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::client::Client;
use common::cri::{Pod, Runtime};
use common::daemon::{eventually, Daemon};
use common::lab::{tcp_probe, Probe};
use fw_proto::control::AlertKind;

const RULES: &str = r#"
[defaults]
action = "deny"

[zone.web]
match = { namespace = "shop", labels = { app = "web" } }

[zone.api]
match = { namespace = "shop", labels = { app = "api" } }

# Every pod of a batch-* namespace, whatever its labels say.
[zone.batch]
match = { namespace = "batch-*" }

[[policy]]
id = "web-to-api"
from = "web"
to = "api"
proto = "tcp"
ports = [8080]
action = "allow"
"#;

/// `fw-daemon run` on the runtime's pods, fast timers, rules and state in `dir`.
fn daemon_args(cri: &Runtime, dir: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["run", "--no-docker", "--cri-poll", "0.2", "--tick", "0.2", "--socket-group", "root"]
            .map(Into::into)
            .to_vec();
    for (flag, value) in [
        ("--cri-socket", cri.socket.clone()),
        ("--rules", dir.join("rules")),
        ("--state-dir", dir.join("state")),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.extend(extra.iter().map(Into::into));
    args
}

/// A listener on `port` inside `netns` that answers and closes, until the test ends.
fn serve(netns: &Path, port: u16) {
    let l = fw_daemon::netns::run_in(netns, move || TcpListener::bind(("0.0.0.0", port)))
        .expect("enter the pod's namespace")
        .expect("bind");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Write;
            let _ = (&s).write_all(b"ok");
        }
    });
}

/// `fw-daemon explain` over an inventory of the pods as the test made them: 0 allowed.
fn explain(dir: &Path, from: &str, to: &str, port: u16) -> bool {
    let out = Command::new(common::daemon::bin())
        .arg("explain")
        .arg(dir.join("rules"))
        .arg("--inventory")
        .arg(dir.join("pods.toml"))
        .args(["--from", from, "--to", to, "--proto", "tcp", "--port", &port.to_string(), "--exit-code"])
        .output()
        .expect("run explain");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("explain failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn inventory_entry(name: &str, ns: &str, labels: &[(&str, &str)], pod: &Pod) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    format!(
        "[[container]]\nname = \"{ns}/{name}\"\nkubernetes_namespace = \"{ns}\"\nlabels = {{ {} }}\naddresses = [\"{}\"]\n\n",
        labels.join(", "),
        pod.ip
    )
}

#[test]
#[ignore = "needs root"]
fn pods_of_a_real_containerd_are_programmed_by_namespace_and_labels() {
    if !common::require(common::lab::available() && common::cri::tools_present(), common::cri::NEEDS) {
        return;
    }
    let mut cri = Runtime::start("pods", "10.89.0.0/24");
    let web_l = [("app", "web")];
    let api_l = [("app", "api")];
    let web = cri.run_pod("shop", "web", &web_l, false);
    let api = cri.run_pod("shop", "api", &api_l, false);
    // Labelled like web, but in a batch namespace: the namespace selector decides.
    let job = cri.run_pod("batch-1", "job", &web_l, false);
    let hostnet = cri.run_pod("kube-system", "node-exporter", &[("app", "exporter")], true);
    serve(&api.netns, 8080);
    serve(&api.netns, 9090);

    let dir = common::work_dir("cri-daemon", "pods");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/pods.toml"), RULES).unwrap();
    let mut inv = String::new();
    inv += &inventory_entry("web", "shop", &web_l, &web);
    inv += &inventory_entry("api", "shop", &api_l, &api);
    inv += &inventory_entry("job", "batch-1", &web_l, &job);
    std::fs::write(dir.join("pods.toml"), inv).unwrap();

    let args = daemon_args(&cri, &dir, &[]);
    let d = Daemon::spawn(args, dir.join("daemon.log"));
    d.wait_ready();
    let mut c = Client::connect(&d.socket);
    let zones = |c: &mut Client| -> Vec<(String, String, bool)> {
        let mut z: Vec<_> =
            c.status().containers.into_iter().map(|x| (x.name, x.zone, x.programmed)).collect();
        z.sort();
        z
    };
    let want = vec![
        ("batch-1/job".to_string(), "batch".to_string(), true),
        ("shop/api".into(), "api".into(), true),
        ("shop/web".into(), "web".into(), true),
    ];
    eventually("the three pods programmed", &d, || (zones(&mut c) == want).then_some(()));
    let s = c.status();
    let floor_of =
        |n: &str| s.containers.iter().find(|x| x.name == n).map(|x| x.floor.clone()).unwrap_or_default();
    assert!(
        !floor_of("shop/web").is_empty(),
        "the host side of the pod's veth is floored: {:?}",
        s.containers
    );

    // Real connections agree with explain, both ways of the verdict.
    let wait = Duration::from_millis(700);
    for (from, from_name, port) in
        [(&web, "shop/web", 8080), (&web, "shop/web", 9090), (&job, "batch-1/job", 8080)]
    {
        let expected = explain(&dir, from_name, "shop/api", port);
        let got = tcp_probe(&from.netns, SocketAddr::new(api.ip, port), wait);
        assert_eq!(
            got == Probe::Connected,
            expected,
            "{from_name} -> shop/api:{port}: probe {got:?}, explain says allowed={expected}\n{}",
            d.log_tail(30)
        );
    }
    assert!(explain(&dir, "shop/web", "shop/api", 8080), "the allowed case is exercised");

    // The hostNetwork pod: reported, never programmed (its namespace is the node's).
    let alerts = c.alerts(None, None);
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::Unenforced && a.message.contains("kube-system/node-exporter")),
        "{alerts:?}"
    );
    assert!(!s.containers.iter().any(|x| x.name.contains("node-exporter")));
    assert!(
        !common::lab::has_fw_table(&cri.node_ns),
        "the node's namespace (where the hostNetwork pod lives) got no container table"
    );
    drop(hostnet);

    // A deleted pod is forgotten; its replacement with other labels is zoned anew (a
    // relabel in Kubernetes is a new sandbox to the runtime).
    cri.remove_pod(&api.id);
    let api2 = cri.run_pod("shop", "api", &web_l, false);
    eventually("the recreated pod zoned by its new labels", &d, || {
        let z = zones(&mut c);
        z.contains(&("shop/api".to_string(), "web".to_string(), true)).then_some(())
    });
    serve(&api2.netns, 8080);
    assert_eq!(
        tcp_probe(&web.netns, SocketAddr::new(api2.ip, 8080), wait),
        Probe::TimedOut,
        "web -> web is not allowed\n{}",
        d.log_tail(30)
    );
    cri.remove_pod(&job.id);
    eventually("a removed pod forgotten", &d, || {
        (!zones(&mut c).iter().any(|(n, _, _)| n == "batch-1/job")).then_some(())
    });
}

const API_RULES: &str = r#"
[defaults]
action = "deny"

# Only the API server knows a namespace's labels.
[zone.web]
match = { namespace_labels = { team = "pay" }, labels = { app = "web" } }

[zone.api]
match = { labels = { app = "api" } }

[[policy]]
id = "web-to-api"
from = "web"
to = "api"
proto = "tcp"
ports = [8080]
action = "allow"
"#;

/// A peer "on another node": a namespace of the test's on the node's bridge, with a
/// listener; the API stand-in says which pod it is.
struct Remote {
    ns: String,
}

/// `ip ARGS`, which must succeed.
fn sh(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Remote {
    /// A fresh namespace `ns` with `eth0` (`ip`/24, up) whose peer `host` is in the node's.
    fn wire(node_ns: &str, ns: &str, host: &str, ip: &str) {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        sh(&["netns", "add", ns]);
        sh(&["-n", node_ns, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        sh(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        sh(&["-n", ns, "link", "set", "eth0", "up"]);
        sh(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn new(node_ns: &str, ip: &str) -> Remote {
        let ns = format!("fwkr-{}", std::process::id());
        let host = format!("fwkrh{}", std::process::id() % 100000);
        Self::wire(node_ns, &ns, &host, ip);
        sh(&["-n", node_ns, "link", "set", &host, "master", "fwcri0", "up"]);
        Remote { ns }
    }

    /// A pod on another node reached through the node's routing (as across nodes): its own
    /// link to the node's namespace, `ip`/24 with the node at `.1` of it, and a route back
    /// to the node's pod subnet only.
    fn routed(node_ns: &str, ip: &str, pods: &str) -> Remote {
        let ns = format!("fwks-{}", std::process::id());
        let host = format!("fwksh{}", std::process::id() % 100000);
        Self::wire(node_ns, &ns, &host, ip);
        let via = format!("{}.1", ip.rsplit_once('.').expect("an IPv4 address").0);
        sh(&["-n", node_ns, "addr", "add", &format!("{via}/24"), "dev", &host]);
        sh(&["-n", node_ns, "link", "set", &host, "up"]);
        sh(&["-n", &ns, "route", "add", pods, "via", &via]);
        Remote { ns }
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.ns).into()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// The API side: namespace labels decide a local pod's zone, a pod on another node is a
/// peer in its zone, and both follow the API's watch events. The API server is a local
/// stand-in (common::kube_api); the runtime and the packets are real. The daemon runs in
/// the node's namespace, as a hostNetwork DaemonSet pod does, where the stand-in listens.
#[test]
#[ignore = "needs root"]
fn namespace_labels_and_remote_pods_come_from_the_api_server() {
    if !common::require(common::lab::available() && common::cri::tools_present(), common::cri::NEEDS) {
        return;
    }
    let mut cri = Runtime::start("api", "10.88.0.0/24");
    let api = common::kube_api::ApiServer::start(Path::new(&format!("/run/netns/{}", cri.node_ns)));
    api.namespace("shop", &[("team", "pay")]);
    let web = cri.run_pod("shop", "web", &[("app", "web")], false);
    // The API lists this node's pods too; they come from the runtime (field selector).
    api.pod("shop", "web", "node-a", &[("app", "web")], &web.ip.to_string());
    let remote = Remote::new(&cri.node_ns, "10.88.0.250");
    serve(&remote.path(), 8080);

    let dir = common::work_dir("cri-daemon", "api");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/pods.toml"), API_RULES).unwrap();
    let wrapper: Vec<std::ffi::OsString> =
        vec!["nsenter".into(), format!("--net=/run/netns/{}", cri.node_ns).into()];
    let api_url = api.url();
    let args = daemon_args(&cri, &dir, &["--kube-api", &api_url, "--node-name", "node-a"]);
    let d = Daemon::spawn_via(&wrapper, args, dir.join("daemon.log"));
    d.wait_ready();
    let mut c = Client::connect(&d.socket);
    let zone_of = |c: &mut Client, n: &str| {
        c.status().containers.into_iter().find(|x| x.name == n).map(|x| (x.zone, x.programmed))
    };
    eventually("shop/web zoned by its namespace's labels", &d, || {
        (zone_of(&mut c, "shop/web") == Some(("web".into(), true))).then_some(())
    });
    let to_remote = SocketAddr::new("10.88.0.250".parse().unwrap(), 8080);
    let wait = Duration::from_millis(500);
    assert_eq!(
        tcp_probe(&web.netns, to_remote, wait),
        Probe::TimedOut,
        "an address no source names is in no zone: denied\n{}",
        d.log_tail(20)
    );

    // The API announces the pod on node-b: it joins zone api, and web may reach it.
    api.pod("shop", "api-0", "node-b", &[("app", "api")], "10.88.0.250");
    eventually("web -> the remote api pod allowed", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::Connected).then_some(())
    });
    let names: Vec<String> = c.status().containers.into_iter().map(|x| x.name).collect();
    assert_eq!(names, ["shop/web"], "this node's pod once; a remote pod is a peer, not a container here");

    // The namespace loses its label: web is no longer zone web, and is denied.
    api.namespace("shop", &[]);
    eventually("shop/web leaves zone web", &d, || {
        (zone_of(&mut c, "shop/web").map(|z| z.0).as_deref() == Some("default")).then_some(())
    });
    eventually("web -> api denied again", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::TimedOut).then_some(())
    });
    // Labelled again, then the remote pod deleted in the API: no longer a peer in zone api.
    api.namespace("shop", &[("team", "pay")]);
    eventually("web -> api allowed again", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::Connected).then_some(())
    });
    // `kubectl label pod web app=other`: the runtime keeps the sandbox's labels, the API has
    // the new ones, and they decide the zone on this node too.
    api.pod("shop", "web", "node-a", &[("app", "other")], &web.ip.to_string());
    eventually("shop/web relabelled out of zone web", &d, || {
        (zone_of(&mut c, "shop/web").map(|z| z.0).as_deref() == Some("default")).then_some(())
    });
    eventually("and denied", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::TimedOut).then_some(())
    });
    api.pod("shop", "web", "node-a", &[("app", "web")], &web.ip.to_string());
    eventually("relabelled back", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::Connected).then_some(())
    });
    api.delete_pod("shop", "api-0");
    eventually("the deleted remote pod is no peer", &d, || {
        (tcp_probe(&web.netns, to_remote, wait) == Probe::TimedOut).then_some(())
    });
    drop(d);
    drop(remote);
}

/// Services: a pod connects to a ClusterIP, and the node rewrites it to an endpoint after
/// the pod's own table has judged it, so the VIP and its port must count as the zone of the
/// endpoints behind them (EndpointSlices), on the port each forwards to. The test plays
/// kube-proxy itself: a DNAT rule in the node's namespace (the one the test created), and
/// the endpoint is a pod "on another node" behind the node's routing. The API server is the
/// local stand-in (common::kube_api); the runtime, the NAT and the packets are real.
#[test]
#[ignore = "needs root"]
fn a_service_address_is_judged_as_the_zone_of_its_endpoints() {
    if !common::require(common::lab::available() && common::cri::tools_present(), common::cri::NEEDS) {
        return;
    }
    let mut cri = Runtime::start("svc", "10.87.0.0/24");
    let node = format!("/run/netns/{}", cri.node_ns);
    let api = common::kube_api::ApiServer::start(Path::new(&node));
    api.namespace("shop", &[("team", "pay")]);
    let web = cri.run_pod("shop", "web", &[("app", "web")], false);
    let other = cri.run_pod("shop", "other", &[("app", "other")], false);
    let remote = Remote::routed(&cri.node_ns, "10.86.0.2", "10.87.0.0/24");
    serve(&remote.path(), 8080);
    serve(&remote.path(), 9090);
    // The node routes between its pods' bridge and the other node, and NATs Service
    // addresses to endpoints as kube-proxy's nftables mode does.
    let sh = |cmd: &mut Command| {
        let out = cmd.output().expect("run");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(Command::new("ip").args(["-n", &cri.node_ns, "addr", "add", "10.87.0.1/24", "dev", "fwcri0"]));
    sh(Command::new("ip").args(["netns", "exec", &cri.node_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    for pod in [&web, &other] {
        for dst in ["10.96.0.0/16", "10.86.0.0/24"] {
            sh(Command::new("nsenter").arg(format!("--net={}", pod.netns.display())).args([
                "ip",
                "route",
                "add",
                dst,
                "via",
                "10.87.0.1",
            ]));
        }
    }
    let mut nft = Command::new("ip");
    nft.args(["netns", "exec", &cri.node_ns, "nft", "-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = nft.spawn().expect("nft");
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"table ip fwtest_proxy {\n chain pre {\n type nat hook prerouting priority dstnat;\n\
          ip daddr 10.96.0.10 tcp dport 80 dnat to 10.86.0.2:8080\n\
          ip daddr 10.96.0.10 tcp dport 81 dnat to 10.86.0.2:9090\n }\n}\n",
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "the test's DNAT");

    let dir = common::work_dir("cri-daemon", "svc");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/pods.toml"), RULES).unwrap();
    let wrapper: Vec<std::ffi::OsString> = vec!["nsenter".into(), format!("--net={node}").into()];
    let api_url = api.url();
    let args = daemon_args(&cri, &dir, &["--kube-api", &api_url, "--node-name", "node-a"]);
    let d = Daemon::spawn_via(&wrapper, args, dir.join("daemon.log"));
    d.wait_ready();
    let wait = Duration::from_millis(500);
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let direct = SocketAddr::new(ip("10.86.0.2"), 8080);
    let vip = |port| SocketAddr::new(ip("10.96.0.10"), port);
    api.pod("shop", "api-0", "node-b", &[("app", "api")], "10.86.0.2");
    eventually("web -> the api pod on node-b, directly", &d, || {
        (tcp_probe(&web.netns, direct, wait) == Probe::Connected).then_some(())
    });
    // What main did: the VIP is in no zone, so every policy to a Service failed.
    assert_eq!(
        tcp_probe(&web.netns, vip(80), wait),
        Probe::TimedOut,
        "a VIP the API has not described is in no zone: denied\n{}",
        d.log_tail(20)
    );

    api.service("shop", "api", "10.96.0.10", &[("http", 80, 8080), ("admin", 81, 9090)]);
    api.endpoint_slice("shop", "api-x1", "api", &[("http", 8080), ("admin", 9090)], &["10.86.0.2"]);
    eventually("web -> the api Service allowed, as web -> api:8080 is", &d, || {
        (tcp_probe(&web.netns, vip(80), wait) == Probe::Connected).then_some(())
    });
    assert_eq!(tcp_probe(&web.netns, vip(81), wait), Probe::TimedOut, "port 81 goes to 9090: denied");
    assert_eq!(tcp_probe(&other.netns, vip(80), wait), Probe::TimedOut, "zone default has no policy to api");
    assert_eq!(tcp_probe(&other.netns, direct, wait), Probe::TimedOut);

    // explain, over an inventory saying what the API said, agrees.
    std::fs::write(
        dir.join("pods.toml"),
        inventory_entry("web", "shop", &[("app", "web")], &web)
            + "[[container]]\nname = \"shop/api-0\"\nkubernetes_namespace = \"shop\"\nlabels = { app = \"api\" }\naddresses = [\"10.86.0.2\"]\n\n\
               [[service]]\nname = \"shop/api\"\naddresses = [\"10.96.0.10\"]\n\
               ports = [{ port = 80, target = 8080 }, { port = 81, target = 9090 }]\nendpoints = [\"10.86.0.2\"]\n",
    )
    .unwrap();
    assert!(explain(&dir, "shop/web", "10.96.0.10", 80), "explain: web -> VIP:80 allowed");
    assert!(!explain(&dir, "shop/web", "10.96.0.10", 81), "explain: web -> VIP:81 denied");

    // The floor on web's port judges the VIP the same way: its table holds the set.
    let floor = Command::new("ip")
        .args(["netns", "exec", &cri.node_ns, "nft", "list", "ruleset"])
        .output()
        .expect("nft list");
    let floor = String::from_utf8_lossy(&floor.stdout);
    assert!(floor.contains("table bridge") && floor.contains("10.96.0.10 . tcp . 80"), "{floor}");

    // The endpoints move to an address no source names: the VIP follows them.
    api.endpoint_slice("shop", "api-x1", "api", &[("http", 8080), ("admin", 9090)], &["10.86.0.3"]);
    eventually("web -> the Service denied once its endpoint is in no zone", &d, || {
        (tcp_probe(&web.netns, vip(80), wait) == Probe::TimedOut).then_some(())
    });
    api.endpoint_slice("shop", "api-x1", "api", &[("http", 8080), ("admin", 9090)], &["10.86.0.2"]);
    eventually("allowed again", &d, || {
        (tcp_probe(&web.netns, vip(80), wait) == Probe::Connected).then_some(())
    });
    api.delete_service("shop", "api");
    eventually("a deleted Service's address is in no zone", &d, || {
        (tcp_probe(&web.netns, vip(80), wait) == Probe::TimedOut).then_some(())
    });
    drop(d);
    drop(remote);
}

/// The runtime restarts (an upgrade on the node): the daemon keeps enforcing what it
/// knows while the socket is gone, says so, and picks up where it was when it is back.
#[test]
#[ignore = "needs root"]
fn a_runtime_restart_loses_nothing() {
    if !common::require(common::lab::available() && common::cri::tools_present(), common::cri::NEEDS) {
        return;
    }
    let mut cri = Runtime::start("restart", "10.87.0.0/24");
    let web = cri.run_pod("shop", "web", &[("app", "web")], false);
    let dir = common::work_dir("cri-daemon", "restart");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/pods.toml"), RULES).unwrap();
    let d = Daemon::spawn(daemon_args(&cri, &dir, &[]), dir.join("daemon.log"));
    d.wait_ready();
    let mut c = Client::connect(&d.socket);
    let programmed = |c: &mut Client| -> Vec<String> {
        let mut v: Vec<String> =
            c.status().containers.into_iter().filter(|x| x.programmed).map(|x| x.name).collect();
        v.sort();
        v
    };
    eventually("shop/web programmed", &d, || (programmed(&mut c) == ["shop/web"]).then_some(()));

    cri.stop_runtime();
    eventually("the daemon notices the runtime is gone", &d, || {
        d.log().contains("cri source unavailable").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(programmed(&mut c), ["shop/web"], "what is known stays enforced\n{}", d.log_tail(20));
    assert!(common::lab::has_fw_table(web.netns.file_name().unwrap().to_str().unwrap()), "its table stays");

    cri.start_runtime();
    cri.run_pod("shop", "api", &[("app", "api")], false);
    eventually("reconnected: the new pod programmed, the old one kept", &d, || {
        (programmed(&mut c) == ["shop/api", "shop/web"]).then_some(())
    });
}
