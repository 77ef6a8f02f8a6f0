//! Reading what the kernel says on an nftables netlink socket: ACKs and errors (with the
//! extended-ACK message), and rule dumps with their counters and comments. Plain byte
//! parsing, bounds-checked, no unsafe.

pub use crate::nl::{attrs, messages, parse_ack, Ack, Msg, NLMSG_DONE, NLMSG_ERROR};
use crate::nl::{Builder, NLM_F_ACK, NLM_F_DUMP};
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_BRIDGE: u8 = 7;

/// A dump request of `ty` (GETRULE, GETSETELEM) with string attributes.
fn dump_request(seq: u32, ty: u16, family: u8, strs: &[(u16, &str)]) -> Vec<u8> {
    let mut b = Builder::new();
    b.nfnl((NFNL_SUBSYS_NFTABLES << 8) | ty, NLM_F_DUMP, seq, family, 0);
    for (t, v) in strs {
        b.attr_str(*t, v);
    }
    b.finish()
}

/// A GETTABLE request for one table: its NEWTABLE comes back, or ENOENT.
pub fn gettable_request(seq: u32, family: u8, table: &str) -> Vec<u8> {
    // Not a dump: one table by name, then an ACK that says we have it all.
    let mut b = Builder::new();
    b.nfnl((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_ACK, seq, family, 0)
        .attr_str(NFTA_TABLE_NAME, table);
    b.finish()
}

/// A GETRULE dump request for one table (`inet fw`, `bridge fw_floor`).
pub fn getrule_request(seq: u32, family: u8, table: &str) -> Vec<u8> {
    dump_request(seq, NFT_MSG_GETRULE, family, &[(NFTA_RULE_TABLE, table)])
}

/// A GETSETELEM dump request: the elements of one set, with their remaining timeouts.
pub fn getsetelem_request(seq: u32, family: u8, table: &str, set: &str) -> Vec<u8> {
    dump_request(
        seq,
        NFT_MSG_GETSETELEM,
        family,
        &[(NFTA_SET_ELEM_LIST_TABLE, table), (NFTA_SET_ELEM_LIST_SET, set)],
    )
}

/// Whether `m` is the NEWTABLE answer of a GETTABLE.
pub fn is_table(m: &Msg<'_>) -> bool {
    m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE
}

/// One element of a set dump: its key bytes and how long it has left (ms), if it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedElem {
    pub key: Vec<u8>,
    pub expires_in_ms: Option<u64>,
}

/// Parses one NEWSETELEM message of a dump.
pub fn parse_set_elems(m: &Msg<'_>) -> Vec<DumpedElem> {
    let mut out = Vec::new();
    if m.ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
        return out;
    }
    let Some(body) = m.payload.get(4..) else { return out };
    for (ty, v) in attrs(body) {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (lt, elem) in attrs(v) {
            if lt != NFTA_LIST_ELEM {
                continue;
            }
            let mut e = DumpedElem { key: Vec::new(), expires_in_ms: None };
            for (et, ev) in attrs(elem) {
                match et {
                    NFTA_SET_ELEM_KEY => {
                        if let Some((_, data)) = attrs(ev).into_iter().find(|(t, _)| *t == NFTA_DATA_VALUE) {
                            e.key = data.to_vec();
                        }
                    }
                    NFTA_SET_ELEM_EXPIRATION => e.expires_in_ms = be_u64(ev),
                    _ => {}
                }
            }
            if !e.key.is_empty() {
                out.push(e);
            }
        }
    }
    out
}

/// A GETGEN request: the namespace's ruleset generation, bumped by every committed change
/// to any table there (ours or anyone's), which makes tampering cheap to notice.
pub fn getgen_request(seq: u32) -> Vec<u8> {
    let mut b = Builder::new();
    b.nfnl((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 0, seq, 0, 0);
    b.finish()
}

/// The generation id of a NEWGEN reply.
pub fn parse_genid(m: &Msg<'_>) -> Option<u32> {
    if m.ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return None;
    }
    let body = m.payload.get(4..)?; // after nfgenmsg
    attrs(body)
        .into_iter()
        .find(|(t, _)| *t == NFTA_GEN_ID)
        .and_then(|(_, v)| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
}

/// A rule as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounters {
    pub chain: String,
    pub handle: u64,
    /// The comment fw wrote: `policy:<id>`, `builtin:...`, `default`, ...
    pub comment: Option<String>,
    /// Counter values, when the rule has a counter.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

fn cstring(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
}

/// Parses one NEWRULE message of a dump.
pub fn parse_rule(m: &Msg<'_>) -> Option<RuleCounters> {
    if m.ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
        return None;
    }
    let mut r = RuleCounters { chain: String::new(), handle: 0, comment: None, packets: None, bytes: None };
    for (ty, v) in attrs(m.payload.get(4..)?) {
        match ty {
            NFTA_RULE_CHAIN => r.chain = cstring(v),
            NFTA_RULE_HANDLE => r.handle = be_u64(v).unwrap_or(0),
            NFTA_RULE_USERDATA => {
                // udata TLVs: type u8, len u8, value; type 0 is the comment.
                let mut u = v;
                while u.len() >= 2 {
                    let (t, l) = (u[0], u[1] as usize);
                    let Some(val) = u.get(2..2 + l) else { break };
                    if t == 0 {
                        r.comment = Some(cstring(val));
                    }
                    u = &u[2 + l..];
                }
            }
            NFTA_RULE_EXPRESSIONS => {
                for (lt, elem) in attrs(v) {
                    if lt != NFTA_LIST_ELEM {
                        continue;
                    }
                    let ea = attrs(elem);
                    let is_counter = ea.iter().any(|(t, n)| *t == NFTA_EXPR_NAME && cstring(n) == "counter");
                    if !is_counter {
                        continue;
                    }
                    for (t, data) in ea {
                        if t == NFTA_EXPR_DATA {
                            for (ct, cv) in attrs(data) {
                                match ct {
                                    NFTA_COUNTER_BYTES => r.bytes = be_u64(cv),
                                    NFTA_COUNTER_PACKETS => r.packets = be_u64(cv),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for m in messages(&bytes) {
                let _ = parse_ack(&m);
                let _ = parse_rule(&m);
                let _ = parse_set_elems(&m);
            }
            let _ = attrs(&bytes);
        }
    }
}
