//! Ordinary sockets, for comparison with raw frames: these pass the namespace's netfilter
//! hooks (a denied `sendto` fails with EPERM), and a raw IP socket of any protocol goes
//! through `output` too (the "tiny packet" finding is about that path).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::link::Sent;

/// `count` UDP datagrams through a plain socket; the first error (EPERM when the table
/// drops it in `output`) is reported with its errno.
pub fn udp_sendto(dst: SocketAddr, payload: &[u8], count: u64, interval: Duration) -> SentErrno {
    let bind: SocketAddr = if dst.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = match std::net::UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return SentErrno::failed(count, &e),
    };
    let mut r = SentErrno::default();
    for i in 0..count {
        match s.send_to(payload, dst) {
            Ok(_) => r.sent.sent += 1,
            Err(e) => r.note(&e),
        }
        if !interval.is_zero() && i + 1 < count {
            std::thread::sleep(interval);
        }
    }
    r
}

/// [`Sent`] plus the errno of the first failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SentErrno {
    #[serde(flatten)]
    pub sent: Sent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl SentErrno {
    fn note(&mut self, e: &io::Error) {
        self.sent.failed += 1;
        if self.errno.is_none() {
            self.errno = e.raw_os_error();
            self.sent.error = Some(e.to_string());
        }
    }

    fn failed(count: u64, e: &io::Error) -> SentErrno {
        let mut r = SentErrno::default();
        r.note(e);
        r.sent.failed = count;
        r
    }
}

/// Packets of IP protocol `proto` through a raw IP socket (the kernel writes the IP header),
/// each with `payload`: they traverse the namespace's `output` hook like any socket's.
pub fn raw_ip_send(dst: IpAddr, proto: u8, payload: &[u8], count: u64, interval: Duration) -> SentErrno {
    let domain = if dst.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = match Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(proto)))) {
        Ok(s) => s,
        Err(e) => return SentErrno::failed(count, &e),
    };
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    let mut r = SentErrno::default();
    for i in 0..count {
        match s.send_to(payload, &to) {
            Ok(_) => r.sent.sent += 1,
            Err(e) => r.note(&e),
        }
        if !interval.is_zero() && i + 1 < count {
            std::thread::sleep(interval);
        }
    }
    r
}

/// A TCP connection from a chosen local address (a namespace holding several).
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if dst.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    s.connect_timeout(&SockAddr::from(dst), timeout)?;
    Ok(s.into())
}

/// What a connect loop got.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Connects {
    pub attempts: u64,
    pub connected: u64,
    /// Milliseconds from the loop's start to the first success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<u64>,
}

/// Connects to `dst` again and again for `duration` (each attempt bounded by `timeout`),
/// closing each connection at once: the first-instant sender.
pub fn connect_loop(dst: SocketAddr, duration: Duration, timeout: Duration, interval: Duration) -> Connects {
    let start = Instant::now();
    let mut r = Connects::default();
    while start.elapsed() < duration {
        r.attempts += 1;
        if TcpStream::connect_timeout(&dst, timeout).is_ok() {
            r.connected += 1;
            r.first_ms.get_or_insert(start.elapsed().as_millis() as u64);
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    r
}
