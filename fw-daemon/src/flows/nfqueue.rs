//! NFQUEUE over NETLINK_NETFILTER (subsystem NFNL_SUBSYS_QUEUE) inside one container's
//! namespace: bind queue numbers, receive queued packets, answer each with a verdict. A
//! queue is per namespace, so the socket is opened on a thread that entered it (`netns`).
//! Parsing is plain, bounds-checked byte work over kernel input.
//!
//! Kernel behaviour this relies on (measured on 6.18, tests/inline.rs):
//! - a packet waits in the kernel until its verdict; verdicts may come in any order;
//! - when the socket closes (the daemon stops or is killed) every packet still waiting is
//!   dropped; with no listener bound a rule without `bypass` drops, one with it accepts;
//! - `NF_REPEAT` runs the packet through the same base chain again from its first rule;
//! - a verdict may replace the packet (`NFQA_PAYLOAD`); the checksums are then ours to get
//!   right (the kernel marks the packet CHECKSUM_NONE).

use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use crate::netns::{self, NetnsError};
use crate::nft::netlink::{attrs, messages, parse_ack};

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
/// Queue full (or the socket overrun): accept instead of drop.
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 0x01;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NF_INET_LOCAL_IN: u8 = 1;
const NF_INET_LOCAL_OUT: u8 = 3;
/// The largest copy range the kernel takes (NFQNL_MAX_COPY_RANGE).
pub const MAX_COPY: u32 = 0xffff;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("nfqueue: {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("nfqueue {queue}: the kernel refused to bind: {}", std::io::Error::from_raw_os_error(*.errno))]
    Bind { queue: u16, errno: i32 },
}

/// Where a queued packet was when it was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Arriving for a local socket (the ingress chain).
    Input,
    /// Leaving a local socket (the egress chain).
    Output,
    Other(u8),
}

/// One packet waiting for a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub queue: u16,
    pub id: u32,
    pub hook: Hook,
    /// The packet mark: the rule put the connection's mark there (`inspect::mark`).
    pub mark: u32,
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// From the IP header, at most the copy range.
    pub payload: Vec<u8>,
    /// The packet's length when the copy was cut short.
    pub cap_len: Option<u32>,
}

/// What happens to a queued packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Through the same base chain again, from its first rule.
    Repeat,
    /// Accept this packet instead (a whole IP packet, checksums filled in).
    AcceptAs(Vec<u8>),
}

/// Parses the packet messages in a receive buffer; anything malformed is skipped.
pub fn parse_packets(buf: &[u8]) -> Vec<Queued> {
    let mut out = Vec::new();
    for m in messages(buf) {
        if m.ty != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            continue;
        }
        // nfgenmsg: family, version, res_id (the queue number, big-endian).
        let Some(g) = m.payload.get(..4) else { continue };
        let queue = u16::from_be_bytes([g[2], g[3]]);
        let mut q = Queued {
            queue,
            id: 0,
            hook: Hook::Other(0),
            mark: 0,
            indev: None,
            outdev: None,
            payload: Vec::new(),
            cap_len: None,
        };
        let mut has_hdr = false;
        for (ty, v) in attrs(&m.payload[4..]) {
            let be32 = || v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match ty {
                NFQA_PACKET_HDR => {
                    // { be32 packet_id; be16 hw_protocol; u8 hook; }
                    let (Some(id), Some(&hook)) = (be32(), v.get(6)) else { continue };
                    q.id = id;
                    q.hook = match hook {
                        NF_INET_LOCAL_IN => Hook::Input,
                        NF_INET_LOCAL_OUT => Hook::Output,
                        h => Hook::Other(h),
                    };
                    has_hdr = true;
                }
                NFQA_MARK => q.mark = be32().unwrap_or(0),
                NFQA_IFINDEX_INDEV => q.indev = be32(),
                NFQA_IFINDEX_OUTDEV => q.outdev = be32(),
                NFQA_PAYLOAD => q.payload = v.to_vec(),
                NFQA_CAP_LEN => q.cap_len = be32(),
                _ => {}
            }
        }
        if has_hdr {
            out.push(q);
        }
    }
    out
}

fn header(out: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16) {
    out.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    out.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[0, 0]); // nfgenmsg: AF_UNSPEC, version 0
    out.extend_from_slice(&queue.to_be_bytes());
}

fn attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Bind `queue` in packet-copy mode with the given flags (`NFQA_CFG_F_*`) and length.
pub fn config_msg(queue: u16, seq: u32, copy_range: u32, maxlen: u32, flags: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(72);
    header(&mut b, NFQNL_MSG_CONFIG, NLM_F_ACK, seq, queue);
    attr(&mut b, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]); // command, pad, be16 pf (unused)
    let mut params = copy_range.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    attr(&mut b, NFQA_CFG_PARAMS, &params);
    attr(&mut b, NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes());
    attr(&mut b, NFQA_CFG_FLAGS, &flags.to_be_bytes());
    attr(&mut b, NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes());
    finish(&mut b, 0);
    b
}

/// Appends the verdict message for packet `id` of `queue` to `out` (several go in one send).
/// `mark`: the packet mark to leave on it (the rule overwrote the owner's with the
/// connection's; 0 clears it).
pub fn verdict_msg(out: &mut Vec<u8>, queue: u16, id: u32, v: &Verdict, mark: Option<u32>) {
    const NF_DROP: u32 = 0;
    const NF_ACCEPT: u32 = 1;
    const NF_REPEAT: u32 = 4;
    let start = out.len();
    header(out, NFQNL_MSG_VERDICT, 0, 0, queue);
    let code = match v {
        Verdict::Accept | Verdict::AcceptAs(_) => NF_ACCEPT,
        Verdict::Drop => NF_DROP,
        Verdict::Repeat => NF_REPEAT,
    };
    let mut hdr = code.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    attr(out, NFQA_VERDICT_HDR, &hdr);
    if let Some(m) = mark {
        attr(out, NFQA_MARK, &m.to_be_bytes());
    }
    if let Verdict::AcceptAs(p) = v {
        attr(out, NFQA_PAYLOAD, p);
    }
    finish(out, start);
}

/// Bound queues inside one namespace.
pub struct NfQueue {
    sock: netlink_sys::Socket,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Receive-buffer overruns seen (the kernel dropped, or with fail-open accepted, packets
    /// it could not hand over).
    pub overruns: u64,
}

impl NfQueue {
    /// Binds each `(queue, flags)` in the namespace at `netns`. One listener per queue and
    /// namespace: a second bind fails with EBUSY.
    pub fn open(
        netns: &Path,
        queues: &[(u16, u32)],
        rcvbuf: usize,
        maxlen: u32,
    ) -> Result<NfQueue, QueueError> {
        let mut sock = netns::netlink_socket(netns, NETLINK_NETFILTER)?;
        let io = |what| move |source| QueueError::Io { what, source };
        sock.bind_auto().map_err(io("bind"))?;
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &rcvbuf);
        // Verdicts carry whole packets at times; ENOBUFS on them would lose a verdict.
        let _ = setsockopt(&sock, sockopt::SndBufForce, &(1usize << 20));
        setsockopt(&sock, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))
            .map_err(|e| QueueError::Io { what: "timeout", source: e.into() })?;
        let mut buf = vec![0u8; 1 << 17];
        for (i, &(queue, flags)) in queues.iter().enumerate() {
            let seq = i as u32 + 1;
            sock.send(&config_msg(queue, seq, MAX_COPY, maxlen, flags), 0).map_err(io("send config"))?;
            let n = sock.recv(&mut &mut buf[..], 0).map_err(io("receive config ack"))?;
            for m in messages(&buf[..n]) {
                if let Some(a) = parse_ack(&m).filter(|a| a.errno != 0) {
                    return Err(QueueError::Bind { queue, errno: a.errno });
                }
            }
        }
        Ok(NfQueue { sock, buf, out: Vec::with_capacity(1 << 12), overruns: 0 })
    }

    /// Waits up to `timeout` for queued packets; empty when none arrived. A receive-buffer
    /// overrun is counted and reported as no packets (the kernel already dealt with them).
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<Queued>, QueueError> {
        let t = nix::sys::time::TimeVal::new(
            timeout.as_secs() as i64,
            timeout.subsec_micros().max(if timeout.is_zero() { 1 } else { 0 }) as i64,
        );
        let _ = setsockopt(&self.sock, sockopt::ReceiveTimeout, &t);
        match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => Ok(parse_packets(&self.buf[..n])),
            // A signal (SIGSTOP/SIGCONT of the daemon) interrupting the wait is no error.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overruns += 1;
                Ok(Vec::new())
            }
            Err(source) => Err(QueueError::Io { what: "receive", source }),
        }
    }

    /// Queues a verdict; `flush` sends them.
    pub fn verdict(&mut self, queue: u16, id: u32, v: &Verdict, mark: Option<u32>) {
        verdict_msg(&mut self.out, queue, id, v, mark);
    }

    /// Sends the verdicts queued so far, in order, in as few datagrams as fit.
    pub fn flush(&mut self) -> Result<(), QueueError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.sock.send(&self.out, 0).map(|_| ());
        self.out.clear();
        r.map_err(|source| QueueError::Io { what: "send verdicts", source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A packet message as the kernel builds it.
    fn packet_msg(queue: u16, id: u32, hook: u8, mark: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&queue.to_be_bytes());
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(hook);
        attr(&mut b, NFQA_PACKET_HDR, &hdr);
        attr(&mut b, NFQA_MARK, &mark.to_be_bytes());
        attr(&mut b, NFQA_IFINDEX_OUTDEV, &2u32.to_be_bytes());
        attr(&mut b, NFQA_PAYLOAD, payload);
        finish(&mut b, 0);
        b
    }

    #[test]
    fn packets_parse() {
        let mut buf = packet_msg(101, 7, NF_INET_LOCAL_OUT, 0x6677_5aa4, &[0x45, 1, 2]);
        buf.extend(packet_msg(102, 8, NF_INET_LOCAL_IN, 0, &[0x60]));
        let p = parse_packets(&buf);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].queue, p[0].id, p[0].hook, p[0].mark), (101, 7, Hook::Output, 0x6677_5aa4));
        assert_eq!((p[0].outdev, p[0].payload.as_slice()), (Some(2), &[0x45, 1, 2][..]));
        assert_eq!((p[1].queue, p[1].hook), (102, Hook::Input));
    }

    #[test]
    fn verdict_layout() {
        let mut out = Vec::new();
        verdict_msg(&mut out, 101, 9, &Verdict::Repeat, Some(0));
        verdict_msg(&mut out, 101, 10, &Verdict::AcceptAs(vec![1, 2, 3]), None);
        let msgs = messages(&out);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ty, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT);
        let a = attrs(&msgs[0].payload[4..]);
        assert_eq!(a[0], (NFQA_VERDICT_HDR, &[0, 0, 0, 4, 0, 0, 0, 9][..]));
        assert_eq!(a[1], (NFQA_MARK, &[0, 0, 0, 0][..]));
        let a = attrs(&msgs[1].payload[4..]);
        assert_eq!(a[1], (NFQA_PAYLOAD, &[1, 2, 3][..]));
        assert_eq!(&msgs[1].payload[2..4], &101u16.to_be_bytes());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_packets(&bytes);
        }
    }
}
