//! The one netlink layer: a socket opened inside a namespace ([`Socket`]: receive timeouts,
//! non-blocking reads for async readiness, one dump loop, one request/ACK exchange), one
//! message builder ([`Builder`]), one parser ([`messages`], [`attrs`], [`parse_ack`]) and one
//! error type ([`Error`]). conntrack, NFLOG, NFQUEUE and nftables' parsers all speak through
//! it. Parsing is plain, bounds-checked byte work over kernel input; nothing panics on a
//! malformed message.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use crate::netns::{self, NetnsError};

pub const NETLINK_NETFILTER: isize = 12;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_MULTI: u16 = 2;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Everything that goes wrong on a netlink socket, whichever subsystem it speaks.
/// `what` names the exchange (`"conntrack dump"`, `"nflog bind"`, ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink in {netns}: {what}: {source}")]
    Io { netns: PathBuf, what: &'static str, source: std::io::Error },
    #[error("netlink in {netns}: {what}: events were lost (receive buffer overrun)")]
    Overrun { netns: PathBuf, what: &'static str },
    #[error("netlink in {netns}: the kernel refused {what}: {}{}", std::io::Error::from_raw_os_error(*.errno), .msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected { netns: PathBuf, what: &'static str, errno: i32, msg: Option<String> },
    #[error("netlink in {netns}: no answer to {what}")]
    Timeout { netns: PathBuf, what: &'static str },
    /// The per-namespace conntrack sysctls are missing: nf_conntrack is not loaded.
    #[error("conntrack in {netns}: {sysctl} does not exist: the nf_conntrack kernel module is not loaded (modprobe nf_conntrack)")]
    NoConntrack { netns: PathBuf, sysctl: String },
}

impl Error {
    /// The kernel's errno for a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rejected { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

// ---- parsing ----

/// One netlink message: header fields and payload.
#[derive(Debug)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Splits a receive buffer into messages; stops at the first malformed header.
pub fn messages(buf: &[u8]) -> Vec<Msg<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 16 <= buf.len() {
        let Some(len) = u32_at(buf, i).map(|l| l as usize) else { break };
        if len < 16 || i + len > buf.len() {
            break;
        }
        let (Some(ty), Some(flags), Some(seq)) = (u16_at(buf, i + 4), u16_at(buf, i + 6), u32_at(buf, i + 8))
        else {
            break;
        };
        out.push(Msg { ty, flags, seq, payload: &buf[i + 16..i + len] });
        i += (len + 3) & !3;
    }
    out
}

/// Netlink attributes: (type without flag bits, value).
pub fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (Some(len), Some(ty)) = (u16_at(b, 0), u16_at(b, 2)) else { break };
        let len = len as usize;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty & 0x3fff, &b[4..len]));
        let adv = ((len + 3) & !3).min(b.len());
        b = &b[adv..];
    }
    out
}

/// An ACK (errno 0) or an error for the message with `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    /// Positive errno, 0 for success.
    pub errno: i32,
    /// The kernel's extended-ACK explanation, when it gave one.
    pub msg: Option<String>,
}

pub fn parse_ack(m: &Msg<'_>) -> Option<Ack> {
    if m.ty != NLMSG_ERROR {
        return None;
    }
    let err = i32::from_ne_bytes(m.payload.get(0..4)?.try_into().ok()?);
    // The original header follows; its payload too unless the socket caps ACKs.
    let orig_len = u32_at(m.payload, 4).unwrap_or(16) as usize;
    let capped = m.flags & 0x100 != 0;
    let tlv_start = 4 + if capped { 16 } else { orig_len.max(16) };
    let mut msg = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        if let Some(tlvs) = m.payload.get(tlv_start..) {
            for (ty, v) in attrs(tlvs) {
                if ty == NLMSGERR_ATTR_MSG {
                    let s = String::from_utf8_lossy(v).trim_end_matches('\0').to_string();
                    if !s.is_empty() {
                        msg = Some(s);
                    }
                }
            }
        }
    }
    Some(Ack { seq: m.seq, errno: -err, msg })
}

// ---- building ----

/// Builds netlink messages, several to a buffer (a batch goes out in one send). Lengths of
/// messages and nested attributes are patched in when they are closed.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    buf: Vec<u8>,
    /// Where the open message starts.
    msg: Option<usize>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn with_capacity(n: usize) -> Builder {
        Builder { buf: Vec::with_capacity(n), msg: None }
    }

    /// Opens a netfilter message: the netlink header (`ty` = subsystem << 8 | message,
    /// NLM_F_REQUEST added to `flags`) and the nfgenmsg (`family`, version 0, `res_id`
    /// big-endian). A message still open is closed first.
    pub fn nfnl(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> &mut Builder {
        self.header(ty, NLM_F_REQUEST | flags, seq);
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self
    }

    /// Opens a message with a bare netlink header; the caller appends the family header.
    pub fn header(&mut self, ty: u16, flags: u16, seq: u32) -> &mut Builder {
        self.end();
        self.msg = Some(self.buf.len());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self
    }

    /// Raw bytes (a family header that is not nfgenmsg).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Builder {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Builder {
        self.buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) -> &mut Builder {
        self.buf.extend_from_slice(&((4 + s.len() + 1) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    /// A nested attribute (NLA_F_NESTED set) holding what `f` adds.
    pub fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Builder)) -> &mut Builder {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Closes the open message (sets its length).
    pub fn end(&mut self) -> &mut Builder {
        if let Some(start) = self.msg.take() {
            let len = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.msg = None;
    }

    /// The messages so far (the open one closed).
    pub fn bytes(&mut self) -> &[u8] {
        self.end();
        &self.buf
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.end();
        self.buf
    }
}

// ---- the socket ----

/// Sets SO_RCVTIMEO; zero would mean "block forever", so anything shorter is a microsecond.
fn set_timeout(sock: &netlink_sys::Socket, t: Duration) {
    let secs = t.as_secs().try_into().unwrap_or(i64::MAX);
    let usecs = i64::from(t.subsec_micros()).max(i64::from(secs == 0));
    let tv = nix::sys::time::TimeVal::new(secs, usecs);
    let _ = setsockopt(sock, sockopt::ReceiveTimeout, &tv);
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// A signal interrupted the wait (the daemon was stopped and continued, SIGSTOP/SIGCONT):
/// nothing is wrong with the socket.
fn interrupted(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Interrupted
}

/// What one receive brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// This many bytes are in [`Socket::buf`].
    Data(usize),
    /// Nothing within the timeout (or, non-blocking, nothing queued).
    Empty,
    /// The kernel dropped messages for this socket (ENOBUFS); the socket keeps working.
    Overrun,
}

/// A bound netlink socket opened inside a namespace, with its receive buffer.
pub struct Socket {
    sock: netlink_sys::Socket,
    netns: PathBuf,
    buf: Vec<u8>,
    /// The receive timeout last set (a setsockopt per call is not free).
    timeout: Option<Duration>,
    seq: u32,
}

impl Socket {
    /// Opens a socket of `protocol` inside the namespace at `netns` (on a short-lived thread
    /// that entered it) and binds it; `buf` bytes of receive buffer in user space.
    pub fn open(netns: &Path, protocol: isize, buf: usize) -> Result<Socket, Error> {
        let mut sock = netns::netlink_socket(netns, protocol)?;
        sock.bind_auto().map_err(|source| Error::Io { netns: netns.to_path_buf(), what: "bind", source })?;
        Ok(Socket { sock, netns: netns.to_path_buf(), buf: vec![0; buf], timeout: None, seq: 0 })
    }

    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The kernel-side receive buffer: SO_RCVBUFFORCE passes net.core.rmem_max (it needs
    /// CAP_NET_ADMIN); without the capability the plain option gets what rmem_max allows.
    pub fn set_rcvbuf(&self, bytes: usize) {
        if setsockopt(&self.sock, sockopt::RcvBufForce, &bytes).is_err() {
            let _ = setsockopt(&self.sock, sockopt::RcvBuf, &bytes);
        }
    }

    pub fn set_sndbuf(&self, bytes: usize) {
        if setsockopt(&self.sock, sockopt::SndBufForce, &bytes).is_err() {
            let _ = setsockopt(&self.sock, sockopt::SndBuf, &bytes);
        }
    }

    /// Joins a multicast group (event subscriptions).
    pub fn join(&self, group: u32, what: &'static str) -> Result<(), Error> {
        self.sock.add_membership(group).map_err(|source| self.io(what, source))
    }

    /// Non-blocking mode: every receive returns at once ([`Recv::Empty`] when nothing is
    /// queued). For sockets whose readiness an async runtime watches.
    pub fn set_nonblocking(&self) -> Result<(), Error> {
        self.sock.set_non_blocking(true).map_err(|source| self.io("non-blocking", source))
    }

    /// The next sequence number for a request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn io(&self, what: &'static str, source: std::io::Error) -> Error {
        Error::Io { netns: self.netns.clone(), what, source }
    }

    pub fn send(&self, bytes: &[u8], what: &'static str) -> Result<(), Error> {
        self.sock.send(bytes, 0).map(|_| ()).map_err(|source| self.io(what, source))
    }

    /// The bytes of the last [`Recv::Data`].
    pub fn buf(&self, n: usize) -> &[u8] {
        &self.buf[..n.min(self.buf.len())]
    }

    /// Waits up to `timeout` for one datagram (zero: does not wait). A signal interrupting
    /// the wait counts as nothing received.
    pub fn recv(&mut self, timeout: Duration, what: &'static str) -> Result<Recv, Error> {
        let r = if timeout.is_zero() {
            self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT)
        } else {
            if self.timeout != Some(timeout) {
                set_timeout(&self.sock, timeout);
                self.timeout = Some(timeout);
            }
            self.sock.recv(&mut &mut self.buf[..], 0)
        };
        match r {
            Ok(n) => Ok(Recv::Data(n)),
            Err(e) if would_block(&e) || interrupted(&e) => Ok(Recv::Empty),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Recv::Overrun),
            Err(source) => Err(self.io(what, source)),
        }
    }

    /// One datagram of a reply within `timeout`; none is [`Error::Timeout`]. An overrun on a
    /// request socket loses replies: an error too.
    fn reply(&mut self, timeout: Duration, what: &'static str) -> Result<usize, Error> {
        match self.recv(timeout, what)? {
            Recv::Data(n) => Ok(n),
            Recv::Empty => Err(Error::Timeout { netns: self.netns.clone(), what }),
            Recv::Overrun => Err(Error::Overrun { netns: self.netns.clone(), what }),
        }
    }

    /// Sends `req` and waits for the ACK of `seq` (or its error).
    pub fn request_ack(
        &mut self,
        req: &[u8],
        seq: u32,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), Error> {
        self.send(req, what)?;
        loop {
            let n = self.reply(timeout, what)?;
            for m in messages(&self.buf[..n]) {
                let Some(a) = parse_ack(&m).filter(|_| m.seq == seq) else { continue };
                if a.errno != 0 {
                    return Err(Error::Rejected {
                        netns: self.netns.clone(),
                        what,
                        errno: a.errno,
                        msg: a.msg,
                    });
                }
                return Ok(());
            }
        }
    }

    /// Sends a dump request with `seq` and hands every reply message to `each` until the
    /// kernel's NLMSG_DONE; messages of other sequence numbers are stale and skipped.
    pub fn dump(
        &mut self,
        req: &[u8],
        seq: u32,
        timeout: Duration,
        what: &'static str,
        mut each: impl FnMut(&Msg<'_>),
    ) -> Result<(), Error> {
        self.send(req, what)?;
        loop {
            let n = self.reply(timeout, what)?;
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        if let Some(a) = parse_ack(&m).filter(|a| a.errno != 0) {
                            return Err(Error::Rejected {
                                netns: self.netns.clone(),
                                what,
                                errno: a.errno,
                                msg: a.msg,
                            });
                        }
                    }
                    _ => each(&m),
                }
            }
        }
    }

    /// Sends a batch of requests with sequence numbers `first .. first + count`, each
    /// answered by exactly one message (an ACK, an error, or a reply when not asked to ACK),
    /// and hands each answer to `each(index, msg)`.
    pub fn exchange(
        &mut self,
        req: &[u8],
        first: u32,
        count: usize,
        timeout: Duration,
        what: &'static str,
        mut each: impl FnMut(usize, &Msg<'_>),
    ) -> Result<(), Error> {
        self.send(req, what)?;
        let mut pending = count;
        while pending > 0 {
            let n = self.reply(timeout, what)?;
            for m in messages(&self.buf[..n]) {
                let i = m.seq.wrapping_sub(first) as usize;
                if i >= count || m.ty == NLMSG_DONE {
                    continue;
                }
                // An ACK that follows a reply (NLM_F_ACK) would count twice: only answers.
                pending = pending.saturating_sub(1);
                each(i, &m);
            }
        }
        Ok(())
    }
}

/// Registers a socket (any of ours: it owns its descriptor) with the async runtime, which
/// then wakes its reader when the kernel queued something. Call in the runtime's context.
///
/// `AsyncFd::new` is deprecated because a type could hand out a descriptor it does not own
/// and close it while registered; ours own theirs (`netlink_sys::Socket` closes it on drop)
/// and the `AsyncFd` owns the socket, so the descriptor outlives the registration.
#[allow(deprecated)]
pub fn register<T: AsRawFd>(sock: T) -> std::io::Result<tokio::io::unix::AsyncFd<T>> {
    tokio::io::unix::AsyncFd::new(sock)
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_an_error_with_extack() {
        // NLMSG_ERROR, flags ACK_TLVS|CAPPED, seq 7, errno -2, orig header, MSG attr.
        let mut p = Vec::new();
        p.extend_from_slice(&(-2i32).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]);
        let text = b"set not found\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&(NLM_F_ACK_TLVS | 0x100).to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&p);
        let msgs = messages(&b);
        assert_eq!(msgs.len(), 1);
        assert_eq!(parse_ack(&msgs[0]), Some(Ack { seq: 7, errno: 2, msg: Some("set not found".into()) }));
    }

    /// Messages and nested attributes built here parse back to what went in, lengths and
    /// padding included, several messages to a buffer.
    #[test]
    fn built_messages_parse_back() {
        let mut b = Builder::new();
        b.nfnl(0x0102, NLM_F_ACK, 9, 2, 0x1234).attr(1, &[1, 2, 3]).nested(2, |n| {
            n.attr(1, &[9]).attr_str(2, "fw");
        });
        b.nfnl(0x0301, 0, 10, 0, 7).attr(5, &[]);
        let bytes = b.finish();
        let msgs = messages(&bytes);
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].ty, msgs[0].flags, msgs[0].seq), (0x0102, NLM_F_REQUEST | NLM_F_ACK, 9));
        assert_eq!(&msgs[0].payload[..4], &[2, 0, 0x12, 0x34]);
        let a = attrs(&msgs[0].payload[4..]);
        assert_eq!(a[0], (1, &[1, 2, 3][..]));
        assert_eq!(a[1].0, 2, "the nested flag is masked off");
        assert_eq!(attrs(a[1].1), vec![(1, &[9][..]), (2, &b"fw\0"[..])]);
        assert_eq!((msgs[1].seq, &msgs[1].payload[2..4]), (10, &7u16.to_be_bytes()[..]));
        assert_eq!(attrs(&msgs[1].payload[4..]), vec![(5, &[][..])]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for m in messages(&bytes) {
                let _ = parse_ack(&m);
            }
            let _ = attrs(&bytes);
        }
    }
}
