//! A small real attack client for inspection tests, and a server that records what reached
//! it and how each connection ended. The client writes a TLS ClientHello (or any bytes)
//! exactly as a plan says: split into TCP segments at chosen points (TCP_NODELAY, autocorking
//! off in its namespace, so each write is its own segment), re-framed into 1-byte TLS records
//! in one write, or with pauses between parts.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fw_daemon::netns::run_in;

/// A ClientHello (TLS 1.2 record, TLS 1.3-style body) asking for `sni`, padded with a
/// `padding` extension to about 512 bytes, as real clients do.
pub fn client_hello(sni: &str) -> Vec<u8> {
    hello(sni, false)
}

/// [`client_hello`] with the server_name extension last, after the padding: its name
/// arrives only with the hello's last bytes.
pub fn client_hello_sni_last(sni: &str) -> Vec<u8> {
    hello(sni, true)
}

fn hello(sni: &str, sni_last: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(13)));
    let suites: [u16; 5] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    // supported_versions: TLS 1.3, 1.2
    ext.extend_from_slice(&[0, 43, 0, 5, 4, 3, 4, 3, 3]);
    // server_name
    let name = sni.as_bytes();
    let list_len = 3 + name.len();
    let mut sn = vec![0, 0];
    sn.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sn.extend_from_slice(&(list_len as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    if !sni_last {
        ext.extend_from_slice(&sn);
    }
    // padding to ~512 bytes of handshake
    let pad =
        512usize.saturating_sub(4 + body.len() + 2 + ext.len() + 4 + if sni_last { sn.len() } else { 0 });
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    if sni_last {
        ext.extend_from_slice(&sn);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// The handshake message of a one-record hello, re-framed as one TLS record per byte.
pub fn one_byte_records(hello: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in &hello[5..] {
        out.extend_from_slice(&[0x16, 3, 1, 0, 1, b]);
    }
    out
}

/// What the client writes after its first bytes, unless told not to.
pub const LINE: &[u8] = b"APPLICATION-DATA-LINE\n";

/// How the client writes its first bytes.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One write per part, `gap` apart (zero: back to back); `line`: an application line after.
    Parts { cuts: Vec<usize>, gap: Duration, line: bool },
}

impl Plan {
    /// `n` segments: the first `ones` of one byte each, the rest evenly.
    pub fn segments(len: usize, n: usize, ones: usize, gap: Duration) -> Plan {
        let mut cuts: Vec<usize> = (1..=ones.min(n - 1)).collect();
        let rest = n - cuts.len();
        let start = cuts.len();
        for i in 1..rest {
            cuts.push(start + (len - start) * i / rest);
        }
        Plan::Parts { cuts, gap, line: true }
    }

    pub fn whole() -> Plan {
        Plan::Parts { cuts: vec![], gap: Duration::ZERO, line: true }
    }

    /// The bytes in one write and nothing after.
    pub fn only() -> Plan {
        Plan::Parts { cuts: vec![], gap: Duration::ZERO, line: false }
    }
}

/// How a connection ended, as one end saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// ECONNRESET or ECONNABORTED.
    Reset,
    Eof,
    /// Still open when we stopped waiting.
    Open,
    /// Could not connect at all.
    NoConnect,
}

#[derive(Debug, Clone)]
pub struct Attack {
    pub end: End,
    /// From the last write to the end.
    pub after: Duration,
    /// Bytes the server sent that arrived.
    pub received: usize,
    pub sport: u16,
}

// A reset seen by a later write rather than a read also counts (see `attack`).

/// Connects from inside `ns` to `to`, writes `data` as `plan` says, then an application line,
/// and reads until the connection ends or `wait` passes.
pub fn attack(ns: &Path, to: SocketAddr, data: Vec<u8>, plan: Plan, wait: Duration) -> Attack {
    run_in(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
            return Attack { end: End::NoConnect, after: Duration::ZERO, received: 0, sport: 0 };
        };
        let sport = s.local_addr().map_or(0, |a| a.port());
        let _ = s.set_nodelay(true);
        let Plan::Parts { cuts, gap, line } = plan;
        let mut last = 0;
        let mut failed = None;
        for c in cuts.into_iter().chain([data.len()]) {
            if let Err(e) = s.write_all(&data[last..c]) {
                failed = Some(e);
                break;
            }
            last = c;
            if !gap.is_zero() && c < data.len() {
                std::thread::sleep(gap);
            }
        }
        let wrote = Instant::now();
        if failed.is_none() && line {
            failed = s.write_all(LINE).err();
        }
        // A write refused because the connection was reset or aborted meanwhile: the reset.
        if let Some(e) = failed {
            let end = match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                    End::Reset
                }
                _ => End::Eof,
            };
            return Attack { end, after: wrote.elapsed(), received: 0, sport };
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 4096];
        let mut received = 0;
        let end = loop {
            if wrote.elapsed() > wait {
                break End::Open;
            }
            match s.read(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => received += n,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    break End::Reset
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break End::Reset,
            }
        };
        Attack { end, after: wrote.elapsed(), received, sport }
    })
    .expect("enter the client namespace")
}

/// One connection as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub bytes: Vec<u8>,
    pub end: End,
    /// From accept to the end.
    pub after: Duration,
}

/// A TCP server inside a namespace that keeps every byte it receives per connection and how
/// each ended; with `answer`, it writes that many bytes as soon as a request head arrived.
pub struct Observer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    pub fn start(ns: PathBuf, port: u16, answer: Option<usize>, wait: Duration) -> Observer {
        let l = run_in(&ns, move || TcpListener::bind(("::", port))).expect("netns").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !st2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, peer)) => {
                        let (s3, st3) = (s2.clone(), st2.clone());
                        conns.push(std::thread::spawn(move || serve(c, peer, answer, wait, &s3, &st3)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Observer { seen, stop, thread: Some(thread) }
    }

    /// The connection from client port `sport`, once it ended (or `wait` passed).
    pub fn conn(&self, sport: u16, wait: Duration) -> Option<Seen> {
        let until = Instant::now() + wait;
        loop {
            if let Some(c) = self.seen.lock().unwrap().iter().find(|c| c.peer.port() == sport) {
                return Some(c.clone());
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(
    mut c: TcpStream,
    peer: SocketAddr,
    answer: Option<usize>,
    wait: Duration,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    let t0 = Instant::now();
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
    // A peer that went silent (its flow cut by drops) must not hold the answer forever.
    let _ = c.set_write_timeout(Some(wait));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    let mut answered = false;
    let end = loop {
        if t0.elapsed() > wait || stop.load(Ordering::Relaxed) {
            break End::Open;
        }
        match c.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if let (Some(len), false) = (answer, answered) {
                    if bytes.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                        let _ = c.write_all(head.as_bytes());
                        let body = vec![b'x'; len];
                        let _ = c.write_all(&body);
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break End::Reset,
        }
    };
    seen.lock().unwrap().push(Seen { peer, bytes, end, after: t0.elapsed() });
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
