//! The static container inventory (a TOML file): for plain namespaces like the demo lab and for
//! hosts without Docker. Each entry names a container, its netns and its identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use crate::rules::reader::{get, FileCtx};
use crate::rules::{Diagnostic, Identity, Severity, SourcePos};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub name: String,
    /// `/run/netns/NAME`, `/proc/PID/ns/net`, ...; `None` when only planning.
    pub netns: Option<PathBuf>,
    pub image: String,
    pub labels: Vec<(String, String)>,
    pub addresses: Vec<IpAddr>,
    /// Where its host side is, when discovery cannot find it by itself (a namespace not
    /// under /run/netns): the floor's namespace, and optionally the port's name there.
    pub link: Option<LinkHint>,
    /// A Kubernetes pod's namespace and that namespace's labels (what `match.namespace` and
    /// `match.namespace_labels` select by); `None` for Docker and inventory containers.
    pub kube: Option<KubeMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeMeta {
    pub namespace: String,
    pub namespace_labels: Vec<(String, String)>,
}

/// An inventory's `link = { netns = "...", ifname = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHint {
    pub netns: PathBuf,
    pub ifname: Option<String>,
}

impl Container {
    pub fn identity(&self) -> Identity<'_> {
        Identity {
            name: &self.name,
            image: &self.image,
            labels: &self.labels,
            kube: self.kube.as_ref().map(|k| (k.namespace.as_str(), k.namespace_labels.as_slice())),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub containers: Vec<Container>,
    /// Virtual addresses (Kubernetes Services) that stand for the peers behind them.
    pub services: Vec<ServiceVip>,
}

/// The transport a Service port forwards (SCTP ports are not modelled: fw's policies do not
/// speak SCTP, so their packets meet the default like any other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SvcProto {
    Tcp,
    Udp,
}

impl SvcProto {
    pub fn number(self) -> u8 {
        match self {
            SvcProto::Tcp => 6,
            SvcProto::Udp => 17,
        }
    }
}

/// One port of a virtual address, and where the node's proxy sends its packets: each
/// backend's address and the port there (a Service's `targetPort`, resolved per endpoint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub proto: SvcProto,
    pub port: u16,
    pub backends: Vec<(IpAddr, u16)>,
    /// Some backends are not known (over fw's caps): counted as one in no zone.
    pub incomplete: bool,
}

/// A virtual address (a Kubernetes Service's ClusterIPs): inside a pod's namespace egress
/// sees it before the node rewrites it to a backend, so it is judged as its backends are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceVip {
    /// `namespace/name`.
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

impl Inventory {
    pub fn get(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn by_address(&self, addr: IpAddr) -> Option<&Container> {
        self.containers.iter().find(|c| c.addresses.contains(&addr))
    }
}

/// Reads and checks an inventory file.
pub fn load_inventory(path: &Path) -> Result<Inventory, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::whole_file(
            Severity::Error,
            Arc::new(path.to_path_buf()),
            format!("cannot read inventory: {e}"),
        )]
    })?;
    parse_inventory(path, &text)
}

/// Parses an inventory; pure. Names must be unique, addresses valid and not shared. Every
/// problem is reported, in the same `path:line:col` dialect (with a "did you mean") as the
/// rule files.
pub fn parse_inventory(path: &Path, text: &str) -> Result<Inventory, Vec<Diagnostic>> {
    let mut cx = FileCtx::new(Arc::new(path.to_path_buf()), text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in &errors {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message();
        cx.error(&span, format!("TOML syntax: {}", msg.lines().next().unwrap_or(msg).trim()));
    }
    let mut containers = Vec::new();
    let mut services = Vec::new();
    if errors.is_empty() {
        read_containers(&mut cx, doc.get_ref(), &mut containers);
        read_services(&mut cx, doc.get_ref(), &containers, &mut services);
    }
    let diags = cx.finish();
    if diags.is_empty() {
        Ok(Inventory { containers, services })
    } else {
        Err(diags)
    }
}

const TOP_KEYS: &[&str] = &["container", "service"];
const SERVICE_KEYS: &[&str] = &["name", "addresses", "ports", "endpoints"];
const SERVICE_PORT_KEYS: &[&str] = &["proto", "port", "target"];
const CONTAINER_KEYS: &[&str] =
    &["name", "netns", "image", "labels", "addresses", "link", "kubernetes_namespace"];
const LINK_KEYS: &[&str] = &["netns", "ifname"];

fn read_containers(cx: &mut FileCtx<'_>, doc: &DeTable<'_>, out: &mut Vec<Container>) {
    cx.check_keys(doc, TOP_KEYS, "an inventory");
    let Some(v) = get(doc, "container") else { return };
    let DeValue::Array(items) = v.get_ref() else {
        cx.error(&v.span(), "`container` must be an array of tables: write each one as [[container]]");
        return;
    };
    // Where each name and address was first given, for the duplicates' messages.
    let mut names: HashMap<String, SourcePos> = HashMap::new();
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    let mut netns_of: HashMap<String, Option<PathBuf>> = HashMap::new();
    for item in items.iter() {
        let Some(t) = cx.table(item, "container") else { continue };
        cx.check_keys(t, CONTAINER_KEYS, "[[container]]");
        let name = match get(t, "name") {
            Some(nv) => cx.str(nv, "name").map(|n| (n.to_string(), nv.span())),
            None => {
                cx.error(&item.span(), "container needs a `name`");
                None
            }
        };
        let netns = get(t, "netns").and_then(|v| cx.str(v, "netns")).map(PathBuf::from);
        let image = get(t, "image").and_then(|v| cx.str(v, "image")).unwrap_or_default().to_string();
        let mut labels = Vec::new();
        if let Some(lt) = get(t, "labels").and_then(|v| cx.table(v, "labels")) {
            for (k, val) in lt.iter() {
                if let Some(s) = cx.str(val, &format!("labels.{}", k.get_ref())) {
                    labels.push((k.get_ref().to_string(), s.to_string()));
                }
            }
        }
        labels.sort();
        // A pod's namespace, for `match.namespace` (the sidecar mode writes it; namespace
        // labels are only known from the API server).
        let kube = get(t, "kubernetes_namespace")
            .and_then(|v| cx.str(v, "kubernetes_namespace"))
            .map(|ns| KubeMeta { namespace: ns.to_string(), namespace_labels: Vec::new() });
        let link = get(t, "link").and_then(|v| {
            let lt = cx.table(v, "link")?;
            cx.check_keys(lt, LINK_KEYS, "`link`");
            let ifname = get(lt, "ifname").and_then(|v| cx.str(v, "ifname")).map(str::to_string);
            match get(lt, "netns") {
                Some(nv) => cx.str(nv, "link.netns").map(|n| LinkHint { netns: n.into(), ifname }),
                None => {
                    cx.error(
                        &v.span(),
                        "`link` needs `netns` (the namespace holding the container's host side)",
                    );
                    None
                }
            }
        });
        let Some((name, name_span)) = name else { continue };
        if name.is_empty() {
            cx.error(&name_span, "container `name` is empty");
            continue;
        }
        if let Some(first) = names.get(&name) {
            let d = cx
                .diag(Severity::Error, &name_span, format!("container `{name}` is listed twice"))
                .note(format!("first listed at {first}"));
            cx.report(d);
            continue;
        }
        names.insert(name.clone(), cx.pos(&name_span));
        netns_of.insert(name.clone(), netns.clone());
        let mut addresses = Vec::new();
        if let Some(av) = get(t, "addresses") {
            for (a, span) in cx.str_list(av, "addresses") {
                let Ok(ip) = a.trim().parse::<IpAddr>() else {
                    let hint = a.parse::<ipnet::IpNet>().map(|n| format!("; did you mean `{}`?", n.addr()));
                    cx.error(
                        &span,
                        format!("`{a}` is not an IPv4 or IPv6 address{}", hint.unwrap_or_default()),
                    );
                    continue;
                };
                // Containers sharing one namespace share its addresses; anyone else
                // claiming an address is a mistake.
                let shared = |other: &str| {
                    netns.is_some() && netns_of.get(other).is_some_and(|n| n.as_ref() == netns.as_ref())
                };
                match owners.insert(ip, name.clone()) {
                    Some(other) if !shared(&other) => {
                        cx.error(&span, format!("address {ip} of `{name}` is also `{other}`'s"))
                    }
                    _ => {}
                }
                addresses.push(ip);
            }
        }
        out.push(Container { name, netns, image, labels, addresses, link, kube });
    }
}

/// `[[service]]`: a virtual address, its ports and the endpoints behind them, as a
/// Kubernetes Service and its EndpointSlices say (for `explain`, and for hosts whose proxy
/// fw does not learn from an API server).
fn read_services(
    cx: &mut FileCtx<'_>,
    doc: &DeTable<'_>,
    containers: &[Container],
    out: &mut Vec<ServiceVip>,
) {
    let Some(v) = get(doc, "service") else { return };
    let DeValue::Array(items) = v.get_ref() else {
        cx.error(&v.span(), "`service` must be an array of tables: write each one as [[service]]");
        return;
    };
    let mut names: HashMap<String, SourcePos> = HashMap::new();
    for item in items.iter() {
        let Some(t) = cx.table(item, "service") else { continue };
        cx.check_keys(t, SERVICE_KEYS, "[[service]]");
        let Some((name, span)) =
            get(t, "name").and_then(|nv| cx.str(nv, "name").map(|n| (n.to_string(), nv.span())))
        else {
            cx.error(&item.span(), "service needs a `name`");
            continue;
        };
        if name.is_empty() {
            cx.error(&span, "service `name` is empty");
            continue;
        }
        if let Some(first) = names.get(&name) {
            let d = cx
                .diag(Severity::Error, &span, format!("service `{name}` is listed twice"))
                .note(format!("first listed at {first}"));
            cx.report(d);
            continue;
        }
        names.insert(name.clone(), cx.pos(&span));
        let addrs = |cx: &mut FileCtx<'_>, key: &str| -> Vec<IpAddr> {
            let Some(av) = get(t, key) else {
                cx.error(&item.span(), format!("service `{name}` needs `{key}`"));
                return Vec::new();
            };
            let mut out = Vec::new();
            for (a, span) in cx.str_list(av, key) {
                match a.trim().parse::<IpAddr>() {
                    Ok(ip) => out.push(ip),
                    Err(_) => cx.error(&span, format!("`{a}` is not an IPv4 or IPv6 address")),
                }
            }
            out
        };
        let addresses = addrs(cx, "addresses");
        // A container's own address as a VIP would change how every packet to it is judged.
        if let Some(av) = get(t, "addresses") {
            if addresses.is_empty() && !matches!(av.get_ref(), DeValue::Array(a) if a.iter().next().is_some())
            {
                cx.error(&av.span(), format!("service `{name}` has no addresses"));
            }
            for a in &addresses {
                if let Some(c) = containers.iter().find(|c| c.addresses.contains(a)) {
                    cx.error(
                        &av.span(),
                        format!("address {a} of service `{name}` is container `{}`'s", c.name),
                    );
                }
            }
        }
        let endpoints = addrs(cx, "endpoints");
        let mut ports = Vec::new();
        match get(t, "ports").map(|v| (v.span(), v.get_ref())) {
            Some((_, DeValue::Array(list))) => {
                for pv in list.iter() {
                    let Some(pt) = cx.table(pv, "ports") else { continue };
                    cx.check_keys(pt, SERVICE_PORT_KEYS, "a service port");
                    let proto = match get(pt, "proto")
                        .and_then(|v| cx.str(v, "proto").map(|s| (s.to_string(), v.span())))
                    {
                        None => SvcProto::Tcp,
                        Some((p, _)) if p == "tcp" => SvcProto::Tcp,
                        Some((p, _)) if p == "udp" => SvcProto::Udp,
                        Some((p, span)) => {
                            cx.error(&span, format!("service port proto `{p}`: expected \"tcp\" or \"udp\""));
                            continue;
                        }
                    };
                    let num = |cx: &mut FileCtx<'_>, key: &str| -> Option<u16> {
                        let v = get(pt, key)?;
                        match cx.uint(v, key, 65535)? {
                            0 => {
                                cx.error(&v.span(), format!("`{key}` must be a port, 1 to 65535"));
                                None
                            }
                            n => u16::try_from(n).ok(),
                        }
                    };
                    let Some(port) = num(cx, "port") else {
                        if get(pt, "port").is_none() {
                            cx.error(&pv.span(), "a service port needs `port`");
                        }
                        continue;
                    };
                    let target = if get(pt, "target").is_some() { num(cx, "target") } else { Some(port) };
                    let Some(target) = target else { continue };
                    ports.push(ServicePort {
                        proto,
                        port,
                        backends: endpoints.iter().map(|a| (*a, target)).collect(),
                        incomplete: false,
                    });
                }
            }
            Some((span, _)) => cx.error(&span, "`ports` must be an array: [{ port = 80, target = 8080 }]"),
            None => cx.error(&item.span(), format!("service `{name}` needs `ports`")),
        }
        out.push(ServiceVip { name, addresses, ports });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_duplicates() {
        let ok = parse_inventory(
            Path::new("inv.toml"),
            "[[container]]\nname = \"web-1\"\nlabels = { tier = \"web\" }\naddresses = [\"10.0.0.1\", \"fd00::1\"]\n",
        )
        .unwrap();
        assert_eq!(ok.containers[0].addresses.len(), 2);
        assert_eq!(ok.containers[0].labels, vec![("tier".to_string(), "web".to_string())]);

        let errs = parse_inventory(
            Path::new("inv.toml"),
            "[[container]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[[container]]\nname = \"b\"\naddresses = [\"10.0.0.1\", \"nope\"]\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "inv.toml:6:14: error: address 10.0.0.1 of `b` is also `a`'s",
                "inv.toml:6:26: error: `nope` is not an IPv4 or IPv6 address",
            ]
        );
    }

    #[test]
    fn sharers_of_one_namespace_share_its_addresses_and_links_are_hints() {
        let text = "[[container]]\nname = \"app\"\nnetns = \"/run/netns/pod\"\naddresses = [\"10.0.0.1\"]\n\
                    link = { netns = \"/run/netns/hub\", ifname = \"p3\" }\n\
                    [[container]]\nname = \"sidecar\"\nnetns = \"/run/netns/pod\"\naddresses = [\"10.0.0.1\"]\n";
        let inv = parse_inventory(Path::new("inv.toml"), text).unwrap();
        assert_eq!(inv.containers[1].addresses, inv.containers[0].addresses);
        assert_eq!(
            inv.containers[0].link,
            Some(LinkHint { netns: "/run/netns/hub".into(), ifname: Some("p3".into()) })
        );
        // Elsewhere, the same address is still a mistake.
        let other = text.replacen("/run/netns/pod", "/run/netns/other", 1);
        let errs = parse_inventory(Path::new("inv.toml"), &other).unwrap_err();
        assert!(errs[0].to_string().contains("address 10.0.0.1 of `sidecar` is also `app`'s"), "{}", errs[0]);
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let errs =
            parse_inventory(Path::new("i.toml"), "[[container]]\nname = \"a\"\nimg = \"x\"\n").unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "i.toml:3:1: error: unknown key `img` in [[container]]; did you mean `image`?"
        );
    }
}
