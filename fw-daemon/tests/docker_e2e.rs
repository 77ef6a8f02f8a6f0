//! Docker end to end: `fw-daemon run --docker` discovers labelled busybox containers on an
//! `--internal` network, enforces a truth table with real connections, follows containers
//! that start and stop, and re-zones a container recreated with other labels. Docker is
//! started if installed but not running; the image is built with `docker import` from
//! Debian's busybox-static (images cannot be pulled here). A container that sends from its
//! first instant must not get through before it is programmed (the host-side floor). Everything
//! created is removed, even when the test fails.

mod common;

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::lab::{tcp_probe, Probe};
use fw_daemon::netns::run_in;

const IMAGE: &str = "fw-test-busybox:2";

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Docker reachable, starting dockerd if it is installed but not running.
fn docker_ready() -> bool {
    if !common::lab::available() {
        return false;
    }
    if docker(&["info"]).is_ok() {
        return true;
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        return false;
    }
    // Started as a service that outlives the test (through a shell, which we wait for).
    let log = std::env::temp_dir().join("fw-test-dockerd.log");
    let _ = Command::new("sh").arg("-c").arg(format!("dockerd >{} 2>&1 &", log.display())).status();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if docker(&["info"]).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

/// A one-binary image from busybox-static, built once per machine.
fn ensure_image() {
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fw-busybox-{}", std::process::id()));
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static installed (/bin/busybox)");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sleep")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/nc")).unwrap();
    let tar = dir.with_extension("tar");
    let st = Command::new("tar").arg("-C").arg(&dir).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(st.success(), "tar of the busybox root");
    let st = Command::new("docker").args(["import"]).arg(&tar).arg(IMAGE).output().unwrap();
    let _ = fs::remove_file(&tar);
    assert!(st.status.success(), "docker import: {}", String::from_utf8_lossy(&st.stderr));
    let _ = fs::remove_dir_all(&dir);
}

/// Containers and the network of one test, removed on drop.
struct Fleet {
    prefix: String,
    net: String,
    names: Vec<String>,
}

impl Fleet {
    fn new() -> Fleet {
        let prefix = format!("fwd{}", std::process::id());
        let net = format!("{prefix}-net");
        docker(&["network", "create", "--internal", &net]).expect("network");
        Fleet { prefix, net, names: Vec::new() }
    }

    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn run(&mut self, short: &str, labels: &[&str]) {
        self.run_cmd(short, labels, &["sleep", "3600"]);
    }

    fn run_cmd(&mut self, short: &str, labels: &[&str], cmd: &[&str]) {
        let name = self.name(short);
        let mut args = vec!["run", "-d", "--name", &name, "--network", &self.net];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(IMAGE);
        args.extend(cmd);
        docker(&args).expect("docker run");
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    fn rm(&self, short: &str) {
        docker(&["rm", "-f", &self.name(short)]).expect("docker rm");
    }

    fn netns(&self, short: &str) -> PathBuf {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.name(short)]).expect("inspect");
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    fn ip(&self, short: &str) -> IpAddr {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.net);
        docker(&["inspect", "-f", &f, &self.name(short)]).expect("inspect").parse().expect("container ip")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &self.net]);
    }
}

/// A TCP server inside a container's namespace, for as long as the test runs; returns the
/// peer address of every connection it accepted.
fn serve(netns: &Path, port: u16) -> Arc<Mutex<Vec<IpAddr>>> {
    let l = run_in(netns, move || TcpListener::bind(("0.0.0.0", port))).expect("netns").expect("bind");
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            if let Ok(p) = s.peer_addr() {
                seen.lock().unwrap().push(p.ip());
            }
            let _ = s.write_all(b"ok");
        }
    });
    peers
}

/// The host-side floor outlives the daemon by design (fail closed); a test removes its own.
struct HostGuardCleanup;

impl Drop for HostGuardCleanup {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "bridge", "fw_floor"]).output();
        let _ = Command::new("nft").args(["delete", "table", "bridge", "fw_guard"]).output();
    }
}

fn eventually(d: &Daemon, from: &Path, to: SocketAddr, want: Probe, what: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let got = tcp_probe(from, to, Duration::from_millis(300));
        if got == want {
            return;
        }
        if Instant::now() > until {
            let log = d.log();
            panic!("{what}: {to} is {got:?}, want {want:?}\n--- daemon log ---\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const RULES: &str = r#"
[zone.web]
match = { labels = { "fw.test/tier" = "web" } }

[zone.api]
match = { labels = { "fw.test/tier" = "api" } }

[zone.db]
match = { labels = { "fw.test/tier" = "db" } }

# db accepts anyone but web: while a new container's address is in no zone set yet, db's
# ingress lets it in, so only the sender's own egress (once programmed) or the host-side floor
# (before that) stops a new web container. This is what exposes the start-up window.
[[policy]]
id = "no-web-to-db"
from = "web"
to = "db"
proto = "tcp"
ports = 5432
action = "deny"

[[policy]]
id = "any-to-db"
from = "any"
to = "db"
proto = "tcp"
ports = 5432
action = "allow"

[[policy]]
id = "web-to-api"
from = "web"
to = "api"
proto = "tcp"
ports = 8080
action = "allow"
"#;

#[test]
#[ignore = "needs root"]
fn docker_containers_are_discovered_and_enforced() {
    if !common::require(docker_ready(), "a Docker engine (install docker.io; make test does)") {
        return;
    }
    ensure_image();
    let mut fleet = Fleet::new();
    fleet.run("web", &["fw.test/tier=web"]);
    fleet.run("api", &["fw.test/tier=api"]);
    fleet.run("db", &["fw.test/tier=db"]);
    let db_peers = serve(&fleet.netns("db"), 5432);
    serve(&fleet.netns("api"), 8080);
    let _cleanup = HostGuardCleanup;

    let dir = std::env::temp_dir().join(format!("fw-docker-e2e-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("rules")).unwrap();
    fs::write(dir.join("rules/zones.toml"), RULES).unwrap();
    let args: Vec<std::ffi::OsString> = ["run", "--docker", "--tick", "0.2", "--resync", "1"]
        .iter()
        .map(Into::into)
        .chain(["--rules".into(), dir.join("rules").into(), "--state-dir".into(), dir.join("state").into()])
        .collect();
    let d = Daemon::spawn(args, dir.join("daemon.log"));

    let db = SocketAddr::new(fleet.ip("db"), 5432);
    let api = SocketAddr::new(fleet.ip("api"), 8080);
    // Truth table.
    eventually(&d, &fleet.netns("web"), db, Probe::TimedOut, "web -> db denied");
    eventually(&d, &fleet.netns("api"), db, Probe::Connected, "api -> db allowed");
    eventually(&d, &fleet.netns("web"), api, Probe::Connected, "web -> api allowed");
    eventually(&d, &fleet.netns("db"), api, Probe::TimedOut, "db -> api denied");
    let table = Command::new("nsenter")
        .arg(format!("--net={}", fleet.netns("db").display()))
        .args(["nft", "list", "table", "inet", "fw"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("policy:any-to-db"), "db's table");

    // A container started under the daemon is enforced, and its peers learn it.
    fleet.run("api2", &["fw.test/tier=api"]);
    eventually(&d, &fleet.netns("api2"), db, Probe::Connected, "new api2 -> db allowed");
    eventually(
        &d,
        &fleet.netns("api2"),
        SocketAddr::new(fleet.ip("web"), 80),
        Probe::TimedOut,
        "api2 enforced",
    );

    // Recreated with other labels: web becomes api and may reach db.
    fleet.rm("web");
    fleet.run("web", &["fw.test/tier=api"]);
    eventually(&d, &fleet.netns("web"), db, Probe::Connected, "re-zoned web -> db allowed");

    // Fail closed from the first instant: a web container that hammers db from its first
    // instruction (denied by policy) never gets a connection through, neither before its
    // table is programmed (the floor drops its unadmitted port) nor after; an api one gets
    // through once programmed and admitted.
    let db_ip = fleet.ip("db").to_string();
    let hammer = format!("while :; do nc -w 1 {db_ip} 5432 </dev/null; done");
    let before = db_peers.lock().unwrap().len();
    fleet.run_cmd("eager-web", &["fw.test/tier=web"], &["sh", "-c", &hammer]);
    fleet.run_cmd("eager-api", &["fw.test/tier=api"], &["sh", "-c", &hammer]);
    let eager_web = fleet.ip("eager-web");
    let eager_api = fleet.ip("eager-api");
    let until = Instant::now() + Duration::from_secs(15);
    while !db_peers.lock().unwrap()[before..].contains(&eager_api) {
        assert!(Instant::now() < until, "eager-api never admitted\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let leaked = db_peers.lock().unwrap()[before..].iter().filter(|p| **p == eager_web).count();
    assert_eq!(leaked, 0, "eager-web reached db {leaked} times before or after programming\n{}", d.log());
    assert!(d.log().contains("floor programmed"), "{}", d.log());

    // A stopped container is forgotten.
    fleet.rm("api2");
    let until = Instant::now() + Duration::from_secs(15);
    while !d.log().contains("forgotten") {
        assert!(Instant::now() < until, "api2 not forgotten\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    drop(fleet);
    let _ = fs::remove_dir_all(&dir);
}
