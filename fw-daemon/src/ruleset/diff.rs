//! What changed between two rulesets of one container. When only the members of plain
//! (non-interval) sets differ, which is what a container joining, leaving or changing
//! address produces, the change is a list of element additions and removals; anything else
//! needs a whole-table replacement.

use std::collections::BTreeSet;

use super::ir::{Ruleset, SetElem, SetKey};

/// Element changes for one named set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetChange {
    pub set: String,
    pub key: SetKey,
    pub add: Vec<SetElem>,
    pub remove: Vec<SetElem>,
    /// When added elements expire (unix ms; operator blocks with a TTL).
    pub expires: std::collections::BTreeMap<SetElem, i64>,
    /// For a verdict map: the chain each added element jumps to.
    pub jumps: std::collections::BTreeMap<SetElem, String>,
    /// Empty the set first (a verdict cache, see `ir::Dynamic::cache`).
    pub flush: bool,
}

impl SetChange {
    /// Only emptying `set`.
    pub fn flush(set: &super::ir::Set) -> SetChange {
        SetChange {
            set: set.name.clone(),
            key: set.key,
            add: Vec::new(),
            remove: Vec::new(),
            expires: Default::default(),
            jumps: Default::default(),
            flush: true,
        }
    }
}

/// The changes that empty every verdict cache of `rs`: part of every write to its table.
pub fn cache_flushes(rs: &Ruleset) -> Vec<SetChange> {
    rs.sets.iter().filter(|s| s.dynamic.is_some_and(|d| d.cache)).map(SetChange::flush).collect()
}

/// `Some(changes)` (possibly empty) when `new` differs from `old` only in the elements of
/// non-interval sets; `None` when the table must be replaced.
pub fn set_changes(old: &Ruleset, new: &Ruleset) -> Option<Vec<SetChange>> {
    if old.chains != new.chains || old.sets.len() != new.sets.len() {
        return None;
    }
    let mut out = Vec::new();
    for (a, b) in old.sets.iter().zip(&new.sets) {
        let same_shape = a.name == b.name
            && a.key == b.key
            && a.interval == b.interval
            && a.timeout == b.timeout
            && a.comment == b.comment
            && a.map.is_some() == b.map.is_some()
            && a.dynamic == b.dynamic;
        if !same_shape {
            return None;
        }
        // The packet path owns a dynamic set's elements.
        if a.dynamic.is_some() {
            continue;
        }
        if a.elements == b.elements && a.expires == b.expires && a.map == b.map {
            continue;
        }
        // Interval sets of single addresses hold external zones, which only change with the
        // rule files (a concatenation of ranges carries both ends in one element: diffable).
        if a.interval && !matches!(a.key, SetKey::Fields(_)) {
            return None;
        }
        let before: BTreeSet<&SetElem> = a.elements.iter().collect();
        let after: BTreeSet<&SetElem> = b.elements.iter().collect();
        // An element whose expiry (or, in a map, target) changed is replaced (removed, then
        // added) in the batch.
        let target = |s: &super::ir::Set, e: &SetElem| s.map.as_ref().and_then(|m| m.get(e).cloned());
        let retimed: Vec<&SetElem> = after
            .intersection(&before)
            .filter(|e| a.expires.get(**e) != b.expires.get(**e) || target(a, e) != target(b, e))
            .copied()
            .collect();
        let add: Vec<SetElem> = after.difference(&before).chain(&retimed).map(|e| (*e).clone()).collect();
        out.push(SetChange {
            set: b.name.clone(),
            key: b.key,
            expires: add.iter().filter_map(|e| Some((e.clone(), *b.expires.get(e)?))).collect(),
            jumps: add.iter().filter_map(|e| Some((e.clone(), target(b, e)?))).collect(),
            add,
            remove: before.difference(&after).chain(&retimed).map(|e| (*e).clone()).collect(),
            flush: false,
        });
    }
    // A cached verdict was judged by the elements just changed.
    if !out.is_empty() {
        out.extend(cache_flushes(new));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile_all, CompileOptions};
    use crate::inventory::{Container, Inventory};

    fn demo() -> (crate::rules::Policy, Inventory) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::rules::load_dir(&root.join("rules/demo"), 0).policy.unwrap();
        let inv = crate::inventory::load_inventory(&root.join("rules/demo-inventory.toml")).unwrap();
        (p, inv)
    }

    fn web1(p: &crate::rules::Policy, inv: &Inventory) -> Ruleset {
        compile_all(p, inv, &CompileOptions::default()).into_iter().find(|r| r.container == "web-1").unwrap()
    }

    /// Every element write to a table with verdict caches empties them in the same batch
    /// (their verdicts were judged by the elements it changes); no write, no flush.
    #[test]
    fn an_element_change_empties_every_verdict_cache() {
        use crate::ruleset::ir::{Dynamic, KeyKind, Set, SetKey};
        let (p, inv) = demo();
        let mut old = web1(&p, &inv);
        let cache = Dynamic { size: 16, timeout_ms: 10_000, cache: true };
        let record = Dynamic { cache: false, ..cache };
        for (name, d) in [("cache_x", cache), ("record_x", record)] {
            old.sets.push(Set { dynamic: Some(d), ..Set::new(name, SetKey::Fields(&[KeyKind::Ipv4]), "") });
        }
        assert_eq!(set_changes(&old, &old.clone()), Some(vec![]), "nothing to write, nothing flushed");
        let mut new = old.clone();
        let z = new.sets.iter_mut().find(|s| s.name == "z_api_4").unwrap();
        z.elements.push(SetElem::Addr("10.77.0.99".parse().unwrap()));
        let changes = set_changes(&old, &new).expect("elements only");
        let flushed: Vec<&str> = changes.iter().filter(|c| c.flush).map(|c| c.set.as_str()).collect();
        assert_eq!(flushed, ["cache_x"], "only the cache is emptied: {changes:?}");
    }

    #[test]
    fn a_new_member_is_an_element_addition() {
        let (p, mut inv) = demo();
        let old = web1(&p, &inv);
        inv.containers.push(Container {
            name: "api-3".into(),
            netns: None,
            image: "fw/api:2.3".into(),
            labels: vec![("tier".into(), "api".into())],
            addresses: vec!["10.77.0.23".parse().unwrap()],
            link: None,
            kube: None,
        });
        let changes = set_changes(&old, &web1(&p, &inv)).expect("membership only");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].set, "z_api_4");
        assert_eq!(changes[0].add, vec![SetElem::Addr("10.77.0.23".parse().unwrap())]);
        assert!(changes[0].remove.is_empty());
    }

    #[test]
    fn an_address_change_is_a_swap_and_no_change_is_empty() {
        let (p, mut inv) = demo();
        let old = web1(&p, &inv);
        assert_eq!(set_changes(&old, &old), Some(vec![]));
        inv.containers.iter_mut().find(|c| c.name == "db-1").unwrap().addresses[0] =
            "10.77.0.32".parse().unwrap();
        let changes = set_changes(&old, &web1(&p, &inv)).unwrap();
        assert_eq!(changes[0].set, "z_db_4");
        assert_eq!(changes[0].add, vec![SetElem::Addr("10.77.0.32".parse().unwrap())]);
        assert_eq!(changes[0].remove, vec![SetElem::Addr("10.77.0.31".parse().unwrap())]);
    }

    #[test]
    fn a_policy_change_needs_a_replacement() {
        let (p, inv) = demo();
        let old = web1(&p, &inv);
        let mut p2 = p.clone();
        p2.rules.retain(|r| r.id != "web-to-api");
        assert_eq!(set_changes(&old, &web1(&p2, &inv)), None);
        // A container changing zone changes its own chains: replacement too.
        let mut inv2 = inv.clone();
        inv2.containers.iter_mut().find(|c| c.name == "web-1").unwrap().name = "misc-9".into();
        let moved = compile_all(&p, &inv2, &CompileOptions::default())
            .into_iter()
            .find(|r| r.container == "misc-9")
            .unwrap();
        assert_eq!(set_changes(&old, &moved), None);
    }
}
