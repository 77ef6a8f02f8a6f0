//! NFLOG records from a container's namespace: the drops, audit would-drops, cap hits and
//! logged allows that the ruleset sends to its log group, each carrying `fw:<kind>:<rule id>`.
//! The socket is opened inside the namespace (a group is per namespace); parsing is plain,
//! bounds-checked byte work over hostile input.

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::Packet;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::nl::{self, attrs, messages, Builder, Recv, NETLINK_NETFILTER, NLM_F_ACK};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;

/// NFLOG speaks through the one netlink layer, and fails with its error.
pub type NflogError = nl::Error;

/// What the rule that logged said about the packet: `fw:<kind>:<rule id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: String,
    pub rule: String,
}

impl Tag {
    pub fn parse(prefix: &str) -> Option<Tag> {
        let rest = prefix.strip_prefix("fw:")?;
        let (kind, rule) = rest.split_once(':')?;
        Some(Tag { kind: kind.to_string(), rule: rule.to_string() })
    }
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub prefix: String,
    pub tag: Option<Tag>,
    /// Egress packets have an out device, ingress packets an in device.
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The packet from its IP header, as far as the rule's snap length and the listener's
    /// copy range allow, and at most the `keep` bytes asked of the parser; empty for
    /// listeners that keep none (drop logging reads headers only).
    pub payload: Vec<u8>,
}

/// Parses the NFLOG packet messages in a receive buffer; anything malformed is skipped.
pub fn parse_records(buf: &[u8]) -> Vec<LogRecord> {
    parse_records_keeping(buf, 0)
}

/// [`parse_records`], keeping up to `keep` bytes of each packet in `payload`.
pub fn parse_records_keeping(buf: &[u8], keep: usize) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for m in messages(buf) {
        if m.ty != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            continue;
        }
        let Some(body) = m.payload.get(4..) else { continue };
        let mut r = LogRecord {
            prefix: String::new(),
            tag: None,
            indev: None,
            outdev: None,
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            payload: Vec::new(),
        };
        for (ty, v) in attrs(body) {
            match ty {
                NFULA_PREFIX => {
                    r.prefix =
                        String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
                }
                NFULA_IFINDEX_INDEV => {
                    r.indev = v.get(0..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                }
                NFULA_IFINDEX_OUTDEV => {
                    r.outdev = v.get(0..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                }
                NFULA_PAYLOAD => {
                    parse_ip(v, &mut r);
                    if keep > 0 {
                        r.payload = v[..v.len().min(keep)].to_vec();
                    }
                }
                _ => {}
            }
        }
        r.tag = Tag::parse(&r.prefix);
        out.push(r);
    }
    out
}

fn parse_ip(p: &[u8], r: &mut LogRecord) {
    let (proto, l4): (u8, &[u8]) = match p.first().map(|b| b >> 4) {
        Some(4) => {
            let Some(ip) = Ipv4Packet::new(p) else { return };
            let hl = usize::from(ip.get_header_length()) * 4;
            r.src = Some(IpAddr::V4(ip.get_source()));
            r.dst = Some(IpAddr::V4(ip.get_destination()));
            (ip.get_next_level_protocol().0, p.get(hl.max(20)..).unwrap_or(&[]))
        }
        Some(6) => {
            let Some(ip) = Ipv6Packet::new(p) else { return };
            r.src = Some(IpAddr::V6(ip.get_source()));
            r.dst = Some(IpAddr::V6(ip.get_destination()));
            (ip.get_next_header().0, p.get(40..).unwrap_or(&[]))
        }
        _ => return,
    };
    r.proto = Some(proto);
    if proto == IpNextHeaderProtocols::Tcp.0 {
        if let Some(t) = TcpPacket::new(l4) {
            r.sport = Some(t.get_source());
            r.dport = Some(t.get_destination());
            let _ = t.payload();
        }
    } else if proto == IpNextHeaderProtocols::Udp.0 {
        if let Some(u) = UdpPacket::new(l4) {
            r.sport = Some(u.get_source());
            r.dport = Some(u.get_destination());
        }
    }
}

/// A bound NFLOG group inside one namespace.
pub struct Nflog {
    sock: nl::Socket,
    /// Payload bytes kept per record (0: none).
    keep: usize,
}

/// Bytes of each packet a drop-logging listener asks for: headers are all it reads.
pub const HEADERS_ONLY: u32 = 256;

const NFULA_CFG_QTHRESH: u16 = 5;

/// Bind + copy mode, and with `qthresh` how many records the kernel may batch before it sends
/// them (its default is up to 100 or one second, whichever first).
fn config_msg(group: u16, seq: u32, copy_range: u32, qthresh: Option<u32>) -> Vec<u8> {
    let mut b = Builder::with_capacity(56);
    // nfgenmsg: AF_UNSPEC, version 0, res_id: the group.
    b.nfnl((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_ACK, seq, 0, group);
    // NFULA_CFG_CMD { command: BIND }.
    b.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    // NFULA_CFG_MODE { copy_range: be32, copy_mode: u8, pad }.
    let mut mode = copy_range.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    b.attr(NFULA_CFG_MODE, &mode);
    if let Some(q) = qthresh {
        b.attr(NFULA_CFG_QTHRESH, &q.to_be_bytes());
    }
    b.finish()
}

impl Nflog {
    /// Binds NFLOG `group` inside the namespace at `netns`. Only one listener per group and
    /// namespace: a second bind fails with EBUSY.
    pub fn open(netns: &Path, group: u16, rcvbuf: usize) -> Result<Nflog, NflogError> {
        Nflog::open_copying(netns, group, rcvbuf, HEADERS_ONLY, 0)
    }

    /// [`Nflog::open`] asking the kernel for `copy_range` bytes of each packet and keeping
    /// up to `keep` of them in each record's `payload` (the inspection listener). Records are
    /// sent one by one, never held back for a batch: a copy that waited the kernel's default
    /// flush interval (one second) would let a violating flow run that long.
    pub fn open_copying(
        netns: &Path,
        group: u16,
        rcvbuf: usize,
        copy_range: u32,
        keep: usize,
    ) -> Result<Nflog, NflogError> {
        let mut sock = nl::Socket::open(netns, NETLINK_NETFILTER, 1 << 16)?;
        // A flood must not overflow the socket before the daemon reads it.
        sock.set_rcvbuf(rcvbuf);
        let qthresh = (keep > 0).then_some(1);
        let seq = sock.next_seq();
        sock.request_ack(
            &config_msg(group, seq, copy_range, qthresh),
            seq,
            Duration::from_secs(2),
            "nflog bind",
        )?;
        Ok(Nflog { sock, keep })
    }

    /// Non-blocking mode, for a runtime that waits for readiness: `recv` then never waits.
    pub fn set_nonblocking(&self) -> Result<(), NflogError> {
        self.sock.set_nonblocking()
    }

    /// Waits up to `timeout` for records; an empty vec means none arrived. `Overrun`: the
    /// kernel dropped records (the socket keeps working).
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<LogRecord>, NflogError> {
        match self.sock.recv(timeout, "nflog receive")? {
            Recv::Data(n) => Ok(parse_records_keeping(self.sock.buf(n), self.keep)),
            Recv::Empty => Ok(Vec::new()),
            Recv::Overrun => {
                Err(NflogError::Overrun { netns: self.sock.netns().to_path_buf(), what: "nflog" })
            }
        }
    }
}

impl AsRawFd for Nflog {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for Nflog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_parse() {
        assert_eq!(
            Tag::parse("fw:audit:batch-to-db"),
            Some(Tag { kind: "audit".into(), rule: "batch-to-db".into() })
        );
        assert_eq!(Tag::parse("fw:deny:web->db:tcp/5432").unwrap().rule, "web->db:tcp/5432");
        assert_eq!(Tag::parse("other"), None);
    }

    proptest! {
        #[test]
        fn records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse_records(&bytes);
            for r in parse_records_keeping(&bytes, 100) {
                prop_assert!(r.payload.len() <= 100);
            }
            let mut r = LogRecord { prefix: String::new(), tag: None, indev: None, outdev: None, src: None, dst: None, proto: None, sport: None, dport: None, payload: Vec::new() };
            parse_ip(&bytes, &mut r);
        }
    }
}
