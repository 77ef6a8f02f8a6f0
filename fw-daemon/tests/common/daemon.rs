//! A `fw-daemon run` child process for end-to-end tests: stderr to a log file the test can
//! read, killed (-9) on drop even when the test fails.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `fw-daemon` binary under test: this build's, or `FW_DAEMON_BIN` (to check that a
/// test fails against an older build).
pub fn bin() -> std::ffi::OsString {
    std::env::var_os("FW_DAEMON_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_fw-daemon").into())
}

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
        Daemon::spawn_via(&[], args, log)
    }

    /// Starts `WRAPPER... fw-daemon ARGS...` (say `ip netns exec NS`, or `unshare ...` to give
    /// it other namespaces); killing the wrapper must end the daemon (`unshare --kill-child`).
    pub fn spawn_via<I, S>(wrapper: &[std::ffi::OsString], args: I, log: PathBuf) -> Daemon
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
        let mut argv: Vec<std::ffi::OsString> = wrapper.to_vec();
        argv.push(bin());
        argv.extend(args);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn fw-daemon");
        Daemon { child: Some(child), log, socket, audit }
    }

    /// `fw-daemon run` on a work dir holding `rules/` and `inventory.toml` (state in
    /// `state/`, one audit log `audit.jsonl` across restarts), with fast timers and `extra`
    /// flags; returns once the control socket accepts connections.
    pub fn run_in_dir(d: &Path, tag: &str, extra: &[&str]) -> Daemon {
        Daemon::run_in_dir_via(&[], d, tag, extra)
    }

    /// [`Daemon::run_in_dir`] through a wrapper command (see [`Daemon::spawn_via`]).
    pub fn run_in_dir_via(wrapper: &[std::ffi::OsString], d: &Path, tag: &str, extra: &[&str]) -> Daemon {
        let mut args: Vec<std::ffi::OsString> = ["run", "--no-docker", "--tick", "0.2", "--resync", "1"]
            .iter()
            .chain(extra)
            .map(Into::into)
            .collect();
        for (flag, path) in [
            ("--rules", "rules"),
            ("--inventory", "inventory.toml"),
            ("--state-dir", "state"),
            ("--audit-log", "audit.jsonl"),
        ] {
            if extra.contains(&flag) {
                continue;
            }
            args.push(flag.into());
            args.push(d.join(path).into());
        }
        let daemon = Daemon::spawn_via(wrapper, args, d.join(format!("daemon-{tag}.log")));
        daemon.wait_ready();
        daemon
    }

    /// Until the control socket accepts: the file appears at bind(), a moment before listen().
    pub fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < until, "no control socket:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for assertion messages of chatty runs.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- daemon log (last {} of {} lines) ---\n{}",
            lines.len() - from,
            lines.len(),
            lines[from..].join("\n")
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGSTOP, returning once every thread of the daemon is stopped: the signal only asks,
    /// and a thread mid-work keeps going until it next enters the kernel.
    pub fn freeze(&self) {
        let pid = self.pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP)
            .expect("SIGSTOP");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let stopped = fs::read_dir(format!("/proc/{pid}/task")).expect("daemon tasks").all(|t| {
                let stat =
                    t.ok().and_then(|t| fs::read_to_string(t.path().join("stat")).ok()).unwrap_or_default();
                // "pid (comm) S ...": the state follows the last ')'.
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            });
            if stopped {
                return;
            }
            assert!(Instant::now() < until, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// Polls `f` every 100 ms until it gives a value; fails after 15 s with `what` and the log.
pub fn eventually<T>(what: &str, d: &Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
