//! Keeps each host-side namespace's `table bridge fw_floor` equal to policy x ports x blocks.
//!
//! One open socket per floor namespace. A change of ports, addresses, zone members or blocks
//! is a set-element update (a container joining is an element in `ports`, `port_out`, ...);
//! a policy change replaces the table atomically, carrying over the reply tuples the packet
//! path recorded (dumped just before, re-added with the time they had left), so established
//! inbound connections keep flowing. A tuple a new policy no longer allows is not carried
//! over: revocation reaches the floor too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::{info, info_span, warn};

use super::compile::{compile_floor, DYNAMIC_SETS, FLOOR_TABLE};
use super::link::NsId;
use super::{FloorOptions, Port};
use crate::blocks::BlockList;
use crate::compile::{CompileOptions, Membership};
use crate::nft::{Nft, NftError};
use crate::reconcile::rules_match;
use crate::rules::Policy;
use crate::ruleset::ir::{SetElem, SetKey, TableFamily};
use crate::ruleset::Ruleset;

struct FloorNs {
    nft: Nft,
    path: PathBuf,
    /// What fw last programmed here, without the dynamic sets' elements.
    last: Option<Ruleset>,
}

/// The ports of one floor namespace, as the daemon found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub path: PathBuf,
    pub ports: Vec<Port>,
}

/// What one pass did, per floor namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FloorReport {
    pub replaced: Vec<NsId>,
    pub updated: Vec<NsId>,
    pub unchanged: usize,
    pub failed: Vec<(NsId, String)>,
}

#[derive(Default)]
pub struct Floors {
    by_ns: BTreeMap<NsId, FloorNs>,
    opts: FloorOptions,
    /// The namespace whose floor must exist even with no port (the guard's, for Docker:
    /// an unadmitted port there is cut).
    keep: Option<(NsId, PathBuf)>,
}

impl Floors {
    pub fn new(opts: FloorOptions, keep: Option<(NsId, PathBuf)>) -> Floors {
        Floors { by_ns: BTreeMap::new(), opts, keep }
    }

    pub fn opts(&self) -> &FloorOptions {
        &self.opts
    }

    /// The table last programmed in `ns`.
    pub fn ruleset(&self, ns: &NsId) -> Option<&Ruleset> {
        self.by_ns.get(ns).and_then(|f| f.last.as_ref())
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&NsId, &PathBuf)> {
        self.by_ns.iter().map(|(id, f)| (id, &f.path))
    }

    /// Brings every floor to the desired state; namespaces no longer wanted are forgotten
    /// (socket closed, table left: it admits no port that is still there).
    pub fn sync(
        &mut self,
        mut want: BTreeMap<NsId, Want>,
        policy: &Policy,
        m: &Membership<'_>,
        blocks: &BlockList,
        copts: &CompileOptions,
        only: Option<&[NsId]>,
        hold: Option<NsId>,
    ) -> FloorReport {
        if let Some((id, path)) = &self.keep {
            want.entry(*id).or_insert_with(|| Want { path: path.clone(), ports: Vec::new() });
        }
        if let Some(h) = hold {
            want.remove(&h);
        }
        let mut report = FloorReport::default();
        if only.is_none() {
            let gone: Vec<NsId> = self
                .by_ns
                .keys()
                .filter(|id| !want.contains_key(id) && Some(**id) != hold)
                .copied()
                .collect();
            for id in gone {
                info!(netns = %id, "floor forgotten: no container port there any more");
                self.by_ns.remove(&id);
            }
        }
        for (id, w) in want {
            if only.is_some_and(|o| !o.contains(&id)) {
                continue;
            }
            let _span = info_span!("floor", netns = %w.path.display()).entered();
            // Only the guard's namespace cuts unadmitted ports: elsewhere (a lab's hub) other
            // bridge ports are not fw's business.
            let mut opts = self.opts.clone();
            if self.keep.as_ref().map(|(k, _)| k) != Some(&id) {
                opts.guard_prefixes.clear();
            }
            let rs = compile_floor(policy, m, &w.ports, blocks, copts, &opts);
            let f = match self.by_ns.get_mut(&id) {
                Some(f) => f,
                None => match Nft::open(&w.path, &format!("floor {}", w.path.display())) {
                    Ok(nft) => {
                        self.by_ns.entry(id).or_insert(FloorNs { nft, path: w.path.clone(), last: None })
                    }
                    Err(e) => {
                        warn!(error = %e, "floor: cannot open the namespace");
                        report.failed.push((id, e.to_string()));
                        continue;
                    }
                },
            };
            if f.last.as_ref() == Some(&rs) {
                report.unchanged += 1;
                continue;
            }
            let step = match f.last.as_ref().and_then(|l| crate::ruleset::diff::set_changes(l, &rs)) {
                Some(changes) => f.nft.update_sets_in(rs.family, &rs.table, &changes).map(|()| false),
                None => replace(&mut f.nft, &rs, policy, m, copts).map(|()| true),
            };
            match step {
                Ok(replaced) => {
                    f.last = Some(rs);
                    if replaced {
                        info!(ports = w.ports.len(), "floor programmed");
                        report.replaced.push(id);
                    } else {
                        report.updated.push(id);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "floor programming failed; the previous floor stays");
                    report.failed.push((id, e.to_string()));
                }
            }
        }
        report
    }

    /// Re-applies every floor whose rules differ from what fw programmed (someone on the
    /// host edited it); returns the namespaces restored.
    pub fn verify(&mut self, policy: &Policy, m: &Membership<'_>, copts: &CompileOptions) -> Vec<PathBuf> {
        let mut restored = Vec::new();
        for f in self.by_ns.values_mut() {
            let Some(last) = f.last.clone() else { continue };
            let step = f.nft.list_rules_of(TableFamily::Bridge, FLOOR_TABLE).and_then(|listed| {
                if rules_match(&last, &listed) {
                    return Ok(false);
                }
                replace(&mut f.nft, &last, policy, m, copts).map(|()| true)
            });
            match step {
                Ok(false) => {}
                Ok(true) => {
                    warn!(netns = %f.path.display(), "floor changed outside fw: restored");
                    restored.push(f.path.clone());
                }
                Err(e) => warn!(netns = %f.path.display(), error = %e, "floor check failed"),
            }
        }
        restored
    }
}

/// Replaces the floor with `rs`, carrying over the reply tuples the packet path recorded
/// that the policy still allows.
fn replace(
    nft: &mut Nft,
    rs: &Ruleset,
    _policy: &Policy,
    _m: &Membership<'_>,
    _copts: &CompileOptions,
) -> Result<(), NftError> {
    let mut next = rs.clone();
    let now = crate::nft::now_ms();
    for name in DYNAMIC_SETS {
        let Some(set) = next.sets.iter_mut().find(|s| s.name == name) else { continue };
        let SetKey::Fields(kinds) = set.key else { continue };
        for e in nft.dump_set(TableFamily::Bridge, FLOOR_TABLE, name)? {
            let Some(values) = crate::nft::decode_tuple(kinds, &e.key) else { continue };
            let elem = SetElem::Tuple(values);
            if let Some(left) = e.expires_in_ms {
                set.expires.insert(elem.clone(), now + left as i64);
            }
            set.elements.push(elem);
        }
    }
    nft.apply(&next)
}
