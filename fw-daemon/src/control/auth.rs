//! Who is on the other end of a control connection, and what they may do. Identity is
//! taken once, when the connection is accepted, and kept for its life: the uid and gid from
//! SO_PEERCRED (the kernel's word, recorded at connect()), the supplementary groups from the
//! connecting process itself, pinned by a pidfd (SO_PEERPIDFD): `/proc/PID/status` is read,
//! then the pidfd is checked to still own PID, so the groups read cannot be those of a
//! process that reused the pid. Nothing is re-read per request; a group change applies when
//! the client reconnects. A peer whose groups cannot be proven (it exited already, or the
//! kernel has no SO_PEERPIDFD and it is gone) keeps only its primary gid.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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

/// Reads the peer's credentials, once, at accept.
pub fn credentials(sock: &impl AsFd) -> std::io::Result<Credentials> {
    let cred = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let pidfd = nix_pidfd::sys::socket::getsockopt(sock, nix_pidfd::sys::socket::sockopt::PeerPidfd).ok();
    let (mut gids, process) = match of_process(pid, pidfd.as_ref()) {
        Some((groups, comm)) => (groups, comm),
        None => {
            tracing::debug!(
                pid,
                uid,
                "control: peer's groups unproven (gone, or no pidfd): primary gid only"
            );
            (Vec::new(), None)
        }
    };
    gids.push(gid);
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    Ok(Credentials { peer: Peer { uid, gid, pid, user, process }, gids })
}

/// The supplementary groups and name of process `pid`, when they provably belong to the
/// process that connected: read from /proc, then `pidfd` (that process) must still own
/// `pid`. Without a pidfd (kernels before 6.5) the read is taken as is: it happens at
/// accept, right after the connect, not per request.
fn of_process(pid: i32, pidfd: Option<&OwnedFd>) -> Option<(Vec<u32>, Option<String>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string());
    if let Some(fd) = pidfd {
        if pidfd_pid(fd) != Some(pid) {
            return None;
        }
    }
    Some((supplementary_groups(&status), comm))
}

/// The pid a pidfd's process has in our pid namespace; -1 (so `None` here for any real
/// pid) once it has been reaped and its pid could be reused.
fn pidfd_pid(fd: &OwnedFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse().ok())
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

    /// The pidfd check itself: a pidfd vouches for its own process's pid and no other.
    #[test]
    fn a_pidfd_owns_its_pid_only_while_the_process_lives() {
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        // A socketpair's peer is this very process.
        let c = credentials(&a).unwrap();
        assert_eq!(c.peer.pid as u32, std::process::id());
        assert!(c.peer.process.is_some(), "the name of a live peer is read: {c:?}");
        let fd = nix_pidfd::sys::socket::getsockopt(&b, nix_pidfd::sys::socket::sockopt::PeerPidfd);
        let Ok(fd) = fd else {
            // CI's kernel has it (6.18): there the check must run, never skip.
            assert!(std::env::var("CI").as_deref() != Ok("true"), "SO_PEERPIDFD is required under CI=true");
            eprintln!("skipping: this kernel has no SO_PEERPIDFD");
            return;
        };
        assert_eq!(pidfd_pid(&fd), Some(std::process::id() as i32));
        // /proc/1 is readable, but it is not the pidfd's process: its groups are not taken.
        assert!(of_process(1, Some(&fd)).is_none());
        assert!(of_process(std::process::id() as i32, Some(&fd)).is_some());
    }

    #[test]
    fn groups_line() {
        assert_eq!(supplementary_groups("Name:\\tx\\nGroups:\\t4 24 27 \\nX: 1"), Vec::<u32>::new());
        assert_eq!(supplementary_groups("Name:\tx\nGroups:\t4 24 27 \nX: 1"), vec![4, 24, 27]);
        assert_eq!(supplementary_groups("Groups:\n"), Vec::<u32>::new());
    }
}
