//! The command line: clap definitions, argument parsers, and what each subcommand does.

use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::error::ErrorKind as ClapErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use fw_proto::control::{
    Answer, BlockDirection, BlockInfo, BlockTarget, ErrorCode, FlowFilter, Op, Proto, Scope,
    DEFAULT_QUARANTINE_DIRECTION, DEFAULT_SOCKET,
};
use ipnet::IpNet;

use crate::client::{answer_kind, Client, ClientError, REQUEST_TIMEOUT};
use crate::render;

/// Process exit codes (also in `--help`).
pub mod exit {
    pub const OK: u8 = 0;
    /// The daemon refused or failed the request; a reload rejected rule files.
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    /// The daemon is not running, the connection was lost, or it did not answer in time.
    pub const UNREACHABLE: u8 = 3;
    /// The socket is not accessible, or the daemon answered `forbidden`.
    pub const DENIED: u8 = 4;
    /// The daemon speaks another protocol version, or sent something unreadable.
    pub const PROTOCOL: u8 = 5;
}

const AFTER_HELP: &str = "\
Examples:
  fw-tui status
  fw-tui flows --filter \"verdict=denied zone=db\"
  fw-tui flows --follow --filter \"verdict=denied zone=db\"
  fw-tui block quarantine web-1 --ttl 15m --reason \"suspected exfil\"
  fw-tui block dst 203.0.113.7 --zone web --proto tcp --port 443 --ttl 2h
  fw-tui block flow web-1 tcp 10.0.0.2:40000 10.0.0.3:5432
  fw-tui blocks
  fw-tui unblock 7
  fw-tui audit --since 1h
  fw-tui alerts --since 30m
  fw-tui                  (the live console; --refresh 500 for faster updates)
  fw-tui status --json | jq .containers

Exit codes:
  0  ok
  1  the daemon refused or failed the request (`fw-tui: <code>: <message>` on stderr),
     or `reload` rejected rule files
  2  usage error
  3  cannot reach fw-daemon (not running, connection lost, or no answer within 30s)
  4  permission denied on the socket, or `forbidden` from the daemon (role too low)
  5  protocol or version mismatch between fw-tui and fw-daemon

Access: reading needs membership in the socket's group (fw-viewer by default); block,
unblock and reload need the operator role (group fw-operator by default).";

/// `fw-tui flows --help`: the filter language, from the one table the parser reads.
fn flows_help() -> String {
    format!(
        "\
Filter words (all must match; `!` negates a word; key:value or key=value):
{keys}  any other word: text in a container, zone, peer, state, rule id, inspected name,
  service name (dns, https) or endpoint addr:port (so a bare port number finds its flows)
An unknown key is a usage error (exit 2).

Examples:
  fw-tui flows --filter \"container:web-1 verdict:deny\"
  fw-tui flows --filter \"zone:db !port:5432\"
  fw-tui flows --follow --filter \"verdict=denied zone=db\"
  fw-tui flows --follow --json --filter 5432 | jq -c .changed[]",
        keys = fw_proto::filter::keys_help()
    )
}

const BLOCK_HELP: &str = "\
TTL: 90s, 15m, 2h, 1d, combinations like 1h30m, or plain seconds. Without --ttl a block
stays until `fw-tui unblock ID` (the console offers the same default).

Quarantine directions go by who opened a connection (conntrack's view), each cut
connection both ways, established ones included:
  egress   the connections the container opens; it still answers connections opened to it
  ingress  the connections opened to it; it still gets the replies of its own
  both     everything (the default)
Loopback stays, and so do the configured quarantine responders.

Examples:
  fw-tui block quarantine web-1 --ttl 15m --reason \"suspected exfil\"
  fw-tui block quarantine web-1 --direction both
  fw-tui block dst 203.0.113.0/24 --all --ttl 1d --reason \"scanner\"
  fw-tui block dst 10.0.3.7 --container web-1 --proto tcp --port 5432
  fw-tui block flow web-1 tcp 10.0.0.2:40000 10.0.0.3:5432
  fw-tui block flow web-1 udp [fd00::2]:5353 [fd00::9]:53";

#[derive(Debug, Parser)]
#[command(
    name = "fw-tui",
    version,
    about = "fw operator console: flows, drops and blocking over fw-daemon's control socket",
    long_about = "fw operator console: flows, drops and blocking over fw-daemon's control socket.\n\n\
        Without a subcommand, fw-tui opens the live console (press ? in it for every key). \
        The subcommands are stable for scripts (see --json).",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The control socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "FW_SOCKET",
        default_value = DEFAULT_SOCKET,
        display_order = 900
    )]
    pub socket: PathBuf,
    /// Print the daemon's answer as one line of JSON (with --follow: one line per event).
    #[arg(long, global = true, display_order = 901)]
    pub json: bool,
    /// Console only: how often the daemon sends flow updates, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000), display_order = 902)]
    pub refresh: u64,
    /// Console only: the screen it opens on (`drops` during an incident).
    #[arg(long, value_enum, value_name = "SCREEN", default_value = "flows", display_order = 903)]
    pub screen: ScreenArg,
    /// Console only: the filter it opens with, in the console's language (`web-2
    /// verdict:cap-hit`; `/` in the console changes it).
    #[arg(long = "filter", value_name = "FILTER", display_order = 904)]
    pub console_filter: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The console's screens, as `--screen` names them (the keys 1-5 in the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScreenArg {
    Flows,
    Drops,
    Containers,
    Rules,
    Audit,
}

impl From<ScreenArg> for crate::console::screen_id::ScreenId {
    fn from(s: ScreenArg) -> Self {
        use crate::console::screen_id::ScreenId;
        match s {
            ScreenArg::Flows => ScreenId::Flows,
            ScreenArg::Drops => ScreenId::Drops,
            ScreenArg::Containers => ScreenId::Containers,
            ScreenArg::Rules => ScreenId::Rules,
            ScreenArg::Audit => ScreenId::Audit,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the trail's hash chain in FILE and its rotated files (FILE.N .. FILE.1),
    /// read directly (no daemon needed): each record links to the one before it, so an
    /// edited, deleted or reordered record is found and named; exit 1 if one is.
    #[command(after_help = "For example: fw-tui audit verify /var/log/fw/audit.jsonl")]
    Verify {
        #[arg(value_name = "FILE", default_value = "/var/log/fw/audit.jsonl")]
        file: std::path::PathBuf,
        /// Also ask the running daemon for its newest record, and check the file ends there
        /// (the chain alone cannot show the newest records deleted).
        #[arg(long)]
        daemon: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon version, policy, reload errors, containers and counters.
    Status,
    /// The flow table, newest first (or follow it live).
    #[command(after_help = flows_help())]
    Flows {
        /// Keep printing rows as they change, until interrupted.
        #[arg(long)]
        follow: bool,
        /// Only rows matching EXPR (see below).
        #[arg(long, value_name = "EXPR", value_parser = parse_filter)]
        filter: Option<FlowFilter>,
        /// At most N rows (with --follow: per update, human output only).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
    /// Block traffic now: quarantine a container, a destination, or one flow.
    #[command(subcommand)]
    Block(BlockCmd),
    /// Remove blocks by id (see `fw-tui blocks`); says what still applies.
    Unblock {
        #[arg(value_name = "ID", required = true, num_args = 1..)]
        ids: Vec<u64>,
    },
    /// Active blocks: the operators', then the daemon's own (inspection, tamper escalation).
    Blocks {
        #[command(flatten)]
        filter: BlocksFilter,
    },
    /// The audit trail: who did what, oldest first. `audit verify` checks its hash chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Records at or after TIME: unix seconds, or a duration ago (`1h`, `2d`, `30m`).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<Since>,
        /// The last N records (the daemon's default: 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Re-read rule files and inventory now (like SIGHUP); exit 1 if files were rejected.
    Reload,
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = "For example: fw-tui completions bash > /etc/bash_completion.d/fw-tui")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout.
    #[command(after_help = "For example: fw-tui man | man -l -")]
    Man,
    /// Recent alerts (reloads, tampering, cap hits, violations, blocks), oldest first.
    Alerts {
        /// Alerts at or after TIME: unix seconds, or a duration ago (`1h`, `2d`, `30m`).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<Since>,
        /// The last N alerts (the daemon keeps 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = BLOCK_HELP)]
pub enum BlockCmd {
    /// Cut a container's traffic, established flows included.
    #[command(after_help = BLOCK_HELP)]
    Quarantine {
        /// The container's name, as `fw-tui status` shows it.
        #[arg(value_name = "CONTAINER")]
        container: String,
        /// Which connections to cut, by who opened them (see below).
        #[arg(long, value_enum, default_value_t = DirectionArg::from(DEFAULT_QUARANTINE_DIRECTION))]
        direction: DirectionArg,
        #[command(flatten)]
        opts: BlockOpts,
    },
    /// Cut traffic to a network (and its replies), for a container, a zone or all.
    #[command(after_help = BLOCK_HELP)]
    Dst {
        /// A network (`10.0.0.0/8`) or one address (`203.0.113.7`).
        #[arg(value_name = "NET", value_parser = parse_net)]
        net: IpNet,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
        #[arg(long, value_name = "PROTO")]
        proto: Option<Proto>,
        /// Only this destination port (needs tcp or udp, or no --proto).
        #[arg(long, value_name = "N")]
        port: Option<u16>,
        #[command(flatten)]
        opts: BlockOpts,
    },
    /// Cut one flow, as the container sees it (either direction matches).
    #[command(after_help = BLOCK_HELP)]
    Flow {
        /// The container's name, as `fw-tui status` shows it.
        #[arg(value_name = "CONTAINER")]
        container: String,
        /// tcp, udp, icmp, icmpv6 or a number.
        #[arg(value_name = "PROTO")]
        proto: Proto,
        /// ADDR:PORT, IPv6 as [ADDR]:PORT (a bare address for protocols without ports).
        #[arg(value_name = "SRC:PORT", value_parser = parse_endpoint)]
        src: Endpoint,
        /// ADDR:PORT, IPv6 as [ADDR]:PORT.
        #[arg(value_name = "DST:PORT", value_parser = parse_endpoint)]
        dst: Endpoint,
        #[command(flatten)]
        opts: BlockOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BlockOpts {
    /// Remove the block after DURATION (90s, 15m, 2h, 1d, or seconds); default: never.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<u64>,
    /// Why, for the audit trail and `fw-tui blocks`.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// Only for this container.
    #[arg(long, value_name = "C")]
    pub container: Option<String>,
    /// For every container in this zone.
    #[arg(long, value_name = "Z")]
    pub zone: Option<String>,
    /// For every container.
    #[arg(long)]
    pub all: bool,
}

impl ScopeArgs {
    pub fn scope(&self) -> Scope {
        match (&self.container, &self.zone) {
            (Some(c), _) => Scope::Container(c.clone()),
            (None, Some(z)) => Scope::Zone(z.clone()),
            (None, None) => Scope::All,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Connections it opens; it still answers connections opened to it.
    Egress,
    /// Connections opened to it; it still gets the replies of its own.
    Ingress,
    /// Everything.
    Both,
}

impl From<BlockDirection> for DirectionArg {
    fn from(d: BlockDirection) -> DirectionArg {
        match d {
            BlockDirection::Egress => DirectionArg::Egress,
            BlockDirection::Ingress => DirectionArg::Ingress,
            BlockDirection::Both => DirectionArg::Both,
        }
    }
}

/// `fw-tui blocks` filters: every one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct BlocksFilter {
    /// Only blocks that apply to this container.
    #[arg(long, value_name = "C")]
    pub container: Option<String>,
    /// Only blocks of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only the daemon's own blocks (inspection, tamper escalation).
    #[arg(long, conflicts_with = "operator")]
    pub auto: bool,
    /// Only operators' blocks.
    #[arg(long)]
    pub operator: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Quarantine,
    Dst,
    Flow,
}

impl BlocksFilter {
    pub fn matches(&self, b: &BlockInfo) -> bool {
        let kind = self.kind.map(|k| match k {
            KindArg::Quarantine => "quarantine",
            KindArg::Dst => "dst",
            KindArg::Flow => "flow",
        });
        self.container.as_ref().is_none_or(|c| b.containers.contains(c))
            && kind.is_none_or(|k| b.target.kind() == k)
            && (!self.auto || b.origin.is_automatic())
            && (!self.operator || !b.origin.is_automatic())
    }
}

impl From<DirectionArg> for BlockDirection {
    fn from(d: DirectionArg) -> BlockDirection {
        match d {
            DirectionArg::Egress => BlockDirection::Egress,
            DirectionArg::Ingress => BlockDirection::Ingress,
            DirectionArg::Both => BlockDirection::Both,
        }
    }
}

/// `--since`: an absolute time or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Unix seconds.
    At(i64),
    /// Seconds before now.
    Ago(u64),
}

impl Since {
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => now.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX)),
        }
    }
}

/// A flow endpoint: an address and, for protocols with ports, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// A duration: `90s`, `15m`, `2h`, `1d`, `1w`, combinations (`1h30m`), or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 90s, 15m, 2h, 1d, 1h30m or plain seconds");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    Ok(total)
}

/// `--ttl`: a duration of at least one second.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    match parse_duration(s)? {
        0 => Err("a ttl must be at least 1s (leave out --ttl for a block without expiry)".into()),
        n => Ok(n),
    }
}

/// `--since`: unix seconds (all digits) or a duration ago.
pub fn parse_since(s: &str) -> Result<Since, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Since::At).map_err(|_| format!("invalid time {s:?}"));
    }
    parse_duration(t).map(Since::Ago).map_err(|_| {
        format!("invalid time {s:?}: use unix seconds (1714560000) or a duration ago (30m, 1h, 2d)")
    })
}

/// A network (`10.0.0.0/8`, `fd00::/64`) or one address (`/32` or `/128`). Host bits set
/// (`10.1.2.3/8`) are refused: the daemon would block the whole `/8`.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("invalid network {s:?}: use an address (10.0.0.7) or a network (10.0.0.0/24)")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set: use {} for the network, or {} for one address",
            net.trunc(),
            net.addr()
        ));
    }
    Ok(net)
}

/// `ADDR:PORT`, `[V6]:PORT`, or a bare address (`10.0.0.2`, `fd00::2`, `[fd00::2]`).
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Endpoint { ip: a.ip(), port: Some(a.port()) });
    }
    let bare = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Endpoint { ip, port: None });
    }
    Err(format!("invalid endpoint {s:?}: use ADDR:PORT, [IPV6]:PORT, or a bare address"))
}

/// `--filter`: checked here with the language the daemon and the console use, so a bad word
/// is a usage error naming it, never an empty result.
fn parse_filter(s: &str) -> Result<FlowFilter, String> {
    FlowFilter::parse(s).map_err(|e| e.to_string())
}

impl BlockCmd {
    fn opts(&self) -> &BlockOpts {
        match self {
            BlockCmd::Quarantine { opts, .. } | BlockCmd::Dst { opts, .. } | BlockCmd::Flow { opts, .. } => {
                opts
            }
        }
    }

    /// The target, checked the way the daemon checks it: a usage error otherwise.
    pub fn target(&self) -> Result<BlockTarget, String> {
        match self {
            BlockCmd::Quarantine { container, direction, .. } => {
                Ok(BlockTarget::Quarantine { container: container.clone(), direction: (*direction).into() })
            }
            BlockCmd::Dst { net, scope, proto, port, .. } => {
                if let (Some(p), Some(_)) = (proto, port) {
                    if !p.has_ports() {
                        return Err(format!(
                            "--port needs --proto tcp or udp (or no --proto): {p} has no ports"
                        ));
                    }
                }
                Ok(BlockTarget::Destination { scope: scope.scope(), net: *net, proto: *proto, port: *port })
            }
            BlockCmd::Flow { container, proto, src, dst, .. } => {
                if src.ip.is_ipv4() != dst.ip.is_ipv4() {
                    return Err(format!(
                        "{} and {} are not the same IP version: a flow is both IPv4 or both IPv6",
                        src.ip, dst.ip
                    ));
                }
                let (sport, dport) = if proto.has_ports() {
                    match (src.port, dst.port) {
                        (Some(s), Some(d)) => (s, d),
                        _ => {
                            return Err(format!(
                                "{proto} has ports: give both endpoints as ADDR:PORT ([IPV6]:PORT)"
                            ))
                        }
                    }
                } else {
                    if src.port.unwrap_or(0) != 0 || dst.port.unwrap_or(0) != 0 {
                        return Err(format!("{proto} has no ports: give bare addresses"));
                    }
                    (0, 0)
                };
                Ok(BlockTarget::Flow {
                    container: container.clone(),
                    proto: *proto,
                    src: src.ip,
                    sport,
                    dst: dst.ip,
                    dport,
                })
            }
        }
    }
}

impl Cli {
    /// The request this command sends (`None` without a subcommand); `now` resolves
    /// relative times. An error is a usage error.
    pub fn op(&self, now: i64) -> Result<Option<Op>, String> {
        let Some(cmd) = &self.command else { return Ok(None) };
        Ok(Some(match cmd {
            // Answered by `run` itself: they ask nothing of the daemon.
            Command::Completions { .. } | Command::Man => return Ok(None),
            Command::Status => Op::Status,
            Command::Flows { follow: true, filter, .. } => {
                Op::Subscribe { filter: filter.clone().unwrap_or_default(), interval_ms: None, alerts: false }
            }
            Command::Flows { follow: false, filter, limit } => {
                Op::Flows { filter: filter.clone().unwrap_or_default(), limit: Some(*limit) }
            }
            Command::Block(b) => {
                let o = b.opts();
                Op::Block { target: b.target()?, ttl_secs: o.ttl, ttl_ms: None, reason: o.reason.clone() }
            }
            Command::Unblock { ids } => Op::Unblock { block: ids.first().copied().unwrap_or(0) },
            Command::Blocks { .. } => Op::Blocks,
            Command::Audit { action: Some(_), .. } => return Ok(None),
            Command::Audit { action: None, since, limit } => Op::Audit {
                since: None,
                since_ms: since.map(|s| s.resolve(now).saturating_mul(1000)),
                limit: *limit,
            },
            Command::Reload => Op::Reload,
            Command::Alerts { since, limit } => {
                Op::Alerts { since_ms: since.map(|s| s.resolve(now).saturating_mul(1000)), limit: *limit }
            }
        }))
    }
}

/// Parses arguments, including the checks clap cannot express (`--port` with a protocol
/// without ports, mixed IP versions in a flow). Errors are clap errors (exit 2; 0 for
/// `--help` and `--version`).
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    if let Err(msg) = cli.op(0) {
        // Reported with the usage of the subcommand at fault.
        let mut cmd = Cli::command();
        cmd.build();
        let sub = match &cli.command {
            Some(Command::Block(BlockCmd::Dst { .. })) => "dst",
            Some(Command::Block(BlockCmd::Flow { .. })) => "flow",
            _ => "quarantine",
        };
        return Err(match cmd.find_subcommand_mut("block").and_then(|b| b.find_subcommand_mut(sub)) {
            Some(c) => c.error(ClapErrorKind::ArgumentConflict, msg),
            None => Cli::command().error(ClapErrorKind::ArgumentConflict, msg),
        });
    }
    Ok(cli)
}

/// The exit code for a client error.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Unreachable { .. }
        | ClientError::Timeout { .. }
        | ClientError::Closed { .. }
        | ClientError::Io { .. } => exit::UNREACHABLE,
        ClientError::PermissionDenied { .. } | ClientError::Daemon { code: ErrorCode::Forbidden, .. } => {
            exit::DENIED
        }
        ClientError::Daemon { .. } => exit::FAILED,
        ClientError::VersionMismatch(_) | ClientError::Protocol(_) => exit::PROTOCOL,
    }
}

/// The stable word `--json` errors carry for a client error (see `fw_proto::output`).
pub fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { .. } | ClientError::Timeout { .. } | ClientError::Closed { .. } => {
            "unreachable".into()
        }
        ClientError::Io { .. } => "unreachable".into(),
        ClientError::PermissionDenied { .. } => "permission-denied".into(),
        ClientError::Daemon { code, .. } => code.to_string(),
        ClientError::VersionMismatch(_) => "version-mismatch".into(),
        ClientError::Protocol(_) => "protocol".into(),
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Whether the arguments ask for `--json` (looked up before parsing, so a usage error can
/// be answered in JSON too).
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json")
}

/// The binary's entry point: parses `std::env::args`, runs, returns the exit code.
pub fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = wants_json(&args);
    let code = match parse_args(args) {
        Ok(cli) => run(&cli, &mut io::stdout().lock(), &mut io::stderr(), unix_now),
        Err(e) => usage_failure(&e, json, &mut io::stdout().lock()),
    };
    std::process::ExitCode::from(code)
}

/// Reports a clap error (usage, or `--help` / `--version`): as clap prints it, or under
/// `--json` as an error document on stdout. Returns the exit code.
fn usage_failure(e: &clap::Error, json: bool, out: &mut dyn Write) -> u8 {
    let code = e.exit_code() as u8;
    if json && code != exit::OK {
        let msg = usage_message(&e.render().to_string());
        let doc = fw_proto::output::ErrorDoc::new("usage", msg, code);
        if let Ok(line) = fw_proto::output::line(&doc) {
            let _ = writeln!(out, "{line}");
        }
        return code;
    }
    let _ = e.print();
    code
}

#[cfg(test)]
pub(crate) fn usage_failure_for_test(e: &clap::Error, json: bool, out: &mut dyn Write) -> u8 {
    usage_failure(e, json, out)
}

/// clap's message without its usage and hint lines, on one line.
fn usage_message(rendered: &str) -> String {
    let head = rendered.split("\n\n").next().unwrap_or("");
    let words: Vec<&str> = head.trim_start_matches("error: ").split_whitespace().collect();
    words.join(" ")
}

/// Why the console cannot start (it needs a terminal on stdin and stdout), if it cannot.
pub fn console_refusal(stdin_tty: bool, stdout_tty: bool) -> Option<String> {
    (!stdin_tty || !stdout_tty).then(|| {
        "the console needs a terminal; for scripts use a subcommand: \
         status | flows | alerts | block | unblock | blocks | audit | reload (see fw-tui --help)"
            .to_string()
    })
}

/// Writes generated text; a closed pipe (`| head`) is not an error.
fn write_generated(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write, text: &[u8], what: &str) -> u8 {
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => exit::OK,
        Err(e) => fail(cli, out, err, "output", &format!("cannot write the {what}: {e}"), exit::FAILED),
    }
}

/// Why a run stopped early.
enum Stop {
    Client(ClientError),
    /// Writing the output failed; a closed pipe (`| head`) is not an error.
    Output(io::Error),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Stop {
        Stop::Client(e)
    }
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Output(e)
    }
}

/// `fw-tui audit verify FILE`: the chain across FILE.N .. FILE.1, FILE.
fn audit_verify(
    cli: &Cli,
    file: &std::path::Path,
    head: Option<(u64, String)>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    for n in 1..=10_000 {
        let mut p = file.to_path_buf().into_os_string();
        p.push(format!(".{n}"));
        let p = std::path::PathBuf::from(p);
        if !p.exists() {
            break;
        }
        paths.push(p);
    }
    paths.reverse();
    paths.push(file.to_path_buf());
    // Read a line at a time: a trail is many files of up to tens of MiB each.
    let mut vf = fw_proto::audit_chain::Verifier::default();
    let mut files = 0;
    for p in &paths {
        let f = match std::fs::File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && p != file => continue,
            Err(e) => return fail(cli, out, err, "input", &format!("{}: {e}", p.display()), exit::FAILED),
        };
        files += 1;
        let name = p.display().to_string();
        let mut r = io::BufReader::new(f);
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            buf.clear();
            match io::BufRead::read_until(&mut r, b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return fail(cli, out, err, "input", &format!("{name}: {e}"), exit::FAILED),
            }
            n += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            // A line that is not UTF-8 is no record the daemon wrote: torn, like bad JSON.
            let text = std::str::from_utf8(line).unwrap_or("\u{fffd}");
            if let Err(b) = vf.line(&name, n, text) {
                return fail(cli, out, err, "tampered", &format!("audit trail: {b}"), exit::FAILED);
            }
        }
    }
    let checked = head.is_some();
    match vf.finish(head.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        Ok(v) => {
            let (head_seq, head) = v.head.clone().unzip();
            let text = if cli.json {
                serde_json::json!({
                    "ok": true, "files": files, "records": v.records, "unchained": v.unchained,
                    "first_seq": v.first_seq, "head_seq": head_seq, "head": head,
                    "starts_at_checkpoint": v.starts_at_checkpoint,
                    "torn": v.torn.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                })
                .to_string()
            } else {
                let mut t = format!(
                    "ok: {} chained record(s) in {} file(s), seq {} .. {}",
                    v.records,
                    files,
                    v.first_seq.map_or("-".into(), |s| s.to_string()),
                    head_seq.map_or("-".into(), |s| s.to_string()),
                );
                if let Some(h) = &head {
                    t.push_str(&format!(", newest link {h}"));
                }
                if v.starts_at_checkpoint {
                    t.push_str("\n  starts at a checkpoint: older files were rotated away");
                }
                if v.unchained > 0 {
                    t.push_str(&format!("\n  {} older record(s) before the chain began", v.unchained));
                }
                for p in &v.torn {
                    t.push_str(&format!("\n  {p}: a torn line (a write cut short), not a record"));
                }
                if checked {
                    t.push_str("\n  ends at the daemon's newest record");
                } else {
                    t.push_str("\n  (deleting the newest records shows only with --daemon)");
                }
                t
            };
            match writeln!(out, "{text}") {
                Ok(()) => exit::OK,
                Err(e) if e.kind() == ErrorKind::BrokenPipe => exit::OK,
                Err(e) => fail(cli, out, err, "output", &e.to_string(), exit::FAILED),
            }
        }
        Err(b) => fail(cli, out, err, "tampered", &format!("audit trail: {b}"), exit::FAILED),
    }
}

/// Reports a failure: `fw-tui: <message>` on stderr, and under `--json` an error document
/// on stdout. Returns `exit`.
fn fail(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write, code: &str, message: &str, exit: u8) -> u8 {
    let _ = writeln!(err, "fw-tui: {message}");
    if cli.json {
        if let Ok(line) = fw_proto::output::line(&fw_proto::output::ErrorDoc::new(code, message, exit)) {
            let _ = writeln!(out, "{line}");
        }
    }
    exit
}

/// Runs a parsed command line, writing results to `out` and diagnostics to `err`; `now`
/// gives the time (unix seconds). Returns the exit code.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write, now: fn() -> i64) -> u8 {
    // Generated from the same definitions as --help, so they cannot drift from the flags.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            // Rendered in memory first: clap_complete panics on a failed write.
            let mut text = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fw-tui",
                &mut text,
            );
            return write_generated(cli, out, err, &text, "completions");
        }
        Some(Command::Man) => {
            let mut text = Vec::new();
            if let Err(e) = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut text)
            {
                return fail(
                    cli,
                    out,
                    err,
                    "output",
                    &format!("cannot render the man page: {e}"),
                    exit::FAILED,
                );
            }
            return write_generated(cli, out, err, &text, "man page");
        }
        Some(Command::Audit { action: Some(AuditAction::Verify { file, daemon }), .. }) => {
            let head = if *daemon {
                let answer =
                    crate::client::Client::connect(&cli.socket).and_then(|mut c| c.request(Op::Status));
                match answer {
                    Ok(fw_proto::control::Answer::Status(s)) => match s.audit {
                        Some(a) => a.head.map(|h| (h.seq, h.link)),
                        None => {
                            return fail(
                                cli,
                                out,
                                err,
                                "usage",
                                "the daemon keeps no audit trail",
                                exit::FAILED,
                            )
                        }
                    },
                    Ok(other) => {
                        let msg = format!("unexpected answer to status: {other:?}");
                        return fail(cli, out, err, "protocol", &msg, exit::PROTOCOL);
                    }
                    Err(e) => return fail(cli, out, err, "unreachable", &e.to_string(), exit::UNREACHABLE),
                }
            } else {
                None
            };
            return audit_verify(cli, file, head, out, err);
        }
        _ => {}
    }
    let op = match cli.op(now()) {
        Ok(Some(op)) => op,
        Ok(None) => {
            use std::io::IsTerminal;
            if let Some(f) = &cli.console_filter {
                if let Err(e) = fw_proto::filter::Filter::parse(f) {
                    return fail(cli, out, err, "usage", &format!("--filter: {e}"), exit::USAGE);
                }
            }
            if let Some(why) = console_refusal(io::stdin().is_terminal(), io::stdout().is_terminal()) {
                return fail(cli, out, err, "usage", &why, exit::USAGE);
            }
            let opts = crate::console::Options {
                socket: cli.socket.clone(),
                interval_ms: cli.refresh,
                color: !crate::console::no_color(),
                screen: cli.screen.into(),
                filter: cli.console_filter.clone(),
            };
            return match crate::console::run(opts) {
                Ok(()) => exit::OK,
                Err(e) => {
                    let _ = writeln!(err, "fw-tui: {e}");
                    exit::FAILED
                }
            };
        }
        Err(msg) => return fail(cli, out, err, "usage", &msg, exit::USAGE),
    };
    match execute(cli, op, out, err, now) {
        Ok(code) => code,
        Err(Stop::Output(e)) if e.kind() == ErrorKind::BrokenPipe => exit::OK,
        Err(Stop::Output(e)) => {
            let _ = writeln!(err, "fw-tui: cannot write the output: {e}");
            exit::FAILED
        }
        Err(Stop::Client(e)) => fail(cli, out, err, &error_code(&e), &e.to_string(), exit_code(&e)),
    }
}

/// Prints one answer: a `--json` line, or the human form.
fn print_answer(cli: &Cli, answer: &Answer, out: &mut dyn Write, now: i64) -> Result<(), Stop> {
    if cli.json {
        let line = fw_proto::output::line(answer).map_err(|e| {
            ClientError::Protocol(format!("cannot encode the {} answer: {e}", answer_kind(answer)))
        })?;
        writeln!(out, "{line}")?;
    } else {
        out.write_all(render::answer(answer, now).as_bytes())?;
    }
    Ok(())
}

fn execute(
    cli: &Cli,
    op: Op,
    out: &mut dyn Write,
    err: &mut dyn Write,
    now: fn() -> i64,
) -> Result<u8, Stop> {
    let mut client = Client::connect_with_timeout(&cli.socket, REQUEST_TIMEOUT)?;
    if let Op::Subscribe { filter, interval_ms, .. } = op {
        let limit = match &cli.command {
            Some(Command::Flows { limit, .. }) => Some(*limit),
            _ => None,
        };
        return follow(&mut client, cli.json, filter, interval_ms, limit, out, now);
    }
    if let Some(Command::Unblock { ids }) = &cli.command {
        return unblock_all(cli, &mut client, ids, out, err, now);
    }
    let mut answer = client.request(op)?;
    if let (Some(Command::Blocks { filter }), Answer::Blocks { blocks }) = (&cli.command, &mut answer) {
        blocks.retain(|b| filter.matches(b));
    }
    print_answer(cli, &answer, out, now())?;
    out.flush()?;
    if let Answer::Reloaded { rejected, .. } = &answer {
        if !rejected.is_empty() {
            let n = rejected.len();
            let _ = writeln!(
                err,
                "fw-tui: reload rejected: {n} error{}; the previous policy stays in force",
                if n == 1 { "" } else { "s" }
            );
            return Ok(exit::FAILED);
        }
    }
    Ok(exit::OK)
}

/// Lifts every block in `ids`, in order, one answer (or error) each; a refusal does not
/// stop the rest. The exit code is the first failure's.
fn unblock_all(
    cli: &Cli,
    client: &mut Client,
    ids: &[u64],
    out: &mut dyn Write,
    err: &mut dyn Write,
    now: fn() -> i64,
) -> Result<u8, Stop> {
    let mut code = exit::OK;
    for &id in ids {
        match client.request(Op::Unblock { block: id }) {
            Ok(answer) => print_answer(cli, &answer, out, now())?,
            Err(e @ ClientError::Daemon { .. }) => {
                let msg = if ids.len() > 1 { format!("unblock {id}: {e}") } else { e.to_string() };
                let c = fail(cli, out, err, &error_code(&e), &msg, exit_code(&e));
                if code == exit::OK {
                    code = c;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    Ok(code)
}

fn follow(
    client: &mut Client,
    json: bool,
    filter: FlowFilter,
    interval_ms: Option<u64>,
    limit: Option<usize>,
    out: &mut dyn Write,
    now: fn() -> i64,
) -> Result<u8, Stop> {
    let sub = client.subscribe(filter, interval_ms)?;
    loop {
        let (s, event) = client.next_event()?;
        if s != sub {
            continue;
        }
        if json {
            let line = fw_proto::output::line(&event)
                .map_err(|e| ClientError::Protocol(format!("cannot encode an event: {e}")))?;
            writeln!(out, "{line}")?;
        } else {
            out.write_all(render::event(&event, now(), limit).as_bytes())?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{error, event, ok, Out, TestServer};
    use fw_proto::control::{Event, StatusInfo};

    const NOW: i64 = 1_714_564_800;

    fn now() -> i64 {
        NOW
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_args(std::iter::once("fw-tui").chain(args.iter().copied()))
    }

    fn op(args: &[&str]) -> Op {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).op(NOW).unwrap().unwrap()
    }

    fn usage_error(args: &[&str]) -> String {
        let e = parse(args).expect_err(&format!("{args:?} should be refused"));
        assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        e.to_string()
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        for args in [
            &["--socket", "/tmp/x.sock", "--json", "status"][..],
            &["status", "--socket", "/tmp/x.sock", "--json"],
            &["--json", "status", "--socket=/tmp/x.sock"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"), "{args:?}");
            assert!(cli.json, "{args:?}");
            assert!(matches!(cli.command, Some(Command::Status)));
        }
        let cli = parse(&["block", "quarantine", "web-1", "--json", "--socket", "/s"]).unwrap();
        assert!(cli.json && cli.socket == std::path::Path::new("/s"));
        let cli = parse(&["blocks"]).unwrap();
        assert!(!cli.json);
        if std::env::var_os("FW_SOCKET").is_none() {
            assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        }
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn help_and_version_exit_zero_and_teach() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.exit_code(), 0);
        let help = e.to_string();
        for needle in [
            "fw-tui block quarantine web-1 --ttl 15m --reason \"suspected exfil\"",
            "fw-tui flows --follow --filter \"verdict=denied zone=db\"",
            "Exit codes:",
            "5  protocol or version mismatch",
        ] {
            assert!(help.contains(needle), "{needle:?} missing from --help");
        }
        assert_eq!(parse(&["--version"]).unwrap_err().exit_code(), 0);
        assert!(parse(&["block", "dst", "--help"]).unwrap_err().to_string().contains("1h30m"));
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("600"), Ok(600));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "m", "15x", "1.5h", "-5m", "h1", "15m!", "99999999999999999999d", " 1 h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert!(parse_ttl("0").is_err() && parse_ttl("0s").is_err());
    }

    #[test]
    fn ttl_and_reason_reach_the_request() {
        assert_eq!(
            op(&["block", "quarantine", "web-1", "--ttl", "15m", "--reason", "suspected exfil"]),
            Op::Block {
                target: BlockTarget::Quarantine {
                    container: "web-1".into(),
                    direction: DEFAULT_QUARANTINE_DIRECTION
                },
                ttl_secs: Some(900),
                ttl_ms: None,
                reason: Some("suspected exfil".into()),
            }
        );
        let Op::Block { target, ttl_secs, reason, .. } =
            op(&["block", "quarantine", "db-1", "--direction", "egress"])
        else {
            panic!()
        };
        assert_eq!(
            target,
            BlockTarget::Quarantine { container: "db-1".into(), direction: BlockDirection::Egress }
        );
        assert_eq!((ttl_secs, reason), (None, None));
        let e = usage_error(&["block", "quarantine", "web-1", "--ttl", "soon"]);
        assert!(e.contains("invalid duration"), "{e}");
        usage_error(&["block", "quarantine", "web-1", "--ttl", "0"]);
        usage_error(&["block", "quarantine", "web-1", "--direction", "sideways"]);
        usage_error(&["block", "quarantine"]);
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_net("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert_eq!(parse_net("fd00::/64").unwrap().to_string(), "fd00::/64");
        let e = parse_net("10.1.2.3/8").unwrap_err();
        assert!(e.contains("10.0.0.0/8") && e.contains("10.1.2.3 for one address"), "{e}");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0", "fd00::/129"] {
            assert!(parse_net(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn destination_blocks_need_exactly_one_scope() {
        let Op::Block { target, .. } =
            op(&["block", "dst", "203.0.113.7", "--zone", "web", "--proto", "tcp", "--port", "443"])
        else {
            panic!()
        };
        assert_eq!(
            target,
            BlockTarget::Destination {
                scope: Scope::Zone("web".into()),
                net: "203.0.113.7/32".parse().unwrap(),
                proto: Some(Proto::Tcp),
                port: Some(443),
            }
        );
        let Op::Block { target: BlockTarget::Destination { scope, proto, port, .. }, .. } =
            op(&["block", "dst", "10.0.0.0/8", "--all", "--port", "53"])
        else {
            panic!()
        };
        assert_eq!((scope, proto, port), (Scope::All, None, Some(53)));
        let Op::Block { target: BlockTarget::Destination { scope, .. }, .. } =
            op(&["block", "dst", "fd00::/64", "--container", "web-1"])
        else {
            panic!()
        };
        assert_eq!(scope, Scope::Container("web-1".into()));
        usage_error(&["block", "dst", "10.0.0.0/8"]);
        usage_error(&["block", "dst", "10.0.0.0/8", "--all", "--zone", "web"]);
        usage_error(&["block", "dst", "10.0.0.0/8", "--container", "a", "--zone", "web"]);
        let e = usage_error(&["block", "dst", "10.0.0.0/8", "--all", "--proto", "icmp", "--port", "1"]);
        assert!(e.contains("--port needs --proto tcp or udp"), "{e}");
        assert!(e.contains("fw-tui block dst"), "usage of the subcommand: {e}");
        usage_error(&["block", "dst", "10.0.0.0/8", "--all", "--proto", "tcpx"]);
        usage_error(&["block", "dst", "10.0.0.0/8", "--all", "--port", "65536"]);
        usage_error(&["block", "dst", "10.1.0.0/8", "--all"]);
    }

    #[test]
    fn flow_endpoints() {
        assert_eq!(
            parse_endpoint("10.0.0.2:40000"),
            Ok(Endpoint { ip: "10.0.0.2".parse().unwrap(), port: Some(40000) })
        );
        assert_eq!(
            parse_endpoint("[fd00::2]:53"),
            Ok(Endpoint { ip: "fd00::2".parse().unwrap(), port: Some(53) })
        );
        assert_eq!(parse_endpoint("fd00::2"), Ok(Endpoint { ip: "fd00::2".parse().unwrap(), port: None }));
        assert_eq!(parse_endpoint("[fd00::2]"), Ok(Endpoint { ip: "fd00::2".parse().unwrap(), port: None }));
        assert_eq!(parse_endpoint("10.0.0.2"), Ok(Endpoint { ip: "10.0.0.2".parse().unwrap(), port: None }));
        for bad in ["", "10.0.0.2:", "10.0.0.2:70000", "fd00::2:53:", "[fd00::2:53", "host:80", "10.0.0.2:-1"]
        {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }

        assert_eq!(
            op(&["block", "flow", "web-1", "tcp", "10.0.0.2:40000", "10.0.0.3:5432", "--ttl", "90"]),
            Op::Block {
                target: BlockTarget::Flow {
                    container: "web-1".into(),
                    proto: Proto::Tcp,
                    src: "10.0.0.2".parse().unwrap(),
                    sport: 40000,
                    dst: "10.0.0.3".parse().unwrap(),
                    dport: 5432,
                },
                ttl_secs: Some(90),
                ttl_ms: None,
                reason: None,
            }
        );
        let Op::Block { target: BlockTarget::Flow { src, sport, dport, .. }, .. } =
            op(&["block", "flow", "web-1", "UDP", "[fd00::2]:5353", "[fd00::9]:53"])
        else {
            panic!()
        };
        assert_eq!((src, sport, dport), ("fd00::2".parse::<IpAddr>().unwrap(), 5353, 53));
        let Op::Block { target: BlockTarget::Flow { proto, sport, dport, .. }, .. } =
            op(&["block", "flow", "web-1", "icmp", "10.0.0.2", "192.0.2.1"])
        else {
            panic!()
        };
        assert_eq!((proto, sport, dport), (Proto::Icmp, 0, 0));
        assert!(
            usage_error(&["block", "flow", "web-1", "tcp", "10.0.0.2", "10.0.0.3:80"]).contains("has ports")
        );
        assert!(
            usage_error(&["block", "flow", "web-1", "icmp", "10.0.0.2:5", "10.0.0.3"]).contains("no ports")
        );
        assert!(usage_error(&["block", "flow", "web-1", "tcp", "10.0.0.2:1", "[fd00::1]:2"])
            .contains("IP version"));
        usage_error(&["block", "flow", "web-1", "tcp", "10.0.0.2:1"]);
        usage_error(&["block", "flow", "web-1", "gre", "10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn flows_filter_limit_and_follow() {
        assert_eq!(op(&["flows"]), Op::Flows { filter: FlowFilter::default(), limit: Some(50) });
        assert_eq!(
            op(&["flows", "--filter", "verdict=denied zone=db", "--limit", "5"]),
            Op::Flows {
                filter: FlowFilter { expr: Some("verdict=denied zone=db".into()), ..FlowFilter::default() },
                limit: Some(5)
            }
        );
        assert!(matches!(
            op(&["flows", "--follow", "--filter", "port:443"]),
            Op::Subscribe { filter: FlowFilter { expr: Some(e), .. }, interval_ms: None, alerts: false } if e == "port:443"
        ));
        usage_error(&["flows", "--limit", "-1"]);
    }

    /// The console's language on the command line: `key:value` and `key=value`, `!`, and an
    /// unknown key or bad value is a usage error (exit 2) naming the word, never "no flows
    /// match" with exit 0.
    #[test]
    fn flows_filters_speak_the_console_language() {
        for expr in ["port:5432", "port=5432", "5432", "!verdict:deny c:web", "dir:out proto:tcp name:api"] {
            let Op::Flows { filter, .. } = op(&["flows", "--filter", expr]) else { panic!("{expr}") };
            assert!(filter.compile().is_ok(), "{expr}");
        }
        for (expr, needle) in [
            ("colour=red", "unknown key \"colour\""),
            ("colour:red", "unknown key \"colour\""),
            ("verdict=maybe", "unknown verdict"),
            ("port:http", "a port is a number"),
        ] {
            let e = usage_error(&["flows", "--filter", expr]);
            assert!(e.contains(needle), "{expr}: {e}");
        }
        let help = parse(&["flows", "--help"]).unwrap_err().to_string();
        for needle in ["container:TEXT", "verdict:allowed", "name:TEXT", "--filter 5432", "exit 2"] {
            assert!(help.contains(needle), "{needle} missing from flows --help:\n{help}");
        }
    }

    /// The help's own example, `--filter 5432`, finds the flows on port 5432 (it matched
    /// nothing: ports were not part of the text searched).
    #[test]
    fn the_help_example_5432_finds_port_5432() {
        let Op::Flows { filter, .. } = op(&["flows", "--filter", "5432"]) else { panic!() };
        let rows = crate::console::testdata::flows();
        let hits: Vec<u64> = rows.iter().filter(|r| filter.matches(r)).map(|r| r.id).collect();
        let on_5432: Vec<u64> =
            rows.iter().filter(|r| r.dport == 5432 || r.sport == 5432).map(|r| r.id).collect();
        assert!(!on_5432.is_empty());
        assert_eq!(hits, on_5432);
    }

    #[test]
    fn audit_since_and_the_rest() {
        assert_eq!(parse_since("1714560000"), Ok(Since::At(1_714_560_000)));
        assert_eq!(parse_since("1h"), Ok(Since::Ago(3600)));
        assert!(parse_since("yesterday").is_err() && parse_since("").is_err());
        assert_eq!(
            op(&["audit", "--since", "1h", "--limit", "10"]),
            Op::Audit { since: None, since_ms: Some((NOW - 3600) * 1000), limit: Some(10) }
        );
        assert_eq!(
            op(&["audit", "--since", "1700000000"]),
            Op::Audit { since: None, since_ms: Some(1_700_000_000_000), limit: None }
        );
        assert_eq!(op(&["audit"]), Op::Audit { since: None, since_ms: None, limit: None });
        usage_error(&["audit", "--since", "last tuesday"]);
        assert_eq!(op(&["unblock", "7"]), Op::Unblock { block: 7 });
        usage_error(&["unblock", "seven"]);
        usage_error(&["unblock"]);
        assert_eq!(op(&["blocks"]), Op::Blocks);
        assert_eq!(op(&["reload"]), Op::Reload);
        assert_eq!(op(&["status"]), Op::Status);
        usage_error(&["frobnicate"]);
        usage_error(&["status", "--bogus"]);
    }

    /// Runs `args` against `srv`; returns (exit code, stdout, stderr).
    fn run_with(srv: &TestServer, args: &[&str]) -> (u8, String, String) {
        let sock = srv.path.to_str().unwrap().to_string();
        let mut all = args.to_vec();
        all.extend(["--socket", &sock]);
        let cli = parse(&all).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&cli, &mut out, &mut err, now);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    /// `audit verify` reads the trail itself: exit 0 on a whole chain (and against the
    /// daemon's head with --daemon), 1 naming the first tampered record.
    #[test]
    fn audit_verify_checks_the_chain_and_the_daemons_head() {
        use fw_proto::audit_chain::{link, GENESIS};
        let dir = std::env::temp_dir().join(format!("fw-tui-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("audit.jsonl");
        let mut lines = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 0..4 {
            let l = format!(r#"{{"time_ms":{seq},"op":"block","result":"ok","seq":{seq},"prev":"{prev}"}}"#);
            prev = link(&l);
            lines.push(l);
        }
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let path = file.to_str().unwrap();
        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Status(status_info()))]);
        let (code, out, _) = run_with(&srv, &["audit", "verify", path]);
        assert_eq!(code, exit::OK, "{out}");
        assert!(out.starts_with("ok: 4 chained record(s) in 1 file(s), seq 0 .. 3"), "{out}");
        let (code, out, _) = run_with(&srv, &["--json", "audit", "verify", path]);
        let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!((code, doc["records"].as_u64(), doc["head_seq"].as_u64()), (exit::OK, Some(4), Some(3)));
        // The daemon's head is record 3: the file must end there.
        let serving_head = || {
            let head = prev.clone();
            TestServer::start(move |req| {
                let mut s = status_info();
                s.audit = Some(fw_proto::control::AuditStatus {
                    path: "/a".into(),
                    head: Some(Box::new(fw_proto::control::AuditHead { seq: 3, link: head.clone() })),
                    ..Default::default()
                });
                vec![ok(req.id, Answer::Status(s))]
            })
        };
        assert_eq!(run_with(&serving_head(), &["audit", "verify", "--daemon", path]).0, exit::OK);
        std::fs::write(&file, lines[..3].join("\n") + "\n").unwrap();
        let (code, _, err) = run_with(&serving_head(), &["audit", "verify", "--daemon", path]);
        assert_eq!(code, exit::FAILED);
        assert!(err.contains("the trail ends at record 2"), "{err}");
        // An edit is named by place.
        std::fs::write(&file, lines.join("\n").replacen("\"time_ms\":1", "\"time_ms\":9", 1) + "\n").unwrap();
        let (code, _, err) = run_with(&srv, &["audit", "verify", path]);
        assert_eq!(code, exit::FAILED);
        assert!(err.contains("audit.jsonl:2: record 1 was edited"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn status_info() -> StatusInfo {
        StatusInfo {
            daemon_version: "0.1.0".into(),
            pid: 1,
            uptime_ms: 60_000,
            policy_hash: "sha256:ab".into(),
            loaded_at_ms: (NOW - 60) * 1000,
            last_reload_errors: vec![],
            containers: vec![],
            flows: 0,
            lost_events: 0,
            active_blocks: 0,
            ..Default::default()
        }
    }

    #[test]
    fn run_prints_human_or_json() {
        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Status(status_info()))]);
        let (code, out, err) = run_with(&srv, &["status"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(out.starts_with("fw-daemon 0.1.0, pid 1, up 1m\npolicy sha256:ab, loaded "), "{out}");

        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Status(status_info()))]);
        let (code, out, _) = run_with(&srv, &["--json", "status"]);
        assert_eq!(code, 0);
        assert_eq!(out.lines().count(), 1, "{out}");
        let back: Answer = serde_json::from_str(&out).unwrap();
        assert_eq!(back, Answer::Status(status_info()));
        assert!(out.starts_with("{\"version\":1,\"kind\":\"status\""), "{out}");
    }

    #[test]
    fn run_maps_errors_to_exit_codes() {
        let srv = TestServer::start(|req| vec![error(Some(req.id), ErrorCode::NotFound, "no block 9")]);
        assert_eq!(
            run_with(&srv, &["unblock", "9"]),
            (1, String::new(), "fw-tui: not-found: no block 9\n".into())
        );

        let srv = TestServer::start(|req| {
            vec![error(Some(req.id), ErrorCode::Forbidden, "bob is viewer; reload needs operator")]
        });
        let (code, _, err) = run_with(&srv, &["reload"]);
        assert_eq!((code, err.as_str()), (4, "fw-tui: forbidden: bob is viewer; reload needs operator\n"));

        let srv = TestServer::start(|req| {
            vec![ok(
                req.id,
                Answer::Reloaded { policy_hash: "h1".into(), rejected: vec!["a.toml:1:1: error: x".into()] },
            )]
        });
        let (code, out, err) = run_with(&srv, &["reload"]);
        assert_eq!(code, 1);
        assert!(out.contains("reload REJECTED (1 error)") && out.contains("a.toml:1:1: error: x"), "{out}");
        assert!(err.contains("reload rejected"), "{err}");

        let srv = TestServer::start(|req| {
            vec![ok(req.id, Answer::Reloaded { policy_hash: "h2".into(), rejected: vec![] })]
        });
        assert_eq!(run_with(&srv, &["reload"]), (0, "reloaded: policy h2\n".into(), String::new()));

        let srv = TestServer::raw(|req| vec![error(Some(req.id), ErrorCode::VersionMismatch, "speaks 2")]);
        assert_eq!(run_with(&srv, &["blocks"]).0, exit::PROTOCOL);

        let cli = parse(&["status", "--socket", "/nonexistent/fw.sock"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&cli, &mut out, &mut err, now), exit::UNREACHABLE);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "fw-tui: cannot reach fw-daemon at /nonexistent/fw.sock: is it running?\n"
        );
    }

    #[test]
    fn without_a_subcommand_the_console_needs_a_terminal() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.refresh, 1000);
        assert_eq!(parse(&["--refresh", "250"]).unwrap().refresh, 250);
        usage_error(&["--refresh", "5"]);
        assert_eq!(console_refusal(true, true), None);
        // Where the console opens: a screen and a filter, checked before anything else.
        let cli = parse(&["--screen", "drops", "--filter", "web-2 verdict:cap-hit"]).unwrap();
        assert_eq!(
            (cli.screen, cli.console_filter.as_deref()),
            (ScreenArg::Drops, Some("web-2 verdict:cap-hit"))
        );
        assert_eq!(parse(&[]).unwrap().screen, ScreenArg::Flows);
        assert!(usage_error(&["--screen", "nope"]).contains("flows"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let bad = parse(&["--filter", "verdict:maybe"]).unwrap();
        assert_eq!(run(&bad, &mut out, &mut err, now), exit::USAGE);
        assert!(String::from_utf8_lossy(&err).contains("--filter"), "{}", String::from_utf8_lossy(&err));
        for (i, o) in [(false, true), (true, false), (false, false)] {
            let why = console_refusal(i, o).unwrap();
            assert!(why.contains("needs a terminal") && why.contains("alerts"), "{why}");
        }
    }

    #[test]
    fn alerts_since_and_limit() {
        assert_eq!(op(&["alerts"]), Op::Alerts { since_ms: None, limit: None });
        assert_eq!(
            op(&["alerts", "--since", "1h", "--limit", "5"]),
            Op::Alerts { since_ms: Some((NOW - 3600) * 1000), limit: Some(5) }
        );
        assert_eq!(
            op(&["alerts", "--since", "1700000000"]),
            Op::Alerts { since_ms: Some(1_700_000_000_000), limit: None }
        );
        usage_error(&["alerts", "--since", "soon"]);
    }

    #[test]
    fn alerts_against_a_daemon() {
        let alerts = crate::console::testdata::alerts();
        let list = alerts.clone();
        let srv = TestServer::start(move |req| vec![ok(req.id, Answer::Alerts { alerts: list.clone() })]);
        let (code, out, err) = run_with(&srv, &["alerts", "--since", "1h"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(out.contains("tamper web-2: table inet fw changed"), "{out}");
        assert!(out.contains("cap-hit api-1: max_conns 2 reached (cap api-conns)"), "{out}");
        let got = srv.received();
        assert_eq!(got[1].op, Op::Alerts { since_ms: Some((NOW - 3600) * 1000), limit: None });

        let list = alerts.clone();
        let srv = TestServer::start(move |req| vec![ok(req.id, Answer::Alerts { alerts: list.clone() })]);
        let (code, out, _) = run_with(&srv, &["alerts", "--json"]);
        assert_eq!(code, 0);
        assert_eq!(serde_json::from_str::<Answer>(&out).unwrap(), Answer::Alerts { alerts });

        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Alerts { alerts: vec![] })]);
        assert_eq!(run_with(&srv, &["alerts"]), (0, "no alerts\n".into(), String::new()));
    }

    fn flows_event(total: usize, full: bool) -> Event {
        Event::Flows { changed: vec![], removed: vec![1], total, lost_events: 0, full }
    }

    #[test]
    fn follow_streams_events_until_the_daemon_goes_away() {
        let srv = TestServer::start(|req| match req.op {
            Op::Subscribe { .. } => vec![
                ok(req.id, Answer::Subscribed { sub: 5 }),
                event(5, flows_event(2, true)),
                event(6, flows_event(99, false)),
                event(5, flows_event(1, false)),
                Out::Close,
            ],
            _ => vec![],
        });
        let (code, out, err) = run_with(&srv, &["flows", "--follow", "--json", "--filter", "verdict=denied"]);
        assert_eq!(code, exit::UNREACHABLE);
        assert!(err.contains("closed the connection"), "{err}");
        let mut lines: Vec<&str> = out.lines().collect();
        let last: serde_json::Value = serde_json::from_str(lines.pop().unwrap()).unwrap();
        assert_eq!(
            (last["kind"].as_str(), last["code"].as_str(), last["exit"].as_u64()),
            (Some("error"), Some("unreachable"), Some(3)),
            "{out}"
        );
        let lines: Vec<Event> = lines.into_iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines, vec![flows_event(2, true), flows_event(1, false)], "other subscriptions skipped");
        assert!(matches!(
            &srv.received()[1].op,
            Op::Subscribe { filter: FlowFilter { expr: Some(e), .. }, .. } if e == "verdict=denied"
        ));

        let srv = TestServer::start(|req| {
            vec![ok(req.id, Answer::Subscribed { sub: 1 }), event(1, flows_event(0, true)), Out::Close]
        });
        let (_, out, _) = run_with(&srv, &["flows", "--follow"]);
        assert_eq!(out, "== 12:00:00Z full view: 0 matching flows\n");
    }

    #[test]
    fn a_closed_stdout_ends_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Blocks { blocks: vec![] })]);
        let cli = parse(&["blocks", "--socket", srv.path.to_str().unwrap()]).unwrap();
        let mut err = Vec::new();
        assert_eq!(run(&cli, &mut Closed, &mut err, now), 0);
        assert!(err.is_empty());
    }
}
