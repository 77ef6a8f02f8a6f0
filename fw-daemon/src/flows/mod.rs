//! What the kernel reports about traffic: NFLOG records now; conntrack flows later.

pub mod collector;
pub mod conntrack;
pub mod inline;
pub mod inspection;
pub mod nflog;
pub mod nfqueue;
pub mod reset;
pub mod table;
