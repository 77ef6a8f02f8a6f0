//! What the kernel reports about traffic: NFLOG records now; conntrack flows later.

pub mod collector;
pub mod conntrack;
pub mod inspect_tap;
pub mod nflog;
pub mod table;
