//! What a CRI runtime says about a sandbox, as the node agent reads it: the verbose `info`
//! JSON, the metadata and the labels. Any answer gives a pod or a reason, never a panic, and
//! what is kept stays within fw's bounds.
#![no_main]
use std::collections::HashMap;

use fw_daemon::discovery::cri::{self, api};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // info JSON \0 namespace \0 name \0 label lines (k=v) \0 network mode
    let mut parts = text.split('\0');
    let info = parts.next().unwrap_or_default();
    let ns = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let labels: HashMap<String, String> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mode = parts.next().and_then(|m| m.bytes().next()).map_or(0, |b| i32::from(b % 4));
    let status = api::PodSandboxStatus {
        id: name.to_string(),
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            namespace: ns.into(),
            uid: String::new(),
            attempt: 0,
        }),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace {
                options: Some(api::NamespaceOption { network: mode, ..Default::default() }),
            }),
        }),
        labels,
        ..Default::default()
    };
    let info = HashMap::from([("info".to_string(), info.to_string())]);
    if let Ok(pod) = cri::describe(name, &status, &info) {
        assert!(pod.name.len() <= 512 + 1, "{}", pod.name.len());
        assert!(pod.labels.len() <= 256);
        assert!(pod.netns.is_absolute());
        assert!(pod.labels.iter().all(|(k, _)| !k.starts_with("io.kubernetes.pod.")));
    }
});
