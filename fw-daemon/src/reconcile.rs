//! Keeps every container's `table inet fw` equal to policy x inventory.
//!
//! Everything is compiled (pure) before anything is applied, so a policy that cannot be
//! compiled for one container never leaves the fleet half-switched. Each namespace then
//! switches in one atomic batch, or by set-element updates when only membership changed.
//! Each programmed container keeps its open socket (it pins the namespace; dropping it is
//! how a container is forgotten) and the nftables generation id seen after our last commit:
//! a different id later means someone else changed the ruleset there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, info_span, warn};

use crate::blocks::BlockList;
use crate::compile::{compile_with_blocks, CompileOptions, Membership};
use crate::inventory::Inventory;
use crate::nft::{Nft, NftError};
use crate::rules::Policy;
use crate::ruleset::Ruleset;

struct Programmed {
    nft: Nft,
    netns: PathBuf,
    last: Ruleset,
    generation: u32,
}

/// What one pass did, per container name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whole table (re)programmed: new containers, or a changed policy.
    pub replaced: Vec<String>,
    /// Only set elements changed.
    pub updated: Vec<String>,
    pub unchanged: usize,
    /// Gone from the inventory: socket closed, container forgotten (its table is left to
    /// disappear with its namespace).
    pub forgotten: Vec<String>,
    pub failed: Vec<(String, String)>,
}

pub struct Reconciler {
    policy: Arc<Policy>,
    inventory: Inventory,
    opts: CompileOptions,
    blocks: BlockList,
    programmed: BTreeMap<String, Programmed>,
}

impl Reconciler {
    pub fn new(policy: Arc<Policy>, inventory: Inventory, opts: CompileOptions) -> Reconciler {
        Reconciler { policy, inventory, opts, blocks: BlockList::default(), programmed: BTreeMap::new() }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn blocks(&self) -> &BlockList {
        &self.blocks
    }

    /// The operator blocks compiled into every table; the caller reconciles after.
    pub fn set_blocks(&mut self, blocks: BlockList) {
        self.blocks = blocks;
    }

    /// (name, zone) of every container in the inventory.
    pub fn zones(&self) -> Vec<(String, String)> {
        self.inventory
            .containers
            .iter()
            .map(|c| (c.name.clone(), self.policy.zone_of(&c.identity()).name.clone()))
            .collect()
    }

    /// The table last programmed for `name`.
    pub fn ruleset(&self, name: &str) -> Option<&Ruleset> {
        self.programmed.get(name).map(|p| &p.last)
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    pub fn set_inventory(&mut self, inventory: Inventory) {
        self.inventory = inventory;
    }

    /// The clock for policy expiries; the caller reconciles periodically so expired policies
    /// leave the tables without a reload.
    pub fn set_now(&mut self, now: i64) {
        self.opts.now = now;
    }

    pub fn programmed(&self) -> impl Iterator<Item = &str> {
        self.programmed.keys().map(String::as_str)
    }

    /// Programmed containers and their namespaces.
    pub fn programmed_netns(&self) -> impl Iterator<Item = (&str, &std::path::Path)> {
        self.programmed.iter().map(|(n, p)| (n.as_str(), p.netns.as_path()))
    }

    /// Brings every namespace to the desired state.
    pub fn reconcile(&mut self) -> Report {
        self.reconcile_some(None)
    }

    /// Brings the named containers (all, for `None`) to the desired state: a block touches
    /// only the tables it applies to, and compiling only those keeps it fast.
    pub fn reconcile_some(&mut self, only: Option<&std::collections::BTreeSet<String>>) -> Report {
        let mut report = Report::default();
        let m = Membership::new(&self.policy, &self.inventory);
        let desired: BTreeMap<String, (PathBuf, Ruleset)> = self
            .inventory
            .containers
            .iter()
            .filter(|c| only.is_none_or(|o| o.contains(&c.name)))
            .filter_map(|c| {
                let ns = c.netns.clone()?;
                let rs = compile_with_blocks(&self.policy, &m, c, &self.opts, &self.blocks);
                Some((c.name.clone(), (ns, rs)))
            })
            .collect();

        let gone: Vec<String> = self
            .programmed
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o.contains(*name)))
            .filter(|(name, p)| desired.get(*name).is_none_or(|(ns, _)| *ns != p.netns))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.programmed.remove(&name);
            info!(container = %name, "forgotten: left the inventory or moved namespace");
            report.forgotten.push(name);
        }

        for (name, (netns, rs)) in desired {
            let _span = info_span!("container", container = %name).entered();
            match self.programmed.get_mut(&name) {
                Some(p) if p.last == rs => report.unchanged += 1,
                Some(p) => {
                    let step = p.nft.converge(Some(&p.last), &rs).and_then(|replaced| {
                        p.generation = p.nft.generation()?;
                        Ok(replaced)
                    });
                    match step {
                        Ok(replaced) => {
                            p.last = rs;
                            if replaced {
                                info!("table replaced");
                                report.replaced.push(name);
                            } else {
                                info!("zone sets updated");
                                report.updated.push(name);
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "programming failed; previous table stays");
                            report.failed.push((name, e.to_string()));
                        }
                    }
                }
                None => match program_new(&netns, &name, &rs) {
                    Ok((nft, generation)) => {
                        info!(netns = %netns.display(), "table programmed");
                        self.programmed.insert(name.clone(), Programmed { nft, netns, last: rs, generation });
                        report.replaced.push(name);
                    }
                    Err(e) => {
                        warn!(error = %e, "programming failed");
                        report.failed.push((name, e.to_string()));
                    }
                },
            }
        }
        report
    }

    /// The backstop for `restore_drift`: a change made between one of our commits and our
    /// reading of the generation id would hide behind that id, so the rules themselves are
    /// compared too (the caller does this less often: it is a dump per namespace).
    pub fn verify_rules(&mut self) -> Vec<String> {
        self.restore_where("rules differ from what fw programmed", None, |p| {
            Ok(!rules_match(&p.last, &p.nft.list_rules()?))
        })
    }

    /// Restores every table someone else changed since our last commit (a container with
    /// CAP_NET_ADMIN running `nft flush ruleset`, say). Returns the restored containers.
    pub fn restore_drift(&mut self) -> Vec<String> {
        self.restore_drift_in(None)
    }

    /// `restore_drift` for some containers only (those a change notification named).
    pub fn restore_drift_in(&mut self, only: Option<&std::collections::BTreeSet<String>>) -> Vec<String> {
        self.restore_where("ruleset changed outside fw", only, |p| Ok(p.nft.generation()? != p.generation))
    }

    /// Re-applies the last programmed table wherever `changed` says so; returns those names.
    fn restore_where(
        &mut self,
        why: &str,
        only: Option<&std::collections::BTreeSet<String>>,
        changed: impl Fn(&mut Programmed) -> Result<bool, NftError>,
    ) -> Vec<String> {
        let mut restored = Vec::new();
        for (name, p) in &mut self.programmed {
            if only.is_some_and(|o| !o.contains(name)) {
                continue;
            }
            let _span = info_span!("container", container = %name).entered();
            let step = changed(p).and_then(|changed| {
                if changed {
                    p.nft.apply(&p.last)?;
                    p.generation = p.nft.generation()?;
                }
                Ok(changed)
            });
            match step {
                Ok(false) => {}
                Ok(true) => {
                    warn!("{why}: table restored");
                    restored.push(name.clone());
                }
                Err(e) => warn!(error = %e, "drift check failed"),
            }
        }
        restored
    }
}

/// Whether the kernel's rules of `table inet fw` are, chain by chain and in order, the
/// ones `rs` describes (compared by the comment each rule carries).
pub fn rules_match(rs: &Ruleset, listed: &[crate::nft::RuleCounters]) -> bool {
    let expected = rs.chains.iter().flat_map(|c| {
        c.rules.iter().map(|r| (c.name.as_str(), r.origin.as_ref().map(crate::ruleset::render::comment)))
    });
    let got = listed.iter().map(|r| (r.chain.as_str(), r.comment.clone()));
    let mut expected: Vec<_> = expected.collect();
    let mut got: Vec<_> = got.collect();
    // Chains may come back in any order; rules within a chain keep theirs (stable sort).
    expected.sort_by_key(|(chain, _)| *chain);
    got.sort_by_key(|(chain, _)| *chain);
    expected == got
}

fn program_new(netns: &std::path::Path, name: &str, rs: &Ruleset) -> Result<(Nft, u32), NftError> {
    let mut nft = Nft::open(netns, name)?;
    nft.apply(rs)?;
    let generation = nft.generation()?;
    Ok((nft, generation))
}
