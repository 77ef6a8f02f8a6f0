//! When the rule files and the inventory are re-read: only once a change is complete.
//!
//! inotify says when a writer is done: `IN_CLOSE_WRITE` (a file written in place, however
//! many chunks and pauses it took), `IN_MOVED_TO` (a file renamed into place, the atomic way;
//! also a Kubernetes ConfigMap's `..data` symlink swapped to a new `..<timestamp>/`
//! directory), `IN_DELETE` of a rule file, `IN_CREATE` of a symlink. Writes in progress
//! (`IN_MODIFY`) and hidden entries (editor swap files, a ConfigMap's `..<timestamp>/`
//! directories coming and going) are not changes. The periodic re-read, a backstop for
//! events lost to a queue overflow, acts only on contents that were the same in two
//! consecutive reads ([`Stable`]): a file caught half-written by one read is not enforced.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

/// What an event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Rules,
    Inventory,
}

/// The directory swapped atomically by a ConfigMap update (kubelet's `AtomicWriter`).
const CONFIGMAP_DATA: &str = "..data";

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn rule_file_name(n: &str) -> bool {
    !n.starts_with('.') && n.ends_with(".toml")
}

/// Whether `kind` on `path` completes a change to the file (or to the entry named so).
fn completes(kind: &EventKind, path: &Path) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => true,
        // A symlink is whole when created; a regular file is not (its IN_CLOSE_WRITE is).
        EventKind::Create(CreateKind::File | CreateKind::Any) => {
            path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink())
        }
        _ => false,
    }
}

/// The changes one event means, for a rules directory and an inventory file. Pure but for
/// one `lstat` (is a created entry a symlink?).
pub fn classify(kind: &EventKind, paths: &[PathBuf], rules: &Path, inventory: Option<&Path>) -> Vec<Change> {
    let mut out = Vec::new();
    for p in paths {
        if !completes(kind, p) {
            continue;
        }
        let n = name(p);
        let renamed = matches!(kind, EventKind::Modify(ModifyKind::Name(_)));
        let in_rules = p.parent() == Some(rules);
        if in_rules && (rule_file_name(n) || (renamed && n == CONFIGMAP_DATA)) {
            out.push(Change::Rules);
        }
        if let Some(inv) = inventory {
            let swapped = renamed && n == CONFIGMAP_DATA && p.parent() == inv.parent();
            if p == inv || swapped {
                out.push(Change::Inventory);
            }
        }
    }
    out.dedup();
    out
}

#[derive(Debug, thiserror::Error)]
#[error("watching {path}: {source}")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// Watches the rules directory and the inventory's directory (not the file: tools replace
/// files by rename), calling `on` for every change.
pub fn watch(
    rules: &Path,
    inventory: Option<&Path>,
    on: impl Fn(Change) + Send + 'static,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let (r, i) = (rules.to_path_buf(), inventory.map(Path::to_path_buf));
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        for c in classify(&ev.kind, &ev.paths, &r, i.as_deref()) {
            on(c);
        }
    })
    .map_err(|source| WatchError { path: rules.to_path_buf(), source })?;
    w.watch(rules, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError { path: rules.to_path_buf(), source })?;
    if let Some(dir) = inventory.and_then(Path::parent) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if dir != rules {
            w.watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError { path: dir.to_path_buf(), source })?;
        }
    }
    Ok(w)
}

/// The backstop's rule: a read that differs from what is enforced is acted on only when the
/// next read finds the same contents again.
#[derive(Debug)]
pub struct Stable<T> {
    candidate: Option<T>,
}

impl<T> Default for Stable<T> {
    fn default() -> Self {
        Stable { candidate: None }
    }
}

impl<T: PartialEq> Stable<T> {
    /// `read` is what the files hold now, `seen` what was last loaded (good or not). Gives
    /// back the contents to load, once they held still across two reads.
    pub fn observe(&mut self, read: T, seen: &T) -> Option<T> {
        if read == *seen {
            self.candidate = None;
            return None;
        }
        if self.candidate.as_ref() == Some(&read) {
            self.candidate = None;
            return Some(read);
        }
        self.candidate = Some(read);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{RemoveKind, RenameMode};

    fn ev(kind: EventKind, p: &str) -> Vec<Change> {
        classify(&kind, &[PathBuf::from(p)], Path::new("/r"), Some(Path::new("/etc/fw/inv.toml")))
    }

    #[test]
    fn only_finished_changes_reload() {
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let modify = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert_eq!(ev(close, "/r/20-policies.toml"), vec![Change::Rules]);
        assert_eq!(ev(modify, "/r/20-policies.toml"), vec![], "a write in progress");
        assert_eq!(ev(to, "/r/20-policies.toml"), vec![Change::Rules]);
        assert_eq!(ev(from, "/r/20-policies.toml"), vec![Change::Rules], "renamed away");
        assert_eq!(ev(EventKind::Remove(RemoveKind::File), "/r/x.toml"), vec![Change::Rules]);
        assert_eq!(ev(close, "/r/.20-policies.toml.swp"), vec![]);
        assert_eq!(ev(close, "/r/20-policies.toml~"), vec![]);
        assert_eq!(ev(close, "/r/sub/x.toml"), vec![], "not in the directory itself");
        // A regular file being created is not done yet.
        assert_eq!(ev(EventKind::Create(CreateKind::File), "/nonexistent-dir/r/x.toml"), vec![]);
        // ConfigMap: the ..data swap is the change; the timestamped dirs are not.
        assert_eq!(ev(to, "/r/..data"), vec![Change::Rules]);
        assert_eq!(ev(EventKind::Create(CreateKind::Folder), "/r/..2026_01_01_00_00_00.1"), vec![]);
        assert_eq!(ev(EventKind::Remove(RemoveKind::Folder), "/r/..2026_01_01_00_00_00.1"), vec![]);
        assert_eq!(ev(to, "/r/..data_tmp"), vec![]);
        // The inventory, replaced or written, or its own ConfigMap swapped.
        assert_eq!(ev(close, "/etc/fw/inv.toml"), vec![Change::Inventory]);
        assert_eq!(ev(to, "/etc/fw/..data"), vec![Change::Inventory]);
        assert_eq!(ev(modify, "/etc/fw/inv.toml"), vec![]);
        assert_eq!(ev(close, "/etc/fw/other.toml"), vec![]);
    }

    #[test]
    fn a_created_symlink_is_a_finished_change() {
        let d = std::env::temp_dir().join(format!("fw-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("real.toml"), "").unwrap();
        std::os::unix::fs::symlink("real.toml", d.join("link.toml")).unwrap();
        let create = EventKind::Create(CreateKind::File);
        assert_eq!(classify(&create, &[d.join("link.toml")], &d, None), vec![Change::Rules]);
        assert_eq!(classify(&create, &[d.join("real.toml")], &d, None), vec![]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_backstop_waits_for_two_equal_reads() {
        let mut s = Stable::default();
        let seen = "old";
        assert_eq!(s.observe("old", &seen), None);
        assert_eq!(s.observe("half", &seen), None, "first sight: wait");
        assert_eq!(s.observe("whole", &seen), None, "it moved: wait again");
        assert_eq!(s.observe("whole", &seen), Some("whole"), "held still: load it");
        assert_eq!(s.observe("other", &seen), None);
        assert_eq!(s.observe("old", &seen), None, "back to what is loaded: nothing to do");
        assert_eq!(s.observe("other", &seen), None, "the earlier candidate was forgotten");
    }
}
