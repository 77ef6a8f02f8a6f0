//! The offline tools: `check`, `plan`, `explain`. Each returns its output as values so tests
//! can run them without a process; `main` only prints and picks the exit code.

pub mod apply;
pub mod check;
pub mod explain;
pub mod plan;
pub mod reach;

use std::path::Path;

use crate::inventory::{load_inventory, Inventory};
use crate::rules::{load_dir, Diagnostic, Policy};

/// Why a tool could not produce its result: the diagnostics to print.
#[derive(Debug)]
pub struct Failed(pub Vec<Diagnostic>, pub Vec<String>);

impl Failed {
    pub fn message(msg: impl Into<String>) -> Failed {
        Failed(Vec::new(), vec![msg.into()])
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(|d| d.to_string()).chain(self.1.iter().cloned()).collect()
    }
}

/// Loads rules and inventory, failing with every diagnostic (warnings are kept too).
pub fn load_both(
    rules: &Path,
    inventory: &Path,
    now: i64,
) -> Result<(Policy, Inventory, Vec<Diagnostic>), Failed> {
    let loaded = load_dir(rules, now);
    let inv = load_inventory(inventory);
    match (loaded.policy, inv) {
        (Some(p), Ok(i)) => Ok((p, i, loaded.diagnostics)),
        (_, inv) => {
            let mut d: Vec<Diagnostic> = loaded.diagnostics.into_iter().filter(|d| d.is_error()).collect();
            if let Err(e) = inv {
                d.extend(e);
            }
            Err(Failed(d, Vec::new()))
        }
    }
}

/// Seconds since the epoch, for rule expiry.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
