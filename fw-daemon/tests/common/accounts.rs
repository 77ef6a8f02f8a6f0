//! Real system users and groups for tests of the socket's roles: created with
//! useradd/groupadd, removed on drop (users first, then groups), even when the test fails.

use std::process::Command;

#[derive(Default)]
pub struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

/// A short unique name: `fwt<pid><tag>` (user and group names stay under 32 characters).
pub fn name(tag: &str) -> String {
    format!("fwt{}{tag}", std::process::id() % 100_000)
}

impl Accounts {
    /// A new group; its gid.
    pub fn group(&mut self, name: &str) -> u32 {
        let st = Command::new("groupadd").arg(name).status().expect("groupadd");
        assert!(st.success(), "groupadd {name}");
        self.groups.push(name.to_string());
        nix::unistd::Group::from_name(name).unwrap().expect("the group just added").gid.as_raw()
    }

    /// A new system user (no home, no login shell) in `groups`; its uid.
    pub fn user(&mut self, name: &str, groups: &[&str]) -> u32 {
        let mut cmd = Command::new("useradd");
        cmd.args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]);
        if !groups.is_empty() {
            cmd.args(["--groups", &groups.join(",")]);
        }
        let st = cmd.arg(name).status().expect("useradd");
        assert!(st.success(), "useradd {name}");
        self.users.push(name.to_string());
        nix::unistd::User::from_name(name).unwrap().expect("the user just added").uid.as_raw()
    }

    /// `setpriv` arguments that run what follows as `user` with its groups from /etc/group.
    pub fn as_user(user: &str) -> Vec<String> {
        vec!["setpriv".into(), format!("--reuid={user}"), format!("--regid={user}"), "--init-groups".into()]
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).status();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).status();
        }
    }
}
