//! `fw-tui`: the fw operator console. Without a subcommand it opens the live console
//! ([`console`]); the scripting subcommands (`status`, `flows`, `alerts`, `block`, `unblock`,
//! `blocks`, `audit`, `reload`) are in [`cli`].
//!
//! - [`client`]: a blocking client for fw-daemon's control socket.
//! - [`cli`]: the command line (clap) and what each subcommand does.
//! - [`console`]: the live console (ratatui).
//! - [`render`]: human output as pure functions of an answer and the current time.

pub mod cli;
pub mod client;
pub mod console;
pub mod render;

#[cfg(test)]
mod contract;
#[cfg(test)]
mod testserver;
