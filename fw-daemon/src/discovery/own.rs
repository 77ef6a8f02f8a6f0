//! `fw-daemon run --self`: the daemon's own network namespace as the only container, for a
//! sidecar inside a Kubernetes pod. Who the pod is comes from the downward API: a volume
//! with `labels` (and optionally `name` and `namespace`) files, else the `POD_NAME` and
//! `POD_NAMESPACE` variables, else the hostname (a pod's is its name). The pod becomes an
//! inventory of one entry, written to the state directory, so the rest of the daemon treats
//! it like any container. There is no host side here: no floor, and a container with
//! CAP_NET_RAW can write frames past this table (README, "Sidecar mode").

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where a pod's downward-API volume is mounted by default.
pub const DEFAULT_POD_INFO: &str = "/etc/podinfo";
/// The namespace the sidecar programs: its own.
pub const OWN_NETNS: &str = "/proc/self/ns/net";
/// A labels file bigger than this is refused (Kubernetes caps a pod's labels and
/// annotations far below it).
const MAX_PODINFO_BYTES: u64 = 256 * 1024;
const MAX_LABELS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum OwnError {
    #[error("{path}: {why}")]
    PodInfo { path: PathBuf, why: String },
    #[error("the pod's name: {0}")]
    Name(String),
    #[error("this is the host's network namespace (the same as kthreadd's): --self programs only a pod's own namespace, and would cut the host")]
    HostNamespace,
    #[error("this process sees the host's processes (kthreadd is pid 2) but cannot compare its network namespace with theirs ({0}): --self refuses to run where it cannot tell a pod's namespace from the host's (run it in the pod's own PID namespace, or with CAP_SYS_PTRACE)")]
    HostUnknown(String),
    #[error("reading the pod's addresses: {0}")]
    Addresses(String),
}

/// Who the pod is, as its selectors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnIdentity {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Vec<(String, String)>,
}

/// Reads the pod's identity from the downward-API directory `dir`, then `env`.
pub fn read_identity(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<OwnIdentity, OwnError> {
    let file = |name: &str| -> Result<Option<String>, OwnError> {
        let path = dir.join(name);
        match crate::rules::read_bounded(&path, MAX_PODINFO_BYTES) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| OwnError::PodInfo { path, why: "not UTF-8".into() }),
            Err(crate::rules::Bounded::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(crate::rules::Bounded::Io(e)) => Err(OwnError::PodInfo { path, why: e.to_string() }),
            Err(crate::rules::Bounded::TooBig(n)) => Err(OwnError::PodInfo {
                path,
                why: format!("{n} bytes, over the limit of {MAX_PODINFO_BYTES}"),
            }),
        }
    };
    let labels = match file("labels")? {
        // A labels file that cannot be read exactly is refused: the labels pick the zone.
        Some(text) => {
            parse_labels(&text).map_err(|why| OwnError::PodInfo { path: dir.join("labels"), why })?
        }
        None => Vec::new(),
    };
    let trimmed = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let name = trimmed(file("name")?)
        .or_else(|| trimmed(env("POD_NAME")))
        .or_else(|| trimmed(std::fs::read_to_string("/proc/sys/kernel/hostname").ok()))
        .ok_or_else(|| OwnError::Name("no name file, no POD_NAME and no hostname".into()))?;
    if name.chars().any(char::is_control) {
        return Err(OwnError::Name(format!("{name:?} has control characters")));
    }
    let namespace = trimmed(file("namespace")?).or_else(|| trimmed(env("POD_NAMESPACE")));
    Ok(OwnIdentity { name, namespace, labels })
}

/// Parses the downward API's labels file: one `key="value"` per line, the value quoted as
/// Go's `%q` does (`\"`, `\\`, `\n`, `\t`, `\r`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`). Anything
/// else is an error naming the line.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (key, quoted) = line.split_once('=').ok_or(format!("line {n}: no `=`"))?;
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("line {n}: bad label key {key:?}"));
        }
        let value = unquote(quoted).map_err(|why| format!("line {n}: {why}"))?;
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("line {n}: label {key:?} given twice"));
        }
        out.push((key.to_string(), value));
        if out.len() > MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
    }
    out.sort();
    Ok(out)
}

fn unquote(q: &str) -> Result<String, String> {
    let inner =
        q.strip_prefix('"').and_then(|r| r.strip_suffix('"')).ok_or("the value is not in double quotes")?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("an unescaped quote inside the value".into()),
            '\\' => {
                let e = chars.next().ok_or("a backslash at the end")?;
                let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
                    let digits: String = chars.by_ref().take(n).collect();
                    if digits.len() != n {
                        return Err("a short escape".into());
                    }
                    u32::from_str_radix(&digits, 16).map_err(|_| format!("bad hex escape {digits:?}"))
                };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    // A raw byte: only ASCII survives into a (UTF-8) string; Go writes
                    // `\x` only for bytes that are not valid UTF-8.
                    'x' => match hex(&mut chars, 2)? {
                        b @ 0..=0x7f => out.push(b as u8 as char),
                        b => return Err(format!("byte \\x{b:02x} is not UTF-8 text")),
                    },
                    'u' => out.push(char::from_u32(hex(&mut chars, 4)?).ok_or("not a character")?),
                    'U' => out.push(char::from_u32(hex(&mut chars, 8)?).ok_or("not a character")?),
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether the calling process's network namespace is the host's: kthreadd (pid 2) always
/// lives in it. Only visible when the process shares the host's pid namespace; `false`
/// when it cannot tell.
/// `Ok` when this is not the host's network namespace. The host's is kthreadd's: visible
/// only in the host's PID namespace, and comparable only with CAP_SYS_PTRACE. In a pod's
/// PID namespace there is no kthreadd (pid 2 is another process of the pod): not the host.
/// In the host's PID namespace without the right to compare, which namespace this is
/// cannot be told, and `--self` refuses (fail closed: a NET_ADMIN process on a host must
/// not take the host's namespace for a pod's).
fn host_namespace_check() -> Result<(), OwnError> {
    use crate::netns::NsId;
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if !kthreadd {
        return Ok(());
    }
    match (NsId::of(Path::new("/proc/2/ns/net")), NsId::of(Path::new(OWN_NETNS))) {
        (Ok(a), Ok(b)) if a == b => Err(OwnError::HostNamespace),
        (Ok(_), Ok(_)) => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(OwnError::HostUnknown(e.to_string())),
    }
}

/// The inventory of the one container, as TOML (serialized, so any label text is quoted
/// correctly).
pub fn inventory_toml(id: &OwnIdentity, addresses: &[IpAddr]) -> String {
    let mut c = toml::Table::new();
    c.insert("name".into(), id.name.clone().into());
    c.insert("netns".into(), OWN_NETNS.into());
    if let Some(ns) = &id.namespace {
        c.insert("kubernetes_namespace".into(), ns.clone().into());
    }
    let labels: toml::Table = id.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    c.insert("labels".into(), labels.into());
    c.insert(
        "addresses".into(),
        toml::Value::Array(addresses.iter().map(|a| a.to_string().into()).collect()),
    );
    let mut doc = toml::Table::new();
    doc.insert("container".into(), toml::Value::Array(vec![c.into()]));
    format!(
        "# Written by `fw-daemon run --self` from the pod's downward API: the only container.\n{}",
        toml::to_string(&doc).unwrap_or_default()
    )
}

/// Describes the pod and writes its one-entry inventory into `state_dir`; returns its path.
pub fn write_inventory(pod_info: &Path, state_dir: &Path) -> Result<(OwnIdentity, PathBuf), OwnError> {
    host_namespace_check()?;
    let (id, path, _) = refresh_inventory(pod_info, state_dir)?;
    Ok((id, path))
}

/// Describes the pod again (kubelet rewrites the downward API's `labels` when the pod is
/// relabelled) and rewrites the inventory if that changed it (`true`), which the
/// daemon's inventory watch then loads.
pub fn refresh_inventory(
    pod_info: &Path,
    state_dir: &Path,
) -> Result<(OwnIdentity, PathBuf, bool), OwnError> {
    let id = read_identity(pod_info, &|k| std::env::var(k).ok())?;
    let wire =
        super::docker::wire_identity(Path::new(OWN_NETNS)).map_err(|e| OwnError::Addresses(e.to_string()))?;
    let path = state_dir.join("self-inventory.toml");
    let text = inventory_toml(&id, &wire.addresses);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok((id, path, false));
    }
    let io = |e: std::io::Error| OwnError::PodInfo { path: path.clone(), why: e.to_string() };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let tmp = state_dir.join(".self-inventory.toml.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok((id, path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_the_downward_api_writes_them() {
        let text = "app=\"api\"\npod-template-hash=\"7f9c\"\nnote=\"a \\\"b\\\" \\\\ c\\n\\u00e9\"\n";
        assert_eq!(
            parse_labels(text).unwrap(),
            vec![
                ("app".into(), "api".into()),
                ("note".into(), "a \"b\" \\ c\n\u{e9}".into()),
                ("pod-template-hash".into(), "7f9c".into()),
            ]
        );
        for bad in [
            "app=api",
            "app=\"a\"b\"",
            "=\"x\"",
            "app=\"\\q\"",
            "app=\"\\xff\"",
            "app=\"x",
            "novalue",
            "a=\"1\"\na=\"2\"",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn identity_from_files_then_environment() {
        let dir = std::env::temp_dir().join(format!("fw-podinfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("labels"), "app=\"api\"\n").unwrap();
        let env = |k: &str| match k {
            "POD_NAME" => Some("api-7f".to_string()),
            "POD_NAMESPACE" => Some("prod".to_string()),
            _ => None,
        };
        let id = read_identity(&dir, &env).unwrap();
        assert_eq!(
            id,
            OwnIdentity {
                name: "api-7f".into(),
                namespace: Some("prod".into()),
                labels: vec![("app".into(), "api".into())]
            }
        );
        std::fs::write(dir.join("name"), "api-from-file\n").unwrap();
        assert_eq!(read_identity(&dir, &env).unwrap().name, "api-from-file");
        std::fs::write(dir.join("labels"), "app=api\n").unwrap();
        assert!(read_identity(&dir, &env).is_err(), "a labels file it cannot read exactly is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What `inventory_toml` writes is what the inventory parser reads back, quotes and all.
    #[test]
    fn the_written_inventory_reads_back() {
        let id = OwnIdentity {
            name: "api-7f".into(),
            namespace: Some("prod".into()),
            labels: vec![("app".into(), "a \"quoted\" = value".into())],
        };
        let text = inventory_toml(&id, &["10.1.2.3".parse().unwrap()]);
        let inv = crate::inventory::parse_inventory(Path::new("self.toml"), &text).expect(&text);
        let c = &inv.containers[0];
        assert_eq!((c.name.as_str(), c.netns.as_deref()), ("api-7f", Some(Path::new(OWN_NETNS))));
        assert_eq!(c.labels, id.labels);
        assert_eq!(c.kube.as_ref().map(|k| k.namespace.as_str()), Some("prod"));
        assert_eq!(c.addresses, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
    }
}
