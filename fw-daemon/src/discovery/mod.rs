//! Where containers come from: the static inventory file (see `inventory`), Docker, and the
//! daemon's own namespace (`--self`).

pub mod docker;
pub mod own;
