//! The per-container ruleset: IR, its nft-script rendering, and its evaluation.

pub mod diff;
pub mod eval;
pub mod ir;
pub mod render;

pub use ir::*;
