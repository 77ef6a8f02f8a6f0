//! Where containers come from: the static inventory file (see `inventory`) and Docker.

pub mod docker;
