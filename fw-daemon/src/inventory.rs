//! The static container inventory (a TOML file): for plain namespaces like the demo lab and for
//! hosts without Docker. Each entry names a container, its netns and its identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::rules::diag::LineIndex;
use crate::rules::{Diagnostic, Identity, Severity};

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
}

/// An inventory's `link = { netns = "...", ifname = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHint {
    pub netns: PathBuf,
    pub ifname: Option<String>,
}

impl Container {
    pub fn identity(&self) -> Identity<'_> {
        Identity { name: &self.name, image: &self.image, labels: &self.labels }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub containers: Vec<Container>,
}

impl Inventory {
    pub fn get(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn by_address(&self, addr: IpAddr) -> Option<&Container> {
        self.containers.iter().find(|c| c.addresses.contains(&addr))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    container: Vec<toml::Spanned<RawContainer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    name: String,
    netns: Option<PathBuf>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    addresses: Vec<toml::Spanned<String>>,
    link: Option<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    netns: PathBuf,
    ifname: Option<String>,
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

/// Parses an inventory; pure. Names must be unique, addresses valid and not shared.
pub fn parse_inventory(path: &Path, text: &str) -> Result<Inventory, Vec<Diagnostic>> {
    let path = Arc::new(path.to_path_buf());
    let lines = LineIndex::new(text);
    let at = |offset: usize, msg: String| {
        let (line, col) = lines.locate(text, offset);
        Diagnostic { severity: Severity::Error, path: path.clone(), line, col, message: msg }
    };
    let raw: RawInventory = toml::from_str(text).map_err(|e| {
        let off = e.span().map_or(0, |s| s.start);
        vec![at(off, e.message().lines().next().unwrap_or("invalid inventory").to_string())]
    })?;
    let mut diags = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    let mut netns_of: HashMap<String, Option<PathBuf>> = HashMap::new();
    let mut containers = Vec::with_capacity(raw.container.len());
    for entry in raw.container {
        let start = entry.span().start;
        let c = entry.into_inner();
        if c.name.is_empty() {
            diags.push(at(start, "container `name` is empty".into()));
            continue;
        }
        if names.insert(c.name.clone(), start).is_some() {
            diags.push(at(start, format!("container `{}` is listed twice", c.name)));
            continue;
        }
        netns_of.insert(c.name.clone(), c.netns.clone());
        let mut addresses = Vec::with_capacity(c.addresses.len());
        for a in c.addresses {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => {
                    // Containers sharing one namespace share its addresses; anyone else
                    // claiming an address is a mistake.
                    let shared = |other: &str| {
                        c.netns.is_some()
                            && netns_of.get(other).is_some_and(|n| n.as_ref() == c.netns.as_ref())
                    };
                    match owners.insert(ip, c.name.clone()) {
                        Some(other) if !shared(&other) => diags.push(at(
                            a.span().start,
                            format!("address {ip} of `{}` is also `{other}`'s", c.name),
                        )),
                        _ => {}
                    }
                    addresses.push(ip);
                }
                Err(_) => diags
                    .push(at(a.span().start, format!("`{}` is not an IPv4 or IPv6 address", a.get_ref()))),
            }
        }
        containers.push(Container {
            name: c.name,
            netns: c.netns,
            image: c.image,
            labels: c.labels.into_iter().collect(),
            addresses,
            link: c.link.map(|l| LinkHint { netns: l.netns, ifname: l.ifname }),
        });
    }
    if diags.is_empty() {
        Ok(Inventory { containers })
    } else {
        Err(diags)
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
        assert!(errs[0].to_string().starts_with("i.toml:3:1: error: unknown field `img`"), "{}", errs[0]);
    }
}
