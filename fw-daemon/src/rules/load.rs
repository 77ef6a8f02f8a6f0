//! Reading rule files: the directory walk (the only I/O), then per-file extraction of zones,
//! policies, failsafes and defaults with a diagnostic for every problem. Cross-file checks
//! (references, ids, shadowing, overlaps) live in `validate`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fw_proto::Mode;
use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, Severity};
use super::glob::Glob;
use super::model::*;
use super::reader::{get, get_key, FileCtx, Value};
use super::units::{parse_bandwidth, parse_duration_ms};

/// A rule file's name and contents: what the pure loader consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// What `load` produced: a policy when there were no errors, and every diagnostic.
#[derive(Debug)]
pub struct LoadResult {
    pub policy: Option<Policy>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadResult {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// How much rule text is read at most: a rules directory is an engineer's config, not a
/// data set, and a runaway generator must not take the daemon's memory with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes in one rule file (setting `max_rule_file_bytes`).
    pub max_file_bytes: u64,
    /// Bytes of every rule file together (setting `max_rules_bytes`).
    pub max_total_bytes: u64,
}

pub const DEFAULT_MAX_RULE_FILE_BYTES: u64 = 1 << 20;
pub const DEFAULT_MAX_RULES_BYTES: u64 = 8 << 20;

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { max_file_bytes: DEFAULT_MAX_RULE_FILE_BYTES, max_total_bytes: DEFAULT_MAX_RULES_BYTES }
    }
}

/// Rule files are `*.toml` directly inside `dir` (not hidden, not editor backups), in
/// lexicographic order: the order in which their policies are evaluated. Hidden entries are
/// never rule files, so a Kubernetes ConfigMap's `..data/` and `..<timestamp>/` directories
/// are only seen through the `*.toml` links beside them. A symlink must resolve inside
/// `dir` (a ConfigMap's do); one that leads out is refused, by name. Sizes are bounded by
/// the default [`ReadLimits`].
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    read_dir_limited(dir, &ReadLimits::default())
}

/// [`read_dir`] with explicit limits; every problem is reported, not only the first.
pub fn read_dir_limited(dir: &Path, limits: &ReadLimits) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    let whole = |msg: String| Diagnostic::whole_file(Severity::Error, Arc::new(dir.to_path_buf()), msg);
    let entries =
        std::fs::read_dir(dir).map_err(|e| vec![whole(format!("cannot read rules directory: {e}"))])?;
    let root = std::fs::canonicalize(dir)
        .map_err(|e| vec![whole(format!("cannot resolve rules directory: {e}"))])?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let link = p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
            // A link is looked at even when it leads nowhere: a rule file gone silently
            // would be policy gone silently.
            !name.starts_with('.') && name.ends_with(".toml") && (link || p.is_file())
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(vec![whole("no rule files (*.toml) in this directory".into())]);
    }
    let mut errors = Vec::new();
    let mut files = Vec::with_capacity(paths.len());
    let mut total: u64 = 0;
    for path in paths {
        let err = |msg: String| Diagnostic::whole_file(Severity::Error, Arc::new(path.clone()), msg);
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(&root) && target.is_file() => {}
                Ok(target) if target.starts_with(&root) => {
                    errors.push(err(format!("symlink to {}, which is not a file", target.display())));
                    continue;
                }
                Ok(target) => {
                    errors.push(err(format!(
                        "symlink to {}, outside the rules directory {}: refused (rule files must stay inside it)",
                        target.display(),
                        root.display()
                    )));
                    continue;
                }
                Err(e) => {
                    errors.push(err(format!("symlink that cannot be followed: {e}")));
                    continue;
                }
            }
        }
        match read_bounded(&path, limits.max_file_bytes) {
            Ok(bytes) => {
                total += bytes.len() as u64;
                match String::from_utf8(bytes) {
                    Ok(text) => files.push(SourceFile { path, text }),
                    Err(e) => errors.push(err(format!(
                        "not UTF-8 (byte {}): rule files must be UTF-8 text",
                        e.utf8_error().valid_up_to()
                    ))),
                }
            }
            Err(Bounded::TooBig(n)) => errors.push(err(format!(
                "{n} bytes, over the limit of {} for one rule file (setting max_rule_file_bytes): not read",
                limits.max_file_bytes
            ))),
            Err(Bounded::Io(e)) => errors.push(err(format!("cannot read: {e}"))),
        }
        if total > limits.max_total_bytes {
            errors.push(whole(format!(
                "the rule files hold over {} bytes, the limit for all of them together (setting max_rules_bytes): not read further",
                limits.max_total_bytes
            )));
            break;
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Why a bounded read gave up.
#[derive(Debug)]
pub enum Bounded {
    /// The file holds at least this many bytes, over the limit.
    TooBig(u64),
    Io(std::io::Error),
}

/// A file's bytes, when it holds at most `max`: its size is checked before reading, and
/// reading stops one byte past the limit, should it grow meanwhile.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Bounded> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(Bounded::Io)?;
    let len = f.metadata().map_err(Bounded::Io)?.len();
    if len > max {
        return Err(Bounded::TooBig(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut bytes).map_err(Bounded::Io)?;
    if bytes.len() as u64 > max {
        return Err(Bounded::TooBig(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What one file contributed, before the files are merged.
#[derive(Default)]
pub(super) struct RawFile {
    pub defaults: Option<(Defaults, Option<Mode>)>,
    pub zones: Vec<RawZone>,
    pub services: Vec<Service>,
    pub policies: Vec<RawRule>,
    pub failsafes: Vec<RawRule>,
    /// Every zone name declared, including zones dropped for errors: references to those are
    /// not reported again as unknown.
    pub declared: Vec<String>,
    /// The same for services.
    pub declared_services: Vec<String>,
    pub diags: Vec<Diagnostic>,
}

pub(super) struct RawZone {
    pub zone: Zone,
    pub mode_set: bool,
    /// CIDRs as written, for the overlap warning (aggregated ones are in `zone.kind`).
    pub raw_cidrs: Vec<(IpNet, SourcePos)>,
}

pub(super) struct RawRule {
    /// Its traffic is empty while it names services: they are resolved once every file is read.
    pub rule: Rule,
    pub explicit_id: Option<SourcePos>,
    /// Where each zone of `from` and `to` was written, in order.
    pub from_pos: Vec<SourcePos>,
    pub to_pos: Vec<SourcePos>,
    /// The services it names, where.
    pub services: Vec<(String, SourcePos)>,
    /// Where `inspect` was written, for the check that needs the services' protocols.
    pub inspect_pos: Option<SourcePos>,
}

const TOP_KEYS: &[&str] = &["defaults", "zone", "service", "policy", "failsafe"];
const DEFAULT_KEYS: &[&str] = &["action", "mode", "inspect_fail"];
const ZONE_KEYS: &[&str] = &[
    "description",
    "match",
    "cidrs",
    "mode",
    "max_conns",
    "new_conns_per_sec",
    "egress_bytes_per_sec",
    "forward",
];
const MATCH_KEYS: &[&str] = &["name", "image", "labels", "namespace", "namespace_labels"];
const SERVICE_KEYS: &[&str] = &["description", "proto", "ports", "icmp_types"];
const POLICY_KEYS: &[&str] = &[
    "id",
    "description",
    "from",
    "to",
    "service",
    "proto",
    "ports",
    "icmp_types",
    "action",
    "inspect",
    "expires",
];
const FAILSAFE_KEYS: &[&str] =
    &["id", "description", "from", "to", "service", "proto", "ports", "icmp_types"];
const INSPECT_KEYS: &[&str] =
    &["protocol", "tls_sni", "http_host", "dns_names", "on_violation", "max_packets", "timeout", "fail"];
const FAIL_MODES: &[(&str, InspectFail)] = &[("closed", InspectFail::Closed), ("open", InspectFail::Open)];

/// Largest connection cap accepted: beyond the default conntrack table size anyway.
const MAX_CONNS: u64 = 1 << 24;

pub(super) fn read_file(file: &SourceFile) -> RawFile {
    let path = Arc::new(file.path.clone());
    let mut cx = FileCtx::new(path, &file.text);
    let (doc, errors) = DeTable::parse_recoverable(&file.text);
    for e in &errors {
        let span = e.span().unwrap_or(0..0);
        cx.error(&span, format!("TOML syntax: {}", first_line(e.message())));
    }
    let mut raw = RawFile::default();
    // A syntax error makes the rest of the file unreliable; report only the syntax errors.
    if errors.is_empty() {
        read_document(&mut cx, doc.get_ref(), &mut raw);
    }
    raw.diags = cx.finish();
    raw
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or(msg).trim()
}

fn read_document(cx: &mut FileCtx<'_>, doc: &DeTable<'_>, raw: &mut RawFile) {
    cx.check_keys(doc, TOP_KEYS, "a rule file");
    if let Some(v) = get(doc, "defaults") {
        if let Some(t) = cx.table(v, "defaults") {
            raw.defaults = Some(read_defaults(cx, t, &v.span()));
        }
    }
    if let Some(v) = get(doc, "zone") {
        if let Some(t) = cx.table(v, "zone") {
            for (name, body) in t.iter() {
                raw.declared.push(name.get_ref().to_string());
                let before = cx.errors();
                match read_zone(cx, name.get_ref(), &name.span(), body) {
                    Some(z) => raw.zones.push(z),
                    // Every zone is compiled or reported: one dropped without an error would
                    // silently drop every policy naming it.
                    None if cx.errors() == before => cx.error(
                        &name.span(),
                        format!(
                            "zone `{}` could not be read (this is a bug in fw: please report it)",
                            name.get_ref()
                        ),
                    ),
                    None => {}
                }
            }
        }
    }
    if let Some(v) = get(doc, "service") {
        if let Some(t) = cx.table(v, "service") {
            for (name, body) in t.iter() {
                raw.declared_services.push(name.get_ref().to_string());
                if let Some(s) = read_service(cx, name.get_ref(), &name.span(), body) {
                    raw.services.push(s);
                }
            }
        }
    }
    for (key, failsafe) in [("policy", false), ("failsafe", true)] {
        let Some(v) = get(doc, key) else { continue };
        let DeValue::Array(items) = v.get_ref() else {
            cx.error(&v.span(), format!("`{key}` must be an array of tables: write each one as [[{key}]]"));
            continue;
        };
        for item in items.iter() {
            if let Some(r) = read_rule(cx, item, failsafe) {
                if failsafe {
                    raw.failsafes.push(r);
                } else {
                    raw.policies.push(r);
                }
            }
        }
    }
}

const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("audit", Mode::Audit)];
const ACTIONS: &[(&str, Action)] = &[("allow", Action::Allow), ("deny", Action::Deny), ("log", Action::Log)];

fn read_defaults(cx: &mut FileCtx<'_>, t: &DeTable<'_>, span: &Range<usize>) -> (Defaults, Option<Mode>) {
    cx.check_keys(t, DEFAULT_KEYS, "[defaults]");
    let mut d = Defaults { pos: Some(cx.pos(span)), ..Defaults::default() };
    if let Some(a) = get(t, "action").and_then(|v| cx.choice(v, "action", ACTIONS)) {
        d.action = a;
    }
    let mode = get(t, "mode").and_then(|v| cx.choice(v, "mode", MODES));
    if let Some(m) = mode {
        d.mode = m;
    }
    if let Some(f) = get(t, "inspect_fail").and_then(|v| cx.choice(v, "inspect_fail", FAIL_MODES)) {
        d.inspect_fail = f;
    }
    (d, mode)
}

/// Zone and service names: what nft set and chain names can carry.
pub(super) fn valid_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn read_zone(
    cx: &mut FileCtx<'_>,
    name: &str,
    name_span: &Range<usize>,
    body: &Value<'_>,
) -> Option<RawZone> {
    let ctx = format!("zone `{name}`");
    let t = cx.table(body, &ctx)?;
    let meant = cx.check_keys(t, ZONE_KEYS, &ctx);
    let pos = cx.pos(name_span);
    let mut ok = true;
    if !valid_zone_name(name) {
        cx.error(
            name_span,
            format!(
            "zone name `{name}` must be 1-32 letters, digits, `-` or `_`, starting with a letter or digit"
        ),
        );
        ok = false;
    }
    if name == ZONE_ANY {
        cx.error(name_span, "`any` is reserved: it means every address and cannot be declared");
        ok = false;
    }

    let selector = get(t, "match").and_then(|v| read_selector(cx, v, &ctx));
    let mut raw_cidrs = Vec::new();
    let cidrs_value = get(t, "cidrs");
    if let Some(v) = cidrs_value {
        let items = cx.str_list(v, "cidrs");
        if items.is_empty() && matches!(v.get_ref(), DeValue::Array(_)) {
            cx.error(&v.span(), "`cidrs` is an empty list: it would hold no network (leave it out)");
            ok = false;
        }
        for (text, span) in items {
            match parse_cidr(&text) {
                Ok(net) => raw_cidrs.push((net, cx.pos(&span))),
                Err(msg) => cx.error(&span, msg),
            }
        }
    }
    let nets = || -> Vec<IpNet> {
        let nets: Vec<IpNet> = raw_cidrs.iter().map(|(n, _)| *n).collect();
        IpNet::aggregate(&nets)
    };
    let kind = match (selector, cidrs_value) {
        _ if name == ZONE_DEFAULT => {
            if get(t, "match").is_some() || cidrs_value.is_some() {
                cx.error(name_span, "zone `default` holds the containers no other zone selects: it takes no `match` or `cidrs`, only mode and caps");
                ok = false;
            }
            ZoneKind::Containers(Selector::default())
        }
        // Containers and networks outside fw's control in one zone: peers match on either.
        (Some(sel), Some(_)) => ZoneKind::Mixed(sel, nets()),
        (Some(sel), None) => ZoneKind::Containers(sel),
        // A `match` that failed to read is reported already; its networks alone are not the zone.
        (None, Some(_)) if get(t, "match").is_some() => return None,
        (None, Some(_)) => ZoneKind::External(nets()),
        (None, None) => {
            // A misspelt `match` is reported as such: "selects nothing" would be its follow-on.
            if get(t, "match").is_none() && !meant.iter().any(|k| *k == "match" || *k == "cidrs") {
                cx.report(
                    cx.diag(
                        Severity::Error,
                        name_span,
                        format!("{ctx} selects nothing: give it `match` (containers), `cidrs` (external networks), or both"),
                    )
                    .label("no `match` and no `cidrs`")
                    .note("for example `match = { name = \"web-*\" }` or `cidrs = [\"203.0.113.0/24\"]`"),
                );
            }
            return None;
        }
    };

    let mode = get(t, "mode").and_then(|v| cx.choice(v, "mode", MODES));
    let mut caps = Caps::default();
    if let Some((k, v)) = get_key(t, "max_conns") {
        caps.max_conns = cap_count(cx, &k, v, "max_conns");
        ok &= caps.max_conns.is_some();
    }
    if let Some((k, v)) = get_key(t, "new_conns_per_sec") {
        caps.new_conns_per_sec = cap_count(cx, &k, v, "new_conns_per_sec");
        ok &= caps.new_conns_per_sec.is_some();
    }
    if let Some((k, v)) = get_key(t, "egress_bytes_per_sec") {
        let at = FileCtx::join(&k, &v.span());
        caps.egress_bytes_per_sec = match v.get_ref() {
            DeValue::Integer(i) => match parse_int(i) {
                Some(n) if (1..=1 << 40).contains(&n) => Some(n as u64),
                _ => {
                    cx.error(&at, "`egress_bytes_per_sec` must be between 1 and 1099511627776 bytes per second (leave it out for no cap)");
                    None
                }
            },
            DeValue::String(s) => match parse_bandwidth(s) {
                Ok(n) => {
                    caps.egress_written = Some(s.trim().to_string());
                    Some(n)
                }
                Err(msg) => {
                    cx.error(&at, format!("`egress_bytes_per_sec`: {msg}"));
                    None
                }
            },
            other => {
                cx.error(
                    &at,
                    format!(
                        "`egress_bytes_per_sec` must be a bandwidth like \"10MB\" or \"80mbit\", found {}",
                        super::reader::article(other.type_str())
                    ),
                );
                None
            }
        };
        ok &= caps.egress_bytes_per_sec.is_some();
    }
    let forward = get(t, "forward").and_then(|v| cx.bool(v, "forward")).unwrap_or(false);
    if matches!(kind, ZoneKind::External(_)) {
        // Each ignored key, where it is written.
        for key in ["mode", "max_conns", "new_conns_per_sec", "egress_bytes_per_sec", "forward"] {
            if let Some((k, v)) = get_key(t, key) {
                let what = if key == "mode" {
                    "a mode"
                } else if key == "forward" {
                    "forwarding"
                } else {
                    "caps"
                };
                cx.report(
                    cx.diag(
                        Severity::Warning,
                        &FileCtx::join(&k, &v.span()),
                        format!("`{key}` is ignored in {ctx}: it holds external networks only, and fw enforces {what} inside containers"),
                    )
                    .label("ignored"),
                );
            }
        }
    }
    let description = get(t, "description").and_then(|v| cx.str(v, "description")).map(str::to_string);
    if !ok {
        return None;
    }
    Some(RawZone {
        zone: Zone {
            name: name.to_string(),
            pos: Some(pos),
            kind,
            mode: mode.unwrap_or_default(),
            caps,
            description,
            forward,
        },
        mode_set: mode.is_some(),
        raw_cidrs,
    })
}

/// A TOML integer's value, whatever its radix.
fn parse_int(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

/// A connection cap: a positive integer. Its errors point at the cap's key.
fn cap_count(cx: &mut FileCtx<'_>, key: &Range<usize>, v: &Value<'_>, what: &str) -> Option<u32> {
    let at = FileCtx::join(key, &v.span());
    let DeValue::Integer(i) = v.get_ref() else {
        cx.error(
            &at,
            format!("`{what}` must be an integer, found {}", super::reader::article(v.get_ref().type_str())),
        );
        return None;
    };
    match parse_int(i) {
        Some(n) if n >= 1 && n as u64 <= MAX_CONNS => Some(n as u32),
        Some(n) if n < 1 => {
            cx.error(&at, format!("`{what}` must be at least 1 (leave it out for no cap)"));
            None
        }
        _ => {
            cx.error(&at, format!("`{what}` must be at most {MAX_CONNS}"));
            None
        }
    }
}

fn read_selector(cx: &mut FileCtx<'_>, v: &Value<'_>, ctx: &str) -> Option<Selector> {
    let what = format!("`match` of {ctx}");
    let t = cx.table(v, &what)?;
    cx.check_keys(t, MATCH_KEYS, &what);
    let mut sel = Selector::default();
    let glob_list = |cx: &mut FileCtx<'_>, key: &str| -> Vec<Glob> {
        let Some(v) = get(t, key) else {
            return Vec::new();
        };
        let items = cx.str_list(v, key);
        if items.is_empty() && matches!(v.get_ref(), DeValue::Array(_)) {
            cx.error(&v.span(), format!("`{key}` is an empty list: it would match nothing"));
        }
        items
            .into_iter()
            .filter_map(|(s, span)| {
                if s.is_empty() {
                    cx.error(&span, format!("empty `{key}` pattern"));
                    None
                } else {
                    Some(Glob::new(&s))
                }
            })
            .collect()
    };
    sel.names = glob_list(cx, "name");
    sel.images = glob_list(cx, "image");
    sel.namespaces = glob_list(cx, "namespace");
    let label_table = |cx: &mut FileCtx<'_>, key: &str| -> Vec<(String, Glob)> {
        let mut out = Vec::new();
        let Some(lv) = get(t, key) else { return out };
        if let Some(lt) = cx.table(lv, key) {
            if lt.is_empty() {
                cx.error(&lv.span(), format!("`{key} = {{}}` names no label, so it would select nothing: give at least one `key = \"pattern\"` (to select every container, use `name = \"*\"`)"));
            }
            for (k, val) in lt.iter() {
                if let Some(s) = cx.str(val, &format!("{key}.{}", k.get_ref())) {
                    out.push((k.get_ref().to_string(), Glob::new(s)));
                }
            }
        }
        out
    };
    sel.labels = label_table(cx, "labels");
    sel.namespace_labels = label_table(cx, "namespace_labels");
    if sel.is_empty() {
        // Unknown keys were already reported; "empty" would only repeat them.
        if t.is_empty() {
            cx.error(
                &v.span(),
                format!("{what} is empty: give `name`, `image`, `labels`, `namespace` or `namespace_labels`"),
            );
        }
        return None;
    }
    Some(sel)
}

/// Parses `10.0.0.0/8`, `fd00::/64` or a bare address (a host route); refuses host bits.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    let net: IpNet = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match t.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                return Err(format!("`{text}` is not an IPv4 or IPv6 network (like 10.0.0.0/8 or fd00::/64)"))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!("`{text}` has host bits set; did you mean `{}`?", net.trunc()));
    }
    Ok(net)
}

const PROTOS: &[&str] = &["tcp", "udp", "icmp", "any"];

fn read_service(
    cx: &mut FileCtx<'_>,
    name: &str,
    name_span: &Range<usize>,
    body: &Value<'_>,
) -> Option<Service> {
    let ctx = format!("service `{name}`");
    let t = cx.table(body, &ctx)?;
    cx.check_keys(t, SERVICE_KEYS, &ctx);
    let mut ok = true;
    if !valid_zone_name(name) {
        cx.error(
            name_span,
            format!("service name `{name}` must be 1-32 letters, digits, `-` or `_`, starting with a letter or digit"),
        );
        ok = false;
    }
    if get(t, "proto").is_none() && get(t, "ports").is_none() && get(t, "icmp_types").is_none() {
        cx.report(
            cx.diag(Severity::Error, name_span, format!("{ctx} says nothing: it would match every packet"))
                .note("give `proto` and `ports` (`proto = \"tcp\", ports = [443]`), or `proto = \"icmp\"` and `icmp_types`"),
        );
        ok = false;
    }
    let traffic = read_traffic(cx, t, &[]);
    let description = get(t, "description").and_then(|v| cx.str(v, "description")).map(str::to_string);
    let traffic = traffic?;
    ok.then(|| Service { name: name.to_string(), pos: cx.pos(name_span), traffic, description })
}

fn read_rule(cx: &mut FileCtx<'_>, v: &Value<'_>, failsafe: bool) -> Option<RawRule> {
    let kind = if failsafe { "failsafe" } else { "policy" };
    let t = cx.table(v, kind)?;
    let meant = cx.check_keys(t, if failsafe { FAILSAFE_KEYS } else { POLICY_KEYS }, &format!("[[{kind}]]"));
    let pos = cx.pos(&v.span());
    let mut ok = true;
    // A key reported as misspelt is not reported again as missing.
    let missing = |cx: &mut FileCtx<'_>, key: &str, msg: String| {
        if !meant.contains(&key) {
            cx.error(&v.span(), msg);
        }
    };

    let explicit_id = match get(t, "id") {
        Some(iv) => match cx.str(iv, "id") {
            Some(id) if reserved_id(id) => {
                cx.error(&iv.span(), format!("id `{id}` looks like one of fw's own (`default`, `builtin:*`, `cap:*`, `failsafe:*`, `block:*`): choose another, so that logs and verdicts never pass it off as fw's"));
                ok = false;
                None
            }
            Some(id) if valid_id(id) => Some((id.to_string(), cx.pos(&iv.span()))),
            Some(id) => {
                cx.error(&iv.span(), format!("id `{id}` must be 1-48 letters, digits, `.`, `_`, `:` or `-`, starting with a letter or digit"));
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };

    let from = match get(t, "from") {
        Some(zv) => read_zone_refs(cx, zv, "from"),
        None if failsafe => Some((ZoneRefs::one(ZONE_ANY), vec![pos.clone()])),
        None => {
            missing(cx, "from", format!("{kind} needs `from` (a zone name, a list of zones, or `any`)"));
            None
        }
    };
    let to = match get(t, "to") {
        Some(zv) => read_zone_refs(cx, zv, "to"),
        None => {
            missing(cx, "to", format!("{kind} needs `to` (a zone name, a list of zones, or `any`)"));
            None
        }
    };

    // Traffic: named services, or protocols and ports written inline (never both).
    let mut services = Vec::new();
    let traffic = match get_key(t, "service") {
        Some((_, sv)) => {
            let items = cx.str_list(sv, "service");
            if items.is_empty() {
                cx.error(
                    &sv.span(),
                    "`service` names no service: give one or more, like `service = [\"https\"]`",
                );
                ok = false;
            }
            for (name, span) in items {
                if services.iter().any(|(n, _)| *n == name) {
                    cx.warning(&span, format!("service `{name}` is listed twice"));
                } else {
                    services.push((name, cx.pos(&span)));
                }
            }
            for key in ["proto", "ports", "icmp_types"] {
                if let Some((k, kv)) = get_key(t, key) {
                    cx.report(
                        cx.diag(
                            Severity::Error,
                            &FileCtx::join(&k, &kv.span()),
                            format!("`{key}` cannot be given with `service`: the service says which protocols and ports"),
                        )
                        .note("leave it out, or declare another service"),
                    );
                    ok = false;
                }
            }
            Some(Vec::new())
        }
        None => read_traffic(cx, t, &meant).map(|tr| vec![tr]),
    };

    let action = if failsafe {
        Some(Action::Allow)
    } else {
        match get(t, "action") {
            Some(av) => cx.choice(av, "action", ACTIONS),
            None => {
                missing(cx, "action", "policy needs `action` (`allow`, `deny` or `log`)".into());
                None
            }
        }
    };
    let inspect_pos = get(t, "inspect").map(|iv| cx.pos(&iv.span()));
    let inspect = match get(t, "inspect") {
        Some(iv) => {
            // With services, the transports are known once they are resolved (`validate`).
            let protos = traffic.as_ref().and_then(|tr| tr.first()).map(|tr| tr.protos);
            let r = read_inspect(cx, iv, protos.as_ref());
            if r.is_none() {
                ok = false;
            }
            r
        }
        None => None,
    };
    if let (Some(Action::Deny), Some(_)) = (action, &inspect) {
        cx.warning(
            &v.span(),
            "`inspect` on a deny policy never runs: denied flows send no packets to inspect",
        );
    }
    let expires = match get(t, "expires") {
        Some(ev) => {
            let r = read_expiry(cx, ev);
            if r.is_none() {
                ok = false;
            }
            r
        }
        None => None,
    };
    let description = get(t, "description").and_then(|d| cx.str(d, "description")).map(str::to_string);

    let (from, from_pos) = from?;
    let (to, to_pos) = to?;
    let traffic = traffic?;
    let action = action?;
    if !ok {
        return None;
    }
    let (id, explicit) = match explicit_id {
        Some((id, p)) => (id, Some(p)),
        None => (String::new(), None), // derived after merging, when every explicit id is known
    };
    Some(RawRule {
        rule: Rule {
            id,
            pos,
            from,
            to,
            traffic,
            services: Vec::new(),
            action,
            inspect,
            expires,
            description,
        },
        explicit_id: explicit,
        from_pos,
        to_pos,
        services,
        inspect_pos,
    })
}

/// `from` / `to`: a zone name, a list of them, or `any` (alone), each with its position.
fn read_zone_refs(cx: &mut FileCtx<'_>, v: &Value<'_>, key: &str) -> Option<(ZoneRefs, Vec<SourcePos>)> {
    let items = cx.str_list(v, key);
    if items.is_empty() {
        if matches!(v.get_ref(), DeValue::Array(a) if a.is_empty()) {
            cx.error(&v.span(), format!("`{key}` is an empty list: name one or more zones, or `any`"));
        }
        return None;
    }
    if matches!(v.get_ref(), DeValue::Array(a) if a.len() != items.len()) {
        return None; // a non-string entry, reported
    }
    let mut names: Vec<String> = Vec::new();
    let mut pos = Vec::new();
    let mut ok = true;
    for (name, span) in &items {
        if names.contains(name) {
            cx.warning(span, format!("zone `{name}` is listed twice in `{key}`"));
            continue;
        }
        if name == ZONE_ANY && items.len() > 1 {
            cx.error(span, format!("`any` already covers every zone: write `{key} = \"any\"` alone"));
            ok = false;
        }
        names.push(name.clone());
        pos.push(cx.pos(span));
    }
    ok.then_some((ZoneRefs(names), pos))
}

/// `proto`, `ports` and `icmp_types`, of a rule or a service. `meant`: keys reported as
/// misspelt, so a misspelt `proto` does not also make its ports "need a protocol".
fn read_traffic(cx: &mut FileCtx<'_>, t: &DeTable<'_>, meant: &[&str]) -> Option<Traffic> {
    let protos = match get(t, "proto") {
        None if meant.contains(&"proto") => None,
        None => Some(Protos::ANY),
        Some(pv) => read_protos(cx, pv),
    };
    let ports = get(t, "ports").map(|pv| (read_ports(cx, pv), pv.span()));
    let icmp = get(t, "icmp_types").map(|iv| (read_icmp_types(cx, iv), iv.span()));
    let mut ok = true;
    if let (Some(p), Some((Some(ports), span))) = (&protos, &ports) {
        if !ports.is_any() && (p.icmp || !p.has_ports()) {
            cx.error(span, "`ports` need `proto = \"tcp\"`, `\"udp\"` or `[\"tcp\", \"udp\"]`: ICMP and `any` have no ports");
            ok = false;
        }
    }
    if let (Some(p), Some((Some(_), span))) = (&protos, &icmp) {
        if p.is_any() || !p.icmp {
            let why = if p.is_any() {
                "`any` covers tcp and udp too, which have no ICMP types"
            } else {
                "the policy covers no ICMP"
            };
            cx.error(span, format!("`icmp_types` need `proto = \"icmp\"`: {why}"));
            ok = false;
        }
    }
    let protos = protos?;
    let ports = match ports {
        Some((p, _)) => p?,
        None => Ports::default(),
    };
    let icmp = match icmp {
        Some((i, _)) => i?,
        None => IcmpTypes::default(),
    };
    ok.then_some(Traffic { protos, ports, icmp })
}

/// ICMP type names (`echo-request`), each meaning its ICMP and ICMPv6 type where both exist.
fn read_icmp_types(cx: &mut FileCtx<'_>, v: &Value<'_>) -> Option<IcmpTypes> {
    let items = cx.str_list(v, "icmp_types");
    if items.is_empty() {
        if matches!(v.get_ref(), DeValue::Array(a) if a.is_empty()) {
            cx.error(&v.span(), "`icmp_types` is an empty list: leave it out to mean every type");
        }
        return None;
    }
    let mut types = Vec::new();
    let mut ok = true;
    for (name, span) in &items {
        match IcmpType::named(name.trim()) {
            Some(t) => types.push(t),
            None => {
                let names: Vec<&str> = ICMP_TYPES.iter().map(|t| t.name).collect();
                let lower = name.trim().to_ascii_lowercase();
                let mut d = cx.diag(Severity::Error, span, format!("unknown ICMP type `{name}`"));
                if let Some(h) = super::diag::suggest(&lower, &names) {
                    d.message.push_str(&format!("; did you mean `{h}`?"));
                }
                cx.report(d.note(format!("ICMP types: {}", names.join(", "))));
                ok = false;
            }
        }
    }
    ok.then(|| IcmpTypes::new(types))
}

/// Ids fw gives its own rules, or that would read as such in a log line or a verdict.
pub(super) fn reserved_id(id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    id == "default" || ["builtin:", "cap:", "failsafe:", "block:"].iter().any(|p| id.starts_with(p))
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 48
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c))
}

fn read_protos(cx: &mut FileCtx<'_>, v: &Value<'_>) -> Option<Protos> {
    let items = cx.str_list(v, "proto");
    if items.is_empty() {
        if matches!(v.get_ref(), DeValue::Array(a) if a.is_empty()) {
            cx.error(&v.span(), "`proto` is empty: use \"tcp\", \"udp\", \"icmp\" or \"any\"");
        }
        return None;
    }
    let mut p = Protos::default();
    let mut ok = true;
    for (s, span) in &items {
        // `TCP` and `tcp` are the same protocol.
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => p.tcp = true,
            "udp" => p.udp = true,
            "icmp" => p.icmp = true,
            "any" if items.len() == 1 => p = Protos::ANY,
            "any" => {
                cx.error(span, "`any` already covers every protocol: use it alone");
                ok = false;
            }
            other => {
                let hint = super::diag::suggest(other, PROTOS)
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
                cx.error(span, format!("unknown protocol `{s}`: use tcp, udp, icmp or any{hint}"));
                ok = false;
            }
        }
    }
    ok.then_some(p)
}

/// Ports: an integer, "80", "8000-8100", or an array of those. Every port problem reads
/// `port ...` or `port range ...`, naming what was written.
fn read_ports(cx: &mut FileCtx<'_>, v: &Value<'_>) -> Option<Ports> {
    let items: Vec<&Value<'_>> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    if items.is_empty() {
        cx.error(&v.span(), "`ports` is empty: leave it out to mean every port");
        return None;
    }
    let mut ranges = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let r = match item.get_ref() {
            DeValue::Integer(i) => match parse_int(i) {
                Some(n) => port_range(n, n, &n.to_string(), false),
                None => Err(format!("port {} is out of range: ports go from 1 to 65535", i.as_str())),
            },
            DeValue::String(s) => {
                parse_port_text(s).and_then(|(lo, hi)| port_range(lo, hi, s, s.contains('-')))
            }
            other => Err(format!(
                "a port must be a number or a \"lo-hi\" range string, found {}",
                super::reader::article(other.type_str())
            )),
        };
        match r {
            Ok(r) => ranges.push(r),
            Err(msg) => {
                cx.error(&item.span(), msg);
                ok = false;
            }
        }
    }
    ok.then(|| Ports::new(ranges))
}

fn parse_port_text(s: &str) -> Result<(i64, i64), String> {
    let bad = || format!("port `{s}` is not a port or a port range like \"8000-8100\"");
    let num = |t: &str| {
        let t = t.trim();
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        // Too many digits is still a number, only out of range.
        Ok(t.parse::<i64>().unwrap_or(i64::MAX))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((num(a)?, num(b)?)),
        None => {
            let n = num(s)?;
            Ok((n, n))
        }
    }
}

fn port_range(lo: i64, hi: i64, written: &str, range: bool) -> Result<PortRange, String> {
    let what = if range { "port range" } else { "port" };
    if !(1..=65535).contains(&lo) || !(1..=65535).contains(&hi) {
        return Err(format!("{what} {} is out of range: ports go from 1 to 65535", written.trim()));
    }
    if lo > hi {
        return Err(format!("port range {lo}-{hi} is backwards: write {hi}-{lo}"));
    }
    Ok(PortRange { lo: lo as u16, hi: hi as u16 })
}

fn read_inspect(cx: &mut FileCtx<'_>, v: &Value<'_>, protos: Option<&Protos>) -> Option<Inspect> {
    let t = cx.table(v, "inspect")?;
    let meant = cx.check_keys(t, INSPECT_KEYS, "`inspect`");
    let mut ok = true;
    let protocol = get(t, "protocol").and_then(|pv| {
        let r = cx.choice(
            pv,
            "protocol",
            &[("tls", AppProto::Tls), ("http", AppProto::Http), ("dns", AppProto::Dns)],
        );
        ok &= r.is_some();
        r
    });
    let mut names = |cx: &mut FileCtx<'_>, key: &str, implied: AppProto| -> Vec<String> {
        let Some(nv) = get(t, key) else {
            return Vec::new();
        };
        if let Some(p) = protocol {
            if p != implied {
                cx.error(&nv.span(), format!("`{key}` does not apply to protocol `{}`", app_name(p)));
                ok = false;
            }
        }
        let mut out = Vec::new();
        for (name, span) in cx.str_list(nv, key) {
            match normalize_host_pattern(&name) {
                Ok(n) => out.push(n),
                Err(msg) => {
                    cx.error(&span, msg);
                    ok = false;
                }
            }
        }
        out
    };
    let tls_sni = names(cx, "tls_sni", AppProto::Tls);
    let http_host = names(cx, "http_host", AppProto::Http);
    let dns_names = names(cx, "dns_names", AppProto::Dns);
    let implied: Vec<AppProto> = [
        (!tls_sni.is_empty(), AppProto::Tls),
        (!http_host.is_empty(), AppProto::Http),
        (!dns_names.is_empty(), AppProto::Dns),
    ]
    .into_iter()
    .filter_map(|(b, p)| b.then_some(p))
    .collect();
    if protocol.is_none() && implied.len() > 1 {
        cx.error(&v.span(), "`inspect` mixes name lists of different protocols: one protocol per policy");
        ok = false;
    }
    let protocol = protocol.or(implied.first().copied());
    // A misspelt `protocol` or name list is reported as such already.
    if protocol.is_none() && ok {
        if meant.is_empty() {
            cx.error(
                &v.span(),
                "`inspect` needs `protocol` (tls, http, dns) or a name list (tls_sni, http_host, dns_names)",
            );
        }
        ok = false;
    }
    if let (Some(p), Some(protos)) = (protocol, protos) {
        let fits = match p {
            AppProto::Tls | AppProto::Http => protos.tcp,
            AppProto::Dns => protos.tcp || protos.udp,
        };
        if !fits {
            cx.error(
                &v.span(),
                format!(
                    "inspecting `{}` needs a policy that covers its transport (tcp{})",
                    app_name(p),
                    if p == AppProto::Dns { " or udp" } else { "" }
                ),
            );
            ok = false;
        }
    }
    let on_violation = match get(t, "on_violation") {
        Some(ov) => cx.choice(
            ov,
            "on_violation",
            &[
                ("alert", OnViolation::Alert),
                ("cut", OnViolation::Cut),
                ("quarantine", OnViolation::Quarantine),
            ],
        ),
        None => Some(OnViolation::Alert),
    };
    let max_packets = match get(t, "max_packets") {
        Some(mv) => match cx.uint(mv, "max_packets", 32) {
            Some(0) => {
                cx.error(&mv.span(), "`max_packets` must be between 1 and 32");
                None
            }
            other => other.map(|n| n as u8),
        },
        None => Some(DEFAULT_INSPECT_PACKETS),
    };
    let timeout_ms = match get(t, "timeout") {
        Some(tv) => match cx.str(tv, "timeout").map(parse_duration_ms) {
            Some(Ok(ms)) if (MIN_INSPECT_TIMEOUT_MS..=MAX_INSPECT_TIMEOUT_MS).contains(&ms) => Some(ms),
            Some(Ok(_)) => {
                cx.error(&tv.span(), "`timeout` must be between 10ms and 30s");
                None
            }
            Some(Err(msg)) => {
                cx.error(&tv.span(), format!("`timeout`: {msg}"));
                None
            }
            None => None,
        },
        None => Some(DEFAULT_INSPECT_TIMEOUT_MS),
    };
    let fail = match get(t, "fail") {
        Some(fv) => cx.choice(fv, "fail", FAIL_MODES).map(Some),
        None => Some(None),
    };
    if !ok {
        return None;
    }
    Some(Inspect {
        protocol,
        tls_sni,
        http_host,
        dns_names,
        on_violation: on_violation?,
        max_packets: max_packets?,
        timeout_ms: timeout_ms?,
        fail: fail?,
    })
}

/// How long a flagged flow's first payload waits for a verdict when `timeout` is not given.
pub const DEFAULT_INSPECT_TIMEOUT_MS: u32 = 2000;
const MIN_INSPECT_TIMEOUT_MS: u32 = 10;
const MAX_INSPECT_TIMEOUT_MS: u32 = 30_000;

/// First packets of a flow copied to the daemon when `max_packets` is not given: enough for a
/// ClientHello split over a few segments, small enough to keep the daemon off the data path.
pub const DEFAULT_INSPECT_PACKETS: u8 = 6;

fn app_name(p: AppProto) -> &'static str {
    match p {
        AppProto::Tls => "tls",
        AppProto::Http => "http",
        AppProto::Dns => "dns",
    }
}

/// Lower-cases a host name or `*.suffix` pattern and checks its shape (labels of 1-63
/// characters, 253 in all, a wildcard only as the whole first label).
pub fn normalize_host_pattern(name: &str) -> Result<String, String> {
    let n = name.trim().trim_end_matches('.').to_lowercase();
    let bad = |why: &str| Err(format!("`{name}` is not a host name or `*.domain` pattern: {why}"));
    if n.is_empty() {
        return bad("it is empty");
    }
    if n.len() > 253 {
        return bad("longer than 253 characters");
    }
    for (i, label) in n.split('.').enumerate() {
        if label == "*" && i == 0 && n.len() > 2 {
            continue;
        }
        if label.is_empty() || label.chars().count() > 63 {
            return bad("each label must be 1-63 characters");
        }
        if label.contains('*') {
            return bad("a wildcard may only be the whole first label, as in `*.example.com`");
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') || label.starts_with('-') {
            return bad("labels hold letters, digits and inner `-`");
        }
    }
    Ok(n)
}

fn read_expiry(cx: &mut FileCtx<'_>, v: &Value<'_>) -> Option<i64> {
    let dt = match v.get_ref() {
        DeValue::Datetime(dt) => Some(*dt),
        DeValue::String(s) => s.parse::<toml::value::Datetime>().ok(),
        _ => None,
    };
    let Some(dt) = dt else {
        cx.error(&v.span(), "`expires` must be a date-time like 2026-12-31T18:00:00Z, or a date like 2026-12-31 (midnight UTC)");
        return None;
    };
    match datetime_to_unix(&dt) {
        Ok(t) => Some(t),
        Err(msg) => {
            cx.error(&v.span(), msg);
            None
        }
    }
}

/// Converts a TOML datetime with an offset (or a bare date, taken as 00:00 UTC) to unix seconds.
pub fn datetime_to_unix(dt: &toml::value::Datetime) -> Result<i64, String> {
    use toml::value::Offset;
    let Some(date) = dt.date else {
        return Err("`expires` needs a date, not only a time".into());
    };
    let (secs_of_day, offset_min) = match (dt.time, dt.offset) {
        (None, _) => (0, 0),
        (Some(t), Some(off)) => {
            let m = match off {
                Offset::Z => 0,
                Offset::Custom { minutes } => i64::from(minutes),
            };
            (i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second.unwrap_or(0)), m)
        }
        (Some(_), None) => {
            return Err("`expires` needs a UTC offset, as in 2026-12-31T18:00:00Z: a local time means different instants on different hosts".into())
        }
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    Ok(days * 86_400 + secs_of_day - offset_min * 60)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (for messages and plan comments).
pub fn format_unix(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_round_trips() {
        let dt: toml::value::Datetime = "2026-12-31T18:00:00Z".parse().unwrap();
        let t = datetime_to_unix(&dt).unwrap();
        assert_eq!(t, 1_798_740_000);
        assert_eq!(format_unix(t), "2026-12-31T18:00:00Z");
        let dt: toml::value::Datetime = "2026-01-01T02:00:00+02:00".parse().unwrap();
        assert_eq!(format_unix(datetime_to_unix(&dt).unwrap()), "2026-01-01T00:00:00Z");
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn cidrs_refuse_host_bits() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert!(parse_cidr("10.0.0.1/8").unwrap_err().contains("did you mean `10.0.0.0/8`"));
        assert!(parse_cidr("fd00::1/64").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn host_patterns() {
        assert_eq!(normalize_host_pattern("API.Example.com.").unwrap(), "api.example.com");
        assert_eq!(normalize_host_pattern("*.example.org").unwrap(), "*.example.org");
        assert!(normalize_host_pattern("a.*.example.org").is_err());
        assert!(normalize_host_pattern("*").is_err());
        assert!(normalize_host_pattern("bad..name").is_err());
        assert!(normalize_host_pattern("-x.com").is_err());
    }

    #[test]
    fn port_text() {
        assert_eq!(parse_port_text("8000-8100"), Ok((8000, 8100)));
        assert_eq!(parse_port_text("443"), Ok((443, 443)));
        assert!(parse_port_text("80-").is_err());
        assert!(parse_port_text("http").is_err());
        assert!(parse_port_text("-5").is_err());
        assert_eq!(parse_port_text("99999999999999999999999"), Ok((i64::MAX, i64::MAX)));
        // One message shape for every port out of range, naming what was written.
        assert_eq!(
            port_range(0, 0, "0", false).unwrap_err(),
            "port 0 is out of range: ports go from 1 to 65535"
        );
        assert_eq!(
            port_range(70000, 70000, "70000", false).unwrap_err(),
            "port 70000 is out of range: ports go from 1 to 65535"
        );
        assert_eq!(
            port_range(0, 5, "0-5", true).unwrap_err(),
            "port range 0-5 is out of range: ports go from 1 to 65535"
        );
        assert_eq!(
            port_range(90, 80, "90-80", true).unwrap_err(),
            "port range 90-80 is backwards: write 80-90"
        );
    }
}
