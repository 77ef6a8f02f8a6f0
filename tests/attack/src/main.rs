//! `fw-attack`: one bounded attack per subcommand, run inside the namespace it attacks from
//! (`ip netns exec`, `docker exec`). Each prints one JSON line saying what it did and exits 0,
//! or prints `{"cmd":...,"error":...}` and exits 1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fw_attack::frame::{self, Eth, MacAddr, L4};
use fw_attack::link::{send_frames, Filter, Link};
use fw_attack::{net, tamper};
use pnet_packet::arp::ArpOperations;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "fw-attack",
    about = "Attacks on fw's containment, for its tests (bounded, lab targets only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hand-built UDP frames on an AF_PACKET socket (past the namespace's output hook)
    SendUdp(FrameArgs),
    /// Hand-built TCP SYN frames (with the token as SYN data)
    SendSyn(FrameArgs),
    /// IP packets of any protocol with a tiny payload, as frames or through a raw IP socket
    SendIp(IpArgs),
    /// ARP replies (or requests) claiming an address, e.g. another container's
    SendArp(ArpArgs),
    /// IPv6 neighbour advertisements claiming an address
    SendNa(NaArgs),
    /// Counts frames arriving on an interface (before the namespace's input hook)
    Read(ReadArgs),
    /// UDP through a plain socket (passes the output hook: a denied one is EPERM)
    Sendto(SendtoArgs),
    /// TCP connects in a loop from the first instant, each closed at once
    Connect(ConnectArgs),
    /// Keeps deleting fw's state over NETLINK_NETFILTER (needs CAP_NET_ADMIN)
    Tamper(TamperArgs),
}

#[derive(Args)]
struct Common {
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// Destination MAC, or `auto` (ARP / neighbour solicitation, answered raw)
    #[arg(long, default_value = "auto")]
    dst_mac: String,
    /// Source MAC [default: the interface's]
    #[arg(long)]
    src_mac: Option<String>,
    #[arg(long, default_value_t = 20)]
    count: u64,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
}

#[derive(Args)]
struct FrameArgs {
    #[command(flatten)]
    c: Common,
    #[arg(long)]
    dst_ip: IpAddr,
    #[arg(long)]
    dport: u16,
    #[arg(long, default_value_t = 40000)]
    sport: u16,
    /// Source IP [default: the interface's, of the destination's family]
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Marks every frame (`FWATK <token> <seq>` in the payload) for `read --token`
    #[arg(long, default_value = "fwatk")]
    token: String,
}

#[derive(Args)]
struct IpArgs {
    #[command(flatten)]
    c: Common,
    #[arg(long)]
    dst_ip: IpAddr,
    #[arg(long)]
    src_ip: Option<IpAddr>,
    #[arg(long, default_value_t = 253)]
    proto: u8,
    /// Payload bytes (0-3 leave no room for ports)
    #[arg(long, default_value_t = 0)]
    payload_len: usize,
    /// IPv4 identification of every frame, for `read --ip-id`
    #[arg(long, default_value_t = 0xf17a)]
    ip_id: u16,
    /// Through a raw IP socket (the output hook sees it) instead of AF_PACKET
    #[arg(long)]
    socket: bool,
}

#[derive(Args)]
struct ArpArgs {
    #[command(flatten)]
    c: Common,
    /// The address claimed as ours (another container's, for the spoof)
    #[arg(long)]
    claim_ip: Ipv4Addr,
    /// Whom the reply is addressed to; with `--dst-mac broadcast` a gratuitous reply
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Send requests instead of replies
    #[arg(long)]
    request: bool,
}

#[derive(Args)]
struct NaArgs {
    #[command(flatten)]
    c: Common,
    #[arg(long)]
    claim_ip: Ipv6Addr,
    /// Whom the advertisement goes to (ff02::1 for everyone)
    #[arg(long, default_value = "ff02::1")]
    dst_ip: Ipv6Addr,
}

#[derive(Args)]
struct ReadArgs {
    #[arg(long, default_value = "eth0")]
    iface: String,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    from_ip: Option<IpAddr>,
    #[arg(long)]
    from_mac: Option<String>,
    #[arg(long)]
    to_ip: Option<IpAddr>,
    #[arg(long)]
    proto: Option<u8>,
    #[arg(long)]
    ip_id: Option<u16>,
    #[arg(long)]
    arp_sender_ip: Option<Ipv4Addr>,
    #[arg(long)]
    na_target: Option<Ipv6Addr>,
}

#[derive(Args)]
struct SendtoArgs {
    #[arg(long)]
    dst: SocketAddr,
    #[arg(long, default_value_t = 5)]
    count: u64,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    #[arg(long, default_value = "fwatk")]
    token: String,
}

#[derive(Args)]
struct ConnectArgs {
    #[arg(long)]
    dst: SocketAddr,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 300)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
}

#[derive(Args)]
struct TamperArgs {
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 5)]
    interval_ms: u64,
    /// Sets of `table inet fw` flushed every round before the table is deleted
    #[arg(long = "flush-set", default_values_t = ["block_out4".to_string(), "block_out6".to_string(), "quarantine_out".to_string()])]
    sets: Vec<String>,
    /// Only flush the sets; leave the table (quieter than deleting it)
    #[arg(long)]
    only_sets: bool,
}

/// A failure with the subcommand's name, printed as JSON.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string())
    }
}

fn seconds(s: f64) -> Result<Duration, Fail> {
    if !(0.0..=3600.0).contains(&s) {
        return Err(Fail(format!("--seconds {s}: must be between 0 and 3600")));
    }
    Ok(Duration::from_secs_f64(s))
}

fn mac(s: &str) -> Result<MacAddr, Fail> {
    frame::parse_mac(s).ok_or_else(|| Fail(format!("{s:?} is not a MAC address")))
}

/// The link and the frame's Ethernet ends (resolving `auto` for `dst`).
fn eth(c: &Common, dst: IpAddr) -> Result<(Link, Eth), Fail> {
    let mut link = Link::open(&c.iface, false)?;
    let src = match &c.src_mac {
        Some(m) => mac(m)?,
        None => link.iface.mac,
    };
    let dst = match c.dst_mac.as_str() {
        "auto" => link
            .resolve(dst, Duration::from_secs(3))
            .ok_or_else(|| Fail(format!("no answer resolving {dst} on {}", c.iface)))?,
        "broadcast" => MacAddr::broadcast(),
        m => mac(m)?,
    };
    Ok((link, Eth { src, dst }))
}

fn src_ip(link: &Link, given: Option<IpAddr>, dst: IpAddr) -> Result<IpAddr, Fail> {
    given
        .or_else(|| match dst {
            IpAddr::V4(_) => link.iface.ipv4().map(IpAddr::V4),
            IpAddr::V6(_) => link.iface.ipv6().map(IpAddr::V6),
        })
        .ok_or_else(|| Fail(format!("{} has no address of {dst}'s family", link.iface.name)))
}

fn run(cmd: Cmd) -> Result<Value, Fail> {
    Ok(match cmd {
        Cmd::SendUdp(a) => frames(a, false)?,
        Cmd::SendSyn(a) => frames(a, true)?,
        Cmd::SendIp(a) => {
            if a.payload_len > 1400 {
                return Err(Fail("--payload-len at most 1400".into()));
            }
            let payload = vec![0xa5u8; a.payload_len];
            let interval = Duration::from_millis(a.c.interval_ms);
            if a.socket {
                let r = net::raw_ip_send(a.dst_ip, a.proto, &payload, a.c.count, interval);
                json!({"cmd": "send-ip", "via": "socket", "dst_ip": a.dst_ip, "proto": a.proto, "payload_len": a.payload_len, "result": r})
            } else {
                let (mut link, e) = eth(&a.c, a.dst_ip)?;
                let src = src_ip(&link, a.src_ip, a.dst_ip)?;
                let l4 = L4::Raw { proto: a.proto, payload: &payload };
                let f = frame::ip_frame(&e, src, a.dst_ip, &l4, a.ip_id)?;
                let r = send_frames(&mut link, a.c.count, interval, |_| f.clone());
                json!({"cmd": "send-ip", "via": "frame", "src_ip": src, "dst_ip": a.dst_ip, "dst_mac": e.dst.to_string(), "proto": a.proto, "payload_len": a.payload_len, "result": r})
            }
        }
        Cmd::SendArp(a) => {
            let (mut link, e) = eth(&a.c, IpAddr::V4(a.dst_ip))?;
            let op = if a.request { ArpOperations::Request } else { ArpOperations::Reply };
            let target_mac = if a.request { MacAddr::zero() } else { e.dst };
            let f = frame::arp(&e, op, (e.src, a.claim_ip), (target_mac, a.dst_ip));
            let r = send_frames(&mut link, a.c.count, Duration::from_millis(a.c.interval_ms), |_| f.clone());
            json!({"cmd": "send-arp", "claim_ip": a.claim_ip, "dst_ip": a.dst_ip, "dst_mac": e.dst.to_string(), "src_mac": e.src.to_string(), "result": r})
        }
        Cmd::SendNa(a) => {
            let mut link = Link::open(&a.c.iface, false)?;
            let src = a.c.src_mac.as_deref().map(mac).transpose()?.unwrap_or(link.iface.mac);
            let dst = match a.c.dst_mac.as_str() {
                "auto" if a.dst_ip.is_multicast() => {
                    let o = a.dst_ip.octets();
                    MacAddr::new(0x33, 0x33, o[12], o[13], o[14], o[15])
                }
                "auto" => link
                    .resolve(IpAddr::V6(a.dst_ip), Duration::from_secs(3))
                    .ok_or_else(|| Fail(format!("no answer resolving {}", a.dst_ip)))?,
                m => mac(m)?,
            };
            let from = link.iface.ipv6().ok_or_else(|| Fail("no IPv6 address".into()))?;
            let f = frame::ndp_na(&Eth { src, dst }, from, a.dst_ip, a.claim_ip, src);
            let r = send_frames(&mut link, a.c.count, Duration::from_millis(a.c.interval_ms), |_| f.clone());
            json!({"cmd": "send-na", "claim_ip": a.claim_ip, "dst_ip": a.dst_ip, "result": r})
        }
        Cmd::Read(a) => {
            let d = seconds(a.seconds)?;
            let filter = Filter {
                src_mac: a.from_mac.as_deref().map(mac).transpose()?,
                src_ip: a.from_ip,
                dst_ip: a.to_ip,
                proto: a.proto,
                ip_id: a.ip_id,
                arp_sender_ip: a.arp_sender_ip,
                na_target: a.na_target,
                ..a.token.as_deref().map(Filter::token).unwrap_or_default()
            };
            let reader = Link::open(&a.iface, true)?.into_reader(filter);
            std::thread::sleep(d);
            json!({"cmd": "read", "iface": a.iface, "counts": reader.finish()})
        }
        Cmd::Sendto(a) => {
            let payload = frame::token_payload(&a.token, 0);
            let r = net::udp_sendto(
                a.dst,
                &payload,
                a.count.min(1_000_000),
                Duration::from_millis(a.interval_ms),
            );
            json!({"cmd": "sendto", "dst": a.dst, "result": r})
        }
        Cmd::Connect(a) => {
            let r = net::connect_loop(
                a.dst,
                seconds(a.seconds)?,
                Duration::from_millis(a.timeout_ms.max(1)),
                Duration::from_millis(a.interval_ms.max(1)),
            );
            json!({"cmd": "connect", "dst": a.dst, "result": r})
        }
        Cmd::Tamper(a) => {
            let mut actions = tamper::default_actions(&a.sets);
            if a.only_sets {
                actions.truncate(a.sets.len());
            }
            let r = tamper::tamper_loop(&actions, seconds(a.seconds)?, Duration::from_millis(a.interval_ms));
            json!({"cmd": "tamper", "result": r})
        }
    })
}

fn frames(a: FrameArgs, syn: bool) -> Result<Value, Fail> {
    if a.c.count > 1_000_000 {
        return Err(Fail("--count at most 1000000".into()));
    }
    let (mut link, e) = eth(&a.c, a.dst_ip)?;
    let src = src_ip(&link, a.src_ip, a.dst_ip)?;
    let (dst, token, sport, dport) = (a.dst_ip, a.token.clone(), a.sport, a.dport);
    let mut err = None;
    let r = send_frames(&mut link, a.c.count, Duration::from_millis(a.c.interval_ms), |seq| {
        let p = frame::token_payload(&token, seq);
        let l4 = if syn {
            L4::TcpSyn { sport, dport, seq: seq as u32, payload: &p }
        } else {
            L4::Udp { sport, dport, payload: &p }
        };
        frame::ip_frame(&e, src, dst, &l4, seq as u16).unwrap_or_else(|x| {
            err.get_or_insert(x.to_string());
            Vec::new()
        })
    });
    if let Some(x) = err {
        return Err(Fail(x));
    }
    let cmd = if syn { "send-syn" } else { "send-udp" };
    Ok(
        json!({"cmd": cmd, "src_ip": src, "dst_ip": dst, "src_mac": e.src.to_string(), "dst_mac": e.dst.to_string(), "dport": dport, "token": a.token, "result": r}),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match &cli.cmd {
        Cmd::SendUdp(_) => "send-udp",
        Cmd::SendSyn(_) => "send-syn",
        Cmd::SendIp(_) => "send-ip",
        Cmd::SendArp(_) => "send-arp",
        Cmd::SendNa(_) => "send-na",
        Cmd::Read(_) => "read",
        Cmd::Sendto(_) => "sendto",
        Cmd::Connect(_) => "connect",
        Cmd::Tamper(_) => "tamper",
    };
    match run(cli.cmd) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(Fail(e)) => {
            println!("{}", json!({"cmd": name, "error": e}));
            ExitCode::FAILURE
        }
    }
}
