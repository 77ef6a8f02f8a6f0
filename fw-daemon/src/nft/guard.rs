//! The host-side guard that closes the window between a container's start and its
//! programming: `table bridge fw_guard` in the host namespace drops every frame that enters
//! a bridge from a container's veth port unless its source MAC belongs to a container whose
//! own table fw has already programmed. Containers nobody has identified yet (just started,
//! or started while the daemon was down: the table outlives the daemon) cannot send at all.
//!
//!   table bridge fw_guard {
//!     set programmed { type ether_addr; }
//!     chain prerouting { type filter hook prerouting priority -300; policy accept;
//!       iifname "veth*" ether saddr != @programmed counter drop } }
//!
//! The whole table is replaced in one batch on every change (a few hundred elements at most,
//! one message), so it is never half-updated.

use nftnl::expr::{Cmp, CmpOp, Counter, LLHeaderField, Meta, Payload, Verdict};
use nftnl::{Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};

use super::build::{BuildError, Built, Emitter};
use super::sys::{self, Elem, KeyType};

pub const GUARD_TABLE: &str = "fw_guard";
const NFPROTO_BRIDGE: u16 = 7;

/// The guard table admitting exactly `macs`.
pub fn guard_batch(macs: &[[u8; 6]]) -> Result<Built, BuildError> {
    let mut em = Emitter::for_table(c"fw_guard", NFPROTO_BRIDGE);
    let table = Table::new(c"fw_guard", ProtoFamily::Bridge);
    // add + delete + add: replaces the table whether or not it existed.
    em.add(&table, MsgType::Add, "table bridge fw_guard");
    em.add(&table, MsgType::Del, "table bridge fw_guard (replace)");
    em.add(&table, MsgType::Add, "table bridge fw_guard");
    let elems: Vec<Elem> = macs
        .iter()
        .map(|m| Elem { key: m.to_vec(), key_end: None, flags: 0, timeout_ms: None, jump: None })
        .collect();
    let id =
        em.set("programmed", KeyType::EtherAddr, 0, Some("MACs of containers fw has programmed"), &elems)?;
    let mut chain = Chain::new(c"prerouting", &table);
    chain.set_hook(Hook::PreRouting, -300);
    chain.set_type(ChainType::Filter);
    chain.set_policy(Policy::Accept);
    em.add(&chain, MsgType::Add, "chain prerouting");
    let mut rule = Rule::new(&chain);
    rule.add_expr(&Meta::IifName);
    // Four bytes compared: a prefix match, as `iifname "veth*"`.
    rule.add_expr(&Cmp::new(CmpOp::Eq, &b"veth"[..]));
    rule.add_expr(&Payload::LinkLayer(LLHeaderField::Saddr));
    rule.add_expr(&sys::Lookup {
        set: c"programmed".to_owned(),
        set_id: id,
        invert: true,
        sreg: libc::NFT_REG_1 as u32,
        verdict_map: false,
    });
    rule.add_expr(&Counter);
    rule.add_expr(&Verdict::Drop);
    em.add(&rule, MsgType::Add, "guard rule");
    Ok(em.finish())
}

/// Removes the guard if present (add + delete, so a missing table is no error).
pub fn guard_flush_batch() -> Built {
    let mut em = Emitter::for_table(c"fw_guard", NFPROTO_BRIDGE);
    let table = Table::new(c"fw_guard", ProtoFamily::Bridge);
    em.add(&table, MsgType::Add, "table bridge fw_guard");
    em.add(&table, MsgType::Del, "delete of table bridge fw_guard");
    em.finish()
}
