//! `fw-daemon check DIR [--inventory FILE]`: every problem in the rule files (and the
//! inventory), and with an inventory, which zone each container lands in and which
//! containers more than one zone selects.

use std::collections::BTreeMap;
use std::path::Path;

use crate::inventory::parse_inventory;
use crate::rules::report::{render_all, Sources, Style};
use crate::rules::{load_sources, read_dir, Diagnostic, Policy, Severity};

pub struct CheckReport {
    /// No errors (warnings may remain).
    pub ok: bool,
    pub diagnostics: Vec<Diagnostic>,
    /// The summary (and, with an inventory, the container -> zone table); printed only
    /// when there is no error, so "ok" never stands next to one.
    pub summary: Vec<String>,
    /// The text of every file read, for the source lines under each diagnostic.
    pub sources: Sources,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// The diagnostics as `check` prints them: each `path:line:col: error: ...` line, its
    /// source line with a caret, and its notes.
    pub fn render(&self, style: Style) -> String {
        render_all(&self.diagnostics, &self.sources, style)
    }
}

pub fn check(dir: &Path, inventory: Option<&Path>, now: i64) -> CheckReport {
    let mut sources = Sources::new();
    let (policy, mut diagnostics) = match read_dir(dir) {
        Ok(files) => {
            for f in &files {
                sources.add(f.path.clone(), f.text.clone());
            }
            let loaded = load_sources(&files, now);
            (loaded.policy, loaded.diagnostics)
        }
        Err(d) => (None, d),
    };
    let mut summary = Vec::new();
    if let Some(p) = &policy {
        let containers = p.zones.iter().filter(|z| z.selector().is_some()).count();
        let services = match p.services.len() {
            0 => String::new(),
            1 => ", 1 service".into(),
            n => format!(", {n} services"),
        };
        summary.push(format!(
            "{}: ok: {} files, {} zones ({} container, {} external), {} policies, {} failsafe{}{services}, policy {}",
            dir.display(),
            p.files.len(),
            p.zones.len(),
            containers,
            p.zones.len() - containers,
            p.rules.len(),
            p.failsafes.len(),
            if p.failsafes.len() == 1 { "" } else { "s" },
            p.hash
        ));
    }
    if let Some(inv_path) = inventory {
        let inv = match crate::rules::read_bounded(inv_path, crate::config::DEFAULT_MAX_INVENTORY_BYTES) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let r = parse_inventory(inv_path, &text);
                    sources.add(inv_path.to_path_buf(), text);
                    r
                }
                Err(e) => Err(vec![whole(inv_path, format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()))]),
            },
            Err(crate::rules::Bounded::TooBig(n)) => Err(vec![whole(
                inv_path,
                format!(
                    "{n} bytes, over the limit of {} for the inventory (setting max_inventory_bytes): not read",
                    crate::config::DEFAULT_MAX_INVENTORY_BYTES
                ),
            )]),
            Err(crate::rules::Bounded::Io(e)) => Err(vec![whole(inv_path, format!("cannot read inventory: {e}"))]),
        };
        match inv {
            Err(d) => diagnostics.extend(d),
            Ok(inv) => {
                if let Some(p) = &policy {
                    for c in &inv.containers {
                        let zone = p.zone_of(&c.identity());
                        summary.push(format!("  {:<16} -> {} ({})", c.name, zone.name, zone.mode));
                    }
                    shared_selection_warnings(p, &inv, &mut diagnostics);
                }
            }
        }
    }
    let ok = !diagnostics.iter().any(|d| d.is_error());
    if !ok {
        summary.clear();
    }
    CheckReport { ok, diagnostics, summary, sources }
}

fn whole(path: &Path, msg: String) -> Diagnostic {
    Diagnostic::whole_file(Severity::Error, std::sync::Arc::new(path.to_path_buf()), msg)
}

/// Containers of the inventory that more than one zone selects: one warning per pair of
/// zones (at the later one), with how many and which, not one per container. It replaces
/// the loader's guess for that pair ("may select the same containers").
fn shared_selection_warnings(p: &Policy, inv: &crate::inventory::Inventory, diags: &mut Vec<Diagnostic>) {
    let mut pairs: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
    for c in &inv.containers {
        let id = c.identity();
        let matching: Vec<usize> = p
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.selector().is_some_and(|s| s.matches(&id)))
            .map(|(i, _)| i)
            .collect();
        if let Some((&first, rest)) = matching.split_first() {
            for &other in rest {
                pairs.entry((first, other)).or_default().push(&c.name);
            }
        }
    }
    for ((a, b), names) in pairs {
        let (za, zb) = (&p.zones[a], &p.zones[b]);
        let Some(pos) = &zb.pos else { continue };
        let guess = format!("zone `{}` may select the same containers as zone `{}`", zb.name, za.name);
        diags.retain(|d| !(d.severity == Severity::Warning && d.message.starts_with(&guess)));
        let n = names.len();
        let shown =
            if n > 5 { format!("{}, ... ({n} in all)", names[..5].join(", ")) } else { names.join(", ") };
        diags.push(
            Diagnostic::at(
                Severity::Warning,
                pos,
                format!(
                    "zone `{}` selects {n} container{} that zone `{}` ({}) selects first: {} join{} `{}`",
                    zb.name,
                    if n == 1 { "" } else { "s" },
                    za.name,
                    za.pos.as_ref().map(|p| p.short()).unwrap_or_default(),
                    if n == 1 { "it" } else { "they" },
                    if n == 1 { "s" } else { "" },
                    za.name
                ),
            )
            .note(format!("selected by both: {shown}")),
        );
    }
    diags.sort_by(|a, b| (a.path.as_ref(), a.line, a.col).cmp(&(b.path.as_ref(), b.line, b.col)));
}
