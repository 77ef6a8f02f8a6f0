//! Who is on the other end of a control connection, and what they may do: credentials from
//! SO_PEERCRED (the kernel's word, not the client's), groups from the peer process, and the
//! role they map to. Checked again on every request, so a peer whose group membership or
//! process changed does not keep a role it no longer has.

use std::os::fd::AsFd;

use fw_proto::control::{Peer, Role};

/// Group names that grant roles; root (uid 0) is always admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Members may block, unblock and reload.
    pub operator_group: String,
    /// Members may read status, flows, blocks and the audit log.
    pub viewer_group: String,
    /// Members are admins too (optional).
    pub admin_group: Option<String>,
}

impl Default for Roles {
    fn default() -> Self {
        Roles { operator_group: "fw-operator".into(), viewer_group: "fw-viewer".into(), admin_group: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub peer: Peer,
    /// Primary and supplementary gids of the peer process.
    pub gids: Vec<u32>,
}

/// Reads the peer's credentials from the socket, and its groups and name from /proc.
pub fn credentials(sock: &impl AsFd) -> std::io::Result<Credentials> {
    let cred = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut gids = supplementary_groups(&status);
    gids.push(gid);
    let process = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string());
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    Ok(Credentials { peer: Peer { uid, gid, pid, user, process }, gids })
}

/// The `Groups:` line of /proc/PID/status.
pub fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

impl Roles {
    /// The peer's role, or `None` when it has none (refused).
    pub fn role_of(&self, c: &Credentials, gid_of: impl Fn(&str) -> Option<u32>) -> Option<Role> {
        let member = |name: &str| gid_of(name).is_some_and(|g| c.gids.contains(&g));
        if c.peer.uid == 0 || self.admin_group.as_deref().is_some_and(member) {
            Some(Role::Admin)
        } else if member(&self.operator_group) {
            Some(Role::Operator)
        } else if member(&self.viewer_group) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// A group's gid from the system's group database.
pub fn system_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, gids: &[u32]) -> Credentials {
        Credentials {
            peer: Peer { uid, gid: gids[0], pid: 1, user: "u".into(), process: None },
            gids: gids.to_vec(),
        }
    }

    fn gid(name: &str) -> Option<u32> {
        match name {
            "fw-operator" => Some(2000),
            "fw-viewer" => Some(2001),
            "wheel" => Some(10),
            _ => None,
        }
    }

    #[test]
    fn roles_from_uid_and_groups() {
        let r = Roles::default();
        assert_eq!(r.role_of(&creds(0, &[0]), gid), Some(Role::Admin));
        assert_eq!(r.role_of(&creds(1000, &[1000, 2001]), gid), Some(Role::Viewer));
        assert_eq!(r.role_of(&creds(1000, &[1000, 2001, 2000]), gid), Some(Role::Operator));
        assert_eq!(r.role_of(&creds(1000, &[1000]), gid), None);
        let r = Roles { admin_group: Some("wheel".into()), ..Roles::default() };
        assert_eq!(r.role_of(&creds(1000, &[10]), gid), Some(Role::Admin));
        // A group that does not exist on the system grants nothing.
        let r = Roles { operator_group: "nope".into(), ..Roles::default() };
        assert_eq!(r.role_of(&creds(1000, &[2000]), gid), None);
    }

    #[test]
    fn groups_line() {
        assert_eq!(supplementary_groups("Name:\\tx\\nGroups:\\t4 24 27 \\nX: 1"), Vec::<u32>::new());
        assert_eq!(supplementary_groups("Name:\tx\nGroups:\t4 24 27 \nX: 1"), vec![4, 24, 27]);
        assert_eq!(supplementary_groups("Groups:\n"), Vec::<u32>::new());
    }
}
