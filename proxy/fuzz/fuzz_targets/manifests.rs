//! The manifest reader (`crds::manifests`, used by `--manifests` and the operator's ConfigMaps)
//! and what the proxy builds from a manifest set: each portal resolved (`config::resolve`), its
//! policy set and its guardrails (DLP and inspection engines compiled).
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use proxy::config::{self, Manifests};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut m = Manifests::default();
    if config::manifests::parse_into(&mut m, Path::new("fuzz.yaml"), text).is_err() {
        return;
    }
    if config::manifests::check_unique(&m).is_err() {
        return;
    }
    for portal in &m.portals {
        let name = portal.metadata.name.clone().unwrap_or_default();
        let Ok(cfg) = config::resolve(&m, &name, Path::new("/nonexistent/secrets")) else {
            continue;
        };
        let _ = proxy::policy::PolicySet::for_config(&cfg);
        let _ = proxy::portal::guardrails::Guardrails::new(Arc::new(cfg));
    }
});
