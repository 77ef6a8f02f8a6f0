//! fw-daemon: trust-zone rule files compiled to nftables inside each container's netns.
//!
//! Data path (one-way): rule files -> `rules` (load + validate) -> `Policy`; with an
//! `inventory` of containers -> `compile` (pure) -> one `ruleset::Ruleset` per container ->
//! rendered as an nft script (`plan`) or evaluated (`explain`).

pub mod alerts;
pub mod blocks;
pub mod clock;
pub mod compile;
pub mod config;
pub mod containment;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod drift_watch;
pub mod floor;
pub mod flows;
pub mod inspect;
pub mod inventory;
pub mod kernel;
pub mod logging;
pub mod netns;
pub mod nft;
pub mod nl;
pub mod privileges;
pub mod reconcile;
pub mod rules;
pub mod ruleset;
pub mod runtime;
pub mod state;
pub mod tools;
pub mod watch;
