//! ICMP probes from inside a lab namespace over a raw socket (no `ping` binary needed): an
//! echo or timestamp request to an address, and whether its reply came back in time.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::lab::Probe;

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// Echo request (ICMP 8, ICMPv6 128); the reply is an echo reply.
    Echo,
    /// Timestamp request (ICMP 13, IPv4 only); Linux answers it with a timestamp reply.
    Timestamp,
}

impl IcmpKind {
    /// (request, reply) types for the family.
    fn types(self, v6: bool) -> (u8, u8) {
        match (self, v6) {
            (IcmpKind::Echo, false) => (8, 0),
            (IcmpKind::Echo, true) => (128, 129),
            (IcmpKind::Timestamp, false) => (13, 14),
            (IcmpKind::Timestamp, true) => panic!("ICMPv6 has no timestamp request"),
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one request from inside `from` to `dst` and waits for its reply: `Connected` when
/// it came, `TimedOut` when nothing did.
pub fn icmp_probe(from: &Path, dst: IpAddr, kind: IcmpKind, timeout: Duration) -> Probe {
    fw_daemon::netns::run_in(from, move || {
        let v6 = dst.is_ipv6();
        let (domain, proto) =
            if v6 { (Domain::IPV6, Protocol::ICMPV6) } else { (Domain::IPV4, Protocol::ICMPV4) };
        let sock = Socket::new(domain, Type::RAW, Some(proto)).expect("raw ICMP socket (root)");
        // Connected: the kernel hands this socket only what `dst` sends.
        sock.connect(&SockAddr::from(SocketAddr::new(dst, 0)))
            .unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst) ^ (std::process::id() as u16);
        let (request, reply) = kind.types(v6);
        let mut pkt = vec![request, 0, 0, 0];
        pkt.extend(id.to_be_bytes());
        pkt.extend(1u16.to_be_bytes());
        match kind {
            IcmpKind::Echo => pkt.extend(b"fw-probe"),
            IcmpKind::Timestamp => pkt.extend([0u8; 12]),
        }
        // The kernel fills in ICMPv6 checksums (they cover a pseudo-header); ICMP's are ours.
        if !v6 {
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        if sock.send(&pkt).is_err() {
            return Probe::Refused;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok(n) = (&sock).read(&mut buf) else { continue };
            // A raw IPv4 socket hands over the IP header too.
            let data = if v6 {
                &buf[..n]
            } else {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                &buf[ihl.min(n)..n]
            };
            if data.len() >= 8 && data[0] == reply && data[4..6] == id.to_be_bytes() {
                return Probe::Connected;
            }
        }
        Probe::TimedOut
    })
    .expect("enter netns")
}
