//! `fw-tui`: the fw operator console. The live console arrives with the control socket; for
//! now the binary exists so the workspace, packaging and CI cover it from the start.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "fw-tui",
    version,
    about = "fw operator console: live flows, drops and one-key blocking",
    after_help = "The console needs fw-daemon's control socket, which is not available in this version yet.\nUse `fw-daemon check | plan | explain` to work with rule files today."
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "fw-tui {}: the console needs fw-daemon's control socket (not in this version yet)",
        env!("CARGO_PKG_VERSION")
    );
}
