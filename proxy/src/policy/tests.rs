use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crds::McpPolicy;
use crds::policy::{
    Access, AuthMethod, CertificateMatch, ClaimMatch, Effect, McpPolicySpec, PolicyLimits, Subject,
    ToolRule,
};
use proptest::prelude::*;
use rmcp::model::{Tool, ToolAnnotations};

use super::access::effective_access;
use super::*;
use crate::catalog::Catalog;
use crate::config::{ServerConfig, Transport};
use crate::model::{CertificateFacts, Identity, RequestContext};

fn server(name: &str) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        prefix: name.into(),
        timeout: Duration::from_secs(1),
        transport: Transport::Stdio {
            command: "true".into(),
            args: vec![],
            env: vec![],
        },
        overrides: vec![],
        oauth: None,
        identity: None,
    }
}

/// A catalog of `(server, tool, read_only)`.
fn catalog(tools: &[(&str, &str, bool)]) -> Catalog {
    let mut servers: Vec<String> = tools.iter().map(|t| t.0.to_owned()).collect();
    servers.sort();
    servers.dedup();
    let inputs: Vec<_> = servers
        .iter()
        .map(|s| {
            let up = crate::upstream::Lists {
                tools: tools
                    .iter()
                    .filter(|t| t.0 == s)
                    .map(|t| {
                        Tool::new(t.1.to_owned(), "d", Arc::new(serde_json::Map::new()))
                            .with_annotations(ToolAnnotations::new().read_only(t.2))
                    })
                    .collect(),
                ..Default::default()
            };
            (server(s), Arc::new(up))
        })
        .collect();
    Catalog::build(&inputs)
}

fn policy(name: &str, subjects: Vec<Subject>, rules: Vec<ToolRule>) -> McpPolicy {
    McpPolicy::new(
        name,
        McpPolicySpec {
            subjects,
            rules,
            ..Default::default()
        },
    )
}

fn rule(effect: Effect, servers: &[&str], tools: &[&str], access: Access) -> ToolRule {
    ToolRule {
        effect,
        servers: servers.iter().map(|s| s.to_string()).collect(),
        tools: tools.iter().map(|s| s.to_string()).collect(),
        access,
        ..Default::default()
    }
}

fn group(g: &str) -> Subject {
    Subject {
        group: Some(g.into()),
        ..Default::default()
    }
}

fn visible(set: &PolicySet, id: &Identity, c: &Catalog) -> Vec<String> {
    set.visible_tools(id, c)
        .map(|t| t.tool.name.to_string())
        .collect()
}

#[test]
fn reads_are_granted_by_read_rules_and_writes_only_by_write_rules() {
    let c = catalog(&[
        ("tickets", "get_ticket", true),
        ("tickets", "close_ticket", false),
    ]);
    let set = PolicySet::compile(
        &[policy(
            "finance",
            vec![group("finance")],
            vec![rule(Effect::Allow, &["tickets"], &[], Access::Read)],
        )],
        false,
    );
    let fin = Identity::user("alice", ["finance"]);
    assert_eq!(visible(&set, &fin, &c), ["tickets_get_ticket"]);
    let close = c.tool("tickets_close_ticket").unwrap();
    assert_eq!(
        set.tool_access(&fin, close),
        Decision::Deny(Reason::WriteNotGranted {
            policy: "finance".into(),
            rule: 0
        })
    );
    assert!(
        set.authorize_call(&fin, &c, "tickets_close_ticket")
            .is_none()
    );

    let set = PolicySet::compile(
        &[policy(
            "eng",
            vec![group("engineering")],
            vec![rule(Effect::Allow, &["*"], &[], Access::Write)],
        )],
        false,
    );
    let eng = Identity::user("bob", ["engineering"]);
    assert_eq!(
        visible(&set, &eng, &c),
        ["tickets_close_ticket", "tickets_get_ticket"]
    );
    assert!(
        visible(&set, &fin, &c).is_empty(),
        "a policy for another group grants nothing"
    );
}

#[test]
fn deny_wins_over_any_allow_and_a_write_deny_only_takes_writes() {
    let c = catalog(&[
        ("t", "get", true),
        ("t", "close", false),
        ("d", "search", true),
    ]);
    let everyone = policy(
        "all",
        vec![],
        vec![rule(Effect::Allow, &[], &[], Access::Write)],
    );
    let no_close = policy(
        "no-close",
        vec![],
        vec![rule(Effect::Deny, &["t"], &["clo*"], Access::Read)],
    );
    let set = PolicySet::compile(&[everyone.clone(), no_close], false);
    let id = Identity::user("u", Vec::<String>::new());
    assert_eq!(visible(&set, &id, &c), ["d_search", "t_get"]);
    assert_eq!(
        set.tool_access(&id, c.tool("t_close").unwrap()),
        Decision::Deny(Reason::DeniedBy {
            policy: "no-close".into(),
            rule: 0
        })
    );

    let no_writes = policy(
        "no-writes",
        vec![],
        vec![rule(Effect::Deny, &[], &[], Access::Write)],
    );
    let set = PolicySet::compile(&[everyone, no_writes], false);
    assert_eq!(visible(&set, &id, &c), ["d_search", "t_get"]);
}

#[test]
fn subjects_match_users_groups_and_claims_but_never_anonymous() {
    let c = catalog(&[("t", "get", true)]);
    let grant = vec![rule(Effect::Allow, &[], &[], Access::Read)];
    let by_user = policy(
        "u",
        vec![Subject {
            user: Some("alice".into()),
            ..Default::default()
        }],
        grant.clone(),
    );
    let by_claim = policy(
        "c",
        vec![Subject {
            claim: Some(ClaimMatch {
                name: "dept".into(),
                value: "sales".into(),
            }),
            ..Default::default()
        }],
        grant,
    );
    let set = PolicySet::compile(&[by_user, by_claim], true);
    assert_eq!(
        visible(&set, &Identity::user("alice", Vec::<String>::new()), &c).len(),
        1
    );
    assert_eq!(
        visible(&set, &Identity::user("bob", Vec::<String>::new()), &c).len(),
        0
    );
    let sales = Identity::user("bob", Vec::<String>::new())
        .with_claim("dept", serde_json::json!(["hr", "sales"]));
    assert_eq!(visible(&set, &sales, &c).len(), 1);
    assert_eq!(visible(&set, &Identity::anonymous(), &c).len(), 0);
    assert!(!set.is_open(), "a public portal with policies is not open");
}

#[test]
fn public_portals_without_policies_are_open_and_others_serve_nothing() {
    let c = catalog(&[("t", "get", true), ("t", "set", false)]);
    let open = PolicySet::compile(&[], true);
    assert_eq!(visible(&open, &Identity::anonymous(), &c).len(), 2);
    assert!(
        visible(&open, &Identity::nobody(), &c).is_empty(),
        "nobody sees nothing, even when open"
    );
    let closed = PolicySet::compile(&[], false);
    assert!(visible(&closed, &Identity::user("root", ["admins"]), &c).is_empty());
}

#[test]
fn prompts_and_resources_follow_tool_visibility_or_a_whole_server_grant() {
    let c = catalog(&[
        ("t", "get", true),
        ("t", "set", false),
        ("d", "search", true),
    ]);
    let servers = ["d".to_string(), "t".to_string(), "empty".to_string()];
    let set = PolicySet::compile(
        &[
            policy(
                "a",
                vec![],
                vec![rule(Effect::Allow, &["t"], &["get"], Access::Read)],
            ),
            policy(
                "b",
                vec![],
                vec![rule(Effect::Allow, &["empty"], &[], Access::Read)],
            ),
        ],
        false,
    );
    let id = Identity::user("u", Vec::<String>::new());
    let v = set.visible_servers(&id, &c, servers.iter().cloned());
    assert_eq!(v.into_iter().collect::<Vec<_>>(), ["empty", "t"]);
    assert!(set.server_visible(&id, &c, "t"));
    assert!(!set.server_visible(&id, &c, "d"));
}

#[test]
fn limits_are_the_most_restrictive_of_the_applicable_policies() {
    let mut a = policy("a", vec![], vec![]);
    a.spec.limits = Some(PolicyLimits {
        calls_per_minute: Some(100),
        calls_per_minute_per_tool: None,
        burst: Some(10),
    });
    let mut b = policy("b", vec![group("g")], vec![]);
    b.spec.limits = Some(PolicyLimits {
        calls_per_minute: Some(50),
        calls_per_minute_per_tool: Some(5),
        burst: None,
    });
    let set = PolicySet::compile(&[a, b], false);
    let l = set.limits(&Identity::user("x", ["g"]));
    assert_eq!(
        (
            l.calls_per_minute,
            l.burst,
            l.calls_per_minute_per_tool,
            l.tool_burst
        ),
        (Some(50), Some(10), Some(5), Some(5))
    );
    let l = set.limits(&Identity::user("x", Vec::<String>::new()));
    assert_eq!(
        (l.calls_per_minute, l.calls_per_minute_per_tool),
        (Some(100), None)
    );
}

// ---- property: one filter, one answer -------------------------------------------------------

const SERVERS: &[&str] = &["tickets", "docs", "crm"];
const TOOLS: &[&str] = &[
    "get_ticket",
    "close_ticket",
    "search",
    "delete_all",
    "get_doc",
];
const GROUPS: &[&str] = &["finance", "engineering", "ops"];
const USERS: &[&str] = &["alice", "bob", "carol"];
const SERVER_GLOBS: &[&str] = &["tickets", "docs", "crm", "*", "t*", "*s"];
const TOOL_GLOBS: &[&str] = &[
    "get_*",
    "*_ticket",
    "search",
    "*",
    "delete_all",
    "*doc*",
    "x",
];

/// A rule, with conditions of its own about a third of the time.
fn arb_rule() -> impl Strategy<Value = ToolRule> {
    (
        prop_oneof![3 => Just(Effect::Allow), 1 => Just(Effect::Deny)],
        prop::collection::vec(prop::sample::select(SERVER_GLOBS), 0..3),
        prop::collection::vec(prop::sample::select(TOOL_GLOBS), 0..3),
        prop_oneof![Just(Access::Read), Just(Access::Write)],
        prop_oneof![
            2 => Just((false, (vec![], vec![], vec![]))),
            1 => arb_conditions(),
        ],
    )
        .prop_map(
            |(effect, servers, tools, access, (_, (include, require, exclude)))| ToolRule {
                effect,
                servers: servers.into_iter().map(str::to_owned).collect(),
                tools: tools.into_iter().map(str::to_owned).collect(),
                access,
                include,
                require,
                exclude,
            },
        )
}

const CIDRS: &[&str] = &["127.0.0.2/32", "10.0.0.0/8", "127.0.0.0/8", "2001:db8::/32"];
const IPS: &[&str] = &[
    "127.0.0.1",
    "127.0.0.2",
    "10.1.2.3",
    "::ffff:10.9.9.9",
    "2001:db8::7",
    "192.0.2.1",
];
const ISSUERS: &[&str] = &["CN=Device CA,O=Example", "CN=Other CA"];
const SUBJECTS: &[&str] = &["CN=laptop-1,OU=Laptops,O=Example", "CN=phone-2,O=Example"];
const DOMAINS: &[&str] = &["example.com", "contractor.example"];

fn arb_selector() -> impl Strategy<Value = Subject> {
    prop_oneof![
        prop::sample::select(USERS).prop_map(|u| Subject {
            user: Some(u.into()),
            ..Default::default()
        }),
        prop::sample::select(GROUPS).prop_map(|g| Subject {
            group: Some(g.into()),
            ..Default::default()
        }),
        prop::sample::select(GROUPS).prop_map(|g| Subject {
            claim: Some(ClaimMatch {
                name: "dept".into(),
                value: g.into()
            }),
            ..Default::default()
        }),
        prop::sample::select(DOMAINS).prop_map(|d| Subject {
            email_domain: Some(d.into()),
            ..Default::default()
        }),
        (
            prop::collection::vec(prop::sample::select(&["mfa", "hwk", "pwd"][..]), 0..2),
            prop::collection::vec(prop::sample::select(&["silver", "gold"][..]), 0..2),
            prop::option::of(0u32..3),
        )
            .prop_filter("not empty", |(a, b, c)| !a.is_empty()
                || !b.is_empty()
                || c.is_some())
            .prop_map(|(amr, acr, min)| Subject {
                auth_method: Some(AuthMethod {
                    amr: amr.into_iter().map(str::to_owned).collect(),
                    min_acr: if acr.is_empty() { min } else { None },
                    acr: acr.into_iter().map(str::to_owned).collect(),
                }),
                ..Default::default()
            }),
        prop::collection::vec(prop::sample::select(CIDRS), 1..3).prop_map(|c| Subject {
            source_cidrs: Some(c.into_iter().map(str::to_owned).collect()),
            ..Default::default()
        }),
        (
            prop::option::of(prop::sample::select(
                &["CN=Device CA,*", "CN=Device CA,O=Example"][..]
            )),
            prop::option::of(prop::sample::select(
                &["*OU=Laptops*", "CN=phone-2,O=Example"][..]
            )),
            prop::option::of(prop::sample::select(
                &["*.devices.example", "laptop-1.devices.example"][..]
            )),
        )
            .prop_filter("not empty", |(a, b, c)| a.is_some()
                || b.is_some()
                || c.is_some())
            .prop_map(|(issuer, subject, san)| Subject {
                client_certificate: Some(CertificateMatch {
                    issuer: issuer.map(str::to_owned),
                    subject: subject.map(str::to_owned),
                    san: san.map(str::to_owned),
                }),
                ..Default::default()
            }),
        prop::sample::select(&["true", "false"][..]).prop_map(|v| Subject {
            device_claim: Some(ClaimMatch {
                name: "device_managed".into(),
                value: v.into()
            }),
            ..Default::default()
        }),
    ]
}

/// (subjects or include, require, exclude): each list empty about half the time.
type Lists = (Vec<Subject>, Vec<Subject>, Vec<Subject>);

fn arb_conditions() -> impl Strategy<Value = (bool, Lists)> {
    (
        any::<bool>(),
        prop::collection::vec(arb_selector(), 0..3),
        prop_oneof![Just(vec![]), prop::collection::vec(arb_selector(), 1..3)],
        prop_oneof![Just(vec![]), prop::collection::vec(arb_selector(), 1..2)],
    )
        .prop_map(|(legacy, inc, req, exc)| (legacy, (inc, req, exc)))
}

fn arb_policies() -> impl Strategy<Value = Vec<McpPolicy>> {
    prop::collection::vec(
        (arb_conditions(), prop::collection::vec(arb_rule(), 0..4)),
        0..4,
    )
    .prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, ((legacy, (inc, require, exclude)), rules))| {
                let mut p = policy(&format!("p{i}"), vec![], rules);
                if legacy {
                    p.spec.subjects = inc;
                } else {
                    p.spec.include = inc;
                }
                p.spec.require = require;
                p.spec.exclude = exclude;
                p
            })
            .collect()
    })
}

fn arb_context() -> impl Strategy<Value = RequestContext> {
    (
        prop::option::of(prop::sample::select(IPS)),
        prop::option::of((
            prop::sample::select(ISSUERS),
            prop::sample::select(SUBJECTS),
            prop::collection::vec(
                prop::sample::select(
                    &["laptop-1.devices.example", "x.example", "a@example.com"][..],
                ),
                0..3,
            ),
        )),
    )
        .prop_map(|(ip, cert)| RequestContext {
            source_ip: ip.map(|i| i.parse().unwrap()),
            client_certificate: cert.map(|(i, s, sans)| CertificateFacts {
                issuer: i.into(),
                subject: s.into(),
                sans: sans.into_iter().map(str::to_owned).collect(),
            }),
        })
}

fn arb_identity() -> impl Strategy<Value = Identity> {
    let claims = (
        prop::option::of(prop::sample::select(GROUPS)),
        prop::option::of(prop::collection::vec(
            prop::sample::select(&["mfa", "hwk", "pwd", "otp"][..]),
            0..3,
        )),
        prop::option::of(prop::sample::select(
            &["silver", "gold", "0", "1", "2", "x"][..],
        )),
        prop::option::of((
            prop::sample::select(
                &[
                    "a@example.com",
                    "b@EXAMPLE.COM",
                    "c@contractor.example",
                    "no-at",
                ][..],
            ),
            prop::option::of(any::<bool>()),
        )),
        prop::option::of(prop::sample::select(&["true", "false"][..])),
    );
    (
        prop_oneof![
            1 => Just(Identity::anonymous()),
            1 => Just(Identity::nobody()),
            6 => (
                prop::sample::select(USERS),
                prop::collection::vec(prop::sample::select(GROUPS), 0..3),
                claims,
            )
                .prop_map(|(u, g, (dept, amr, acr, email, device))| {
                    let mut id = Identity::user(u, g);
                    if let Some(d) = dept {
                        id = id.with_claim("dept", serde_json::json!(d));
                    }
                    if let Some(a) = amr {
                        id = id.with_claim("amr", serde_json::json!(a));
                    }
                    if let Some(a) = acr {
                        id = id.with_claim("acr", serde_json::json!(a));
                    }
                    if let Some((e, verified)) = email {
                        id = id.with_claim("email", serde_json::json!(e));
                        if let Some(v) = verified {
                            id = id.with_claim("email_verified", serde_json::json!(v));
                        }
                    }
                    if let Some(d) = device {
                        id = id.with_claim("device_managed", serde_json::json!(d));
                    }
                    id
                }),
        ],
        arb_context(),
    )
        .prop_map(|(id, ctx)| id.with_context(ctx))
}

fn arb_catalog() -> impl Strategy<Value = Vec<(String, String, bool)>> {
    prop::collection::btree_set(
        (prop::sample::select(SERVERS), prop::sample::select(TOOLS)),
        0..12,
    )
    .prop_flat_map(|set| {
        let n = set.len();
        (Just(set), prop::collection::vec(any::<bool>(), n)).prop_map(|(set, ro)| {
            set.into_iter()
                .zip(ro)
                .map(|((s, t), r)| (s.to_owned(), t.to_owned(), r))
                .collect()
        })
    })
}

/// A naive, independent statement of one selector (the CRD's documentation, read literally).
fn oracle_selector(s: &Subject, id: &Identity) -> bool {
    use crate::model::IdentityKind;
    let authed = id.kind == IdentityKind::Authenticated;
    let claim = |n: &str| id.claims.get(n).cloned();
    let claim_is = |n: &str, v: &str| match claim(n) {
        Some(serde_json::Value::String(x)) => x == v,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(v)),
        _ => false,
    };
    let set = [
        s.user.is_some(),
        s.group.is_some(),
        s.claim.is_some(),
        s.email_domain.is_some(),
        s.auth_method.is_some(),
        s.source_cidrs.is_some(),
        s.client_certificate.is_some(),
        s.device_claim.is_some(),
    ];
    assert_eq!(
        set.iter().filter(|b| **b).count(),
        1,
        "generator makes valid selectors"
    );
    if let Some(u) = &s.user {
        return authed && &id.subject == u;
    }
    if let Some(g) = &s.group {
        return authed && id.groups.contains(g);
    }
    if let Some(c) = s.claim.as_ref().or(s.device_claim.as_ref()) {
        return authed && claim_is(&c.name, &c.value);
    }
    if let Some(d) = &s.email_domain {
        let verified_false = claim("email_verified") == Some(serde_json::json!(false));
        let domain = claim("email").and_then(|e| {
            e.as_str()
                .and_then(|e| e.split('@').nth(1))
                .map(str::to_lowercase)
        });
        return authed && !verified_false && domain.as_deref() == Some(d.as_str());
    }
    if let Some(m) = &s.auth_method {
        let acr = claim("acr").and_then(|a| a.as_str().map(str::to_owned));
        return authed
            && m.amr.iter().all(|a| claim_is("amr", a))
            && (m.acr.is_empty() || acr.as_ref().is_some_and(|a| m.acr.contains(a)))
            && m.min_acr.is_none_or(|min| {
                acr.as_ref()
                    .and_then(|a| a.parse::<u32>().ok())
                    .is_some_and(|a| a >= min)
            });
    }
    if let Some(cidrs) = &s.source_cidrs {
        let Some(ip) = id.context.source_ip else {
            return false;
        };
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        return cidrs
            .iter()
            .any(|c| c.parse::<ipnet::IpNet>().unwrap().contains(&ip));
    }
    if let Some(m) = &s.client_certificate {
        let Some(c) = &id.context.client_certificate else {
            return false;
        };
        let glob = |p: &str, v: &str| Glob::new(p).matches(v);
        return m.issuer.as_deref().is_none_or(|p| glob(p, &c.issuer))
            && m.subject.as_deref().is_none_or(|p| glob(p, &c.subject))
            && m.san
                .as_deref()
                .is_none_or(|p| c.sans.iter().any(|x| glob(p, x)));
    }
    unreachable!()
}

/// include (any of) / require (all of) / exclude (none of), read literally.
fn oracle_conditions(
    include: &[Subject],
    require: &[Subject],
    exclude: &[Subject],
    id: &Identity,
) -> bool {
    (include.is_empty() || include.iter().any(|s| oracle_selector(s, id)))
        && require.iter().all(|s| oracle_selector(s, id))
        && !exclude.iter().any(|s| oracle_selector(s, id))
}

/// An independent, deliberately naive statement of the rules in the module docs.
fn oracle(
    policies: &[McpPolicy],
    public: bool,
    portal: &Lists,
    id: &Identity,
    server: &str,
    tool: &str,
    read_only: bool,
) -> bool {
    use crate::model::IdentityKind;
    if id.kind == IdentityKind::Nobody {
        return false;
    }
    if !oracle_conditions(&portal.0, &portal.1, &portal.2, id) {
        return false;
    }
    if public && policies.iter().all(|p| p.spec.rules.is_empty()) {
        return true;
    }
    let glob =
        |pats: &[String], s: &str| pats.is_empty() || pats.iter().any(|p| Glob::new(p).matches(s));
    let applies = |p: &McpPolicy| {
        let include = if p.spec.include.is_empty() {
            &p.spec.subjects
        } else {
            &p.spec.include
        };
        oracle_conditions(include, &p.spec.require, &p.spec.exclude, id)
    };
    let matching: Vec<&ToolRule> = policies
        .iter()
        .filter(|p| applies(p))
        .flat_map(|p| &p.spec.rules)
        .filter(|r| glob(&r.servers, server) && glob(&r.tools, tool))
        .filter(|r| oracle_conditions(&r.include, &r.require, &r.exclude, id))
        .collect();
    let denied = matching
        .iter()
        .any(|r| r.effect == Effect::Deny && (r.access == Access::Read || !read_only));
    let allowed = matching
        .iter()
        .any(|r| r.effect == Effect::Allow && (r.access == Access::Write || read_only));
    allowed && !denied
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For random policies (with random include/require/exclude conditions over every kind of
    /// selector), random portal access conditions, random callers (claims, amr/acr, email,
    /// source address, client certificate) and catalogs: the tools in `tools/list` (which Code
    /// Mode search shows: `Portal::visible_tools`) are exactly the tools a call may reach
    /// (`authorize_call`, which Code Mode execute's calls go through), exactly what the
    /// effective-access report allows, and exactly what a literal reading of the rules says.
    #[test]
    fn visible_equals_callable_equals_reported(
        policies in arb_policies(),
        public in any::<bool>(),
        portal in prop_oneof![Just((false, (vec![], vec![], vec![]))), arb_conditions()],
        id in arb_identity(),
        tools in arb_catalog(),
    ) {
        let refs: Vec<(&str, &str, bool)> = tools.iter().map(|(s, t, r)| (s.as_str(), t.as_str(), *r)).collect();
        let c = catalog(&refs);
        let (_, portal) = portal;
        let access = crds::access::PortalAccess {
            include: portal.0.clone(),
            require: portal.1.clone(),
            exclude: portal.2.clone(),
            ..Default::default()
        };
        let set = PolicySet::compile(&policies, public).with_portal_access(Some(&access));

        let listed: BTreeSet<String> = set.visible_tools(&id, &c).map(|t| t.tool.name.to_string()).collect();
        let mut names: Vec<String> = c.tools.iter().map(|t| t.tool.name.to_string()).collect();
        names.push("tickets_not_a_tool".into());
        let callable: BTreeSet<String> = names
            .iter()
            .filter(|n| set.authorize_call(&id, &c, n).is_some())
            .cloned()
            .collect();
        let servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
        let report = effective_access("p", &set, &c, &servers, &id);
        let reported: BTreeSet<String> = report.allowed.iter().cloned().collect();
        let expected: BTreeSet<String> = c
            .tools
            .iter()
            .filter(|t| oracle(&policies, public, &portal, &id, &t.server, &t.upstream_name, t.read_only))
            .map(|t| t.tool.name.to_string())
            .collect();

        prop_assert_eq!(&listed, &callable);
        prop_assert_eq!(&listed, &reported);
        prop_assert_eq!(&listed, &expected);
        // Prompts/resources: a server with a visible tool is always visible.
        let vs = set.visible_servers(&id, &c, servers.iter().cloned());
        for t in set.visible_tools(&id, &c) {
            prop_assert!(vs.contains(&t.server));
        }
        // Default-deny writes: a write tool is visible only through a write grant.
        for t in set.visible_tools(&id, &c).filter(|t| !t.read_only) {
            let d = set.tool_access(&id, t);
            let granted = matches!(d, Decision::Allow(Reason::GrantedBy { .. }) | Decision::Allow(Reason::OpenPortal));
            prop_assert!(granted);
        }
    }

    /// Adding a deny rule never makes a tool visible.
    #[test]
    fn a_deny_rule_only_ever_hides(
        policies in arb_policies(),
        id in arb_identity(),
        tools in arb_catalog(),
        deny in arb_rule(),
    ) {
        let refs: Vec<(&str, &str, bool)> = tools.iter().map(|(s, t, r)| (s.as_str(), t.as_str(), *r)).collect();
        let c = catalog(&refs);
        let before: BTreeSet<String> = visible(&PolicySet::compile(&policies, false), &id, &c).into_iter().collect();
        let mut more = policies.clone();
        more.push(policy("deny", vec![], vec![ToolRule { effect: Effect::Deny, ..deny }]));
        let after: BTreeSet<String> = visible(&PolicySet::compile(&more, false), &id, &c).into_iter().collect();
        prop_assert!(after.is_subset(&before));
    }
}

fn sel(v: serde_json::Value) -> Subject {
    serde_json::from_value(v).unwrap()
}

#[test]
fn engineering_writes_need_a_corporate_device_and_the_decision_names_the_selector() {
    let c = catalog(&[("repo", "read_file", true), ("repo", "push", false)]);
    let mut read = policy(
        "eng-read",
        vec![],
        vec![rule(Effect::Allow, &["repo"], &[], Access::Read)],
    );
    read.spec.include = vec![group("engineering")];
    read.spec.exclude = vec![group("contractors")];
    let mut write = policy(
        "eng-write",
        vec![],
        vec![rule(Effect::Allow, &["repo"], &[], Access::Write)],
    );
    write.spec.include = vec![group("engineering")];
    write.spec.require = vec![
        sel(serde_json::json!({"clientCertificate": {"issuer": "CN=Example Device CA,*"}})),
        sel(serde_json::json!({"authMethod": {"amr": ["mfa"]}})),
    ];
    let set = PolicySet::compile(&[read, write], false);
    let laptop = RequestContext {
        source_ip: None,
        client_certificate: Some(CertificateFacts {
            issuer: "CN=Example Device CA,O=Example Corp".into(),
            subject: "CN=laptop-42".into(),
            sans: vec![],
        }),
    };
    let eng = Identity::user("bob", ["engineering"]);
    let push = c.tool("repo_push").unwrap();
    assert_eq!(visible(&set, &eng, &c), ["repo_read_file"]);
    assert_eq!(
        set.tool_access(&eng, push),
        Decision::Deny(Reason::ConditionNotMet {
            policy: "eng-write".into(),
            rule: 0,
            selector: "require[0].clientCertificate".into()
        })
    );
    let on_laptop = eng.clone().with_context(laptop.clone());
    assert_eq!(
        set.tool_access(&on_laptop, push),
        Decision::Deny(Reason::ConditionNotMet {
            policy: "eng-write".into(),
            rule: 0,
            selector: "require[1].authMethod".into()
        })
    );
    let with_mfa = on_laptop.with_claim("amr", serde_json::json!(["pwd", "mfa"]));
    assert_eq!(
        set.tool_access(&with_mfa, push),
        Decision::Allow(Reason::GrantedBy {
            policy: "eng-write".into(),
            rule: 0,
            selector: Some("include[0].group".into())
        })
    );
    // A contractor in engineering: excluded from eng-read; eng-write still needs the device.
    let contractor = Identity::user("eve", ["engineering", "contractors"]);
    assert!(visible(&set, &contractor, &c).is_empty());
    // Someone outside engineering is not told about eng-write's conditions.
    let fin = Identity::user("alice", ["finance"]);
    assert_eq!(set.tool_access(&fin, push), Decision::Deny(Reason::NoGrant));
}

#[test]
fn the_portal_gate_comes_first_and_names_its_selector() {
    let c = catalog(&[("t", "get", true)]);
    let everyone = policy(
        "all",
        vec![],
        vec![rule(Effect::Allow, &[], &[], Access::Read)],
    );
    let access = crds::access::PortalAccess {
        require: vec![sel(serde_json::json!({"sourceCidrs": ["127.0.0.2/32"]}))],
        ..Default::default()
    };
    let set = PolicySet::compile(&[everyone], true).with_portal_access(Some(&access));
    let at = |ip: &str| {
        Identity::anonymous().with_context(RequestContext {
            source_ip: Some(ip.parse().unwrap()),
            client_certificate: None,
        })
    };
    assert_eq!(visible(&set, &at("127.0.0.2"), &c), ["t_get"]);
    assert_eq!(visible(&set, &at("::ffff:127.0.0.2"), &c), ["t_get"]);
    assert_eq!(
        set.tool_access(&at("127.0.0.1"), c.tool("t_get").unwrap()),
        Decision::Deny(Reason::PortalAccess {
            selector: "require[0].sourceCidrs".into()
        })
    );
    // No address known (no connection): a network condition is not met.
    assert!(!set.portal_access(&Identity::anonymous()).is_met());
}

#[test]
fn auth_method_reads_amr_and_acr_and_offers_a_step_up() {
    let need =
        |v: serde_json::Value| conditions::Conditions::compile(&[], &[], &[sel(json_auth(v))], &[]);
    fn json_auth(v: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "authMethod": v })
    }
    let id = Identity::user("a", Vec::<String>::new())
        .with_claim("amr", serde_json::json!(["pwd"]))
        .with_claim("acr", serde_json::json!("1"));
    let mfa = need(serde_json::json!({"amr": ["mfa"]}));
    match mfa.evaluate(&id) {
        conditions::Outcome::NotMet(u) => {
            assert_eq!(u.selector, "require[0].authMethod");
            assert_eq!(u.step_up.unwrap().amr, ["mfa"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        need(serde_json::json!({"minAcr": 1}))
            .evaluate(&id)
            .is_met()
    );
    assert!(
        !need(serde_json::json!({"minAcr": 2}))
            .evaluate(&id)
            .is_met()
    );
    match need(serde_json::json!({"acr": ["gold", "platinum"]})).evaluate(&id) {
        conditions::Outcome::NotMet(u) => {
            assert_eq!(u.step_up.unwrap().acr_values, ["gold", "platinum"])
        }
        other => panic!("{other:?}"),
    }
    // Anonymous callers never meet a token condition.
    assert!(
        !need(serde_json::json!({"minAcr": 0}))
            .evaluate(&Identity::anonymous())
            .is_met()
    );
}

#[test]
fn one_policy_reads_for_engineering_and_writes_only_with_mfa_from_a_device_naming_the_rule() {
    let c = catalog(&[("repo", "read_file", true), ("repo", "push", false)]);
    let mut p: McpPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPolicy",
        "metadata": {"name": "eng"},
        "spec": {
            "include": [{"group": "engineering"}],
            "rules": [
                {"access": "read"},
                {"access": "write", "require": [
                    {"clientCertificate": {"issuer": "CN=Example Device CA,*"}},
                    {"authMethod": {"amr": ["mfa"]}}
                ]},
                {"effect": "Deny", "access": "write", "include": [{"group": "interns"}]}
            ]
        }
    }))
    .unwrap();
    let set = PolicySet::compile(std::slice::from_ref(&p), false);
    let push = c.tool("repo_push").unwrap();
    let eng = Identity::user("bob", ["engineering"]);
    assert_eq!(visible(&set, &eng, &c), ["repo_read_file"]);
    assert_eq!(
        set.tool_access(&eng, push),
        Decision::Deny(Reason::ConditionNotMet {
            policy: "eng".into(),
            rule: 1,
            selector: "rules[1].require[0].clientCertificate".into()
        })
    );
    let device = eng
        .clone()
        .with_context(RequestContext {
            source_ip: None,
            client_certificate: Some(CertificateFacts {
                issuer: "CN=Example Device CA,O=Example Corp".into(),
                subject: "CN=laptop-42".into(),
                sans: vec![],
            }),
        })
        .with_claim("amr", serde_json::json!(["mfa"]));
    assert_eq!(visible(&set, &device, &c), ["repo_push", "repo_read_file"]);
    assert_eq!(
        set.tool_access(&device, push),
        Decision::Allow(Reason::GrantedBy {
            policy: "eng".into(),
            rule: 1,
            selector: Some("include[0].group".into())
        })
    );
    // The deny rule applies only to interns: it takes the write away from them alone.
    let intern = Identity::user("ivy", ["engineering", "interns"])
        .with_context(device.context.clone())
        .with_claim("amr", serde_json::json!(["mfa"]));
    assert_eq!(
        set.tool_access(&intern, push),
        Decision::Deny(Reason::DeniedBy {
            policy: "eng".into(),
            rule: 2
        })
    );
    assert_eq!(visible(&set, &intern, &c), ["repo_read_file"]);
    // A rule-level include names itself when it grants.
    p.spec.rules[0].include = vec![group("engineering")];
    let set = PolicySet::compile(&[p], false);
    let read = c.tool("repo_read_file").unwrap();
    assert_eq!(
        set.tool_access(&eng, read),
        Decision::Allow(Reason::GrantedBy {
            policy: "eng".into(),
            rule: 0,
            selector: Some("rules[0].include[0].group".into())
        })
    );
}

#[test]
fn a_model_grant_honours_the_policys_conditions_and_names_the_selector() {
    let mut mfa = policy("mfa-models", vec![group("engineering")], vec![]);
    mfa.spec.models = vec!["*".into()];
    mfa.spec.require = vec![sel(serde_json::json!({"authMethod": {"amr": ["mfa"]}}))];
    let bob = Identity::user("bob", ["engineering"]);
    match model_access([&mfa], &bob) {
        ModelAccess::NotMet(p, u) => {
            assert_eq!(p, "mfa-models");
            assert_eq!(u.selector, "require[0].authMethod");
            assert_eq!(u.step_up.unwrap().amr, ["mfa"]);
        }
        other => panic!("{other:?}"),
    }
    let with_mfa = bob.with_claim("amr", serde_json::json!(["mfa"]));
    assert_eq!(
        model_access([&mfa], &with_mfa),
        ModelAccess::Granted("mfa-models".into())
    );
    // Outside the policy's include: nothing to name.
    let alice = Identity::user("alice", ["finance"]).with_claim("amr", serde_json::json!(["mfa"]));
    assert_eq!(model_access([&mfa], &alice), ModelAccess::NoGrant);
    assert_eq!(
        model_access([&mfa], &Identity::nobody()),
        ModelAccess::NoGrant
    );
    // A second policy the caller meets grants it.
    let mut open = policy("everyone", vec![], vec![]);
    open.spec.models = vec!["*".into()];
    assert_eq!(
        model_access([&mfa, &open], &alice),
        ModelAccess::Granted("everyone".into())
    );
}
