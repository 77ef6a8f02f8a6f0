//! Zones that select pods by Kubernetes namespace and by the namespace's labels
//! (`match.namespace`, `match.namespace_labels`): what they match, that Docker and inventory
//! containers (which have no namespace) never fall into them, and how mistakes are reported.

use fw_daemon::rules::{load_sources, Identity, Severity, SourceFile};

const RULES: &str = r#"
[zone.pay]
match = { namespace_labels = { team = "pay" } }

[zone.prod-api]
match = { namespace = ["prod-*", "stage"], labels = { app = "api" } }

[zone.web]
match = { name = "web-*" }
"#;

fn zone(rules: &str, id: Identity<'_>) -> String {
    let r = load_sources(&[SourceFile { path: "z.toml".into(), text: rules.into() }], 0);
    let errors: Vec<_> = r.diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
    assert!(errors.is_empty(), "{errors:?}");
    r.policy.expect("a policy").zone_of(&id).name.clone()
}

fn pod<'a>(
    name: &'a str,
    labels: &'a [(String, String)],
    ns: &'a str,
    ns_labels: &'a [(String, String)],
) -> Identity<'a> {
    Identity { name, image: "corp/app:1", labels, kube: Some((ns, ns_labels)) }
}

fn l(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

#[test]
fn namespace_selectors_match_pods_by_namespace_and_its_labels() {
    let (api, pay, none) = (l("app", "api"), l("team", "pay"), Vec::new());
    assert_eq!(zone(RULES, pod("p1", &none, "billing", &pay)), "pay", "a namespace labelled team=pay");
    assert_eq!(zone(RULES, pod("api-7f", &api, "prod-eu", &none)), "prod-api");
    assert_eq!(zone(RULES, pod("api-7f", &api, "stage", &none)), "prod-api", "a list matches any entry");
    assert_eq!(zone(RULES, pod("api-7f", &api, "dev", &none)), "default", "namespace dev is not selected");
    assert_eq!(zone(RULES, pod("worker", &none, "prod-eu", &none)), "default", "every criterion must hold");
    assert_eq!(zone(RULES, pod("p1", &none, "billing", &l("team", "ops"))), "default");
}

#[test]
fn containers_without_a_namespace_never_join_a_namespace_zone() {
    let api = l("app", "api");
    // Docker and inventory containers carry no Kubernetes namespace.
    let docker = Identity { name: "api-1", image: "corp/api:1", labels: &api, kube: None };
    assert_eq!(zone(RULES, docker), "default");
    let web = Identity { name: "web-1", image: "nginx", labels: &[], kube: None };
    assert_eq!(zone(RULES, web), "web", "other selectors are unchanged");
    // A pod is still matched by the other criteria alone.
    assert_eq!(zone(RULES, pod("web-2", &[], "prod-eu", &[])), "web");
}

#[test]
fn mistakes_in_namespace_selectors_are_reported_where_they_are() {
    let r = load_sources(
        &[SourceFile {
            path: "bad.toml".into(),
            text: "[zone.a]\nmatch = { namespace_labels = {} }\n[zone.b]\nmatch = { namespace = \"\" }\n[zone.c]\nmatch = { namespaces = \"x\" }\n".into(),
        }],
        0,
    );
    let text: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    let all = text.join("\n");
    assert!(all.contains("bad.toml:2:30: error: `namespace_labels = {}` names no label"), "{all}");
    assert!(all.contains("bad.toml:4:23: error: empty `namespace` pattern"), "{all}");
    assert!(all.contains("bad.toml:6:11") && all.contains("namespaces"), "an unknown key, by name: {all}");
}

/// Two zones that select the same namespace label can hold the same pod: `check` warns.
#[test]
fn overlapping_namespace_selectors_are_flagged() {
    use fw_daemon::rules::Selector;
    let r = load_sources(
        &[SourceFile {
            path: "o.toml".into(),
            text: "[zone.a]\nmatch = { namespace_labels = { team = \"pay*\" } }\n[zone.b]\nmatch = { namespace_labels = { team = \"payments\" } }\n[zone.c]\nmatch = { namespace = \"dev\" }\n[zone.d]\nmatch = { namespace = \"prod\" }\n".into(),
        }],
        0,
    );
    let p = r.policy.expect("a policy");
    let sel = |z: &str| -> Selector { p.zone(z).and_then(|z| z.selector()).cloned().expect("a selector") };
    assert!(sel("a").may_overlap(&sel("b")));
    assert!(!sel("c").may_overlap(&sel("d")));
}
