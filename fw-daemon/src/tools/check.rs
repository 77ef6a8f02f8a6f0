//! `fw-daemon check DIR [--inventory FILE]`: every problem in the rule files, and with an
//! inventory, which zone each container lands in and which containers more than one zone selects.

use std::path::Path;

use crate::inventory::load_inventory;
use crate::rules::{load_dir, Diagnostic, Severity, ZoneKind};

pub struct CheckReport {
    pub ok: bool,
    pub diagnostics: Vec<Diagnostic>,
    /// The summary (and, with an inventory, the container -> zone table).
    pub summary: Vec<String>,
}

pub fn check(dir: &Path, inventory: Option<&Path>, now: i64) -> CheckReport {
    let loaded = load_dir(dir, now);
    let mut diagnostics = loaded.diagnostics;
    let mut summary = Vec::new();
    if let Some(p) = &loaded.policy {
        let containers = p.zones.iter().filter(|z| matches!(z.kind, ZoneKind::Containers(_))).count();
        summary.push(format!(
            "{}: ok: {} files, {} zones ({} container, {} external), {} policies, {} failsafe{}, policy {}",
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
        match load_inventory(inv_path) {
            Err(d) => diagnostics.extend(d),
            Ok(inv) => {
                if let Some(p) = &loaded.policy {
                    for c in &inv.containers {
                        let id = c.identity();
                        let matching: Vec<&str> = p
                            .zones
                            .iter()
                            .filter(|z| matches!(&z.kind, ZoneKind::Containers(s) if s.matches(&id)))
                            .map(|z| z.name.as_str())
                            .collect();
                        let zone = p.zone_of(&id);
                        summary.push(format!("  {:<16} -> {} ({})", c.name, zone.name, zone.mode));
                        if matching.len() > 1 {
                            if let Some(pos) = p.zone(matching[1]).and_then(|z| z.pos.clone()) {
                                diagnostics.push(Diagnostic::at(
                                    Severity::Warning,
                                    &pos,
                                    format!(
                                    "container `{}` is selected by zones {}; it joins `{}`, declared first",
                                    c.name,
                                    matching.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                                    matching[0]
                                ),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    let ok = !diagnostics.iter().any(|d| d.is_error());
    CheckReport { ok, diagnostics, summary }
}
