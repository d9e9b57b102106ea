use serde_json::json;

use super::*;

fn policy(spec: serde_json::Value) -> McpPolicy {
    McpPolicy::new("p", serde_json::from_value(spec).unwrap())
}

fn server(spec: serde_json::Value) -> McpServer {
    McpServer::new("s", serde_json::from_value(spec).unwrap())
}

fn portal(spec: serde_json::Value) -> McpPortal {
    McpPortal::new("p", serde_json::from_value(spec).unwrap())
}

fn fields(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

#[test]
fn policy_validation_names_each_bad_field() {
    let p = policy(json!({
        "subjects": [{"user": "a", "group": "b"}, {"claim": {"name": "", "value": "x"}}],
        "rules": [{"tools": ["bad name!"]}],
        "dlp": [{"name": "d", "patterns": ["(unclosed"]}, {"name": "e"}],
        "limits": {"callsPerMinute": 0}
    }));
    let problems = policy_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.subjects[0]",
            "spec.subjects[1].claim.name",
            "spec.rules[0].tools[0]",
            "spec.dlp[0].patterns[0]",
            "spec.dlp[1]",
            "spec.limits.callsPerMinute",
        ],
        "{}",
        summary(&problems)
    );
}

#[test]
fn a_policy_using_every_built_in_detector_is_valid() {
    let all: Vec<&str> = crate::detector::Detector::ALL.map(|d| d.id()).to_vec();
    let p = policy(json!({"dlp": [{"name": "all", "detectors": all, "action": "block"}]}));
    assert_eq!(policy_problems(&p), []);
    assert!(policy_problems(&McpPolicy::new("ok", Default::default())).is_empty());
}

#[test]
fn a_policy_stored_with_an_old_detector_name_reads_and_is_a_problem_naming_the_field() {
    // What etcd may still hold after an upgrade: the apiserver does not re-check stored objects.
    let p = policy(json!({"dlp": [{"name": "r", "detectors": ["email", "phoneNumber"]}]}));
    let problems = policy_problems(&p);
    assert_eq!(fields(&problems), ["spec.dlp[0].detectors[1]"]);
    let m = &problems[0].message;
    assert!(
        m.contains("\"phoneNumber\" is not a built-in detector") && m.contains("genericSecret"),
        "{m}"
    );
}

#[test]
fn a_question_mark_in_a_dlp_tool_pattern_is_a_problem() {
    let p = policy(json!({"dlp": [{"name": "r", "detectors": ["email"], "tools": ["get?"]}]}));
    assert_eq!(fields(&policy_problems(&p)), ["spec.dlp[0].tools[0]"]);
}

#[test]
fn a_space_in_a_dlp_model_glob_is_a_problem_naming_the_field() {
    let p = policy(
        json!({"dlp": [{"name": "r", "detectors": ["email"], "models": ["gpt-*", "gpt 4"]}]}),
    );
    assert_eq!(fields(&policy_problems(&p)), ["spec.dlp[0].models[1]"]);
}

#[test]
fn a_server_with_both_or_neither_of_remote_and_deployment_is_a_problem() {
    let both = server(
        json!({"remote": {"url": "http://x/mcp"}, "deployment": {"image": "i", "command": ["x"]}}),
    );
    assert_eq!(fields(&server_problems(&both)), ["spec"]);
    assert_eq!(fields(&server_problems(&server(json!({})))), ["spec"]);
}

#[test]
fn server_validation_names_each_bad_field() {
    let remote = server(json!({"remote": {"url": "ftp://x", "headers": [
        {"name": "Host", "value": "x"}, {"name": "X-Key"}]}, "prefix": "a b"}));
    assert_eq!(
        fields(&server_problems(&remote)),
        [
            "spec.remote.url",
            "spec.remote.headers[0].name",
            "spec.remote.headers[1]",
            "spec.prefix"
        ]
    );
    let deployed = server(json!({"deployment": {"image": "i", "port": 80,
        "env": [{"name": "A", "value": "x", "valueFrom": {"name": "s", "key": "k"}}]}}));
    assert_eq!(
        fields(&server_problems(&deployed)),
        [
            "spec.deployment.command",
            "spec.deployment",
            "spec.deployment.env[0]"
        ]
    );
    let ok = server(json!({"remote": {"url": "https://x/mcp"}}));
    assert_eq!(server_problems(&ok), []);
}

#[test]
fn a_portal_needs_auth_or_public_and_a_selector_kubernetes_accepts() {
    assert_eq!(fields(&portal_problems(&portal(json!({})))), ["spec.auth"]);
    let bad = portal(
        json!({"public": true, "servers": {"selector": {"matchExpressions": [
        {"key": "team", "operator": "Equals", "values": ["x"]}]}}}),
    );
    assert_eq!(fields(&portal_problems(&bad)), ["spec.servers.selector"]);
    let ok = portal(
        json!({"public": true, "servers": {"selector": {"matchExpressions": [
        {"key": "team", "operator": "In", "values": ["x"]}]}}}),
    );
    assert_eq!(portal_problems(&ok), []);
}

#[test]
fn inspection_rules_name_each_bad_field() {
    let p = policy(json!({"inspection": [
        {"name": "a", "detectors": ["promptInjection", "jailbreak"], "threshold": 100},
        {"name": "b", "detectors": ["topics"]},
        {"name": "c", "detectors": ["toolPoisoning"], "threshold": 0, "servers": ["bad name!"]},
        {"name": "d", "detectors": ["topics"], "topics": [{"name": "t", "phrases": [" "]}]},
        {"name": "", "detectors": []},
    ]}));
    let problems = policy_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.inspection[0].detectors[1]",
            "spec.inspection[0].threshold",
            "spec.inspection[1].topics",
            "spec.inspection[2].threshold",
            "spec.inspection[2].servers[0]",
            "spec.inspection[3].topics[0].phrases[0]",
            "spec.inspection[4].name",
            "spec.inspection[4].detectors",
        ],
        "{}",
        summary(&problems)
    );
    assert!(
        problems[0]
            .message
            .contains("\"jailbreak\" is not an inspection detector")
    );
    assert!(problems[1].message.contains("100 is out of range"));
}

#[test]
fn a_full_inspection_rule_is_valid() {
    let p = policy(json!({"inspection": [{
        "name": "all", "detectors": ["promptInjection", "toolPoisoning", "topics"],
        "topics": [{"name": "mergers", "phrases": ["merger", "due diligence"]}],
        "direction": "results", "servers": ["crm-*"], "tools": ["get_*"],
        "threshold": 70, "action": "flag", "shadow": true
    }]}));
    assert_eq!(policy_problems(&p), []);
}

#[test]
fn llm_routes_are_checked_naming_each_bad_field() {
    let p = portal(json!({
        "public": true,
        "llm": {"routes": [
            {"alias": "fast", "targets": [
                {"provider": "openAICompatible", "model": "m"},
                {"provider": "anthropic", "model": "c", "baseUrl": "http://"},
                {"provider": "openai", "model": "g", "apiKeyFrom": {"name": "k", "key": "v"}, "weight": 3}
            ]},
            {"alias": "fast", "targets": []},
            {"alias": "bad alias", "strategy": "weighted", "targets": [
                {"provider": "azureOpenAI", "model": " ", "baseUrl": "https://x.openai.azure.com/openai/v1",
                 "apiKeyFrom": {"name": "k", "key": "v"}, "weight": 0, "timeoutSeconds": 601}
            ]}
        ]}
    }));
    let problems = portal_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.llm.routes[0].targets[0].baseUrl",
            "spec.llm.routes[0].targets[1].baseUrl",
            "spec.llm.routes[0].targets[1].apiKeyFrom",
            "spec.llm.routes[0].targets[2].weight",
            "spec.llm.routes[1].alias",
            "spec.llm.routes[1].targets",
            "spec.llm.routes[2].alias",
            "spec.llm.routes[2].targets[0].model",
            "spec.llm.routes[2].targets[0].weight",
            "spec.llm.routes[2].targets[0].timeoutSeconds",
        ],
        "{}",
        summary(&problems)
    );
    assert!(
        problems[4]
            .message
            .contains("also the alias of spec.llm.routes[0]")
    );
}

#[test]
fn a_complete_llm_route_and_model_grants_are_valid() {
    let p = portal(json!({
        "public": true,
        "llm": {"routes": [{"alias": "fast", "targets": [
            {"provider": "openAICompatible", "baseUrl": "http://127.0.0.1:9700/v1", "model": "m",
             "apiKeyFrom": {"name": "k", "key": "v"}, "timeoutSeconds": 5},
            {"provider": "anthropic", "baseUrl": "http://127.0.0.1:9701", "model": "c",
             "apiKeyFrom": {"name": "k", "key": "a"}}
        ]}]}
    }));
    assert_eq!(portal_problems(&p), []);
    let pol = policy(json!({"models": ["fast", "claude-*", "bad model"]}));
    assert_eq!(fields(&policy_problems(&pol)), ["spec.models[2]"]);
}

#[test]
fn access_conditions_name_each_bad_field() {
    let p = policy(json!({
        "subjects": [{"group": "eng"}],
        "include": [{"group": "eng"}],
        "require": [
            {"authMethod": {}},
            {"sourceCidrs": ["10.0.0.0/8", "not-a-cidr"]},
            {"clientCertificate": {}},
            {"emailDomain": "bad domain"},
            {"authMethod": {"acr": ["gold"], "minAcr": 2}},
            {"group": "eng", "user": "x"}
        ],
        "exclude": [{"sourceCidrs": ["10.0.0.0/8", "not-a-cidr"]}, {"deviceClaim": {"name": " ", "value": "x"}}]
    }));
    let problems = policy_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.include",
            "spec.require[0].authMethod",
            "spec.require[1].sourceCidrs[1]",
            "spec.require[2].clientCertificate",
            "spec.require[3].emailDomain",
            "spec.require[4].authMethod",
            "spec.require[5]",
            "spec.exclude[0].sourceCidrs[1]",
            "spec.exclude[1].deviceClaim.name",
            "spec.exclude[0]",
        ],
        "{}",
        summary(&problems)
    );
}

#[test]
fn a_full_set_of_access_conditions_is_valid() {
    let p = policy(json!({
        "include": [{"group": "eng"}, {"emailDomain": "example.com"}],
        "require": [
            {"authMethod": {"amr": ["mfa"]}},
            {"authMethod": {"minAcr": 2}},
            {"sourceCidrs": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]},
            {"clientCertificate": {"issuer": "CN=Example Device CA,O=Example", "san": "*.devices.example.com"}},
            {"deviceClaim": {"name": "device_managed", "value": "true"}}
        ],
        "exclude": [{"group": "contractors"}]
    }));
    assert_eq!(policy_problems(&p), []);
    let legacy = policy(json!({"subjects": [{"group": "eng"}]}));
    assert_eq!(policy_problems(&legacy), []);
}

#[test]
fn portal_access_names_each_bad_field() {
    let p = portal(json!({
        "public": true,
        "access": {
            "require": [{"group": "eng"}],
            "exclude": [{"group": "eng"}],
            "trustedProxies": ["127.0.0.1", "10.0.0.0/33"],
            "clientCertificateHeader": "ssl client cert"
        }
    }));
    assert_eq!(
        fields(&portal_problems(&p)),
        [
            "spec.access.exclude[0]",
            "spec.access.trustedProxies[1]",
            "spec.access.clientCertificateHeader",
        ]
    );
    let q = portal(json!({
        "public": true,
        "access": {"clientCertificateHeader": "ssl-client-cert"}
    }));
    assert_eq!(fields(&portal_problems(&q)), ["spec.access.trustedProxies"]);
    let ok = portal(json!({
        "public": true,
        "access": {
            "include": [{"sourceCidrs": ["127.0.0.2/32"]}],
            "trustedProxies": ["127.0.0.1/32"],
            "clientCertificateHeader": "ssl-client-cert"
        }
    }));
    assert_eq!(portal_problems(&ok), []);
}

#[test]
fn budgets_are_checked_naming_each_bad_field() {
    let p = policy(json!({"budgets": [
        {"name": "Daily", "tokens": 10, "window": {"calendar": "day"}},
        {"name": "daily", "window": {"calendar": "day"}},
        {"name": "daily", "tokens": 5, "cost": "1.2.3", "window": {}},
        {"name": "g", "scope": "group", "cost": "0", "window": {"calendar": "day", "rollingSeconds": 60}},
        {"name": "u", "group": "finance", "tokens": 1, "models": ["bad model"], "window": {"rollingSeconds": 59}}
    ]}));
    let problems = policy_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.budgets[0].name",
            "spec.budgets[1]",
            "spec.budgets[2].name",
            "spec.budgets[2].cost",
            "spec.budgets[2].window",
            "spec.budgets[3].cost",
            "spec.budgets[3].group",
            "spec.budgets[3].window",
            "spec.budgets[4].group",
            "spec.budgets[4].models[0]",
            "spec.budgets[4].window.rollingSeconds",
        ],
        "{}",
        summary(&problems)
    );
    assert!(
        problems[2]
            .message
            .contains("also the name of spec.budgets[1]")
    );
}

#[test]
fn complete_budgets_prices_and_a_redis_store_are_valid() {
    let p = policy(json!({"budgets": [
        {"name": "per-user", "tokens": 2000, "window": {"calendar": "day"}},
        {"name": "team", "scope": "group", "group": "finance", "cost": "25.00",
         "models": ["fast", "gpt-*"], "window": {"calendar": "month"}, "enforcement": "soft"},
        {"name": "all", "scope": "portal", "tokens": 1000000, "cost": "0.5", "window": {"rollingSeconds": 3600}}
    ]}));
    assert_eq!(policy_problems(&p), []);
    let portal_ok = portal(json!({
        "public": true,
        "llm": {
            "budgetStore": {"redis": {"urlFrom": {"name": "redis", "key": "url"}, "keyPrefix": "pc:",
                                      "timeoutMillis": 200}, "onUnavailable": "failOpen"},
            "routes": [{"alias": "fast", "targets": [
                {"provider": "openAICompatible", "baseUrl": "http://127.0.0.1:9700/v1", "model": "m",
                 "price": {"input": "0.15", "output": "0.60", "cachedInput": "0.075"}}
            ]}]
        }
    }));
    assert_eq!(portal_problems(&portal_ok), []);
    let portal_bad = portal(json!({
        "public": true,
        "llm": {
            "budgetStore": {"redis": {"urlFrom": {"name": "", "key": "url"}, "keyPrefix": "bad prefix",
                                      "timeoutMillis": 5}},
            "routes": [{"alias": "fast", "targets": [
                {"provider": "openAICompatible", "baseUrl": "http://127.0.0.1:9700/v1", "model": "m",
                 "price": {"input": "$1", "output": "1", "cachedInput": "1."}}
            ]}]
        }
    }));
    assert_eq!(
        fields(&portal_problems(&portal_bad)),
        [
            "spec.llm.budgetStore.redis.urlFrom",
            "spec.llm.budgetStore.redis.keyPrefix",
            "spec.llm.budgetStore.redis.timeoutMillis",
            "spec.llm.routes[0].targets[0].price.input",
            "spec.llm.routes[0].targets[0].price.cachedInput",
        ]
    );
}
#[test]
fn rule_conditions_name_each_bad_or_contradictory_selector() {
    let p = policy(json!({
        "include": [{"group": "eng"}],
        "exclude": [{"group": "contractors"}],
        "rules": [
            {"access": "read"},
            {"access": "write", "require": [{"authMethod": {"amr": ["mfa"]}}, {"sourceCidrs": ["nope"]}]},
            {"access": "write", "require": [{"group": "oncall"}], "exclude": [{"group": "oncall"}]},
            {"access": "write", "include": [{"group": "contractors"}, {}]},
            {"access": "write", "exclude": (0..9).map(|i| json!({"user": format!("u{i}")})).collect::<Vec<_>>()}
        ]
    }));
    let problems = policy_problems(&p);
    assert_eq!(
        fields(&problems),
        [
            "spec.rules[1].require[1].sourceCidrs[0]",
            "spec.rules[2].exclude[0]",
            "spec.rules[3].include[1]",
            "spec.rules[3].include[0]",
            "spec.rules[4].exclude",
        ],
        "{}",
        summary(&problems)
    );
    // Rules with valid conditions of their own, and old rules, are fine.
    let ok = policy(json!({
        "include": [{"group": "eng"}],
        "rules": [
            {"access": "read"},
            {"access": "write", "require": [{"authMethod": {"amr": ["mfa"]}}, {"clientCertificate": {"issuer": "CN=Device CA,*"}}]},
            {"effect": "Deny", "access": "write", "include": [{"group": "interns"}], "exclude": [{"user": "ivy"}]}
        ]
    }));
    assert_eq!(policy_problems(&ok), []);
}

#[test]
fn a_rate_limit_store_names_each_bad_redis_field() {
    let ok = portal(json!({
        "public": true,
        "rateLimitStore": {"redis": {"urlFrom": {"name": "redis", "key": "url"}, "keyPrefix": "rl:",
                                     "timeoutMillis": 100}, "onUnavailable": "failClosed"}
    }));
    assert_eq!(portal_problems(&ok), []);
    let bad = portal(json!({
        "public": true,
        "rateLimitStore": {"redis": {"urlFrom": {"name": "redis", "key": ""}, "keyPrefix": "",
                                     "timeoutMillis": 20000}}
    }));
    assert_eq!(
        fields(&portal_problems(&bad)),
        [
            "spec.rateLimitStore.redis.urlFrom",
            "spec.rateLimitStore.redis.keyPrefix",
            "spec.rateLimitStore.redis.timeoutMillis",
        ]
    );
    // An unknown fallback is refused when read.
    let e = serde_json::from_value::<crate::McpPortalSpec>(json!({
        "public": true, "rateLimitStore": {
            "redis": {"urlFrom": {"name": "r", "key": "url"}}, "onUnavailable": "sometimes"}
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown variant `sometimes`"), "{e}");
}
