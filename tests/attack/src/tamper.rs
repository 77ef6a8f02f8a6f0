//! The tamperer: what a process with CAP_NET_ADMIN inside its own namespace does to fw's
//! table, spoken directly over NETLINK_NETFILTER (no `nft` binary needed in the image):
//! flush a set (blocks, quarantine, zone members), delete `table inet fw`, or flush the whole
//! ruleset. Each round is one nfnetlink batch; the kernel answers every request with an ACK
//! or an errno, read back before the next round.

use std::io;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// nftables family numbers (NFPROTO_*).
pub const FAMILY_UNSPEC: u8 = 0;
pub const FAMILY_INET: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Every table of every family (what `nft flush ruleset` sends).
    FlushRuleset,
    DeleteTable {
        family: u8,
        table: String,
    },
    /// Every element of a set (no element list = flush).
    FlushSet {
        family: u8,
        table: String,
        set: String,
    },
}

impl Action {
    fn message(&self, seq: u32) -> Vec<u8> {
        match self {
            Action::FlushRuleset => nl_msg(NFT_MSG_DELTABLE, FAMILY_UNSPEC, seq, &[]),
            Action::DeleteTable { family, table } => {
                nl_msg(NFT_MSG_DELTABLE, *family, seq, &attr_str(NFTA_TABLE_NAME, table))
            }
            Action::FlushSet { family, table, set } => {
                let mut a = attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
                a.extend(attr_str(NFTA_SET_ELEM_LIST_SET, set));
                nl_msg(NFT_MSG_DELSETELEM, *family, seq, &a)
            }
        }
    }
}

/// One netlink attribute holding a NUL-terminated string, padded to 4 bytes.
fn attr_str(kind: u16, s: &str) -> Vec<u8> {
    let len = 4 + s.len() + 1;
    let mut a = Vec::with_capacity(len + 3);
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(s.as_bytes());
    a.push(0);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, body_len: usize) {
    let len = 16 + 4 + body_len;
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, resource id (big-endian).
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
}

fn nl_msg(cmd: u16, family: u8, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    header(&mut b, NFNL_SUBSYS_NFTABLES << 8 | cmd, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, attrs.len());
    b.extend_from_slice(attrs);
    b
}

fn batch(actions: &[Action], seq: u32) -> Vec<u8> {
    let mut b = Vec::new();
    header(&mut b, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, FAMILY_UNSPEC, NFNL_SUBSYS_NFTABLES, 0);
    for (i, a) in actions.iter().enumerate() {
        b.extend(a.message(seq + 1 + i as u32));
    }
    header(
        &mut b,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 1 + actions.len() as u32,
        FAMILY_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        0,
    );
    b
}

/// A NETLINK_NETFILTER socket in the calling thread's namespace.
pub struct Nft {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// How one batch went: requests the kernel acknowledged, and errnos of those it refused
/// (ENOENT when fw's table is already gone, for instance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult {
    pub acked: u32,
    pub errors: Vec<i32>,
}

impl Nft {
    pub fn open() -> io::Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        Ok(Nft { sock, seq: 1, buf: Vec::with_capacity(65536) })
    }

    /// Sends `actions` as one batch and reads every answer. A batch is processed inside
    /// the `send` call, so its answers are queued when it returns; reading stops when each
    /// request has one, or after a short grace if the kernel dropped the batch whole.
    pub fn run(&mut self, actions: &[Action]) -> io::Result<BatchResult> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(actions.len() as u32 + 2);
        let msg = batch(actions, seq);
        self.sock.send(&msg, 0)?;
        self.sock.set_non_blocking(true)?;
        let mut r = BatchResult::default();
        let want = actions.len() as u32;
        let until = Instant::now() + Duration::from_millis(200);
        while r.acked + (r.errors.len() as u32) < want && Instant::now() < until {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(self.buf[off + 4..off + 6].try_into().expect("2 bytes"));
                let mseq = u32::from_ne_bytes(self.buf[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > self.buf.len() {
                    break;
                }
                let ours = mseq > seq && mseq <= seq + want;
                if kind == NLMSG_ERROR && len >= 20 && ours {
                    let code = i32::from_ne_bytes(self.buf[off + 16..off + 20].try_into().expect("4 bytes"));
                    if code == 0 {
                        r.acked += 1;
                    } else {
                        r.errors.push(-code);
                    }
                }
                off += (len + 3) & !3;
            }
        }
        Ok(r)
    }
}

/// What a tamper loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tampered {
    pub rounds: u64,
    /// Requests the kernel carried out (a table deleted, a set flushed).
    pub acked: u64,
    /// Requests refused (mostly ENOENT: already gone).
    pub refused: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs `actions` every `interval` for `duration`. Each action is its own batch, so one
/// refused request (a set that is not there) does not undo the others.
pub fn tamper_loop(actions: &[Action], duration: Duration, interval: Duration) -> Tampered {
    let mut t = Tampered::default();
    let mut nft = match Nft::open() {
        Ok(n) => n,
        Err(e) => {
            t.error = Some(format!("netlink: {e}"));
            return t;
        }
    };
    let start = Instant::now();
    while start.elapsed() < duration {
        t.rounds += 1;
        for a in actions {
            match nft.run(std::slice::from_ref(a)) {
                Ok(r) => {
                    t.acked += u64::from(r.acked);
                    t.refused += r.errors.len() as u64;
                }
                Err(e) => {
                    t.error.get_or_insert_with(|| format!("netlink: {e}"));
                }
            }
        }
        std::thread::sleep(interval);
    }
    t
}

/// The default round: flush fw's block, quarantine and zone sets named in `sets`, then
/// delete the table, then flush everything.
pub fn default_actions(sets: &[String]) -> Vec<Action> {
    let mut v: Vec<Action> = sets
        .iter()
        .map(|s| Action::FlushSet { family: FAMILY_INET, table: "fw".into(), set: s.clone() })
        .collect();
    v.push(Action::DeleteTable { family: FAMILY_INET, table: "fw".into() });
    v.push(Action::FlushRuleset);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_framed_like_the_kernel_wants() {
        let b = batch(&[Action::DeleteTable { family: FAMILY_INET, table: "fw".into() }], 10);
        // begin (20) + deltable (20 + attr 8) + end (20)
        assert_eq!(b.len(), 20 + 28 + 20);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(&b[18..20], &NFNL_SUBSYS_NFTABLES.to_be_bytes());
        let m = &b[20..48];
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0a02);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 11);
        assert_eq!(m[16], FAMILY_INET);
        assert_eq!(&m[20..28], &[7, 0, 1, 0, b'f', b'w', 0, 0]);
        assert_eq!(u32::from_ne_bytes(b[56..60].try_into().unwrap()), 12);
    }

    #[test]
    fn a_set_flush_names_table_and_set_and_no_elements() {
        let m =
            Action::FlushSet { family: FAMILY_INET, table: "fw".into(), set: "block_out4".into() }.message(3);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0a0e);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert!(m.windows(11).any(|w| w == b"block_out4\0"));
    }
}
