//! The nftables backend: the only code that talks to netfilter. One `Nft` per container
//! namespace: a NETLINK_NETFILTER socket opened inside it, kept open, used for whole-table
//! replacement (one atomic batch), set-element updates, flush, and counter read-back.

mod build;
pub mod netlink;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nftnl::MsgType;
use nix::sys::socket::{setsockopt, sockopt};

pub use build::BuildError;
pub use build::{decode_tuple, elem_key};
use build::{interval_elems, key_type, Built, Emitter};
pub use netlink::{DumpedElem, RuleCounters};
pub use sys::async_socket;
use sys::Elem;

use crate::netns::{self, NetnsError};
use crate::ruleset::ir::{Ruleset, SetElem, TableFamily};

const NETLINK_NETFILTER: isize = 12;
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{who}: {what}: {source}")]
    Io { who: String, what: &'static str, source: std::io::Error },
    #[error("{who}: {0}", .source)]
    Build { who: String, source: BuildError },
    #[error("{who}: the kernel rejected {what}: {}{}", errno_text(*.errno), .msg.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected { who: String, what: String, errno: i32, msg: Option<String> },
    #[error("{who}: no answer from the kernel for {what} within {RECV_TIMEOUT:?}")]
    Timeout { who: String, what: String },
}

fn errno_text(errno: i32) -> String {
    format!("{} (errno {errno})", std::io::Error::from_raw_os_error(errno))
}

pub use crate::ruleset::diff::SetChange;

/// An open nftables socket inside one namespace.
pub struct Nft {
    sock: netlink_sys::Socket,
    /// Who this is for, in every error: the container name.
    who: String,
    netns: PathBuf,
    buf: Vec<u8>,
    seq: u32,
}

impl Nft {
    /// Opens the socket inside the namespace at `netns`; `who` names it in errors.
    pub fn open(netns: &Path, who: &str) -> Result<Nft, NftError> {
        let sock = netns::netlink_socket(netns, NETLINK_NETFILTER)?;
        Self::setup(sock, netns, who)
    }

    fn setup(mut sock: netlink_sys::Socket, netns: &Path, who: &str) -> Result<Nft, NftError> {
        let io = |what: &'static str| move |source| NftError::Io { who: who.to_string(), what, source };
        sock.bind_auto().map_err(io("bind"))?;
        // Extended ACKs carry the kernel's reason; capped ACKs do not echo our messages back.
        sock.set_ext_ack(true).map_err(io("extended ack"))?;
        sock.set_cap_ack(true).map_err(io("capped ack"))?;
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(|e| NftError::Io { who: who.into(), what: "receive timeout", source: e.into() })?;
        // Every message of a batch is acknowledged; a large table (the floor's, or one with
        // thousands of elements) overruns the default buffer with ACKs alone.
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &(4 << 20));
        Ok(Nft {
            sock,
            who: who.to_string(),
            netns: netns.to_path_buf(),
            buf: vec![0; 1 << 16],
            seq: 1 << 20,
        })
    }

    pub fn netns(&self) -> &Path {
        &self.netns
    }

    fn build_err(&self, source: BuildError) -> NftError {
        NftError::Build { who: self.who.clone(), source }
    }

    /// Replaces `table inet fw` with `rs` in one atomic batch: on any error the previous
    /// table stays exactly as it was.
    pub fn apply(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        let built = build::ruleset_batch(rs).map_err(|e| self.build_err(e))?;
        self.send_batch(built)
    }

    /// Brings the table from `last` to `next` without replacing it (see
    /// `build::update_in_place_batch`): the sets the packet path writes keep every element.
    /// `Ok(false)` when that cannot be done (a base chain changed): replace the table.
    pub fn update_in_place(&mut self, last: &Ruleset, next: &Ruleset) -> Result<bool, NftError> {
        match build::update_in_place_batch(last, next).map_err(|e| self.build_err(e))? {
            Some(built) => self.send_batch(built).map(|()| true),
            None => Ok(false),
        }
    }

    /// Removes the MAC-keyed host guard earlier versions kept (`table bridge fw_guard`; the
    /// floor replaced it) if present.
    pub fn flush_guard(&mut self) -> Result<(), NftError> {
        let built =
            build::flush_table_batch(TableFamily::Bridge, "fw_guard").map_err(|e| self.build_err(e))?;
        self.send_batch(built)
    }

    /// Removes the host-side floor (`table bridge fw_floor`) if present.
    pub fn flush_floor(&mut self) -> Result<(), NftError> {
        let built = build::flush_table_batch(TableFamily::Bridge, crate::floor::FLOOR_TABLE)
            .map_err(|e| self.build_err(e))?;
        self.send_batch(built)
    }

    /// Removes `table inet fw` if present.
    pub fn flush(&mut self) -> Result<(), NftError> {
        self.send_batch(build::flush_batch())
    }

    /// Removes `table FAMILY NAME` if present.
    pub fn flush_table(&mut self, family: TableFamily, table: &str) -> Result<(), NftError> {
        let built = build::flush_table_batch(family, table).map_err(|e| self.build_err(e))?;
        self.send_batch(built)
    }

    /// Adds and removes set elements, all in one atomic batch (no table replacement).
    pub fn update_sets(&mut self, changes: &[SetChange]) -> Result<(), NftError> {
        self.update_sets_in(TableFamily::Inet, crate::ruleset::ir::TABLE, changes)
    }

    /// `update_sets` in any table we own.
    pub fn update_sets_in(
        &mut self,
        family: TableFamily,
        table: &str,
        changes: &[SetChange],
    ) -> Result<(), NftError> {
        let name = build::cstr(table, "table name").map_err(|e| self.build_err(e))?;
        let mut em = Emitter::for_table(&name, build::proto_family(family).0);
        for c in changes {
            let key = key_type(c.key);
            let now = crate::clock::now_ms();
            let elems = |list: &[SetElem], with_timeouts: bool| -> Vec<Elem> {
                let nets: Vec<(Vec<u8>, Vec<u8>)> = list
                    .iter()
                    .filter_map(|e| match e {
                        SetElem::Net(n) if n.prefix_len() != n.max_prefix_len() => Some((
                            elem_key(&SetElem::Addr(n.network())),
                            elem_key(&SetElem::Addr(n.broadcast())),
                        )),
                        _ => None,
                    })
                    .collect();
                if !nets.is_empty() {
                    return interval_elems(&nets, None)
                        .into_iter()
                        .filter(|e| e.key.iter().any(|b| *b != 0) || e.flags == 0)
                        .collect();
                }
                list.iter()
                    .filter_map(|e| {
                        let exp = if with_timeouts { c.expires.get(e) } else { None };
                        let mut el = build::elem_with_timeout(e, exp, now)?;
                        if with_timeouts {
                            el.jump = c.jumps.get(e).and_then(|j| std::ffi::CString::new(j.as_str()).ok());
                        }
                        Some(el)
                    })
                    .collect()
            };
            if c.flush {
                em.flush_set(&c.set).map_err(|e| self.build_err(e))?;
            }
            if !c.remove.is_empty() {
                em.elements(&c.set, key, &elems(&c.remove, false), MsgType::Del)
                    .map_err(|e| self.build_err(e))?;
            }
            let add = elems(&c.add, true);
            if !add.is_empty() {
                em.elements(&c.set, key, &add, MsgType::Add).map_err(|e| self.build_err(e))?;
            }
        }
        self.send_batch(em.finish())
    }

    fn send_batch(&mut self, built: Built) -> Result<(), NftError> {
        let Built { batch, what } = built;
        let mut bytes = Vec::new();
        for page in batch.iter() {
            bytes.extend_from_slice(page);
        }
        // Large batches (10k set elements) exceed the default socket send buffer.
        if bytes.len() > 200_000 {
            let _ = setsockopt(&self.sock, sockopt::SndBufForce, &(bytes.len() * 2));
        }
        let seqs = batch.sequence_numbers();
        // Messages are numbered in order; begin/end take the first and last number when the
        // kernel acknowledges them (>= 6.10).
        let first = if seqs.len() == what.len() + 2 { seqs.start + 1 } else { seqs.start };
        let describe = |seq: u32| -> String {
            seq.checked_sub(first)
                .and_then(|i| what.get(i as usize))
                .cloned()
                .unwrap_or_else(|| "the batch".to_string())
        };
        self.sock.send(&bytes, 0).map_err(|source| NftError::Io {
            who: self.who.clone(),
            what: "send batch",
            source,
        })?;

        let mut pending: std::collections::BTreeSet<u32> = (first..first + what.len() as u32).collect();
        let mut first_error: Option<NftError> = None;
        while !pending.is_empty() {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err(first_error.unwrap_or(NftError::Timeout {
                        who: self.who.clone(),
                        what: describe(*pending.iter().next().unwrap_or(&first)),
                    }));
                }
                Err(source) => return Err(NftError::Io { who: self.who.clone(), what: "receive", source }),
            };
            for m in netlink::messages(&self.buf[..n]) {
                if let Some(ack) = netlink::parse_ack(&m) {
                    pending.remove(&ack.seq);
                    if ack.errno != 0 && first_error.is_none() {
                        first_error = Some(NftError::Rejected {
                            who: self.who.clone(),
                            what: describe(ack.seq),
                            errno: ack.errno,
                            msg: ack.msg,
                        });
                    }
                }
            }
        }
        // The end-of-batch ACK (if any) may still be queued; it carries nothing we need and
        // the next exchange ignores unknown sequence numbers.
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Receives one datagram of a reply into `self.buf`; a timeout names `what`.
    fn recv_reply(&mut self, what: &str) -> Result<usize, NftError> {
        match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(NftError::Timeout { who: self.who.clone(), what: what.into() })
            }
            Err(source) => Err(NftError::Io { who: self.who.clone(), what: "receive", source }),
        }
    }

    /// The namespace's nftables generation id: it changes with every committed batch from
    /// anyone, so an unchanged id since our last commit means nobody touched the ruleset.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock.send(&netlink::getgen_request(seq), 0).map_err(|source| NftError::Io {
            who: self.who.clone(),
            what: "send getgen",
            source,
        })?;
        loop {
            let n = self.recv_reply("generation")?;
            for m in netlink::messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue; // a late ACK of an earlier batch
                }
                if let Some(id) = netlink::parse_genid(&m) {
                    return Ok(id);
                }
                if let Some(a) = netlink::parse_ack(&m).filter(|a| a.errno != 0) {
                    return Err(NftError::Rejected {
                        who: self.who.clone(),
                        what: "generation".into(),
                        errno: a.errno,
                        msg: a.msg,
                    });
                }
            }
        }
    }

    /// Lists the rules of `table inet fw` with their counters and comments.
    pub fn list_rules(&mut self) -> Result<Vec<RuleCounters>, NftError> {
        self.list_rules_of(TableFamily::Inet, crate::ruleset::ir::TABLE)
    }

    /// Lists the rules of one table we own.
    pub fn list_rules_of(&mut self, family: TableFamily, table: &str) -> Result<Vec<RuleCounters>, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let req = netlink::getrule_request(self.seq, nfproto(family), table);
        self.dump(req, "rule dump", |m| netlink::parse_rule(m).into_iter().collect())
    }

    /// Whether `table FAMILY NAME` exists in this namespace.
    pub fn table_exists(&mut self, family: TableFamily, table: &str) -> Result<bool, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let req = netlink::gettable_request(self.seq, nfproto(family), table);
        // A missing table answers ENOENT, which the dump loop reads as empty.
        Ok(!self
            .dump(req, "table lookup", |m| if netlink::is_table(m) { vec![()] } else { vec![] })?
            .is_empty())
    }

    /// The elements of one set, with the time each has left.
    pub fn dump_set(
        &mut self,
        family: TableFamily,
        table: &str,
        set: &str,
    ) -> Result<Vec<netlink::DumpedElem>, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let req = netlink::getsetelem_request(self.seq, nfproto(family), table, set);
        self.dump(req, "set dump", netlink::parse_set_elems)
    }

    /// Sends a dump request (sequence number `self.seq`) and collects what `parse` finds in
    /// each answer until the kernel says done. A missing table or set is an empty dump.
    fn dump<T>(
        &mut self,
        req: Vec<u8>,
        what: &'static str,
        parse: impl Fn(&netlink::Msg<'_>) -> Vec<T>,
    ) -> Result<Vec<T>, NftError> {
        let seq = self.seq;
        self.sock.send(&req, 0).map_err(|source| NftError::Io {
            who: self.who.clone(),
            what: "send dump",
            source,
        })?;
        let mut out = Vec::new();
        loop {
            let n = self.recv_reply(what)?;
            for m in netlink::messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue; // a late ACK of an earlier batch
                }
                match m.ty {
                    netlink::NLMSG_DONE => return Ok(out),
                    netlink::NLMSG_ERROR => {
                        if let Some(a) = netlink::parse_ack(&m) {
                            if a.errno == libc::ENOENT {
                                return Ok(Vec::new()); // no table: nothing in it
                            }
                            if a.errno == 0 {
                                return Ok(out); // the ACK that ends a plain (non-dump) get
                            }
                            if a.errno != 0 {
                                return Err(NftError::Rejected {
                                    who: self.who.clone(),
                                    what: what.into(),
                                    errno: a.errno,
                                    msg: a.msg,
                                });
                            }
                        }
                    }
                    _ => out.extend(parse(&m)),
                }
            }
        }
    }
}

fn nfproto(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => netlink::NFPROTO_INET,
        TableFamily::Bridge => netlink::NFPROTO_BRIDGE,
    }
}
