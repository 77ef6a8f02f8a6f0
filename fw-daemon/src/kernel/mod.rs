//! The kernel behind a narrow seam. Everything the daemon's enforcement logic asks of the
//! kernel (a namespace's identity and links, its tables, its conntrack entries) goes
//! through [`Kernel`]; the real implementation ([`Real`]) is the netlink code in `nft/`,
//! `flows/conntrack.rs` and `floor/link.rs`, and [`fake::FakeKernel`] keeps the same state
//! in memory, so the reconciler, the floors, drift repair and the block lifecycle run in
//! unprivileged tests. The fake is trusted only as far as it rejects what the kernel
//! rejects (references to missing sets and chains, elements of missing sets, a table that
//! is not there); the privileged tests run the same scenarios against the real thing.

pub mod fake;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::floor::link::{Links, NsId};
use crate::flows::conntrack::{CtEntry, CtError};
use crate::nft::{DumpedElem, NftError, RuleCounters, SetChange};
use crate::ruleset::ir::{TableFamily, TABLE};
use crate::ruleset::Ruleset;

/// The kernel as the enforcement logic sees it. Shared by the reconciler, the floors and
/// the daemon; cheap to clone behind an `Arc`.
pub trait Kernel: Send + Sync {
    /// A namespace's identity (device and inode of its nsfs file).
    fn netns_id(&self, netns: &Path) -> std::io::Result<NsId>;
    /// The namespaces fw never programs: the daemon's own and the host's.
    fn forbidden(&self) -> Vec<NsId>;
    /// An open nftables handle inside `netns`; `who` names it in errors.
    fn tables(&self, netns: &Path, who: &str) -> Result<Box<dyn Tables>, NftError>;
    /// A conntrack handle inside `netns`.
    fn conntrack(&self, netns: &Path) -> Result<Box<dyn Conntrack>, CtError>;
    /// The host sides of a container namespace's links (`extra`: namespaces a peer may be
    /// in beside the usual ones).
    fn links(&self, netns: &Path, extra: &[PathBuf]) -> Result<Links, String>;
}

/// One namespace's nftables, through one open handle (a socket, for the real kernel: it
/// pins the namespace while open).
pub trait Tables: Send {
    fn netns(&self) -> &Path;
    /// Replaces `rs`'s table with `rs` in one atomic batch; on error nothing changed.
    fn apply(&mut self, rs: &Ruleset) -> Result<(), NftError>;
    /// Adds and removes set elements in one atomic batch.
    fn update_sets_in(
        &mut self,
        family: TableFamily,
        table: &str,
        changes: &[SetChange],
    ) -> Result<(), NftError>;
    /// Brings the table from `last` to `next` without replacing it, keeping the elements
    /// of dynamic sets; `Ok(false)` when that cannot be done (a base chain changed).
    fn update_in_place(&mut self, last: &Ruleset, next: &Ruleset) -> Result<bool, NftError>;
    /// Removes `table FAMILY NAME` if present.
    fn flush_table(&mut self, family: TableFamily, table: &str) -> Result<(), NftError>;
    /// The namespace's ruleset generation: it changes with every commit, anyone's.
    fn generation(&mut self) -> Result<u32, NftError>;
    fn list_rules_of(&mut self, family: TableFamily, table: &str) -> Result<Vec<RuleCounters>, NftError>;
    fn table_exists(&mut self, family: TableFamily, table: &str) -> Result<bool, NftError>;
    /// The elements of one set, with the time each has left.
    fn dump_set(&mut self, family: TableFamily, table: &str, set: &str) -> Result<Vec<DumpedElem>, NftError>;

    /// Brings the table from `last` (what this handle programmed before, if anything) to
    /// `next`: element updates when only set members changed, else one atomic replacement.
    /// Returns whether it replaced the table.
    fn converge(&mut self, last: Option<&Ruleset>, next: &Ruleset) -> Result<bool, NftError> {
        if let Some(changes) = last.and_then(|l| crate::ruleset::diff::set_changes(l, next)) {
            if changes.is_empty() {
                return Ok(false);
            }
            match self.update_sets_in(next.family, &next.table, &changes) {
                Ok(()) => return Ok(false),
                // The sets are not what we left (someone deleted the table, or an element we
                // remove is gone): the whole table, atomically, is what we want anyway.
                Err(NftError::Rejected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.apply(next)?;
        Ok(true)
    }

    /// The rules of `table inet fw`.
    fn list_rules(&mut self) -> Result<Vec<RuleCounters>, NftError> {
        self.list_rules_of(TableFamily::Inet, TABLE)
    }

    /// Removes `table inet fw` if present.
    fn flush(&mut self) -> Result<(), NftError> {
        self.flush_table(TableFamily::Inet, TABLE)
    }
}

/// One namespace's conntrack table.
pub trait Conntrack: Send {
    fn dump(&mut self) -> Result<Vec<CtEntry>, CtError>;
    /// Deletes the entries `pred` selects; returns how many went.
    fn delete_matching(&mut self, pred: &dyn Fn(&CtEntry) -> bool) -> Result<u64, CtError>;
}

/// The kernel this machine runs. `own_namespace` (`--self`): the daemon's own namespace is
/// the one it must program (`discovery::own` refused to start in the host's), so none is
/// forbidden.
#[derive(Debug, Default, Clone, Copy)]
pub struct Real {
    pub own_namespace: bool,
}

/// The real kernel, shared.
pub fn real() -> Arc<dyn Kernel> {
    Arc::new(Real::default())
}

impl Kernel for Real {
    fn netns_id(&self, netns: &Path) -> std::io::Result<NsId> {
        NsId::of(netns)
    }

    fn forbidden(&self) -> Vec<NsId> {
        if self.own_namespace {
            return Vec::new();
        }
        ["/proc/self/ns/net", "/proc/1/ns/net"].iter().filter_map(|p| NsId::of(Path::new(p)).ok()).collect()
    }

    fn tables(&self, netns: &Path, who: &str) -> Result<Box<dyn Tables>, NftError> {
        Ok(Box::new(crate::nft::Nft::open(netns, who)?))
    }

    fn conntrack(&self, netns: &Path) -> Result<Box<dyn Conntrack>, CtError> {
        Ok(Box::new(crate::flows::conntrack::CtControl::open(netns)?))
    }

    fn links(&self, netns: &Path, extra: &[PathBuf]) -> Result<Links, String> {
        crate::floor::link::discover(netns, extra).map_err(|e| e.to_string())
    }
}

impl Tables for crate::nft::Nft {
    fn netns(&self) -> &Path {
        crate::nft::Nft::netns(self)
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        crate::nft::Nft::apply(self, rs)
    }

    fn update_sets_in(
        &mut self,
        family: TableFamily,
        table: &str,
        changes: &[SetChange],
    ) -> Result<(), NftError> {
        crate::nft::Nft::update_sets_in(self, family, table, changes)
    }

    fn update_in_place(&mut self, last: &Ruleset, next: &Ruleset) -> Result<bool, NftError> {
        crate::nft::Nft::update_in_place(self, last, next)
    }

    fn flush_table(&mut self, family: TableFamily, table: &str) -> Result<(), NftError> {
        crate::nft::Nft::flush_table(self, family, table)
    }

    fn generation(&mut self) -> Result<u32, NftError> {
        crate::nft::Nft::generation(self)
    }

    fn list_rules_of(&mut self, family: TableFamily, table: &str) -> Result<Vec<RuleCounters>, NftError> {
        crate::nft::Nft::list_rules_of(self, family, table)
    }

    fn table_exists(&mut self, family: TableFamily, table: &str) -> Result<bool, NftError> {
        crate::nft::Nft::table_exists(self, family, table)
    }

    fn dump_set(&mut self, family: TableFamily, table: &str, set: &str) -> Result<Vec<DumpedElem>, NftError> {
        crate::nft::Nft::dump_set(self, family, table, set)
    }
}

impl Conntrack for crate::flows::conntrack::CtControl {
    fn dump(&mut self) -> Result<Vec<CtEntry>, CtError> {
        crate::flows::conntrack::CtControl::dump(self)
    }

    fn delete_matching(&mut self, pred: &dyn Fn(&CtEntry) -> bool) -> Result<u64, CtError> {
        crate::flows::conntrack::CtControl::delete_matching(self, pred)
    }
}
