//! An in-memory kernel for unprivileged tests of the enforcement logic (after knftables'
//! `Fake`): namespaces are paths registered by the test, each with its tables, a generation
//! id bumped by every commit, conntrack entries and links. A commit is validated the way
//! the kernel would refuse it: a rule naming a set or chain the table does not have, an
//! element of a set that is not there, removing an element that is not in the set, a map
//! jumping to a missing chain, a key of the wrong shape. Tests inject faults (a namespace
//! that cannot be opened, commits refused) and tampering (a table changed behind fw's back)
//! and read back what was committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Conntrack, Kernel, Tables};
use crate::floor::link::{Links, NsId};
use crate::flows::conntrack::{CtEntry, CtError};
use crate::nft::{DumpedElem, NftError, RuleCounters, SetChange};
use crate::ruleset::ir::{Match, Rule, Set, SetElem, SetKey, TableFamily, Verdict};
use crate::ruleset::Ruleset;

/// One commit as the fake saw it, for tests that care how a change was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// A whole table written (created or replaced).
    Replace { table: String },
    /// Set elements added and removed, counted.
    Elements { table: String, added: usize, removed: usize },
    /// Rules rewritten, dynamic sets kept.
    InPlace { table: String },
    /// A table removed (or absent already).
    Flush { table: String },
}

#[derive(Debug, Default)]
struct Ns {
    tables: BTreeMap<(u8, String), Ruleset>,
    generation: u32,
    commits: Vec<Commit>,
    conntrack: Vec<CtEntry>,
    links: Option<Result<Links, String>>,
    /// Commits refused with this errno until healed.
    refuse: Option<i32>,
    /// Opening a handle fails (the namespace is gone or unreadable).
    unopenable: bool,
}

#[derive(Debug, Default)]
struct State {
    paths: BTreeMap<PathBuf, NsId>,
    ns: BTreeMap<NsId, Ns>,
    forbidden: Vec<NsId>,
    next_ino: u64,
}

/// The fake kernel. Clones share one state.
#[derive(Clone, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
    /// Elements with a timeout lapse by this clock, as the kernel's do by its own.
    clock: Option<Arc<dyn crate::clock::Clock>>,
}

impl std::fmt::Debug for FakeKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKernel").finish_non_exhaustive()
    }
}

fn fam(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => 1,
        TableFamily::Bridge => 7,
    }
}

fn rejected(who: &str, what: impl Into<String>, errno: i32) -> NftError {
    NftError::Rejected { who: who.into(), what: what.into(), errno, msg: None }
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// Elements with a timeout expire when `clock` passes it.
    pub fn with_clock(clock: Arc<dyn crate::clock::Clock>) -> FakeKernel {
        FakeKernel { state: Default::default(), clock: Some(clock) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(now) = self.clock.as_ref().map(|c| c.now_ms()) {
            for n in s.ns.values_mut() {
                for rs in n.tables.values_mut() {
                    for set in rs.sets.iter_mut() {
                        let gone: Vec<SetElem> = set
                            .expires
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(e, _)| e.clone())
                            .collect();
                        for e in gone {
                            set.expires.remove(&e);
                            set.elements.retain(|x| *x != e);
                        }
                    }
                }
            }
        }
        s
    }

    /// A new namespace reachable at `path`; returns its identity.
    pub fn add_netns(&self, path: impl Into<PathBuf>) -> NsId {
        let mut s = self.lock();
        s.next_ino += 1;
        let id = NsId { dev: 4, ino: 4_026_531_000 + s.next_ino };
        s.paths.insert(path.into(), id);
        s.ns.insert(id, Ns::default());
        id
    }

    /// A second path for an existing namespace (two containers sharing one).
    pub fn alias(&self, path: impl Into<PathBuf>, to: &Path) {
        let mut s = self.lock();
        if let Some(id) = s.paths.get(to).copied() {
            s.paths.insert(path.into(), id);
        }
    }

    /// The namespace at `path` becomes the host's (or the daemon's): never programmed.
    pub fn forbid(&self, path: &Path) {
        let mut s = self.lock();
        if let Some(id) = s.paths.get(path).copied() {
            s.forbidden.push(id);
        }
    }

    /// The path no longer resolves (the container went away); open handles keep working.
    pub fn remove_netns(&self, path: &Path) {
        self.lock().paths.remove(path);
    }

    fn with_ns<T>(&self, path: &Path, f: impl FnOnce(&mut Ns) -> T) -> Option<T> {
        let mut s = self.lock();
        let id = *s.paths.get(path)?;
        s.ns.get_mut(&id).map(f)
    }

    /// Commits in `path` are refused with `errno` until [`FakeKernel::heal`].
    pub fn refuse_commits(&self, path: &Path, errno: i32) {
        self.with_ns(path, |n| n.refuse = Some(errno));
    }

    /// Handles for `path` cannot be opened until healed.
    pub fn make_unopenable(&self, path: &Path) {
        self.with_ns(path, |n| n.unopenable = true);
    }

    pub fn heal(&self, path: &Path) {
        self.with_ns(path, |n| {
            n.refuse = None;
            n.unopenable = false;
        });
    }

    /// What discovery reports for the container namespace at `path`.
    pub fn set_links(&self, path: &Path, links: Result<Links, String>) {
        self.with_ns(path, |n| n.links = Some(links));
    }

    /// Conntrack entries present in the namespace at `path`.
    pub fn set_conntrack(&self, path: &Path, entries: Vec<CtEntry>) {
        self.with_ns(path, |n| n.conntrack = entries);
    }

    pub fn conntrack_entries(&self, path: &Path) -> Vec<CtEntry> {
        self.with_ns(path, |n| n.conntrack.clone()).unwrap_or_default()
    }

    /// The table as the "kernel" holds it now.
    pub fn table(&self, path: &Path, family: TableFamily, name: &str) -> Option<Ruleset> {
        self.with_ns(path, |n| n.tables.get(&(fam(family), name.to_string())).cloned()).flatten()
    }

    pub fn generation(&self, path: &Path) -> Option<u32> {
        self.with_ns(path, |n| n.generation)
    }

    /// Every commit made in the namespace, oldest first.
    pub fn commits(&self, path: &Path) -> Vec<Commit> {
        self.with_ns(path, |n| n.commits.clone()).unwrap_or_default()
    }

    /// Someone else changes a table (a container with CAP_NET_ADMIN): `f` edits it, the
    /// generation moves. A table `f` empties of chains is deleted.
    pub fn tamper(&self, path: &Path, family: TableFamily, name: &str, f: impl FnOnce(&mut Ruleset)) {
        self.with_ns(path, |n| {
            let key = (fam(family), name.to_string());
            if let Some(rs) = n.tables.get_mut(&key) {
                f(rs);
                if rs.chains.is_empty() {
                    n.tables.remove(&key);
                }
            }
            n.generation = n.generation.wrapping_add(1);
        });
    }

    /// The packet path writes an element into a (dynamic) set.
    pub fn record(&self, path: &Path, family: TableFamily, table: &str, set: &str, elem: SetElem) {
        self.with_ns(path, |n| {
            if let Some(s) = n
                .tables
                .get_mut(&(fam(family), table.to_string()))
                .and_then(|rs| rs.sets.iter_mut().find(|s| s.name == set))
            {
                if !s.elements.contains(&elem) {
                    s.elements.push(elem);
                }
            }
        });
    }
}

impl Kernel for FakeKernel {
    fn netns_id(&self, netns: &Path) -> std::io::Result<NsId> {
        self.lock().paths.get(netns).copied().ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn forbidden(&self) -> Vec<NsId> {
        self.lock().forbidden.clone()
    }

    fn tables(&self, netns: &Path, who: &str) -> Result<Box<dyn Tables>, NftError> {
        let s = self.lock();
        let id = s.paths.get(netns).copied();
        match id.and_then(|id| s.ns.get(&id).map(|n| (id, n.unopenable))) {
            Some((id, false)) => Ok(Box::new(FakeTables {
                kernel: self.clone(),
                id,
                netns: netns.to_path_buf(),
                who: who.to_string(),
            })),
            _ => Err(NftError::Netns(crate::netns::NetnsError::Open {
                path: netns.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })),
        }
    }

    fn conntrack(&self, netns: &Path) -> Result<Box<dyn Conntrack>, CtError> {
        let s = self.lock();
        match s.paths.get(netns).copied() {
            Some(id) => Ok(Box::new(FakeConntrack { kernel: self.clone(), id })),
            None => Err(CtError::Netns(crate::netns::NetnsError::Open {
                path: netns.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })),
        }
    }

    fn links(&self, netns: &Path, _extra: &[PathBuf]) -> Result<Links, String> {
        self.with_ns(netns, |n| n.links.clone())
            .ok_or_else(|| format!("netns {}: no such namespace", netns.display()))?
            .unwrap_or_else(|| Ok(Links::default()))
    }
}

struct FakeTables {
    kernel: FakeKernel,
    id: NsId,
    netns: PathBuf,
    who: String,
}

impl FakeTables {
    fn ns<T>(&self, f: impl FnOnce(&mut Ns) -> T) -> T {
        let mut s = self.kernel.lock();
        let n = s.ns.entry(self.id).or_default();
        f(n)
    }

    /// Runs a commit: refused as configured, else `f` decides; a success bumps the
    /// generation and is logged.
    fn commit(&self, f: impl FnOnce(&mut Ns) -> Result<Commit, NftError>) -> Result<(), NftError> {
        let who = self.who.clone();
        self.ns(|n| {
            if let Some(errno) = n.refuse {
                return Err(rejected(&who, "the batch", errno));
            }
            let c = f(n)?;
            n.generation = n.generation.wrapping_add(1);
            n.commits.push(c);
            Ok(())
        })
    }
}

/// What the kernel refuses in a table: dangling references, misshapen elements.
pub fn validate(rs: &Ruleset) -> Result<(), (String, i32)> {
    let enoent = libc::ENOENT;
    let einval = libc::EINVAL;
    let mut names = std::collections::BTreeSet::new();
    for s in &rs.sets {
        if !names.insert(&s.name) {
            return Err((format!("set {}: declared twice", s.name), libc::EEXIST));
        }
        for e in &s.elements {
            elem_fits(s, e).map_err(|why| (format!("an element of set {}: {why}", s.name), einval))?;
        }
        if let Some(map) = &s.map {
            for target in map.values() {
                if rs.chain(target).is_none() {
                    return Err((
                        format!("map {} jumps to chain {target}, which does not exist", s.name),
                        enoent,
                    ));
                }
            }
        }
    }
    let mut chains = std::collections::BTreeSet::new();
    for c in &rs.chains {
        if !chains.insert(&c.name) {
            return Err((format!("chain {}: declared twice", c.name), libc::EEXIST));
        }
    }
    for c in &rs.chains {
        for (i, r) in c.rules.iter().enumerate() {
            let what = || format!("rule {} of chain {}", i + 1, c.name);
            for set in referenced_sets(r) {
                if rs.set(set).is_none() {
                    return Err((format!("{}: set {set} does not exist", what()), enoent));
                }
            }
            match &r.verdict {
                Some(Verdict::Jump(t)) if rs.chain(t).is_none() => {
                    return Err((format!("{}: chain {t} does not exist", what()), enoent));
                }
                Some(Verdict::Vmap { map, .. }) if rs.set(map).is_none_or(|m| m.map.is_none()) => {
                    return Err((format!("{}: map {map} does not exist", what()), enoent));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn referenced_sets(r: &Rule) -> Vec<&str> {
    let mut out: Vec<&str> = r
        .matches
        .iter()
        .filter_map(|m| match m {
            Match::NfProtoInSet(s) => Some(s.as_str()),
            Match::AddrInSet { set, .. }
            | Match::BlockLookup { set, .. }
            | Match::BlockAddrLookup { set, .. }
            | Match::Lookup { set, .. } => Some(set.as_str()),
            _ => None,
        })
        .collect();
    if let Some(d) = &r.dynset {
        out.push(&d.set);
    }
    out
}

/// Whether an element has the shape its set's key says.
fn elem_fits(s: &Set, e: &SetElem) -> Result<(), String> {
    let ok = match (&s.key, e) {
        (SetKey::Ipv4, SetElem::Addr(a)) => a.is_ipv4(),
        (SetKey::Ipv6, SetElem::Addr(a)) => a.is_ipv6(),
        (SetKey::Ipv4, SetElem::Net(n)) => s.interval && n.addr().is_ipv4(),
        (SetKey::Ipv6, SetElem::Net(n)) => s.interval && n.addr().is_ipv6(),
        (SetKey::NfProto, SetElem::NfProto(_)) => true,
        (SetKey::Block(f), SetElem::Block(b)) | (SetKey::BlockAddr(f), SetElem::Block(b)) => b.family() == *f,
        (SetKey::Fields(kinds), SetElem::Tuple(v)) => v.len() == kinds.len(),
        (SetKey::Fields(kinds), SetElem::TupleRange(v)) => s.interval && v.len() == kinds.len(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{e:?} does not fit key {:?}", s.key))
    }
}

impl Tables for FakeTables {
    fn netns(&self) -> &Path {
        &self.netns
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        let who = self.who.clone();
        validate(rs).map_err(|(what, errno)| rejected(&who, what, errno))?;
        let rs = rs.clone();
        self.commit(|n| {
            let table = rs.table.clone();
            n.tables.insert((fam(rs.family), table.clone()), rs);
            Ok(Commit::Replace { table })
        })
    }

    fn update_sets_in(
        &mut self,
        family: TableFamily,
        table: &str,
        changes: &[SetChange],
    ) -> Result<(), NftError> {
        let who = self.who.clone();
        self.commit(|n| {
            let Some(current) = n.tables.get(&(fam(family), table.to_string())) else {
                return Err(rejected(&who, format!("table {} {table}", family.name()), libc::ENOENT));
            };
            let mut next = current.clone();
            let (mut added, mut removed) = (0, 0);
            for c in changes {
                let Some(s) = next.sets.iter_mut().find(|s| s.name == c.set) else {
                    return Err(rejected(&who, format!("elements of set {}", c.set), libc::ENOENT));
                };
                if c.flush {
                    removed += s.elements.len();
                    s.elements.clear();
                    s.expires.clear();
                }
                for e in &c.remove {
                    let Some(i) = s.elements.iter().position(|x| x == e) else {
                        return Err(rejected(&who, format!("removal from set {}", c.set), libc::ENOENT));
                    };
                    s.elements.remove(i);
                    s.expires.remove(e);
                    if let Some(m) = s.map.as_mut() {
                        m.remove(e);
                    }
                    removed += 1;
                }
                for e in &c.add {
                    elem_fits(s, e).map_err(|why| rejected(&who, why, libc::EINVAL))?;
                    if !s.elements.contains(e) {
                        s.elements.push(e.clone());
                    }
                    if let Some(ms) = c.expires.get(e) {
                        s.expires.insert(e.clone(), *ms);
                    }
                    if let Some(j) = c.jumps.get(e) {
                        s.map.get_or_insert_with(Default::default).insert(e.clone(), j.clone());
                    }
                    added += 1;
                }
                s.elements.sort();
            }
            validate(&next).map_err(|(what, errno)| rejected(&who, what, errno))?;
            n.tables.insert((fam(family), table.to_string()), next);
            Ok(Commit::Elements { table: table.to_string(), added, removed })
        })
    }

    fn update_in_place(&mut self, last: &Ruleset, next: &Ruleset) -> Result<bool, NftError> {
        let bases = |rs: &Ruleset| {
            let mut v: Vec<_> = rs
                .chains
                .iter()
                .filter(|c| c.base.is_some())
                .map(|c| (c.name.clone(), c.base.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        if bases(last) != bases(next) || last.family != next.family || last.table != next.table {
            return Ok(false);
        }
        let who = self.who.clone();
        validate(next).map_err(|(what, errno)| rejected(&who, what, errno))?;
        self.commit(|n| {
            let key = (fam(next.family), next.table.clone());
            let Some(current) = n.tables.get(&key) else {
                return Err(rejected(
                    &who,
                    format!("table {} {}", next.family.name(), next.table),
                    libc::ENOENT,
                ));
            };
            let mut out = next.clone();
            // The packet path's elements stay (a verdict cache's go: see `ir::Dynamic::cache`).
            for s in out.sets.iter_mut().filter(|s| s.dynamic.is_some_and(|d| !d.cache)) {
                if let Some(old) = current.set(&s.name) {
                    s.elements = old.elements.clone();
                    s.expires = old.expires.clone();
                }
            }
            n.tables.insert(key, out);
            Ok(Commit::InPlace { table: next.table.clone() })
        })?;
        Ok(true)
    }

    fn flush_table(&mut self, family: TableFamily, table: &str) -> Result<(), NftError> {
        self.commit(|n| {
            n.tables.remove(&(fam(family), table.to_string()));
            Ok(Commit::Flush { table: table.to_string() })
        })
    }

    fn generation(&mut self) -> Result<u32, NftError> {
        Ok(self.ns(|n| n.generation))
    }

    fn list_rules_of(&mut self, family: TableFamily, table: &str) -> Result<Vec<RuleCounters>, NftError> {
        Ok(self.ns(|n| {
            let Some(rs) = n.tables.get(&(fam(family), table.to_string())) else { return Vec::new() };
            let mut handle = 0;
            rs.chains
                .iter()
                .flat_map(|c| {
                    c.rules.iter().map(move |r| {
                        (c.name.clone(), r.origin.as_ref().map(crate::ruleset::render::comment))
                    })
                })
                .map(|(chain, comment)| {
                    handle += 1;
                    RuleCounters { chain, handle, comment, packets: None, bytes: None }
                })
                .collect()
        }))
    }

    fn table_exists(&mut self, family: TableFamily, table: &str) -> Result<bool, NftError> {
        Ok(self.ns(|n| n.tables.contains_key(&(fam(family), table.to_string()))))
    }

    fn dump_set(&mut self, family: TableFamily, table: &str, set: &str) -> Result<Vec<DumpedElem>, NftError> {
        Ok(self.ns(|n| {
            n.tables
                .get(&(fam(family), table.to_string()))
                .and_then(|rs| rs.set(set))
                .map(|s| {
                    s.elements
                        .iter()
                        .map(|e| DumpedElem { key: crate::nft::elem_key(e), expires_in_ms: None })
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

struct FakeConntrack {
    kernel: FakeKernel,
    id: NsId,
}

impl Conntrack for FakeConntrack {
    fn dump(&mut self) -> Result<Vec<CtEntry>, CtError> {
        let s = self.kernel.lock();
        Ok(s.ns.get(&self.id).map(|n| n.conntrack.clone()).unwrap_or_default())
    }

    fn delete_matching(&mut self, pred: &dyn Fn(&CtEntry) -> bool) -> Result<u64, CtError> {
        let mut s = self.kernel.lock();
        let Some(n) = s.ns.get_mut(&self.id) else { return Ok(0) };
        let before = n.conntrack.len();
        n.conntrack.retain(|e| !pred(e));
        Ok((before - n.conntrack.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::ir::{Chain, Set, SetKey};

    fn table(rules: Vec<Rule>, sets: Vec<Set>) -> Ruleset {
        Ruleset {
            container: "c".into(),
            zone: "z".into(),
            mode: fw_proto::Mode::Enforce,
            family: TableFamily::Inet,
            table: "fw".into(),
            sets,
            chains: vec![Chain { name: "egress".into(), base: None, rules }],
        }
    }

    fn lookup(set: &str) -> Rule {
        Rule {
            matches: vec![Match::AddrInSet {
                family: crate::ruleset::ir::Family::V4,
                dir: crate::ruleset::ir::Dir::Dst,
                set: set.into(),
            }],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        }
    }

    #[test]
    fn refuses_what_the_kernel_refuses_and_keeps_the_old_table() {
        let k = FakeKernel::new();
        let p = Path::new("/run/netns/a");
        k.add_netns(p);
        let mut t = k.tables(p, "a").unwrap();
        let good = table(vec![lookup("z4")], vec![Set::new("z4", SetKey::Ipv4, "")]);
        t.apply(&good).unwrap();
        let g = t.generation().unwrap();
        // A rule naming a set the table lacks: refused, nothing changed.
        let bad = table(vec![lookup("missing")], vec![Set::new("z4", SetKey::Ipv4, "")]);
        let e = t.apply(&bad).unwrap_err();
        assert!(matches!(e, NftError::Rejected { errno, .. } if errno == libc::ENOENT), "{e}");
        assert_eq!(k.table(p, TableFamily::Inet, "fw"), Some(good.clone()));
        assert_eq!(t.generation().unwrap(), g);
        // A jump to a missing chain, an element of the wrong family: refused.
        let jump =
            table(vec![Rule { verdict: Some(Verdict::Jump("nowhere".into())), ..Rule::default() }], vec![]);
        assert!(t.apply(&jump).is_err());
        let mut v6 = Set::new("z4", SetKey::Ipv4, "");
        v6.elements.push(SetElem::Addr("fd00::1".parse().unwrap()));
        assert!(t.apply(&table(vec![], vec![v6])).is_err());
        // Removing an element that is not there, adding to a set that is not there.
        let rm = SetChange {
            set: "z4".into(),
            key: SetKey::Ipv4,
            add: vec![],
            remove: vec![SetElem::Addr("10.0.0.1".parse().unwrap())],
            expires: Default::default(),
            jumps: Default::default(),
            flush: false,
        };
        assert!(t.update_sets_in(TableFamily::Inet, "fw", std::slice::from_ref(&rm)).is_err());
        let missing = SetChange { set: "nope".into(), remove: vec![], ..rm.clone() };
        assert!(t.update_sets_in(TableFamily::Inet, "fw", &[missing]).is_err());
        // A good element update bumps the generation and is logged as one.
        let add = SetChange { add: vec![SetElem::Addr("10.0.0.1".parse().unwrap())], remove: vec![], ..rm };
        t.update_sets_in(TableFamily::Inet, "fw", &[add]).unwrap();
        assert_eq!(t.generation().unwrap(), g + 1);
        assert_eq!(k.commits(p).last(), Some(&Commit::Elements { table: "fw".into(), added: 1, removed: 0 }));
    }

    #[test]
    fn faults_and_tampering() {
        let k = FakeKernel::new();
        let p = Path::new("/run/netns/b");
        k.add_netns(p);
        k.make_unopenable(p);
        assert!(k.tables(p, "b").is_err());
        k.heal(p);
        let mut t = k.tables(p, "b").unwrap();
        k.refuse_commits(p, libc::ENOMEM);
        assert!(t.apply(&table(vec![], vec![])).is_err());
        k.heal(p);
        t.apply(&table(vec![], vec![])).unwrap();
        let g = t.generation().unwrap();
        k.tamper(p, TableFamily::Inet, "fw", |rs| rs.chains.clear());
        assert_ne!(t.generation().unwrap(), g);
        assert!(!t.table_exists(TableFamily::Inet, "fw").unwrap());
        assert!(k.netns_id(Path::new("/run/netns/none")).is_err());
    }
}
