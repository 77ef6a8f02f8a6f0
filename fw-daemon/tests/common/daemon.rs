//! A `fw-daemon run` child process for end-to-end tests: stderr to a log file the test can
//! read, killed (-9) on drop even when the test fails.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    /// Its control socket (`run` only): beside the log, so parallel daemons never share one.
    pub socket: PathBuf,
    pub audit: PathBuf,
}

impl Daemon {
    /// Starts `fw-daemon ARGS...` with its log in `log`.
    pub fn spawn<I, S>(args: I, log: PathBuf) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let socket = log.with_extension("sock");
        let audit = log.with_extension("audit.jsonl");
        if args.first().is_some_and(|a| a == "run") {
            for (flag, value) in [("--socket", &socket), ("--audit-log", &audit)] {
                if !args.iter().any(|a| a == flag) {
                    args.push(flag.into());
                    args.push(value.into());
                }
            }
        }
        let child = Command::new(env!("CARGO_BIN_EXE_fw-daemon"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn fw-daemon");
        Daemon { child: Some(child), log, socket, audit }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < until, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
