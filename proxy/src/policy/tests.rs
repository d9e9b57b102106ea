use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crds::McpPolicy;
use crds::policy::{Access, ClaimMatch, Effect, McpPolicySpec, PolicyLimits, Subject, ToolRule};
use proptest::prelude::*;
use rmcp::model::{Tool, ToolAnnotations};

use super::access::effective_access;
use super::*;
use crate::catalog::Catalog;
use crate::config::{ServerConfig, Transport};
use crate::model::Identity;

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
        Decision::Deny(Reason::WriteNotGranted("finance".into()))
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
        Decision::Deny(Reason::DeniedBy("no-close".into()))
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

fn arb_rule() -> impl Strategy<Value = ToolRule> {
    (
        prop_oneof![3 => Just(Effect::Allow), 1 => Just(Effect::Deny)],
        prop::collection::vec(prop::sample::select(SERVER_GLOBS), 0..3),
        prop::collection::vec(prop::sample::select(TOOL_GLOBS), 0..3),
        prop_oneof![Just(Access::Read), Just(Access::Write)],
    )
        .prop_map(|(effect, servers, tools, access)| ToolRule {
            effect,
            servers: servers.into_iter().map(str::to_owned).collect(),
            tools: tools.into_iter().map(str::to_owned).collect(),
            access,
        })
}

fn arb_subject() -> impl Strategy<Value = Subject> {
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
    ]
}

fn arb_policies() -> impl Strategy<Value = Vec<McpPolicy>> {
    prop::collection::vec(
        (
            prop::collection::vec(arb_subject(), 0..3),
            prop::collection::vec(arb_rule(), 0..4),
        ),
        0..4,
    )
    .prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (subjects, rules))| policy(&format!("p{i}"), subjects, rules))
            .collect()
    })
}

fn arb_identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        1 => Just(Identity::anonymous()),
        1 => Just(Identity::nobody()),
        6 => (
            prop::sample::select(USERS),
            prop::collection::vec(prop::sample::select(GROUPS), 0..3),
            prop::option::of(prop::sample::select(GROUPS)),
        )
            .prop_map(|(u, g, dept)| {
                let id = Identity::user(u, g);
                match dept {
                    Some(d) => id.with_claim("dept", serde_json::json!(d)),
                    None => id,
                }
            }),
    ]
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

/// An independent, deliberately naive statement of the rules in the module docs.
fn oracle(
    policies: &[McpPolicy],
    public: bool,
    id: &Identity,
    server: &str,
    tool: &str,
    read_only: bool,
) -> bool {
    use crate::model::IdentityKind;
    if id.kind == IdentityKind::Nobody {
        return false;
    }
    if public && policies.iter().all(|p| p.spec.rules.is_empty()) {
        return true;
    }
    let glob =
        |pats: &[String], s: &str| pats.is_empty() || pats.iter().any(|p| Glob::new(p).matches(s));
    let applies = |p: &McpPolicy| {
        p.spec.subjects.is_empty()
            || (id.kind == IdentityKind::Authenticated
                && p.spec.subjects.iter().any(|s| {
                    s.user.as_deref() == Some(id.subject.as_str())
                        || s.group.as_ref().is_some_and(|g| id.groups.contains(g))
                        || s.claim
                            .as_ref()
                            .is_some_and(|c| id.claim_has(&c.name, &c.value))
                }))
    };
    let matching: Vec<&ToolRule> = policies
        .iter()
        .filter(|p| applies(p))
        .flat_map(|p| &p.spec.rules)
        .filter(|r| glob(&r.servers, server) && glob(&r.tools, tool))
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

    /// For random policies, subjects and catalogs: the tools in `tools/list` are exactly the
    /// tools a call may reach, exactly what the effective-access report allows, and exactly what
    /// the rules say. (Code Mode's search and execute use the same `visible_tools` /
    /// `authorize_call`; the lead adds that leg.)
    #[test]
    fn visible_equals_callable_equals_reported(
        policies in arb_policies(),
        public in any::<bool>(),
        id in arb_identity(),
        tools in arb_catalog(),
    ) {
        let refs: Vec<(&str, &str, bool)> = tools.iter().map(|(s, t, r)| (s.as_str(), t.as_str(), *r)).collect();
        let c = catalog(&refs);
        let set = PolicySet::compile(&policies, public);

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
            .filter(|t| oracle(&policies, public, &id, &t.server, &t.upstream_name, t.read_only))
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
            prop_assert!(matches!(d, Decision::Allow(Reason::GrantedBy(_)) | Decision::Allow(Reason::OpenPortal)));
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
