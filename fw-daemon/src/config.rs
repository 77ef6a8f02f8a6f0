//! `fw-daemon run` settings: built-in defaults, then the optional config file
//! (`/etc/fw/fw-daemon.toml`, or `--config`), then command-line flags, each overriding the
//! one before. Pure: the caller reads the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::rules::diag::LineIndex;

pub const DEFAULT_CONFIG: &str = "/etc/fw/fw-daemon.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// What happens to traffic of containers no source has identified (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Unknown {
    /// The host guard drops their frames at the bridge until their own table is programmed.
    Deny,
    /// No guard: they are treated as the `default` zone by their peers (their addresses are
    /// in no zone set) and have no table of their own until identified.
    DefaultZone,
}

/// Every setting, each optional: one layer (the file, or the flags).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub rules: Option<PathBuf>,
    pub inventory: Option<PathBuf>,
    /// `None`: Docker when its socket exists.
    pub docker: Option<bool>,
    pub docker_socket: Option<String>,
    /// Pods from the node's CRI runtime (the Kubernetes node agent) [default: false, or
    /// true when `cri_socket` is set].
    pub cri: Option<bool>,
    pub cri_socket: Option<String>,
    /// Seconds between two lists of the runtime's sandboxes.
    pub cri_poll: Option<f64>,
    /// Follow the Kubernetes API (namespace labels, pods on other nodes) [default: false,
    /// or true when `kube_api` is set]: in-cluster, else the kubeconfig.
    pub kube: Option<bool>,
    /// The API server's URL, instead of the in-cluster or kubeconfig one.
    pub kube_api: Option<String>,
    /// This node's name (its pods come from the CRI runtime) [default: $NODE_NAME].
    pub node_name: Option<String>,
    pub unknown_containers: Option<Unknown>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_group: Option<u16>,
    /// Seconds between drift checks.
    pub tick: Option<f64>,
    /// Seconds between full re-reads.
    pub resync: Option<f64>,
    /// Control socket path, or "none".
    pub socket: Option<PathBuf>,
    /// Group owning the socket file (who can connect at all) [default: viewer_group].
    pub socket_group: Option<String>,
    pub operator_group: Option<String>,
    pub viewer_group: Option<String>,
    pub admin_group: Option<String>,
    /// Audit log path, or "none".
    pub audit_log: Option<PathBuf>,
    /// The audit log is rotated (`PATH.1`, `PATH.2`, ...) once it reaches this size.
    pub audit_max_bytes: Option<u64>,
    /// Rotated audit files kept at most.
    pub audit_keep: Option<usize>,
    /// Rotated audit files last written longer ago than this are deleted (unset: never).
    pub audit_retention_days: Option<u32>,
    /// Flow table rows held at most.
    pub max_flows: Option<usize>,
    /// Restores of one container's table within `tamper_window` seconds that quarantine it
    /// at the floor (0: never).
    pub tamper_repairs: Option<u32>,
    pub tamper_window: Option<f64>,
    /// Delete established flows a new policy denies [default: true].
    pub revoke_established: Option<bool>,
    /// Networks a quarantined container may still reach (forensics, a responder's host).
    pub quarantine_responders: Option<Vec<String>>,
    /// Bytes in one rule file, in all of them together, and in the inventory file.
    pub max_rule_file_bytes: Option<u64>,
    pub max_rules_bytes: Option<u64>,
    pub max_inventory_bytes: Option<u64>,
}

impl Layer {
    /// `self` where set, else `lower`.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            rules: self.rules.or(lower.rules),
            inventory: self.inventory.or(lower.inventory),
            docker: self.docker.or(lower.docker),
            docker_socket: self.docker_socket.or(lower.docker_socket),
            cri: self.cri.or(lower.cri),
            cri_socket: self.cri_socket.or(lower.cri_socket),
            cri_poll: self.cri_poll.or(lower.cri_poll),
            kube: self.kube.or(lower.kube),
            kube_api: self.kube_api.or(lower.kube_api),
            node_name: self.node_name.or(lower.node_name),
            unknown_containers: self.unknown_containers.or(lower.unknown_containers),
            state_dir: self.state_dir.or(lower.state_dir),
            log_format: self.log_format.or(lower.log_format),
            log_group: self.log_group.or(lower.log_group),
            tick: self.tick.or(lower.tick),
            resync: self.resync.or(lower.resync),
            socket: self.socket.or(lower.socket),
            socket_group: self.socket_group.or(lower.socket_group),
            operator_group: self.operator_group.or(lower.operator_group),
            viewer_group: self.viewer_group.or(lower.viewer_group),
            admin_group: self.admin_group.or(lower.admin_group),
            audit_log: self.audit_log.or(lower.audit_log),
            audit_max_bytes: self.audit_max_bytes.or(lower.audit_max_bytes),
            audit_keep: self.audit_keep.or(lower.audit_keep),
            audit_retention_days: self.audit_retention_days.or(lower.audit_retention_days),
            max_flows: self.max_flows.or(lower.max_flows),
            tamper_repairs: self.tamper_repairs.or(lower.tamper_repairs),
            tamper_window: self.tamper_window.or(lower.tamper_window),
            revoke_established: self.revoke_established.or(lower.revoke_established),
            quarantine_responders: self.quarantine_responders.or(lower.quarantine_responders),
            max_rule_file_bytes: self.max_rule_file_bytes.or(lower.max_rule_file_bytes),
            max_rules_bytes: self.max_rules_bytes.or(lower.max_rules_bytes),
            max_inventory_bytes: self.max_inventory_bytes.or(lower.max_inventory_bytes),
        }
    }
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub rules: PathBuf,
    pub inventory: Option<PathBuf>,
    pub docker: Option<String>,
    /// The CRI runtime's socket and poll interval, when pods come from it.
    pub cri: Option<(String, Duration)>,
    /// The Kubernetes API, when followed.
    pub kube: Option<crate::discovery::kube::KubeSettings>,
    pub unknown_containers: Unknown,
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub log_group: u16,
    pub tick: Duration,
    pub resync: Duration,
    /// `None`: no control socket.
    pub socket: Option<PathBuf>,
    pub socket_group: String,
    pub roles: crate::control::Roles,
    /// `None`: no audit log.
    pub audit_log: Option<PathBuf>,
    pub audit_rotation: crate::control::audit::Rotation,
    pub max_flows: usize,
    pub containment: crate::containment::ContainmentConfig,
    pub read_limits: crate::rules::ReadLimits,
    pub max_inventory_bytes: u64,
}

pub const DEFAULT_MAX_INVENTORY_BYTES: u64 = 8 << 20;

/// "none" turns a path setting off.
fn optional_path(p: Option<PathBuf>, default: &str) -> Option<PathBuf> {
    let p = p.unwrap_or_else(|| PathBuf::from(default));
    (p.as_os_str() != "none").then_some(p)
}

/// Parses a config file; errors as `path:line:col: error: ...`.
pub fn parse(path: &Path, text: &str) -> Result<Layer, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let msg = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let (line, col) = LineIndex::new(text).locate(text, span.start);
                format!("{}:{line}:{col}: error: {msg}", path.display())
            }
            None => format!("{}: error: {msg}", path.display()),
        }
    })
}

fn seconds(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{what}: expected a positive number of seconds, got {s}"))
}

/// Fills in defaults; `docker_socket_exists` decides the Docker default.
pub fn resolve(layer: Layer, docker_socket_exists: impl Fn(&str) -> bool) -> Result<Settings, String> {
    let socket = layer.docker_socket.unwrap_or_else(|| crate::discovery::docker::DEFAULT_SOCKET.to_string());
    let docker = layer.docker.unwrap_or_else(|| docker_socket_exists(&socket));
    let cri = match layer.cri.unwrap_or(layer.cri_socket.is_some()) {
        false => None,
        true => Some((
            layer.cri_socket.unwrap_or_else(|| crate::discovery::cri::DEFAULT_SOCKET.to_string()),
            seconds(layer.cri_poll.unwrap_or(crate::discovery::cri::DEFAULT_POLL.as_secs_f64()), "cri_poll")?,
        )),
    };
    Ok(Settings {
        rules: layer.rules.unwrap_or_else(|| PathBuf::from("/etc/fw/rules")),
        inventory: layer.inventory,
        docker: docker.then_some(socket),
        cri,
        kube: layer.kube.unwrap_or(layer.kube_api.is_some()).then(|| crate::discovery::kube::KubeSettings {
            api: layer.kube_api.clone(),
            node: layer.node_name.clone().filter(|n| !n.is_empty()),
        }),
        unknown_containers: layer.unknown_containers.unwrap_or(Unknown::Deny),
        state_dir: layer.state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/fw")),
        log_format: layer.log_format.unwrap_or(LogFormat::Human),
        log_group: layer.log_group.unwrap_or(100),
        tick: seconds(layer.tick.unwrap_or(1.0), "tick")?,
        resync: seconds(layer.resync.unwrap_or(5.0), "resync")?,
        socket: optional_path(layer.socket, fw_proto::control::DEFAULT_SOCKET),
        socket_group: layer
            .socket_group
            .or_else(|| layer.viewer_group.clone())
            .unwrap_or_else(|| "fw-viewer".into()),
        roles: crate::control::Roles {
            operator_group: layer.operator_group.unwrap_or_else(|| "fw-operator".into()),
            viewer_group: layer.viewer_group.unwrap_or_else(|| "fw-viewer".into()),
            admin_group: layer.admin_group,
        },
        audit_log: optional_path(layer.audit_log, "/var/log/fw/audit.jsonl"),
        audit_rotation: crate::control::audit::Rotation {
            max_bytes: match layer.audit_max_bytes.unwrap_or(64 << 20) {
                n if n < 4096 => return Err("audit_max_bytes: expected at least 4096".into()),
                n => n,
            },
            keep: match layer.audit_keep.unwrap_or(20) {
                0 => return Err("audit_keep: expected at least 1 (rotated files kept)".into()),
                n => n.min(10_000),
            },
            max_age: match layer.audit_retention_days {
                Some(0) => return Err(
                    "audit_retention_days: expected at least 1 (leave it out to keep files by count only)"
                        .into(),
                ),
                d => d.map(|d| Duration::from_secs(u64::from(d) * 86_400)),
            },
        },
        max_flows: match layer.max_flows.unwrap_or(100_000) {
            0 => return Err("max_flows: expected at least 1".into()),
            n => n,
        },
        containment: crate::containment::ContainmentConfig {
            tamper: crate::containment::TamperPolicy {
                repairs: layer.tamper_repairs.unwrap_or(3),
                window: seconds(layer.tamper_window.unwrap_or(10.0), "tamper_window")?,
            },
            revoke: layer.revoke_established.unwrap_or(true),
            floor: crate::floor::FloorOptions {
                responders: layer
                    .quarantine_responders
                    .unwrap_or_default()
                    .iter()
                    .map(|n| {
                        crate::rules::load::parse_cidr(n)
                            .map_err(|e| format!("quarantine_responders: `{n}`: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
                ..crate::floor::FloorOptions::default()
            },
            ..crate::containment::ContainmentConfig::default()
        },
        read_limits: crate::rules::ReadLimits {
            max_file_bytes: positive(
                layer.max_rule_file_bytes,
                crate::rules::load::DEFAULT_MAX_RULE_FILE_BYTES,
                "max_rule_file_bytes",
            )?,
            max_total_bytes: positive(
                layer.max_rules_bytes,
                crate::rules::load::DEFAULT_MAX_RULES_BYTES,
                "max_rules_bytes",
            )?,
        },
        max_inventory_bytes: positive(
            layer.max_inventory_bytes,
            DEFAULT_MAX_INVENTORY_BYTES,
            "max_inventory_bytes",
        )?,
    })
}

fn positive(v: Option<u64>, default: u64, what: &str) -> Result<u64, String> {
    match v.unwrap_or(default) {
        0 => Err(format!("{what}: expected at least 1")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_socket_or_an_api_url_turns_its_source_on() {
        let off = resolve(Layer::default(), |_| false).unwrap();
        assert_eq!((off.cri, off.kube), (None, None), "Kubernetes sources are off by default");
        let on = resolve(
            Layer {
                cri_socket: Some("/var/run/crio/crio.sock".into()),
                kube_api: Some("http://127.0.0.1:6443".into()),
                node_name: Some("node-a".into()),
                ..Layer::default()
            },
            |_| false,
        )
        .unwrap();
        assert_eq!(on.cri, Some(("/var/run/crio/crio.sock".into(), crate::discovery::cri::DEFAULT_POLL)));
        let k = on.kube.expect("the API followed");
        assert_eq!((k.api.as_deref(), k.node.as_deref()), (Some("http://127.0.0.1:6443"), Some("node-a")));
        let cri = resolve(Layer { cri: Some(true), ..Layer::default() }, |_| false).unwrap().cri;
        assert_eq!(cri.map(|c| c.0).as_deref(), Some(crate::discovery::cri::DEFAULT_SOCKET));
        assert!(
            resolve(Layer { cri: Some(true), cri_poll: Some(0.0), ..Layer::default() }, |_| false).is_err()
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file =
            parse(Path::new("fw.toml"), "rules = \"/srv/rules\"\ntick = 2.5\ndocker = false\n").unwrap();
        let flags = Layer { tick: Some(0.5), ..Layer::default() };
        let s = resolve(flags.over(file), |_| true).unwrap();
        assert_eq!(s.rules, PathBuf::from("/srv/rules"));
        assert_eq!(s.tick, Duration::from_millis(500));
        assert_eq!(s.docker, None, "the file said no Docker");
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/fw"));
        assert_eq!(s.unknown_containers, Unknown::Deny);
        let dz = parse(Path::new("f.toml"), "unknown_containers = \"default-zone\"\n").unwrap();
        assert_eq!(resolve(dz, |_| false).unwrap().unknown_containers, Unknown::DefaultZone);
        let auto = resolve(Layer::default(), |p| p == "/var/run/docker.sock").unwrap();
        assert_eq!(auto.docker.as_deref(), Some("/var/run/docker.sock"));
        assert_eq!(resolve(Layer::default(), |_| false).unwrap().docker, None);
    }

    #[test]
    fn the_shipped_example_parses_and_means_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fw-daemon.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example = resolve(parse(&path, &text).unwrap(), |_| false).unwrap();
        let defaults = resolve(Layer::default(), |_| false).unwrap();
        assert_eq!(example.socket, defaults.socket);
        assert_eq!(example.socket.as_deref(), Some(Path::new("/run/fw/fw.sock")));
        assert_eq!(example.roles, defaults.roles);
        assert_eq!(example.audit_log, defaults.audit_log);
        assert_eq!(example.max_flows, 100_000);
        assert_eq!(example.read_limits, defaults.read_limits);
        assert_eq!(example.read_limits.max_file_bytes, 1 << 20);
        assert_eq!(example.read_limits.max_total_bytes, 8 << 20);
        assert_eq!(example.max_inventory_bytes, defaults.max_inventory_bytes);
        let off = parse(Path::new("f.toml"), "socket = \"none\"\naudit_log = \"none\"\n").unwrap();
        let off = resolve(off, |_| false).unwrap();
        assert_eq!((off.socket, off.audit_log), (None, None));
    }

    #[test]
    fn file_errors_point_at_the_line() {
        let e = parse(Path::new("/etc/fw/fw-daemon.toml"), "rules = \"/x\"\ntik = 1\n").unwrap_err();
        assert!(e.starts_with("/etc/fw/fw-daemon.toml:2:1: error: unknown field `tik`"), "{e}");
        let e = parse(Path::new("f.toml"), "log_format = \"xml\"\n").unwrap_err();
        assert!(e.starts_with("f.toml:1:14: error:"), "{e}");
        let e = resolve(Layer { resync: Some(-1.0), ..Layer::default() }, |_| false).unwrap_err();
        assert!(e.contains("resync"), "{e}");
    }
}
