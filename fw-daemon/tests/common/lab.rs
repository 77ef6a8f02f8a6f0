//! A network lab for real-packet tests: one namespace per node, each joined by a veth pair to
//! a bridge inside its own namespace. Addresses live only inside the lab and nothing has a
//! default route, so test traffic cannot leave. Names are unique per lab (parallel tests) and
//! everything is removed on drop, even when a test fails.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fw_daemon::inventory::Inventory;
use fw_daemon::netns::run_in;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Whether this process can build labs (root with iproute2); see `common::require`.
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

pub struct Node {
    pub name: String,
    pub ns: String,
    pub addrs: Vec<IpAddr>,
}

impl Node {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns))
    }
}

pub struct Lab {
    prefix: String,
    bridge: String,
    pub nodes: Vec<Node>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Lab {
    pub fn new() -> Lab {
        let prefix = format!("fwt{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge]);
        let lab = Lab {
            prefix,
            bridge,
            nodes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        ip(&["-n", &lab.bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.bridge, "link", "set", "br0", "up"]);
        lab
    }

    /// Adds a node with addresses in 10.77.0.0/16 and fd77::/32 (the demo's lab ranges).
    pub fn add(&mut self, name: &str, addrs: &[IpAddr]) -> &Node {
        let ns = format!("{}-{}", self.prefix, name);
        ip(&["netns", "add", &ns]);
        let port = format!("p{}", self.nodes.len());
        ip(&["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &self.bridge]);
        ip(&["-n", &self.bridge, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for a in addrs {
            let cidr = match a {
                IpAddr::V4(_) => format!("{a}/16"),
                IpAddr::V6(_) => format!("{a}/32"),
            };
            let mut args = vec!["-n", &ns, "addr", "add", &cidr, "dev", "eth0"];
            if a.is_ipv6() {
                args.push("nodad"); // usable at once, no duplicate-address wait
            }
            ip(&args);
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.nodes.push(Node { name: name.to_string(), ns, addrs: addrs.to_vec() });
        self.nodes.last().expect("just pushed")
    }

    /// The namespace holding the bridge: the host side of every node's link.
    pub fn hub_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.bridge))
    }

    pub fn hub_ns(&self) -> &str {
        &self.bridge
    }

    /// The bridge port of `node` in the hub (the peer of its eth0).
    pub fn port(&self, node: &str) -> String {
        let i =
            self.nodes.iter().position(|n| n.name == node).unwrap_or_else(|| panic!("no lab node {node}"));
        format!("p{i}")
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no lab node {name}"))
    }

    /// The inventory with every container's netns pointing into this lab; containers
    /// without a lab node keep no netns.
    /// The node's first address.
    pub fn addr(&self, node: &str) -> IpAddr {
        self.node(node).addrs[0]
    }

    /// A TCP connection from `from` to `to` that stays open.
    pub fn connect(&self, from: &str, to: SocketAddr) -> TcpStream {
        run_in(&self.node(from).path(), move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .expect("enter the namespace")
            .expect("connect")
    }

    /// Inventory TOML for the lab's nodes, each described by the container of the same
    /// name in `base` (image, labels) at the node's namespace and addresses.
    pub fn inventory_toml(&self, base: &Inventory) -> String {
        let mut inv = String::new();
        for n in &self.nodes {
            let c = base.get(&n.name).expect("a container of that name");
            let addrs: Vec<String> = c.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
            inv.push_str(&format!(
                "[[container]]\nname = \"{}\"\nnetns = \"{}\"\nimage = \"{}\"\nlabels = {{ {} }}\naddresses = [{}]\n\n",
                n.name,
                n.path().display(),
                c.image,
                labels.join(", "),
                addrs.join(", ")
            ));
        }
        inv
    }

    pub fn inventory(&self, base: &Inventory) -> Inventory {
        let mut inv = base.clone();
        for c in &mut inv.containers {
            c.netns = self.nodes.iter().find(|n| n.name == c.name).map(|n| n.path());
        }
        inv
    }

    /// TCP listeners on every port, accepting and closing, inside `node`.
    pub fn serve_tcp(&mut self, node: &str, ports: &[u16]) {
        let path = self.node(node).path();
        for &port in ports {
            let l = run_in(&path, move || TcpListener::bind(("::", port)))
                .expect("enter netns")
                .expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            let stop = self.stop.clone();
            self.servers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(b"ok");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
    }

    /// A TCP server that keeps every accepted connection open until the lab is dropped.
    pub fn serve_tcp_hold(&mut self, node: &str, port: u16) {
        let path = self.node(node).path();
        let l =
            run_in(&path, move || TcpListener::bind(("::", port))).expect("enter netns").expect("bind tcp");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = self.stop.clone();
        self.servers.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// A TCP sink: counts every byte received on `port`, returned as a shared counter.
    pub fn serve_sink(&mut self, node: &str, port: u16) -> Arc<std::sync::atomic::AtomicU64> {
        let path = self.node(node).path();
        let l =
            run_in(&path, move || TcpListener::bind(("::", port))).expect("enter netns").expect("bind tcp");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = self.stop.clone();
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t = total.clone();
        self.servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            t.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            }
        }));
        total
    }

    /// UDP echo servers on every port inside `node`.
    pub fn serve_udp(&mut self, node: &str, ports: &[u16]) {
        let path = self.node(node).path();
        for &port in ports {
            let s =
                run_in(&path, move || UdpSocket::bind(("::", port))).expect("enter netns").expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
            let stop = self.stop.clone();
            self.servers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            }));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
        // Deleting a namespace removes its veth end, and with it the peer in the bridge.
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.bridge]).status();
    }
}

/// Outcome of one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Connected,
    /// Refused: a TCP reset or an ICMP error came back.
    Refused,
    /// Nothing came back in time: dropped.
    TimedOut,
}

/// Connects over TCP from inside `from` and reads the server's greeting.
pub fn tcp_probe(from: &Path, dst: SocketAddr, timeout: Duration) -> Probe {
    run_in(from, move || match TcpStream::connect_timeout(&dst, timeout) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(timeout));
            let mut b = [0u8; 2];
            match s.read_exact(&mut b) {
                Ok(()) => Probe::Connected,
                Err(_) => Probe::TimedOut,
            }
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::ConnectionRefused
                || e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            Probe::Refused
        }
        Err(_) => Probe::TimedOut,
    })
    .expect("enter netns")
}

/// Sends a datagram from inside `from` and waits for the echo.
pub fn udp_probe(from: &Path, dst: SocketAddr, timeout: Duration) -> Probe {
    run_in(from, move || {
        let bind: SocketAddr =
            if dst.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let s = UdpSocket::bind(bind).expect("bind");
        s.set_read_timeout(Some(timeout)).expect("timeout");
        if s.connect(dst).is_err() || s.send(b"probe").is_err() {
            return Probe::Refused;
        }
        let mut b = [0u8; 16];
        match s.recv(&mut b) {
            Ok(_) => Probe::Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
            Err(_) => Probe::TimedOut,
        }
    })
    .expect("enter netns")
}

/// `nft` run inside a lab namespace (tests may use the CLI; the daemon never does).
pub fn nft_in(node: &Node, args: &[&str]) -> String {
    let out =
        Command::new("ip").args(["netns", "exec", &node.ns, "nft"]).args(args).output().expect("run nft");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the named namespace holds a `table inet fw` (asked with the nft client).
pub fn has_fw_table(ns: &str) -> bool {
    let out =
        Command::new("ip").args(["netns", "exec", ns, "nft", "list", "tables"]).output().expect("run nft");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "table inet fw")
}
