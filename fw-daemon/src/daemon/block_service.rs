//! The block lifecycle: place (floors first, then the namespaces' tables, then the audit
//! record, then conntrack, then the state file), roll back what a failure leaves half
//! done, lift, expire, and escalate a tamperer. The blocks themselves live in the
//! reconciler (they are compiled into every table); this decides the order of the steps.

use std::collections::BTreeSet;

use fw_proto::control::{AlertKind, Answer, AuditOp, AuditRecord, AuditResult, BlockTarget, ErrorCode};
use tracing::{error, info, warn};

use crate::blocks::{Block, Ttl};
use crate::clock::Clock;
use crate::state::StateDir;

use super::enforcer::{Enforcer, TAMPER_ACTOR};
use super::trail::{Need, Trail};
use super::Notice;

/// The container a block names, if it names one.
pub fn block_container(t: &BlockTarget) -> Option<&str> {
    match t {
        BlockTarget::Quarantine { container, .. } | BlockTarget::Flow { container, .. } => Some(container),
        BlockTarget::Destination { scope: fw_proto::control::Scope::Container(c), .. } => Some(c),
        BlockTarget::Destination { .. } => None,
    }
}

/// The record of a block that lapsed, dated when it did.
pub fn expire_record(b: &Block, summary: Option<&str>, now_ms: i64) -> AuditRecord {
    AuditRecord {
        time_ms: b.expires_ms.unwrap_or(now_ms),
        peer: None,
        role: None,
        actor: None,
        op: AuditOp::Expire,
        target: Some(b.target.clone()),
        path: None,
        block: Some(b.id),
        reason: b.reason.clone(),
        ttl_ms: b.expires_ms.map(|e| (e - b.created_ms).max(0) as u64),
        result: AuditResult::Ok,
        policy_hash: None,
        summary: summary.map(str::to_string),
    }
}

/// What placing or lifting a block needs: the tables, the state directory, the trail and
/// the clock.
pub struct Blocks<'a> {
    pub enf: &'a mut Enforcer,
    pub state: &'a StateDir,
    pub trail: &'a Trail,
    pub clock: &'a dyn Clock,
}

type Outcome = Result<Answer, (ErrorCode, String)>;

impl Blocks<'_> {
    fn affected(zones: &[(String, String)], block: &Block) -> BTreeSet<String> {
        zones.iter().filter(|(c, z)| block.applies_to(c, z)).map(|(c, _)| c.clone()).collect()
    }

    /// Places a block. Its elements go in first (a cut must not wait for a disk), then its
    /// record is written (`rec`, completed here); if that fails and `need` requires it, the
    /// elements come out again and nothing else happens. Only then are conntrack entries
    /// deleted and the block saved.
    pub fn block(
        &mut self,
        target: BlockTarget,
        ttl: Option<Ttl>,
        reason: Option<String>,
        by: crate::blocks::By,
        rec: &mut AuditRecord,
        need: Need,
    ) -> (Outcome, Vec<Notice>) {
        let zones = self.enf.rec.zones();
        let before = self.enf.rec.blocks().clone();
        let mut list = before.clone();
        let block = match list.add(target, ttl, reason, by.name, by.origin, self.clock.now_ms(), &zones) {
            Ok(b) => b.clone(),
            Err(
                e @ (crate::blocks::BlockError::Overlap { .. } | crate::blocks::BlockError::Duplicate { .. }),
            ) => return (Err((ErrorCode::Conflict, e.to_string())), vec![]),
            Err(e) => return (Err((ErrorCode::NotFound, e.to_string())), vec![]),
        };
        rec.block = Some(block.id);
        let affected = Self::affected(&zones, &block);
        // Applied first, saved before the answer: the cut does not wait for an fsync, and a
        // block is acknowledged only once it will survive a restart. The floors first: they
        // are what the container cannot undo (their block sets alone: nothing else compiled).
        let floors = self.enf.contain.sync_blocks_with(&self.enf.rec, &zones, &list, &affected);
        if !floors.failed.is_empty() {
            self.enf.contain.sync_with(&self.enf.rec, &before, Some(&affected));
            let why: Vec<String> =
                floors.failed.iter().map(|(ns, e)| format!("floor in {ns}: {e}")).collect();
            return (Err((ErrorCode::Internal, format!("block not applied: {}", why.join("; ")))), vec![]);
        }
        self.enf.rec.set_blocks(list);
        let report = self.enf.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            self.enf.rec.set_blocks(before);
            self.enf.rec.reconcile_some(Some(&affected));
            self.enf.contain.sync(&self.enf.rec, Some(&affected));
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            return (Err((ErrorCode::Internal, format!("block not applied: {}", why.join("; ")))), vec![]);
        }
        rec.result = AuditResult::Ok;
        if let Err(e) = self.trail.write(rec, need) {
            self.enf.rec.set_blocks(before);
            let report = self.enf.rec.reconcile_some(Some(&affected));
            for (c, why) in &report.failed {
                error!(container = %c, "taking back unrecorded block {}: {why}", block.id);
            }
            for (ns, why) in &self.enf.contain.sync(&self.enf.rec, Some(&affected)).failed {
                error!(netns = %ns, "taking back unrecorded block {} from the floor: {why}", block.id);
            }
            return (Err(e), vec![]);
        }
        let cut = self.cut_flows(&block, &affected);
        let mut list = self.enf.rec.blocks().clone();
        if let Some(b) = list.get_mut(block.id) {
            b.flows_cut = cut;
        }
        self.enf.rec.set_blocks(list.clone());
        if let Err(e) = self.state.write_blocks(&list) {
            error!("{e}");
            return (
                Err((
                    ErrorCode::Internal,
                    format!("block {} is enforced but could not be saved: {e}", block.id),
                )),
                vec![],
            );
        }
        let block = Block { flows_cut: cut, ..block };
        let ttl = block.expires_ms.map_or_else(
            || "until unblocked".to_string(),
            |e| format!("for {} s", (e - block.created_ms) as f64 / 1000.0),
        );
        let why = block.reason.as_deref().map_or_else(String::new, |r| format!(": {r}"));
        let mut notice = Notice::new(
            AlertKind::Blocked,
            format!(
                "{} blocked {} {ttl} (block {}, {} container(s), {cut} flow(s) cut){why}",
                block.created_by,
                block.target,
                block.id,
                affected.len()
            ),
        );
        notice.container = block_container(&block.target).map(str::to_string);
        (Ok(Answer::Blocked { block: block.info(affected.into_iter().collect()) }), vec![notice])
    }

    /// Lifts a block: recorded first, since lifting opens traffic and must never happen
    /// unrecorded; then saved and applied.
    pub fn unblock(&mut self, id: u64, by: &str, rec: &mut AuditRecord) -> (Outcome, Vec<Notice>) {
        let mut list = self.enf.rec.blocks().clone();
        let block = match list.remove(id) {
            Ok(b) => b,
            Err(e) => return (Err((ErrorCode::NotFound, e.to_string())), vec![]),
        };
        rec.target = Some(block.target.clone());
        rec.result = AuditResult::Ok;
        if let Err(e) = self.trail.write(rec, Need::Required) {
            return (Err(e), vec![]);
        }
        let affected = Self::affected(&self.enf.rec.zones(), &block);
        if let Err(e) = self.state.write_blocks(&list) {
            // Recorded as done, then not done: say so in the trail too.
            let mut undo = rec.clone();
            undo.time_ms = self.clock.now_ms();
            undo.result = AuditResult::failed(ErrorCode::Internal, format!("not lifted after all: {e}"));
            self.trail.record(&undo);
            return (Err((ErrorCode::Internal, e.to_string())), vec![]);
        }
        self.enf.rec.set_blocks(list);
        let report = self.enf.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            warn!("unblock {id}: {}", why.join("; "));
        }
        let floors = self.enf.contain.sync(&self.enf.rec, Some(&affected));
        for (ns, e) in &floors.failed {
            warn!("unblock {id}: floor in {ns}: {e}");
        }
        let mut notice =
            Notice::new(AlertKind::Unblocked, format!("{by} lifted block {id} on {}", block.target));
        notice.container = block_container(&block.target).map(str::to_string);
        // Other blocks that still cut what this one did: lifting it alone opened nothing there.
        let zones = self.enf.rec.zones();
        let remaining = self
            .enf
            .rec
            .blocks()
            .still_applying(&block, &zones)
            .into_iter()
            .map(|b| {
                b.info(zones.iter().filter(|(c, z)| b.applies_to(c, z)).map(|(c, _)| c.clone()).collect())
            })
            .collect();
        (Ok(Answer::Unblocked { block: block.info(affected.into_iter().collect()), remaining }), vec![notice])
    }

    /// Drops blocks whose time is up (the kernel already removed their elements).
    pub fn expire(&mut self) -> Vec<Notice> {
        let mut list = self.enf.rec.blocks().clone();
        let now = self.clock.now_ms();
        let gone = list.expire(now);
        if gone.is_empty() {
            return vec![];
        }
        if let Err(e) = self.state.write_blocks(&list) {
            error!("{e}");
        }
        self.enf.rec.set_blocks(list);
        gone.iter()
            .map(|b| {
                self.trail.record(&expire_record(b, None, now));
                let mut n =
                    Notice::new(AlertKind::Unblocked, format!("block {} on {} expired", b.id, b.target));
                n.container = block_container(&b.target).map(str::to_string);
                n
            })
            .collect()
    }

    /// A container that keeps changing its table wins every race with a repairer inside
    /// its namespace; the floor it cannot reach cuts it instead: an automatic quarantine,
    /// both directions, until an operator lifts it. Audited and alerted like an operator's.
    pub fn escalate(&mut self, name: &str) -> Vec<Notice> {
        use fw_proto::control::BlockDirection;
        if self.enf.quarantined_both(name) {
            return vec![]; // quarantined both ways by someone already
        }
        let t = self.enf.contain.tamper_policy();
        let reason =
            format!("tamper: its table was restored {} times within {} s", t.repairs, t.window.as_secs_f64());
        let target = BlockTarget::Quarantine { container: name.to_string(), direction: BlockDirection::Both };
        let mut rec = self.trail.own_record(AuditOp::Block, Some(target.clone()), Some(&reason), self.clock);
        rec.actor = Some(TAMPER_ACTOR.into());
        // The daemon's own action: it stands even when the trail cannot record it.
        let (outcome, mut notices) = self.block(
            target,
            None,
            Some(reason.clone()),
            crate::blocks::By { name: TAMPER_ACTOR.into(), origin: fw_proto::control::BlockOrigin::Tamper },
            &mut rec,
            Need::BestEffort,
        );
        let outcome = match outcome {
            Ok(Answer::Blocked { block }) => {
                format!("quarantined at the host-side floor (block {})", block.id)
            }
            Ok(_) => "quarantined".into(),
            Err((code, m)) => {
                rec.result = AuditResult::failed(code, &m);
                self.trail.record(&rec);
                format!("quarantine failed: {m}")
            }
        };
        warn!(container = %name, "{reason}: {outcome}");
        notices.push(Notice::new(AlertKind::Escalated, format!("{name}: {reason}; {outcome}")).about(name));
        notices
    }

    /// Deletes the conntrack entries a new block matches, by exact tuple: the set element
    /// already stops their packets; this also clears them from the table and the console.
    fn cut_flows(&self, block: &Block, affected: &BTreeSet<String>) -> u64 {
        let mut cut = 0;
        let kernel = self.enf.rec.kernel().clone();
        for c in self.enf.rec.inventory().containers.iter().filter(|c| affected.contains(&c.name)) {
            let Some(ns) = &c.netns else { continue };
            let own = c.addresses.clone();
            let res = kernel.conntrack(ns).and_then(|mut ct| {
                ct.delete_matching(&|e| {
                    let o = &e.orig;
                    crate::blocks::cuts_flow(block, &own, o.proto, o.src, o.sport, o.dst, o.dport)
                })
            });
            match res {
                Ok(n) => cut += n,
                Err(e) => warn!(container = %c.name, error = %e, "block: deleting conntrack entries failed"),
            }
        }
        if cut > 0 {
            info!(block = block.id, flows = cut, "established flows cut");
        }
        cut
    }
}
