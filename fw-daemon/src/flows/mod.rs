//! What the kernel reports about traffic: NFLOG records now; conntrack flows later.

pub mod nflog;
