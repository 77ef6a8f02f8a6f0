//! Keeps every container namespace's `table inet fw` equal to policy x inventory.
//!
//! Everything is compiled (pure) before anything is applied, so a policy that cannot be
//! compiled for one container never leaves the fleet half-switched. Each namespace then
//! switches in one atomic batch, or by set-element updates when only membership changed.
//!
//! Tables are per namespace, not per container: containers are grouped by the identity
//! (device, inode) of their namespace, so two containers sharing one (`--network
//! container:X`, or two inventory entries naming one namespace by different paths) get one
//! table, compiled for all of them (`compile_group`), owned by the first by name. The
//! daemon's own namespace and the host's are never programmed: a container in one of them
//! (`--network host`, an inventory path that resolves there) is skipped and reported.
//!
//! Each programmed namespace keeps its open socket (it pins the namespace; dropping it is
//! how a namespace is forgotten) and the nftables generation id seen after our last commit:
//! a different id later means someone else changed the ruleset there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, info_span, warn};

use crate::blocks::BlockList;
use crate::compile::{compile_group, CompileOptions, Membership};
use crate::floor::link::NsId;
use crate::inventory::{Container, Inventory};
use crate::kernel::{Kernel, Tables};
use crate::nft::NftError;
use crate::rules::Policy;
use crate::ruleset::Ruleset;

struct Programmed {
    nft: Box<dyn Tables>,
    netns: PathBuf,
    ns: NsId,
    /// The containers in the namespace, by name; the first owns the table.
    members: Vec<String>,
    last: Ruleset,
    generation: u32,
    /// Committed to since its rules were last compared with `last`: a change that landed
    /// between that commit and our reading of `generation` hides behind the id, so
    /// `verify_rules` dumps this table once. Verified tables are left to the generation check.
    unverified: bool,
}

/// What one pass did, per container name (a shared namespace's owner).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whole table (re)programmed: new containers, or a changed policy.
    pub replaced: Vec<String>,
    /// Of `replaced`: namespaces that had no table of fw's before (their conntrack entries
    /// predate any policy; see `Containment::converge`). A table a previous run left is
    /// adopted, not fresh.
    pub fresh: Vec<String>,
    /// Only set elements changed.
    pub updated: Vec<String>,
    pub unchanged: usize,
    /// Gone from the inventory: socket closed, container forgotten (its table is left to
    /// disappear with its namespace).
    pub forgotten: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Why a container has no table of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its namespace is the host's or the daemon's: fw never programs those.
    HostNamespace,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::HostNamespace => f.write_str(
                "its network namespace is the host's (or the daemon's): fw never programs it; \
                 run it in a namespace of its own",
            ),
        }
    }
}

pub struct Reconciler {
    policy: Arc<Policy>,
    inventory: Inventory,
    opts: CompileOptions,
    blocks: BlockList,
    /// By owner name.
    programmed: BTreeMap<String, Programmed>,
    /// Container -> the owner of its namespace's table.
    owner: BTreeMap<String, String>,
    skipped: BTreeMap<String, Skip>,
    /// The namespaces never programmed: the daemon's own and the host's.
    forbidden: Vec<NsId>,
    kernel: Arc<dyn Kernel>,
}

impl Reconciler {
    /// A reconciler on this machine's kernel.
    pub fn new(policy: Arc<Policy>, inventory: Inventory, opts: CompileOptions) -> Reconciler {
        Reconciler::with_kernel(policy, inventory, opts, crate::kernel::real())
    }

    pub fn with_kernel(
        policy: Arc<Policy>,
        inventory: Inventory,
        opts: CompileOptions,
        kernel: Arc<dyn Kernel>,
    ) -> Reconciler {
        Reconciler {
            policy,
            inventory,
            opts,
            blocks: BlockList::default(),
            programmed: BTreeMap::new(),
            owner: BTreeMap::new(),
            skipped: BTreeMap::new(),
            forbidden: kernel.forbidden(),
            kernel,
        }
    }

    /// The kernel this reconciler programs.
    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
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

    /// The table last programmed for `name`'s namespace.
    pub fn ruleset(&self, name: &str) -> Option<&Ruleset> {
        self.programmed.get(self.owner.get(name)?).map(|p| &p.last)
    }

    /// The containers sharing `name`'s namespace (itself included), if it is programmed.
    pub fn sharers(&self, name: &str) -> Option<&[String]> {
        self.programmed.get(self.owner.get(name)?).map(|p| p.members.as_slice())
    }

    /// Containers fw refuses to program, and why.
    pub fn skipped(&self) -> &BTreeMap<String, Skip> {
        &self.skipped
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

    pub fn opts(&self) -> &CompileOptions {
        &self.opts
    }

    /// The clock for policy expiries; the caller reconciles periodically so expired policies
    /// leave the tables without a reload.
    pub fn set_now(&mut self, now: i64) {
        self.opts.now = now;
    }

    /// Every container whose namespace is programmed.
    pub fn programmed(&self) -> impl Iterator<Item = &str> {
        self.programmed.values().flat_map(|p| p.members.iter().map(String::as_str))
    }

    /// Programmed namespaces: owner and path, one per namespace.
    pub fn programmed_netns(&self) -> impl Iterator<Item = (&str, &std::path::Path)> {
        self.programmed.iter().map(|(n, p)| (n.as_str(), p.netns.as_path()))
    }

    /// Programmed namespaces by identity, with their members.
    pub fn namespaces(&self) -> impl Iterator<Item = (NsId, &Path, &[String])> {
        self.programmed.values().map(|p| (p.ns, p.netns.as_path(), p.members.as_slice()))
    }

    /// Brings every namespace to the desired state.
    pub fn reconcile(&mut self) -> Report {
        self.reconcile_some(None)
    }

    /// Brings the named containers (all, for `None`) to the desired state: a block touches
    /// only the tables it applies to, and compiling only those keeps it fast.
    pub fn reconcile_some(&mut self, only: Option<&BTreeSet<String>>) -> Report {
        let mut report = Report::default();
        let m = Membership::new(&self.policy, &self.inventory);
        let (groups, skipped) = groups(&*self.kernel, &self.inventory, &self.forbidden, &mut report);
        for (name, why) in &skipped {
            if self.skipped.get(name) != Some(why) {
                warn!(container = %name, "not programmed: {why}");
            }
        }
        let skipped_now = skipped;
        let mut owner = BTreeMap::new();
        let desired: BTreeMap<String, (NsId, PathBuf, Vec<String>, Ruleset)> = groups
            .into_iter()
            .filter(|(_, _, members)| only.is_none_or(|o| members.iter().any(|c| o.contains(&c.name))))
            .map(|(id, path, members)| {
                let rs = compile_group(&self.policy, &m, &members, &self.opts, &self.blocks);
                let names: Vec<String> = members.iter().map(|c| c.name.clone()).collect();
                for n in &names {
                    owner.insert(n.clone(), names[0].clone());
                }
                (names[0].clone(), (id, path, names, rs))
            })
            .collect();
        drop(m);
        self.skipped = skipped_now;
        let in_scope = |p: &Programmed| only.is_none_or(|o| p.members.iter().any(|c| o.contains(c)));
        let gone: Vec<String> = self
            .programmed
            .iter()
            .filter(|(_, p)| in_scope(p))
            .filter(|(name, p)| desired.get(*name).is_none_or(|(id, _, _, _)| *id != p.ns))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(p) = self.programmed.remove(&name) {
                for c in &p.members {
                    self.owner.remove(c);
                }
            }
            info!(container = %name, "forgotten: left the inventory or moved namespace");
            report.forgotten.push(name);
        }
        if only.is_none() {
            self.owner = owner;
        } else {
            self.owner.extend(owner);
        }

        for (name, (id, netns, members, rs)) in desired {
            let _span = info_span!("container", container = %name).entered();
            if members.len() > 1 {
                tracing::debug!(sharers = ?members, "one namespace, one table for all of them");
            }
            match self.programmed.get_mut(&name) {
                Some(p) if p.last == rs && p.members == members => report.unchanged += 1,
                Some(p) => {
                    p.members = members;
                    p.unverified = true;
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
                None => match program_new(&*self.kernel, &netns, &name, &rs) {
                    Ok((nft, generation, adopted)) => {
                        if adopted {
                            info!(netns = %netns.display(), "table adopted from a previous run");
                        } else {
                            info!(netns = %netns.display(), "table programmed");
                        }
                        self.programmed.insert(
                            name.clone(),
                            Programmed {
                                nft,
                                netns,
                                ns: id,
                                members,
                                last: rs,
                                generation,
                                unverified: true,
                            },
                        );
                        report.replaced.push(name.clone());
                        if !adopted {
                            report.fresh.push(name);
                        }
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
    ///
    /// Only tables committed to since their last comparison are dumped (idle, nothing is):
    /// any later change moves the generation id, which `restore_drift` reads.
    pub fn verify_rules(&mut self) -> Vec<String> {
        self.restore_where("rules differ from what fw programmed", None, |p| {
            if !p.unverified {
                return Ok(false);
            }
            let differ = !rules_match(&p.last, &p.nft.list_rules()?);
            p.unverified = false;
            Ok(differ)
        })
    }

    /// Restores every table someone else changed since our last commit (a container with
    /// CAP_NET_ADMIN running `nft flush ruleset`, say). Returns the restored containers.
    pub fn restore_drift(&mut self) -> Vec<String> {
        self.restore_drift_in(None)
    }

    /// `restore_drift` for some containers only (those a change notification named). A
    /// notified namespace also gets its rules compared: a change committed between our own
    /// commit and our reading of the generation id hides behind that id, and a tamperer
    /// that keeps changing the table lands in that window sooner or later.
    pub fn restore_drift_in(&mut self, only: Option<&std::collections::BTreeSet<String>>) -> Vec<String> {
        let notified = only.is_some();
        self.restore_where("ruleset changed outside fw", only, move |p| {
            Ok(p.nft.generation()? != p.generation
                || (notified && !rules_match(&p.last, &p.nft.list_rules()?)))
        })
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
                    p.unverified = true;
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

/// The inventory's containers grouped by namespace identity (members by name); containers
/// whose namespace cannot be read are reported failed, those in a forbidden one skipped.
#[allow(clippy::type_complexity)]
fn groups<'i>(
    kernel: &dyn Kernel,
    inventory: &'i Inventory,
    forbidden: &[NsId],
    report: &mut Report,
) -> (Vec<(NsId, PathBuf, Vec<&'i Container>)>, BTreeMap<String, Skip>) {
    let mut by_ns: BTreeMap<NsId, (PathBuf, Vec<&Container>)> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for c in &inventory.containers {
        let Some(path) = &c.netns else { continue };
        match kernel.netns_id(path) {
            Ok(id) if forbidden.contains(&id) => {
                skipped.insert(c.name.clone(), Skip::HostNamespace);
            }
            Ok(id) => by_ns.entry(id).or_insert_with(|| (path.clone(), Vec::new())).1.push(c),
            Err(e) => report.failed.push((c.name.clone(), format!("netns {}: {e}", path.display()))),
        }
    }
    let groups = by_ns
        .into_iter()
        .map(|(id, (path, mut members))| {
            members.sort_by(|a, b| a.name.cmp(&b.name));
            (id, path, members)
        })
        .collect();
    (groups, skipped)
}

/// Whether the kernel's rules of `rs`'s table are, chain by chain and in order, the ones
/// `rs` describes (compared by the comment each rule carries).
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

/// Opens and programs a namespace; also says whether a table of ours was already there (a
/// previous run's, adopted by the replacement: its flows are not new).
fn program_new(
    kernel: &dyn Kernel,
    netns: &std::path::Path,
    name: &str,
    rs: &Ruleset,
) -> Result<(Box<dyn Tables>, u32, bool), NftError> {
    let mut nft = kernel.tables(netns, name)?;
    let adopted = nft.list_rules().is_ok_and(|r| !r.is_empty());
    nft.apply(rs)?;
    let generation = nft.generation()?;
    Ok((nft, generation, adopted))
}
