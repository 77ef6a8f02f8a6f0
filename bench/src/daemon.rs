//! A real `fw-daemon run` for the end-to-end benchmarks, and a minimal control-socket client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fw_proto::control::{Answer, Op, Request, ServerMsg, PROTOCOL_VERSION};

/// The daemon child, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the release `fw-daemon` next to this benchmark binary on `rules` and the
    /// inventory in `dir`, with its socket, state and log in `dir`; `FW_DAEMON_ARGS` adds flags.
    pub fn start(dir: &Path, rules: &Path, extra: &[&str]) -> Daemon {
        let exe = std::env::current_exe().expect("exe");
        let bin = exe.parent().expect("dir").join("fw-daemon");
        assert!(bin.exists(), "build it first: cargo build --release -p fw-daemon");
        let socket = dir.join("fw.sock");
        let child = Command::new(&bin)
            .args(["run", "--no-docker", "--rules"])
            .arg(rules)
            .arg("--inventory")
            .arg(dir.join("inventory.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl"))
            .args(extra)
            .args(std::env::var("FW_DAEMON_ARGS").unwrap_or_default().split_whitespace())
            .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn fw-daemon");
        Daemon { child, socket }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects (waiting for the socket) and says hello.
    pub fn client(&self) -> Client {
        let until = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&self.socket) {
                break s;
            }
            assert!(Instant::now() < until, "no control socket at {}", self.socket.display());
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut c = Client { r: BufReader::new(stream.try_clone().expect("clone")), w: stream, id: 0 };
        c.call(Op::Hello { version: PROTOCOL_VERSION, client: "fw-bench".into() }).expect("hello");
        c
    }
}

pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    id: u64,
}

impl Client {
    pub fn call(&mut self, op: Op) -> Result<Answer, String> {
        self.id += 1;
        let mut line = serde_json::to_string(&Request { id: self.id, op }).expect("request");
        line.push('\n');
        self.w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).map_err(|e| e.to_string())?;
            match serde_json::from_str::<ServerMsg>(&l).map_err(|e| e.to_string())? {
                ServerMsg::Ok { id, answer } if id == self.id => return Ok(answer),
                ServerMsg::Error { code, message, .. } => return Err(format!("{code}: {message}")),
                _ => {}
            }
        }
    }

    /// Waits until the daemon reports every container programmed.
    pub fn wait_programmed(&mut self) -> fw_proto::control::StatusInfo {
        loop {
            if let Ok(Answer::Status(s)) = self.call(Op::Status) {
                if !s.containers.is_empty() && s.containers.iter().all(|c| c.programmed) {
                    return s;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// (utime + stime) in clock ticks, and VmRSS / VmHWM in KiB, of a process.
pub fn proc_usage(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (ticks, kib("VmRSS:"), kib("VmHWM:"))
}
