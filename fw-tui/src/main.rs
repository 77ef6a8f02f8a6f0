//! `fw-tui`: the fw operator console. This version has the scripting subcommands; see
//! `fw-tui --help`.

fn main() -> std::process::ExitCode {
    fw_tui::cli::main()
}
