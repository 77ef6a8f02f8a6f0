//! What the Kubernetes API says about Services and EndpointSlices, as the node agent keeps
//! it: any objects give virtual addresses within fw's bounds, never a panic.
#![no_main]
use std::collections::BTreeMap;

use fw_daemon::discovery::kube;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A JSON array of Services, \0, a JSON array of EndpointSlices.
    let mut parts = data.splitn(2, |b| *b == 0);
    let services: Vec<Service> = serde_json::from_slice(parts.next().unwrap_or_default()).unwrap_or_default();
    let slices: Vec<EndpointSlice> = serde_json::from_slice(parts.next().unwrap_or_default()).unwrap_or_default();
    let services: BTreeMap<String, kube::SvcEntry> = services
        .iter()
        .filter_map(|s| {
            let key = format!("{}/{}", s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?);
            Some((key, kube::service_entry(s)?))
        })
        .collect();
    let slices: BTreeMap<String, kube::SliceEntry> =
        slices.iter().enumerate().filter_map(|(i, s)| Some((i.to_string(), kube::slice_entry(s)?))).collect();
    let mut dropped = 0;
    for v in kube::join_services(&services, &slices, false, &mut dropped) {
        assert!(!v.addresses.is_empty(), "a Service without an address is no VIP");
        assert!(v.ports.len() <= 100);
        for p in &v.ports {
            assert!(p.port > 0 && p.backends.len() <= 10_000);
            assert!(p.backends.iter().all(|(_, port)| *port > 0));
        }
    }
});
