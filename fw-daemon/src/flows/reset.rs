//! Ending a cut TCP connection at both ends at once, so neither hangs:
//! - the remote end gets a reset built here (`tcp_rst`), sent in place of a held packet of the
//!   flow (an NFQUEUE verdict may replace the packet), with the sequence number it expects,
//!   since it never received the held bytes;
//! - the local socket is aborted through NETLINK_SOCK_DIAG `SOCK_DESTROY` (`SockDiag`): its
//!   application gets ECONNABORTED at once, and its own reset goes out as well.
//!
//! Anything the flow sends later meets the ruleset's cut chain (`compile`: resets pass, every
//! other packet is answered with a reset to its sender), which also repairs a first reset
//! that landed off-window: the peer's challenge ACK is answered with an exact one.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use crate::netns::{self, NetnsError};
use crate::nft::netlink::{messages, parse_ack};

const NETLINK_SOCK_DIAG: isize = 4;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IPPROTO_TCP: u8 = 6;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// A TCP RST+ACK from `src:sport` to `dst:dport` carrying `seq` and `ack`, as a whole IP
/// packet with both checksums computed (IPv4 or IPv6 after the addresses).
pub fn tcp_rst(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, seq: u32, ack: u32) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, TCP_RST | TCP_ACK, 0, 0, 0, 0, 0, 0]);
    let mut sum = Checksum::default();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum.add(&s.octets());
            sum.add(&d.octets());
            sum.add(&[0, IPPROTO_TCP, 0, 20]);
            sum.add(&tcp);
            tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let mut h = Checksum::default();
            h.add(&ip);
            ip[10..12].copy_from_slice(&h.finish().to_be_bytes());
            ip.extend_from_slice(&tcp);
            ip
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            let (s, d) = (v6(s), v6(d));
            sum.add(&s);
            sum.add(&d);
            sum.add(&[0, 0, 0, 20, 0, 0, 0, IPPROTO_TCP]);
            sum.add(&tcp);
            tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0, 0, 20, IPPROTO_TCP, 64];
            ip.extend_from_slice(&s);
            ip.extend_from_slice(&d);
            ip.extend_from_slice(&tcp);
            ip
        }
    }
}

/// The Internet checksum (RFC 1071) over byte runs of even length, except possibly the last.
#[derive(Default)]
struct Checksum(u32);

impl Checksum {
    fn add(&mut self, b: &[u8]) {
        for c in b.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            self.0 += u32::from(w);
        }
    }

    fn finish(mut self) -> u16 {
        while self.0 >> 16 != 0 {
            self.0 = (self.0 & 0xffff) + (self.0 >> 16);
        }
        !(self.0 as u16)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("sock_diag: {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

/// A NETLINK_SOCK_DIAG socket inside one namespace, for aborting local TCP sockets.
pub struct SockDiag {
    sock: netlink_sys::Socket,
    buf: Vec<u8>,
    seq: u32,
}

/// SOCK_DESTROY for the TCP socket whose local end is `local:lport` and remote end
/// `remote:rport` (`struct inet_diag_req_v2`, any state, no cookie check).
pub fn destroy_request(local: IpAddr, lport: u16, remote: IpAddr, rport: u16, seq: u32) -> Vec<u8> {
    let (family, l, r) = match (local, remote) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            let pad = |a: [u8; 4]| {
                let mut x = [0u8; 16];
                x[..4].copy_from_slice(&a);
                x
            };
            (libc::AF_INET as u8, pad(l.octets()), pad(r.octets()))
        }
        (l, r) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            (libc::AF_INET6 as u8, v6(l), v6(r))
        }
    };
    let mut b = Vec::with_capacity(16 + 56);
    b.extend_from_slice(&72u32.to_ne_bytes());
    b.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states (all)
    b.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: sport, dport (be16), src[4], dst[4] (be32 each), if, cookie[2]
    b.extend_from_slice(&lport.to_be_bytes());
    b.extend_from_slice(&rport.to_be_bytes());
    b.extend_from_slice(&l);
    b.extend_from_slice(&r);
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b
}

impl SockDiag {
    pub fn open(netns: &Path) -> Result<SockDiag, DiagError> {
        let mut sock = netns::netlink_socket(netns, NETLINK_SOCK_DIAG)?;
        sock.bind_auto().map_err(|source| DiagError::Io { what: "bind", source })?;
        setsockopt(&sock, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(1, 0))
            .map_err(|e| DiagError::Io { what: "timeout", source: e.into() })?;
        Ok(SockDiag { sock, buf: vec![0; 4096], seq: 0 })
    }

    /// Aborts the local TCP socket of a connection; `Ok(false)` when there is none (gone
    /// already, or the traffic was not a socket's: a raw sender).
    pub fn destroy(
        &mut self,
        local: IpAddr,
        lport: u16,
        remote: IpAddr,
        rport: u16,
    ) -> Result<bool, DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = destroy_request(local, lport, remote, rport, seq);
        self.sock.send(&req, 0).map_err(|source| DiagError::Io { what: "send", source })?;
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break
                }
                Err(source) => return Err(DiagError::Io { what: "receive", source }),
            };
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                if let Some(a) = parse_ack(&m) {
                    return Ok(a.errno == 0);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(sum_over: &[&[u8]]) -> u16 {
        let mut c = Checksum::default();
        for b in sum_over {
            c.add(b);
        }
        c.finish()
    }

    #[test]
    fn ipv4_reset_checksums_verify() {
        let p = tcp_rst("10.0.0.1".parse().unwrap(), 40000, "10.0.0.2".parse().unwrap(), 443, 7, 9);
        assert_eq!(p.len(), 40);
        assert_eq!(verify(&[&p[..20]]), 0, "IP header checksum");
        let pseudo = [&p[12..20], &[0, 6, 0, 20][..], &p[20..]];
        assert_eq!(verify(&pseudo), 0, "TCP checksum");
        let t = crate::inspect::packet::parse(&p).unwrap();
        assert_eq!((t.sport, t.dport, t.seq, t.flags, t.payload.len()), (40000, 443, 7, 0x14, 0));
    }

    #[test]
    fn ipv6_reset_checksum_verifies() {
        let p = tcp_rst("fd77::1".parse().unwrap(), 1, "fd77::2".parse().unwrap(), 2, u32::MAX, 0);
        assert_eq!(p.len(), 60);
        let pseudo = [&p[8..40], &[0, 0, 0, 20, 0, 0, 0, 6][..], &p[40..]];
        assert_eq!(verify(&pseudo), 0);
        assert!(crate::inspect::packet::parse(&p).is_some());
    }

    #[test]
    fn destroy_request_layout() {
        let r = destroy_request("10.0.0.1".parse().unwrap(), 443, "10.0.0.2".parse().unwrap(), 40000, 5);
        assert_eq!(r.len(), 72);
        assert_eq!(&r[16..20], &[libc::AF_INET as u8, 6, 0, 0]);
        assert_eq!(&r[24..28], &[1, 187, 0x9c, 0x40]);
        assert_eq!(&r[28..32], &[10, 0, 0, 1]);
        assert_eq!(&r[44..48], &[10, 0, 0, 2]);
    }
}
