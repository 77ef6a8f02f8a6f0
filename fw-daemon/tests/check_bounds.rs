//! `fw-daemon check` on directories as engineers (and attackers with write access to a
//! neighbouring path) make them: symlinks that leave the rules directory are refused by
//! name while a ConfigMap's links work; files over the size limits are refused unread;
//! language holes that silently dropped policy are errors (`labels = {}`, ids posing as
//! fw's own); a failsafe that allows part of a deny is a warning. Run through the binary,
//! so every case can also be run against an older build (FW_DAEMON_BIN).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

const ZONES: &str = "[zone.web]\nmatch = { name = \"web-*\" }\n[zone.db]\nmatch = { name = \"db-*\" }\n";

fn dir(tag: &str) -> PathBuf {
    let d = common::work_dir("check", tag);
    fs::create_dir_all(d.join("rules")).unwrap();
    d
}

/// `check DIR`: (exit code, stderr).
fn check(rules: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::daemon::bin()).arg("check").arg(rules).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_symlink_out_of_the_rules_directory_is_refused_by_name() {
    let d = dir("symlink");
    let rules = d.join("rules");
    fs::write(rules.join("10-zones.toml"), ZONES).unwrap();
    // Somewhere else, writable by someone who should not write policy.
    fs::write(d.join("elsewhere.toml"), "[defaults]\naction = \"allow\"\n").unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere.toml"), rules.join("00-defaults.toml")).unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "{err}");
    let link = rules.join("00-defaults.toml");
    assert!(
        err.contains(&format!(
            "{}: error: symlink to {}",
            link.display(),
            d.join("elsewhere.toml").display()
        )) && err.contains("outside the rules directory"),
        "{err}"
    );
    // A dangling link is no silent loss of policy either.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("gone.toml", &link).unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{}: error: symlink that cannot be followed", link.display())), "{err}");
    // Links that stay inside, as a ConfigMap's do, are read, once each.
    fs::remove_file(&link).unwrap();
    let data = rules.join("..2026_01_01_00_00_00.000000001");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("20-policies.toml"), "[[policy]]\nfrom = \"web\"\nto = \"db\"\naction = \"deny\"\n")
        .unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000001", rules.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/20-policies.toml", rules.join("20-policies.toml")).unwrap();
    let out = std::process::Command::new(common::daemon::bin()).arg("check").arg(&rules).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("ok: 2 files"), "{stdout}");
}

#[test]
fn files_over_the_size_limits_are_refused() {
    let d = dir("size");
    let rules = d.join("rules");
    fs::write(rules.join("10-zones.toml"), ZONES).unwrap();
    // Valid TOML (comments only), 2 MiB.
    fs::write(rules.join("50-big.toml"), "# pad pad\n".repeat(2 * 1024 * 1024 / 10)).unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: error: 2097150 bytes, over the limit of 1048576",
            rules.join("50-big.toml").display()
        )),
        "{err}"
    );
    // Each file under the limit, all of them together over 8 MiB.
    fs::remove_file(rules.join("50-big.toml")).unwrap();
    for i in 0..9 {
        fs::write(rules.join(format!("6{i}-pad.toml")), "# pad pad\n".repeat(1_000_000 / 10)).unwrap();
    }
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the limit for all of them together (setting max_rules_bytes)"), "{err}");
}

#[test]
fn an_empty_label_selector_is_an_error_not_a_lost_zone() {
    let d = dir("labels");
    let rules = d.join("rules");
    // With allow by default, the only thing keeping web away from db is this deny.
    fs::write(
        rules.join("a.toml"),
        "[defaults]\naction = \"allow\"\n[zone.web]\nmatch = { name = \"web-*\" }\n[zone.db]\nmatch = { labels = {} }\n[[policy]]\nfrom = \"web\"\nto = \"db\"\naction = \"deny\"\n",
    )
    .unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "the deny must not vanish with its zone: {err}");
    assert!(
        err.contains(&format!(
            "{}:6:20: error: `labels = {{}}` names no label",
            rules.join("a.toml").display()
        )),
        "{err}"
    );
}

#[test]
fn ids_that_pose_as_fws_own_are_refused() {
    let d = dir("ids");
    let rules = d.join("rules");
    let mut text = ZONES.to_string();
    for id in ["default", "builtin:established", "cap:web", "failsafe:any->db", "Default"] {
        text.push_str(&format!("[[policy]]\nid = \"{id}\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = {}\naction = \"allow\"\n", 1000 + text.len() % 1000));
    }
    fs::write(rules.join("a.toml"), &text).unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(1), "{err}");
    for id in ["default", "builtin:established", "cap:web", "failsafe:any->db", "Default"] {
        assert!(err.contains(&format!("error: id `{id}` looks like one of fw's own")), "{id}: {err}");
    }
    // An ordinary id is fine.
    fs::write(
        rules.join("a.toml"),
        format!(
            "{ZONES}[[policy]]\nid = \"default-deny-db\"\nfrom = \"web\"\nto = \"db\"\naction = \"deny\"\n"
        ),
    )
    .unwrap();
    assert_eq!(check(&rules).0, Some(0));
}

#[test]
fn a_failsafe_allowing_part_of_a_deny_warns() {
    let d = dir("overlap");
    let rules = d.join("rules");
    fs::write(
        rules.join("a.toml"),
        format!("{ZONES}[[failsafe]]\nid = \"db-health\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 8008\n[[policy]]\nid = \"no-web-to-db\"\nfrom = \"web\"\nto = \"db\"\naction = \"deny\"\n"),
    )
    .unwrap();
    let (code, err) = check(&rules);
    assert_eq!(code, Some(0), "a warning, not an error: {err}");
    assert!(
        err.contains(&format!(
            "{}:11:1: warning: policy `no-web-to-db` cannot deny all it matches: failsafe `db-health` (",
            rules.join("a.toml").display()
        )) && err.contains("web -> db, tcp ports 8008"),
        "{err}"
    );
    // Disjoint: no warning.
    fs::write(
        rules.join("a.toml"),
        format!("{ZONES}[[failsafe]]\nid = \"db-health\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 8008\n[[policy]]\nid = \"no-pg\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 5432\naction = \"deny\"\n"),
    )
    .unwrap();
    let (code, err) = check(&rules);
    assert_eq!((code, err.as_str()), (Some(0), ""));
}
