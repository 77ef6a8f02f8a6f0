//! What the daemon is told to enforce: the rule files, the inventory file and Docker's
//! containers. Reads (bounded), validates and decides; never touches the kernel. A refused
//! file changes nothing: the last good policy (and inventory) stays, and the decision says
//! whether the errors are new (alerted and audited once, not at every periodic read).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::inventory::{parse_inventory, Container, Inventory};
use crate::rules::{load_sources, read_dir_limited, Policy, ReadLimits, SourceFile};
use crate::state::{StateDir, Status};

use super::{Config, DaemonError, Notice};

/// What reading the rules directory gave: the files, or why not (at most
/// [`MAX_DIAGNOSTICS`] lines and a count of the rest).
pub type RulesRead = Result<Vec<SourceFile>, Vec<String>>;

/// The inventory file's text, or why it cannot be had (read once: it is both compared and
/// parsed). `None` without an inventory file.
pub type InventoryRead = Option<Result<String, String>>;

/// Diagnostics kept (in status) and logged per reload: a file with a million errors must
/// not take the daemon's memory or its log with it.
pub const MAX_DIAGNOSTICS: usize = 100;

pub fn read_rules(dir: &Path, limits: &ReadLimits) -> RulesRead {
    read_dir_limited(dir, limits).map_err(|ds| capped(ds.iter().map(|d| d.to_string()).collect()))
}

/// Validates rule files (warnings are logged); errors come back as `path:line:col` lines.
pub fn validate(files: &[SourceFile], now: i64) -> Result<Arc<Policy>, Vec<String>> {
    let result = load_sources(files, now);
    for d in result.diagnostics.iter().filter(|d| !d.is_error()) {
        warn!("{d}");
    }
    match result.policy {
        Some(p) => Ok(Arc::new(p)),
        None => Err(capped(result.errors().map(|d| d.to_string()).collect())),
    }
}

pub fn read_inventory_text(path: Option<&Path>, max: u64) -> InventoryRead {
    let path = path?;
    let why = |m: String| format!("{}: error: {m}", path.display());
    Some(match crate::rules::read_bounded(path, max) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| why("not UTF-8".into())),
        Err(crate::rules::Bounded::TooBig(n)) => Err(why(format!(
            "{n} bytes, over the limit of {max} for the inventory (setting max_inventory_bytes): not read"
        ))),
        Err(crate::rules::Bounded::Io(e)) => Err(why(format!("cannot read the inventory: {e}"))),
    })
}

pub fn parse_inventory_text(path: &Path, text: &InventoryRead) -> Result<Inventory, Vec<String>> {
    match text {
        None => Err(vec![format!("{}: error: cannot read the inventory", path.display())]),
        Some(Err(e)) => Err(vec![e.clone()]),
        Some(Ok(text)) => {
            parse_inventory(path, text).map_err(|ds| capped(ds.iter().map(|d| d.to_string()).collect()))
        }
    }
}

/// The first [`MAX_DIAGNOSTICS`] lines, then `... and N more`.
pub fn capped(mut errors: Vec<String>) -> Vec<String> {
    if errors.len() > MAX_DIAGNOSTICS {
        let more = errors.len() - MAX_DIAGNOSTICS;
        errors.truncate(MAX_DIAGNOSTICS);
        errors.push(format!("... and {more} more"));
    }
    errors
}

pub fn log_errors(errors: &[String]) {
    for e in errors {
        error!("{e}");
    }
}

pub fn first_error(errors: &[String]) -> &str {
    errors.first().and_then(|e| e.lines().next()).unwrap_or("no detail")
}

/// How many errors `capped` lines stand for.
pub fn error_count(errors: &[String]) -> usize {
    let more = errors
        .last()
        .and_then(|l| l.strip_prefix("... and "))
        .and_then(|l| l.strip_suffix(" more"))
        .and_then(|n| n.parse::<usize>().ok());
    match more {
        Some(n) => errors.len() - 1 + n,
        None => errors.len(),
    }
}

/// A refused reload's alert: the count, the policy that stays, the first `path:line:col`.
pub fn refused_message(errors: &[String], stays: &str) -> String {
    format!(
        "rule files refused ({} error(s)); policy {stays} stays enforced: {}",
        error_count(errors),
        first_error(errors)
    )
}

/// The rule files as status shows them: relative to the rules directory when inside it.
pub fn file_names(dir: &Path, files: &[SourceFile]) -> Vec<String> {
    files.iter().map(|f| f.path.strip_prefix(dir).unwrap_or(&f.path).display().to_string()).collect()
}

/// The static inventory plus Docker's containers and the CRI runtime's pods; a name in two
/// keeps the first (the inventory file, an operator's explicit word, wins) and is reported.
pub fn merge(static_inv: &Inventory, found: &[(&str, &[Container])]) -> Inventory {
    let mut inv = static_inv.clone();
    for (source, containers) in found {
        for c in *containers {
            if inv.get(&c.name).is_some() {
                warn!(container = %c.name, source, "named twice (inventory file, Docker, CRI): the first one wins");
                continue;
            }
            inv.containers.push(c.clone());
        }
    }
    inv
}

/// What a read of the rule files decided.
pub enum RulesOutcome {
    /// Valid: enforce it. `changed`: another policy than the one enforced; `recovered`:
    /// the files were refused before.
    Accepted { policy: Arc<Policy>, files: Vec<SourceFile>, changed: bool, recovered: bool },
    /// Refused: the last good policy stays. `new`: these errors were not reported yet.
    Refused { errors: Vec<String>, new: bool },
}

/// What a read of the inventory file decided.
pub enum InventoryOutcome {
    NoFile,
    /// The merged inventory (file and Docker) to enforce now.
    Changed(Inventory),
    Refused {
        errors: Vec<String>,
        new: bool,
    },
}

/// The sources' state: what was last read (good or not) and what is enforced.
pub struct Sources {
    rules_dir: PathBuf,
    inventory: Option<PathBuf>,
    read_limits: ReadLimits,
    max_inventory_bytes: u64,
    /// The rule files as last read (good or not): a periodic re-read that differs, twice
    /// the same way, means a change the watcher missed.
    seen_rules: RulesRead,
    seen_inventory: InventoryRead,
    rules_backstop: crate::watch::Stable<RulesRead>,
    inventory_backstop: crate::watch::Stable<InventoryRead>,
    static_inv: Inventory,
    docker_inv: Vec<Container>,
    docker_seen: bool,
    cri_inv: Vec<Container>,
    /// Pods the runtime has that are not programmed, as last reported (each is alerted
    /// once, when it first appears).
    cri_skipped: Vec<crate::discovery::cri::Skipped>,
    /// From the Kubernetes API: each namespace's labels, and the pods on other nodes.
    kube_namespaces: crate::discovery::kube::NamespaceLabels,
    kube_remote: Vec<Container>,
    kube_services: Vec<crate::inventory::ServiceVip>,
    kube_local_labels: std::collections::BTreeMap<String, Vec<(String, String)>>,
    /// The enforced policy's hash and load time, and the last refused reload's errors.
    pub status: Status,
    /// The files the enforced policy came from, as shown in status.
    pub rule_files: Vec<String>,
    /// Unix seconds of the last load or reload attempt, good or refused.
    pub last_reload_at: Option<i64>,
    /// Errors of the inventory file as last read (capped).
    pub inventory_errors: Vec<String>,
    /// The static inventory enforced is the state directory's last good copy.
    pub inventory_last_good: bool,
}

/// The first load: the policy and inventory to start with (the state directory's last good
/// copies when the files are refused), and what to alert about.
pub struct Start {
    pub sources: Sources,
    pub policy: Arc<Policy>,
    pub inventory: Inventory,
    pub notices: Vec<Notice>,
}

impl Sources {
    pub fn start(cfg: &Config, state: &StateDir, now: i64) -> Result<Start, DaemonError> {
        let mut notices = Vec::new();
        let mut status = Status::default();
        let read = read_rules(&cfg.rules, &cfg.read_limits);
        let seen_rules = read.clone();
        let (policy, files) = match read.and_then(|f| validate(&f, now).map(|p| (p, f))) {
            Ok(ok) => ok,
            Err(errors) => {
                log_errors(&errors);
                let fallback = read_rules(&state.last_good_dir(), &cfg.read_limits)
                    .and_then(|f| validate(&f, now).map(|p| (p, f)))
                    .map_err(|_| DaemonError::NoPolicy(cfg.rules.clone()))?;
                warn!(
                    "{} is invalid: enforcing the last good policy from {}",
                    cfg.rules.display(),
                    state.last_good_dir().display()
                );
                notices.push(Notice::new(
                    fw_proto::control::AlertKind::ReloadFailed,
                    refused_message(&errors, &fallback.0.hash),
                ));
                status.rejected = errors;
                fallback
            }
        };
        let rule_files = file_names(&cfg.rules, &files);
        if status.rejected.is_empty() {
            state.save_last_good(&files)?;
        }
        status.policy_hash = policy.hash.clone();
        status.loaded_at = now;
        let seen_inventory = read_inventory_text(cfg.inventory.as_deref(), cfg.max_inventory_bytes);
        let mut inventory_errors = Vec::new();
        let mut inventory_last_good = false;
        let inventory = match &cfg.inventory {
            None => Inventory::default(),
            Some(p) => match parse_inventory_text(p, &seen_inventory) {
                Ok(inv) => {
                    if let Some(Ok(text)) = &seen_inventory {
                        if let Err(e) = state.save_last_good_inventory(text) {
                            error!("{e}");
                        }
                    }
                    inv
                }
                Err(errors) => {
                    inventory_errors = errors;
                    log_errors(&inventory_errors);
                    // As with rule files: an invalid file must not leave containers
                    // unmanaged; the last one that loaded stays in force.
                    let saved = state.last_good_inventory();
                    let fallback = std::fs::read_to_string(&saved)
                        .ok()
                        .and_then(|text| parse_inventory(&saved, &text).ok());
                    let msg = match &fallback {
                        Some(inv) => format!(
                            "inventory {} is invalid ({}): enforcing the last good one ({} containers) from {}",
                            p.display(),
                            first_error(&inventory_errors),
                            inv.containers.len(),
                            saved.display()
                        ),
                        None => format!(
                            "inventory {} is invalid ({}) and there is no last good copy: no container from it is managed",
                            p.display(),
                            first_error(&inventory_errors)
                        ),
                    };
                    notices.push(Notice::new(fw_proto::control::AlertKind::InventoryFailed, msg));
                    inventory_last_good = fallback.is_some();
                    fallback.unwrap_or_default()
                }
            },
        };
        let sources = Sources {
            rules_dir: cfg.rules.clone(),
            inventory: cfg.inventory.clone(),
            read_limits: cfg.read_limits,
            max_inventory_bytes: cfg.max_inventory_bytes,
            seen_rules,
            seen_inventory,
            rules_backstop: Default::default(),
            inventory_backstop: Default::default(),
            static_inv: inventory.clone(),
            docker_inv: Vec::new(),
            docker_seen: false,
            cri_inv: Vec::new(),
            cri_skipped: Vec::new(),
            kube_namespaces: Default::default(),
            kube_remote: Vec::new(),
            kube_services: Vec::new(),
            kube_local_labels: Default::default(),
            status,
            rule_files,
            last_reload_at: Some(now),
            inventory_errors,
            inventory_last_good,
        };
        Ok(Start { sources, policy, inventory, notices })
    }

    pub fn rules_dir(&self) -> &Path {
        &self.rules_dir
    }

    pub fn inventory_path(&self) -> Option<&Path> {
        self.inventory.as_deref()
    }

    pub fn read_rules(&self) -> RulesRead {
        read_rules(&self.rules_dir, &self.read_limits)
    }

    pub fn read_inventory(&self) -> InventoryRead {
        read_inventory_text(self.inventory.as_deref(), self.max_inventory_bytes)
    }

    /// Decides on rule files read at `now` (unix seconds). On acceptance the caller
    /// enforces the policy and then calls [`Sources::enforced`].
    pub fn rules(&mut self, read: RulesRead, now: i64) -> RulesOutcome {
        self.last_reload_at = Some(now);
        self.seen_rules = read.clone();
        match read.and_then(|f| validate(&f, now).map(|p| (p, f))) {
            Ok((policy, files)) => {
                let changed = policy.hash != self.status.policy_hash;
                // Good files after refused ones: worth saying even when the hash is the old one.
                let recovered = !self.status.rejected.is_empty();
                RulesOutcome::Accepted { policy, files, changed, recovered }
            }
            Err(errors) => {
                log_errors(&errors);
                warn!(policy = %self.status.policy_hash, "reload rejected: the last good policy stays enforced");
                let new = self.status.rejected != errors;
                self.status.rejected = errors.clone();
                RulesOutcome::Refused { errors, new }
            }
        }
    }

    /// The accepted policy is enforced: status says so.
    pub fn enforced(&mut self, policy: &Policy, files: &[SourceFile], now: i64) {
        self.rule_files = file_names(&self.rules_dir, files);
        self.status = Status { policy_hash: policy.hash.clone(), loaded_at: now, rejected: Vec::new() };
    }

    /// Decides on inventory text just read.
    pub fn inventory(&mut self, text: InventoryRead, state: &StateDir) -> InventoryOutcome {
        let Some(path) = self.inventory.clone() else { return InventoryOutcome::NoFile };
        let parsed = parse_inventory_text(&path, &text);
        self.seen_inventory = text.clone();
        match parsed {
            Ok(inv) => {
                if let Some(Ok(t)) = &text {
                    if let Err(e) = state.save_last_good_inventory(t) {
                        error!("{e}");
                    }
                }
                self.static_inv = inv;
                self.inventory_errors.clear();
                self.inventory_last_good = false;
                InventoryOutcome::Changed(self.merged())
            }
            Err(errors) => {
                // Already capped when parsed.
                let new = errors != self.inventory_errors;
                if new {
                    log_errors(&errors);
                    warn!("inventory rejected: containers stay as they were");
                }
                self.inventory_errors = errors.clone();
                InventoryOutcome::Refused { errors, new }
            }
        }
    }

    /// The message of a refused inventory's alert.
    pub fn inventory_refused_message(&self, errors: &[String]) -> String {
        format!(
            "inventory {} refused ({}); containers stay as they were",
            self.inventory.as_deref().map_or_else(|| "?".into(), |p| p.display().to_string()),
            first_error(errors)
        )
    }

    /// A Docker snapshot: the merged inventory when Docker's containers changed, and
    /// whether this was Docker's first complete picture (the guard's floor may now be
    /// written).
    pub fn docker(&mut self, found: Vec<Container>) -> (Option<Inventory>, bool) {
        let first = !self.docker_seen;
        self.docker_seen = true;
        let changed = found != self.docker_inv;
        self.docker_inv = found;
        (changed.then(|| self.merged()), first)
    }

    /// A CRI snapshot: the merged inventory when the pods changed, and the skipped pods
    /// not reported before.
    pub fn cri(
        &mut self,
        found: Vec<Container>,
        skipped: Vec<crate::discovery::cri::Skipped>,
    ) -> (Option<Inventory>, Vec<crate::discovery::cri::Skipped>) {
        let changed = found != self.cri_inv;
        self.cri_inv = found;
        let new = skipped.iter().filter(|s| !self.cri_skipped.contains(s)).cloned().collect();
        self.cri_skipped = skipped;
        (changed.then(|| self.merged()), new)
    }

    /// A Kubernetes API snapshot: the merged inventory when it changes anything.
    pub fn kube(
        &mut self,
        namespaces: crate::discovery::kube::NamespaceLabels,
        remote: Vec<Container>,
        services: Vec<crate::inventory::ServiceVip>,
        local_labels: std::collections::BTreeMap<String, Vec<(String, String)>>,
    ) -> Option<Inventory> {
        let changed = namespaces != self.kube_namespaces
            || remote != self.kube_remote
            || services != self.kube_services
            || local_labels != self.kube_local_labels;
        self.kube_local_labels = local_labels;
        self.kube_namespaces = namespaces;
        self.kube_remote = remote;
        self.kube_services = services;
        changed.then(|| self.merged())
    }

    pub fn merged(&self) -> Inventory {
        let mut inv = merge(&self.static_inv, &[("docker", &self.docker_inv), ("cri", &self.cri_inv)]);
        // Pods on other nodes are peers: a name known here already is this node's (the
        // runtime's word wins, quietly: the API lists every pod).
        let known: std::collections::HashSet<String> =
            inv.containers.iter().map(|c| c.name.clone()).collect();
        inv.containers.extend(self.kube_remote.iter().filter(|c| !known.contains(&c.name)).cloned());
        // Services of the API; one the inventory file names already is the file's.
        let named: std::collections::HashSet<String> = inv.services.iter().map(|s| s.name.clone()).collect();
        inv.services.extend(self.kube_services.iter().filter(|s| !named.contains(&s.name)).cloned());
        // Namespace labels only the API server knows, and this node's pods' labels as they
        // are now (the runtime has them as they were when the sandbox was made).
        let from_cri: std::collections::HashSet<&str> =
            self.cri_inv.iter().map(|c| c.name.as_str()).collect();
        for c in &mut inv.containers {
            if from_cri.contains(c.name.as_str()) {
                if let Some(l) = self.kube_local_labels.get(&c.name) {
                    c.labels = l.clone();
                }
            }
            if let Some(k) = c.kube.as_mut() {
                if let Some(l) = self.kube_namespaces.get(&k.namespace) {
                    k.namespace_labels = l.clone();
                }
            }
        }
        inv
    }

    /// The periodic re-read: contents that differ from what was last loaded, and held
    /// still across two reads (a file being written is not loaded).
    pub fn backstop(&mut self) -> (Option<RulesRead>, Option<InventoryRead>) {
        let read = self.read_rules();
        let rules = self.rules_backstop.observe(read, &self.seen_rules);
        if rules.is_some() {
            info!("rule files changed (periodic check)");
        }
        let inv_now = self.read_inventory();
        let inv = self.inventory_backstop.observe(inv_now, &self.seen_inventory);
        if inv.is_some() {
            info!("inventory changed (periodic check)");
        }
        (rules, inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_diagnostics_count_what_they_stand_for() {
        let many: Vec<String> = (0..250).map(|i| format!("f.toml:{i}:1: error: x")).collect();
        let c = capped(many);
        assert_eq!(c.len(), MAX_DIAGNOSTICS + 1);
        assert_eq!(c.last().map(String::as_str), Some("... and 150 more"));
        assert_eq!(error_count(&c), 250);
        assert_eq!(error_count(&["a".into()]), 1);
        assert_eq!(first_error(&[]), "no detail");
    }
}
