//! The generated CRD schemas carry the rules the apiserver enforces at `kubectl apply`: each CEL
//! rule, enum, range and pattern below is one row of `e2e/cluster/test_validation.py`, which
//! checks the real apiserver refuses it.

use serde_json::Value;

fn spec_schema(kind: &str) -> Value {
    let crd = crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    schema["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// The schema at a dotted path of `properties` names (`[]` steps into `items`).
fn at(kind: &str, path: &str) -> Value {
    let mut v = spec_schema(kind);
    for step in path.split('.').filter(|s| !s.is_empty()) {
        let (name, items) = match step.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (step, false),
        };
        v = v["properties"][name].clone();
        assert!(!v.is_null(), "{kind}: no field {path}");
        if items {
            v = v["items"].clone();
        }
    }
    v
}

fn rules(v: &Value) -> Vec<String> {
    v["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["rule"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn has_rule(kind: &str, path: &str, needle: &str) {
    let v = at(kind, path);
    let rs = rules(&v);
    assert!(
        rs.iter().any(|r| r.contains(needle)),
        "{kind} {path}: no CEL rule containing {needle:?} in {rs:?}"
    );
    for r in v["x-kubernetes-validations"].as_array().unwrap() {
        assert!(
            r["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{kind} {path}: rule {r} has no message"
        );
    }
}

#[test]
fn every_cross_field_rule_is_a_cel_rule_with_a_message() {
    has_rule("McpServer", "", "has(self.remote) != has(self.deployment)");
    has_rule(
        "McpServer",
        "remote.headers[]",
        "has(self.value) != has(self.valueFrom)",
    );
    has_rule("McpServer", "remote.headers[]", "lowerAscii() != 'host'");
    has_rule(
        "McpServer",
        "deployment.env[]",
        "has(self.value) && has(self.valueFrom)",
    );
    has_rule("McpServer", "deployment", "self.transport != 'stdio'");
    has_rule(
        "McpServer",
        "deployment",
        "!has(self.port) && !has(self.path)",
    );
    has_rule("McpPortal", "", "has(self.auth)");
    has_rule("McpPortal", "codeMode", "self.cpuMs <= self.wallMs");
    has_rule(
        "McpPortal",
        "servers.selector.matchExpressions[]",
        "self.operator in ['In', 'NotIn']",
    );
    has_rule("McpPolicy", "subjects[]", "has(self.user)");
    has_rule("McpPolicy", "dlp[]", "size(self.detectors) > 0");
    has_rule(
        "McpPolicy",
        "inspection[]",
        "self.detectors.exists(d, d == 'topics')",
    );
}

#[test]
fn the_inspection_detector_names_are_an_enum_of_exactly_the_catalogue() {
    let e = at("McpPolicy", "inspection[].detectors")["items"]["enum"].clone();
    let want: Vec<Value> = crds::inspection::Inspector::ALL
        .iter()
        .map(|d| Value::String(d.id().into()))
        .collect();
    assert_eq!(e, Value::Array(want));
    assert_eq!(
        at("McpPolicy", "inspection[].action")["enum"],
        serde_json::json!(["log", "flag", "block"])
    );
}

#[test]
fn the_detector_names_are_an_enum_of_exactly_the_catalogue() {
    let e = at("McpPolicy", "dlp[].detectors")["items"]["enum"].clone();
    let want: Vec<Value> = crds::Detector::ALL
        .iter()
        .map(|d| Value::String(d.id().into()))
        .collect();
    assert_eq!(e, Value::Array(want));
}

#[test]
fn bounded_string_fields_are_enums() {
    for (kind, path, values) in [
        ("McpPolicy", "rules[].effect", &["Allow", "Deny"][..]),
        ("McpPolicy", "rules[].access", &["read", "write"]),
        (
            "McpPolicy",
            "dlp[].direction",
            &["arguments", "results", "both"],
        ),
        ("McpPolicy", "dlp[].action", &["log", "redact", "block"]),
        ("McpServer", "remote.transport", &["streamableHttp", "sse"]),
        ("McpServer", "deployment.transport", &["stdio", "http"]),
        (
            "McpPortal",
            "servers.selector.matchExpressions[].operator",
            &["In", "NotIn", "Exists", "DoesNotExist"],
        ),
    ] {
        let e = at(kind, path)["enum"].clone();
        assert_eq!(e, serde_json::json!(values), "{kind} {path}");
    }
    for path in ["pinning.onChange", "screening.action"] {
        let e = at("McpServer", path)["enum"].clone();
        assert_eq!(
            e,
            serde_json::json!(["Allow", "Alert", "Quarantine"]),
            "{path}"
        );
    }
}

#[test]
fn bounded_numbers_have_ranges() {
    for (kind, path, min, max) in [
        ("McpPolicy", "limits.callsPerMinute", 1, 1_000_000),
        ("McpPolicy", "limits.callsPerMinutePerTool", 1, 1_000_000),
        ("McpPolicy", "limits.burst", 1, 1_000_000),
        ("McpPolicy", "inspection[].threshold", 1, 99),
        ("McpPortal", "replicas", 0, 100),
        ("McpPortal", "limits.maxBodyBytes", 1024, 268_435_456),
        ("McpPortal", "codeMode.memoryMib", 1, 4096),
        ("McpPortal", "codeMode.cpuMs", 1, 600_000),
        ("McpPortal", "codeMode.wallMs", 1, 3_600_000),
        ("McpPortal", "codeMode.maxToolCalls", 1, 10_000),
        ("McpPortal", "codeMode.maxConcurrentCalls", 1, 256),
        ("McpPortal", "codeMode.maxCodeBytes", 1, 16_777_216),
        ("McpPortal", "codeMode.maxOutputBytes", 1, 67_108_864),
        ("McpServer", "timeoutSeconds", 1, 3600),
        ("McpServer", "deployment.port", 1, 65535),
        ("McpServer", "deployment.replicas", 0, 100),
        ("McpServer", "identity.ttlSeconds", 1, 3600),
    ] {
        let v = at(kind, path);
        assert_eq!(
            (v["minimum"].as_f64(), v["maximum"].as_f64()),
            (Some(f64::from(min)), Some(f64::from(max))),
            "{kind} {path}: {v}"
        );
    }
}

#[test]
fn glob_fields_carry_the_glob_pattern_of_the_api() {
    for (kind, path) in [
        ("McpPolicy", "rules[].servers"),
        ("McpPolicy", "rules[].tools"),
        ("McpPolicy", "dlp[].servers"),
        ("McpPolicy", "dlp[].tools"),
        ("McpPolicy", "inspection[].servers"),
        ("McpPolicy", "inspection[].tools"),
    ] {
        let v = at(kind, path);
        assert_eq!(
            v["items"]["pattern"],
            crds::glob::GLOB_PATTERN,
            "{kind} {path}"
        );
        let doc = v["description"].as_str().unwrap();
        assert!(doc.contains("Glob syntax"), "{kind} {path}: {doc}");
    }
}

#[test]
fn resource_globs_carry_the_uri_glob_pattern_of_the_api() {
    let v = at("McpPolicy", "inspection[].resources");
    assert_eq!(v["items"]["pattern"], crds::glob::URI_GLOB_PATTERN);
    assert_eq!(v["items"]["maxLength"], 2048);
    let doc = v["description"].as_str().unwrap();
    assert!(doc.contains("URI glob syntax"), "{doc}");
}

#[test]
fn cel_rules_only_touch_bounded_values_so_the_apiserver_accepts_their_cost() {
    // A rule over an unbounded list or string can exceed the apiserver's CEL cost budget and
    // make the whole CRD fail to install; every list or string a rule reads has a bound.
    let header_name = at("McpServer", "remote.headers[].name");
    assert!(header_name["maxLength"].is_number());
    for (kind, path) in [
        ("McpServer", "remote.headers"),
        ("McpServer", "deployment.env"),
        ("McpServer", "deployment.command"),
        ("McpPolicy", "subjects"),
        ("McpPolicy", "dlp"),
        ("McpPolicy", "dlp[].detectors"),
        ("McpPolicy", "dlp[].patterns"),
        ("McpPolicy", "inspection"),
        ("McpPolicy", "inspection[].detectors"),
        ("McpPolicy", "inspection[].topics"),
        ("McpPortal", "servers.selector.matchExpressions"),
        ("McpPortal", "servers.selector.matchExpressions[].values"),
    ] {
        assert!(at(kind, path)["maxItems"].is_number(), "{kind} {path}");
    }
}
