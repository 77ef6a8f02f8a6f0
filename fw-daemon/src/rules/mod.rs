//! Trust-zone rule files: the model, loading with precise diagnostics, and validation.

pub mod diag;
pub mod glob;
pub mod load;
pub mod model;
pub(crate) mod reader;
pub mod report;
pub mod units;
pub mod validate;

pub use diag::{Diagnostic, Severity};
pub use load::{read_bounded, read_dir, read_dir_limited, Bounded, LoadResult, ReadLimits, SourceFile};
pub use model::*;
pub use validate::{load_dir, load_sources};
