//! The static container inventory (a TOML file): for plain namespaces like the demo lab and for
//! hosts without Docker. Each entry names a container, its netns and its identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::rules::diag::LineIndex;
use crate::rules::{Diagnostic, Identity, Severity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// `/run/netns/NAME`, `/proc/PID/ns/net`, ...; `None` when only planning.
    pub netns: Option<PathBuf>,
    pub image: String,
    pub labels: Vec<(String, String)>,
    pub addresses: Vec<IpAddr>,
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
        let mut addresses = Vec::with_capacity(c.addresses.len());
        for a in c.addresses {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(other) = owners.insert(ip, c.name.clone()) {
                        diags.push(at(
                            a.span().start,
                            format!("address {ip} of `{}` is also `{other}`'s", c.name),
                        ));
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
    fn unknown_keys_are_errors_with_position() {
        let errs =
            parse_inventory(Path::new("i.toml"), "[[container]]\nname = \"a\"\nimg = \"x\"\n").unwrap_err();
        assert!(errs[0].to_string().starts_with("i.toml:3:1: error: unknown field `img`"), "{}", errs[0]);
    }
}
