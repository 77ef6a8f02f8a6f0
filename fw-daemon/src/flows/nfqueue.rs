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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::nl::{self, attrs, messages, Builder, Recv, NETLINK_NETFILTER, NLM_F_ACK};

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
const NF_INET_LOCAL_IN: u8 = 1;
const NF_INET_LOCAL_OUT: u8 = 3;
/// The largest copy range the kernel takes (NFQNL_MAX_COPY_RANGE).
pub const MAX_COPY: u32 = 0xffff;

/// NFQUEUE speaks through the one netlink layer, and fails with its error.
pub type QueueError = nl::Error;

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

fn queue_msg(b: &mut Builder, msg: u16, flags: u16, seq: u32, queue: u16) {
    // nfgenmsg: AF_UNSPEC, version 0, res_id: the queue number.
    b.nfnl((NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0, queue);
}

/// Bind `queue` in packet-copy mode with the given flags (`NFQA_CFG_F_*`) and length.
pub fn config_msg(queue: u16, seq: u32, copy_range: u32, maxlen: u32, flags: u32) -> Vec<u8> {
    let mut b = Builder::with_capacity(72);
    queue_msg(&mut b, NFQNL_MSG_CONFIG, NLM_F_ACK, seq, queue);
    b.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]); // command, pad, be16 pf (unused)
    let mut params = copy_range.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    b.attr(NFQA_CFG_PARAMS, &params)
        .attr(NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes())
        .attr(NFQA_CFG_FLAGS, &flags.to_be_bytes())
        .attr(NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes());
    b.finish()
}

/// Appends the verdict message for packet `id` of `queue` to `out` (several go in one send).
/// `mark`: the packet mark to leave on it (the rule overwrote the owner's with the
/// connection's; 0 clears it).
pub fn verdict_msg(out: &mut Builder, queue: u16, id: u32, v: &Verdict, mark: Option<u32>) {
    const NF_DROP: u32 = 0;
    const NF_ACCEPT: u32 = 1;
    const NF_REPEAT: u32 = 4;
    queue_msg(out, NFQNL_MSG_VERDICT, 0, 0, queue);
    let code = match v {
        Verdict::Accept | Verdict::AcceptAs(_) => NF_ACCEPT,
        Verdict::Drop => NF_DROP,
        Verdict::Repeat => NF_REPEAT,
    };
    let mut hdr = code.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    out.attr(NFQA_VERDICT_HDR, &hdr);
    if let Some(m) = mark {
        out.attr(NFQA_MARK, &m.to_be_bytes());
    }
    if let Verdict::AcceptAs(p) = v {
        out.attr(NFQA_PAYLOAD, p);
    }
    out.end();
}

/// Bound queues inside one namespace.
pub struct NfQueue {
    sock: nl::Socket,
    out: Builder,
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
        let mut sock = nl::Socket::open(netns, NETLINK_NETFILTER, 1 << 17)?;
        sock.set_rcvbuf(rcvbuf);
        // Verdicts carry whole packets at times; ENOBUFS on them would lose a verdict.
        sock.set_sndbuf(1 << 20);
        for &(queue, flags) in queues {
            let seq = sock.next_seq();
            sock.request_ack(
                &config_msg(queue, seq, MAX_COPY, maxlen, flags),
                seq,
                Duration::from_secs(2),
                "nfqueue bind",
            )?;
        }
        Ok(NfQueue { sock, out: Builder::with_capacity(1 << 12), overruns: 0 })
    }

    /// Non-blocking mode, for a runtime that waits for readiness: `recv` then never waits.
    pub fn set_nonblocking(&self) -> Result<(), QueueError> {
        self.sock.set_nonblocking()
    }

    /// Waits up to `timeout` (zero: does not wait) for queued packets; empty when none
    /// arrived. A receive-buffer overrun is counted and reported as no packets (the kernel
    /// already dealt with them).
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<Queued>, QueueError> {
        match self.sock.recv(timeout, "nfqueue receive")? {
            Recv::Data(n) => Ok(parse_packets(self.sock.buf(n))),
            Recv::Empty => Ok(Vec::new()),
            Recv::Overrun => {
                self.overruns += 1;
                Ok(Vec::new())
            }
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
        let r = self.sock.send(self.out.bytes(), "nfqueue: send verdicts");
        self.out.clear();
        r
    }
}

impl AsRawFd for NfQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for NfQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A packet message as the kernel builds it.
    fn packet_msg(queue: u16, id: u32, hook: u8, mark: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Builder::new();
        b.header((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET, 0, 0).raw(&[2, 0]).raw(&queue.to_be_bytes());
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(hook);
        b.attr(NFQA_PACKET_HDR, &hdr)
            .attr(NFQA_MARK, &mark.to_be_bytes())
            .attr(NFQA_IFINDEX_OUTDEV, &2u32.to_be_bytes())
            .attr(NFQA_PAYLOAD, payload);
        b.finish()
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
        let mut out = Builder::new();
        verdict_msg(&mut out, 101, 9, &Verdict::Repeat, Some(0));
        verdict_msg(&mut out, 101, 10, &Verdict::AcceptAs(vec![1, 2, 3]), None);
        let out = out.finish();
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
