//! An AF_PACKET socket on one interface of the calling thread's network namespace: frames
//! written here skip the namespace's netfilter `output` hook entirely, and frames read here
//! are seen before its `input` hook. Open it on a thread that is inside the namespace; the
//! socket keeps that namespace wherever it is used afterwards.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender, NetworkInterface};

use crate::frame::{self, MacAddr};

/// How long a read waits before it checks whether to stop.
const READ_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no interface {0} in this network namespace")]
    NoInterface(String),
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("AF_PACKET socket on {0}: {1}")]
    Socket(String, io::Error),
    #[error("AF_PACKET on {0}: not an Ethernet channel")]
    NotEthernet(String),
}

/// The interface's identity as the kernel reports it in this namespace.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub ips: Vec<IpAddr>,
}

impl Iface {
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            _ => None,
        })
    }

    /// A global (not link-local) IPv6 address, else any.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        let v6 = || {
            self.ips.iter().filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                _ => None,
            })
        };
        v6().find(|v| (v.segments()[0] & 0xffc0) != 0xfe80).or_else(|| v6().next())
    }
}

pub struct Link {
    pub iface: Iface,
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
}

fn find(name: &str) -> Result<NetworkInterface, LinkError> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| LinkError::NoInterface(name.to_string()))
}

impl Link {
    /// Opens `name` in the calling thread's namespace. A reader wants `promiscuous` (frames
    /// the bridge floods to it for other MACs count as arriving too).
    pub fn open(name: &str, promiscuous: bool) -> Result<Link, LinkError> {
        let ni = find(name)?;
        let mac = ni.mac.ok_or_else(|| LinkError::NoMac(name.to_string()))?;
        let cfg = Config {
            read_timeout: Some(READ_TICK),
            write_timeout: Some(Duration::from_secs(1)),
            read_buffer_size: 65536,
            promiscuous,
            ..Config::default()
        };
        let ch = pnet_datalink::channel(&ni, cfg).map_err(|e| LinkError::Socket(name.to_string(), e))?;
        let Channel::Ethernet(tx, rx) = ch else { return Err(LinkError::NotEthernet(name.to_string())) };
        let iface = Iface {
            name: ni.name.clone(),
            index: ni.index,
            mac,
            ips: ni.ips.iter().map(|n| n.ip()).collect(),
        };
        Ok(Link { iface, tx, rx })
    }

    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.tx.send_to(frame, None) {
            Some(r) => r,
            None => Err(io::Error::other("frame larger than the write buffer")),
        }
    }

    /// The next frame, or `None` after one read tick with nothing (or an error).
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.rx.next().ok().map(<[u8]>::to_vec)
    }

    /// The MAC of `ip` on this link: asks with one ARP request (IPv4) or neighbour
    /// solicitation (IPv6) written on this socket and reads the answer raw, so it works even
    /// when the namespace's own neighbour machinery is filtered. Retries until `timeout`.
    pub fn resolve(&mut self, ip: IpAddr, timeout: Duration) -> Option<MacAddr> {
        let ask = match ip {
            IpAddr::V4(t) => frame::arp_request(self.iface.mac, self.iface.ipv4()?, t),
            IpAddr::V6(t) => frame::ndp_ns(self.iface.mac, self.iface.ipv6()?, t),
        };
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            self.send(&ask).ok()?;
            let round = Instant::now() + Duration::from_millis(300);
            while Instant::now() < round.min(until) {
                let Some(f) = self.next_frame() else { continue };
                let s = frame::parse(&f);
                match (ip, s.arp, s.na) {
                    (IpAddr::V4(t), Some(a), _) if a.op == 2 && a.sender_ip == t => {
                        return Some(a.sender_mac)
                    }
                    (IpAddr::V6(t), _, Some((target, mac))) if target == t => return mac.or(s.src_mac),
                    _ => {}
                }
            }
        }
        None
    }

    /// Splits off the receive side as a background counter of frames arriving here: frames
    /// this interface sends itself (an ICMP error quoting a token, say) are not counted.
    pub fn into_reader(self, filter: Filter) -> Reader {
        let own = self.iface.mac;
        Reader::spawn(self.rx, filter, own)
    }
}

/// What a reader counts: every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Bytes anywhere in the frame (see [`frame::token_payload`]).
    pub token: Option<Vec<u8>>,
    pub src_mac: Option<MacAddr>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub proto: Option<u8>,
    pub ip_id: Option<u16>,
    /// ARP frames whose sender protocol address is this.
    pub arp_sender_ip: Option<Ipv4Addr>,
    /// Neighbour advertisements for this target.
    pub na_target: Option<Ipv6Addr>,
}

impl Filter {
    pub fn token(t: &str) -> Filter {
        Filter { token: Some(format!("FWATK {t} ").into_bytes()), ..Filter::default() }
    }

    pub fn matches(&self, raw: &[u8]) -> bool {
        if self.token.as_ref().is_some_and(|t| !frame::contains(raw, t)) {
            return false;
        }
        let s = frame::parse(raw);
        let ip = s.ip;
        (self.src_mac.is_none() || s.src_mac == self.src_mac)
            && self.src_ip.is_none_or(|a| ip.is_some_and(|i| i.src == a))
            && self.dst_ip.is_none_or(|a| ip.is_some_and(|i| i.dst == a))
            && self.proto.is_none_or(|p| ip.is_some_and(|i| i.proto == p))
            && self.ip_id.is_none_or(|v| ip.is_some_and(|i| i.id == v))
            && self.arp_sender_ip.is_none_or(|a| s.arp.is_some_and(|x| x.sender_ip == a))
            && self.na_target.is_none_or(|t| s.na.is_some_and(|(x, _)| x == t))
    }
}

/// Counts matching frames on a background thread until stopped.
pub struct Reader {
    stop: Arc<AtomicBool>,
    matched: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What a reader saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub matched: u64,
    /// Every frame read, matching or not.
    pub frames: u64,
}

impl Reader {
    fn spawn(mut rx: Box<dyn DataLinkReceiver>, filter: Filter, own: MacAddr) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let matched = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let (s, m, f) = (stop.clone(), matched.clone(), frames.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(raw) = rx.next() {
                    // AF_PACKET also shows what the interface sends; pnet does not expose
                    // the packet type, so our own source MAC tells outgoing frames apart.
                    if raw.get(6..12) == Some(&own.octets()[..]) {
                        continue;
                    }
                    f.fetch_add(1, Ordering::Relaxed);
                    if filter.matches(raw) {
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Reader { stop, matched, frames, thread: Some(thread) }
    }

    pub fn counts(&self) -> Counts {
        Counts { matched: self.matched.load(Ordering::Relaxed), frames: self.frames.load(Ordering::Relaxed) }
    }

    /// Stops after one more read tick (frames already queued are counted first).
    pub fn finish(mut self) -> Counts {
        std::thread::sleep(READ_TICK * 2);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.counts()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a send loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    pub sent: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes `count` frames, `make(seq)` each, `interval` apart.
pub fn send_frames(
    link: &mut Link,
    count: u64,
    interval: Duration,
    mut make: impl FnMut(u64) -> Vec<u8>,
) -> Sent {
    let mut r = Sent::default();
    for seq in 0..count {
        match link.send(&make(seq)) {
            Ok(()) => r.sent += 1,
            Err(e) => {
                r.failed += 1;
                r.error.get_or_insert_with(|| e.to_string());
            }
        }
        if !interval.is_zero() && seq + 1 < count {
            std::thread::sleep(interval);
        }
    }
    r
}
