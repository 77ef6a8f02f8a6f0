//! `fw-tui`: the fw operator console. This version has the scripting subcommands (`status`,
//! `flows`, `block`, `unblock`, `blocks`, `audit`, `reload`); the live console comes later.
//!
//! - [`client`]: a blocking client for fw-daemon's control socket.
//! - [`cli`]: the command line (clap) and what each subcommand does.
//! - [`render`]: human output as pure functions of an answer and the current time.

pub mod cli;
pub mod client;
pub mod render;

#[cfg(test)]
mod testserver;
