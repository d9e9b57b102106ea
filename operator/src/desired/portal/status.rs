//! What an McpPortal's status says, and which Events tell its changes: pure, over what the
//! reconcile read (the servers it selects, the policies bound to it, its Secrets) and what the
//! apply observed (the proxy Deployment's replicas).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crds::{Condition, McpPolicy, McpPortal, McpPortalStatus, McpServer, SecretKeyRef};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::desired::{Notice, secret_value};
use crate::names;
use crate::status::{condition, is_true, merge};
use crds::{select, validate};

/// What a portal needs from its Secrets: each one's resourceVersion (for the config hash), and
/// what is missing (a Secret, or a key of one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretCheck {
    /// Secret name -> resourceVersion.
    pub versions: BTreeMap<String, String>,
    /// `Secret "name"` or `name/key (no key "key")`, by Secret name.
    pub missing: Vec<String>,
}

/// Checks `refs` against the Secrets `lookup` finds by name (only key names are looked at).
pub fn check_secrets<S: Borrow<Secret>>(
    refs: &[SecretKeyRef],
    lookup: impl Fn(&str) -> Option<S>,
) -> SecretCheck {
    let mut out = SecretCheck::default();
    for name in select::secret_names(refs) {
        match lookup(&name) {
            Some(secret) => {
                let secret = secret.borrow();
                for r in refs.iter().filter(|r| r.name == name) {
                    if secret_value(secret, &r.key).is_none() {
                        out.missing
                            .push(format!("{}/{} (no key {:?})", r.name, r.key, r.key));
                    }
                }
                out.versions
                    .insert(name, secret.resource_version().unwrap_or_default());
            }
            None => out.missing.push(format!("Secret {name:?}")),
        }
    }
    out
}

/// Splits bound policies into the valid ones (rendered) and the invalid ones with their
/// problems (left out: the portal says so, and each policy's own status says why).
pub fn split_valid(policies: Vec<&McpPolicy>) -> (Vec<&McpPolicy>, Vec<(String, String)>) {
    let mut valid = Vec::new();
    let mut left_out = Vec::new();
    for p in policies {
        let problems = validate::policy_problems(p);
        if problems.is_empty() {
            valid.push(p);
        } else {
            left_out.push((p.name_any(), validate::summary(&problems)));
        }
    }
    (valid, left_out)
}

/// Why a portal's configuration is not rendered; the running proxy keeps its last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// `InvalidSpec`, `SecretMissing` or `PrefixConflict`.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

/// Whether the configuration can be rendered: `None`, or the first of an invalid spec, missing
/// Secrets (from [`check_secrets`]) and two selected servers with one tool prefix.
pub fn blocked(
    portal: &McpPortal,
    selected: &[&McpServer],
    missing_secrets: &[String],
) -> Option<Blocked> {
    let problems = validate::portal_problems(portal);
    if !problems.is_empty() {
        return Some(Blocked {
            reason: "InvalidSpec",
            message: format!(
                "{}; the running proxy keeps its last configuration",
                validate::summary(&problems)
            ),
        });
    }
    if !missing_secrets.is_empty() {
        return Some(Blocked {
            reason: "SecretMissing",
            message: format!(
                "missing {}: create it or fix the reference; the running proxy keeps its last configuration",
                missing_secrets.join(", ")
            ),
        });
    }
    let (a, b, p) = select::prefix_conflicts(selected).into_iter().next()?;
    Some(Blocked {
        reason: "PrefixConflict",
        message: format!(
            "McpServers {a} and {b} both use the tool prefix {p:?}: set spec.prefix on one of them"
        ),
    })
}

/// What became of the configuration this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Not rendered.
    Blocked(Blocked),
    /// Rendered and applied.
    Applied {
        /// Hash of the configuration and the Secrets' versions.
        config_hash: String,
        /// Available replicas of the proxy Deployment, as the apply returned it.
        available: i32,
        /// Replicas it asks for.
        wanted: i32,
    },
}

/// The inputs of a portal's status.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The portal, with the status it has now.
    pub portal: &'a McpPortal,
    /// The servers it selects.
    pub selected: &'a [&'a McpServer],
    /// Servers `spec.servers.names` names that do not exist.
    pub missing_servers: &'a [String],
    /// How many bound policies are in the configuration.
    pub policies_rendered: usize,
    /// Bound policies left out as invalid: (name, problems).
    pub policies_left_out: &'a [(String, String)],
    /// The configuration's fate.
    pub rollout: Rollout,
    /// The URL clients use.
    pub url: String,
}

/// The status to write and the Events to publish. Events tell changes, not states: a rolled
/// out configuration when the hash moves, a blocked configuration when the reason changes, a
/// left-out policy when the list changes.
pub fn status(o: &Observed<'_>) -> (McpPortalStatus, Vec<Notice>) {
    let portal = o.portal;
    let name = portal.name_any();
    let generation = portal.metadata.generation;
    let old = portal.status.clone().unwrap_or_default();
    let mut notices = Vec::new();
    let mut conditions = Vec::new();

    let config_hash = match &o.rollout {
        Rollout::Applied { config_hash, .. } => {
            conditions.push(condition(
                "ConfigRendered",
                true,
                "Rendered",
                format!(
                    "ConfigMap {} holds {} server(s) and {} polic(ies)",
                    names::portal_object_name(&name),
                    o.selected.len(),
                    o.policies_rendered
                ),
                generation,
            ));
            if old
                .config_hash
                .as_ref()
                .is_some_and(|old| old != config_hash)
            {
                notices.push(Notice::normal(
                    "ConfigChanged",
                    "Render",
                    format!("configuration {config_hash} rolled out to the proxy pods"),
                ));
            }
            Some(config_hash.clone())
        }
        Rollout::Blocked(b) => {
            if !has_condition(&old.conditions, "ConfigRendered", |c| c.reason == b.reason) {
                notices.push(Notice::warning(b.reason, "Render", b.message.clone()));
            }
            conditions.push(condition(
                "ConfigRendered",
                false,
                b.reason,
                b.message.clone(),
                generation,
            ));
            old.config_hash.clone()
        }
    };

    let policies = policies_condition(o.policies_left_out, generation);
    if policies.status == "False"
        && !has_condition(&old.conditions, "PoliciesAccepted", |c| {
            c.message == policies.message
        })
    {
        notices.push(Notice::warning(
            "PolicyLeftOut",
            "Render",
            policies.message.clone(),
        ));
    }
    conditions.push(policies);

    let (ready, not_ready): (Vec<&McpServer>, Vec<&McpServer>) =
        o.selected.iter().copied().partition(|s| server_ready(s));
    conditions.push(if o.selected.is_empty() {
        let mut m = "no McpServer in this namespace matches spec.servers".to_owned();
        if !o.missing_servers.is_empty() {
            m.push_str(&format!(" (not found: {})", o.missing_servers.join(", ")));
        }
        condition("ServersReady", false, "NoServersSelected", m, generation)
    } else if !not_ready.is_empty() {
        let not_ready: Vec<String> = not_ready.iter().map(|s| s.name_any()).collect();
        condition(
            "ServersReady",
            false,
            "ServersNotReady",
            format!(
                "not ready: {} (see kubectl describe mcpserver)",
                not_ready.join(", ")
            ),
            generation,
        )
    } else {
        condition(
            "ServersReady",
            true,
            "AllServersReady",
            format!("{} server(s) ready", ready.len()),
            generation,
        )
    });
    conditions.push(match &o.rollout {
        Rollout::Blocked(_) => condition(
            "Ready",
            false,
            "ConfigNotRendered",
            "see the ConfigRendered condition",
            generation,
        ),
        Rollout::Applied {
            available, wanted, ..
        } if *available < 1 && *wanted > 0 => condition(
            "Ready",
            false,
            "DeploymentUnavailable",
            format!(
                "0/{wanted} proxy replicas available; see kubectl describe deployment {}",
                names::portal_object_name(&name)
            ),
            generation,
        ),
        Rollout::Applied {
            available, wanted, ..
        } => condition(
            "Ready",
            true,
            "Available",
            format!("{available}/{wanted} proxy replicas available"),
            generation,
        ),
    });

    let total = u32::try_from(o.selected.len()).unwrap_or(u32::MAX);
    let ready_n = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    let status = McpPortalStatus {
        url: Some(o.url.clone()),
        servers_ready: ready_n,
        servers_total: total,
        servers_summary: Some(format!("{ready_n}/{total}")),
        tools_exposed: ready.iter().map(|s| exposed_tools(s)).sum(),
        conditions: merge(&old.conditions, conditions),
        observed_generation: generation,
        config_hash,
    };
    (status, notices)
}

/// When to look again: in 5 minutes when the portal and all its servers are ready, else in 15
/// seconds (what it waits for raises no watch event of its own: a pod becoming ready does, but
/// a remote server's probe does not).
pub fn requeue_after(status: &McpPortalStatus) -> Duration {
    let all_good =
        is_true(&status.conditions, "Ready") && is_true(&status.conditions, "ServersReady");
    Duration::from_secs(if all_good { 300 } else { 15 })
}

/// The `PoliciesAccepted` condition: which bound policies were left out of the configuration,
/// and why.
pub fn policies_condition(left_out: &[(String, String)], generation: Option<i64>) -> Condition {
    if left_out.is_empty() {
        return condition(
            "PoliciesAccepted",
            true,
            "AllPoliciesValid",
            "every bound McpPolicy is in the configuration",
            generation,
        );
    }
    let list: Vec<String> = left_out
        .iter()
        .map(|(name, why)| format!("McpPolicy {name} ({why})"))
        .collect();
    condition(
        "PoliciesAccepted",
        false,
        "InvalidPoliciesLeftOut",
        format!(
            "left out of the configuration, so their rules and DLP do not apply: {}",
            list.join("; ")
        ),
        generation,
    )
}

fn has_condition(conds: &[Condition], type_: &str, pred: impl Fn(&Condition) -> bool) -> bool {
    conds.iter().any(|c| c.type_ == type_ && pred(c))
}

fn server_ready(server: &McpServer) -> bool {
    server
        .status
        .as_ref()
        .is_some_and(|st| is_true(&st.conditions, "Ready"))
}

/// Tools a ready server contributes: what it lists, less the ones hidden by overrides.
fn exposed_tools(server: &McpServer) -> u32 {
    let Some(tools) = server.status.as_ref().and_then(|s| s.tools.as_ref()) else {
        return 0;
    };
    let hidden: BTreeSet<&str> = server
        .spec
        .tools
        .iter()
        .filter(|t| t.hidden)
        .map(|t| t.name.as_str())
        .collect();
    let hidden_listed = tools
        .names
        .iter()
        .filter(|n| hidden.contains(n.as_str()))
        .count();
    tools
        .count
        .saturating_sub(u32::try_from(hidden_listed).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::testing::{condition_of, named};
    use crds::server::{DiscoveredTools, RemoteServer, ToolOverride};
    use crds::{McpPolicySpec, McpPortalSpec, McpServerSpec, McpServerStatus};

    fn portal() -> McpPortal {
        let mut spec = McpPortalSpec {
            public: Some(true),
            ..Default::default()
        };
        spec.servers.names = vec!["wiki".into(), "tickets".into()];
        named(McpPortal::new("demo", spec))
    }

    fn server(name: &str, ready: bool, tools: u32) -> McpServer {
        let mut s = named(McpServer::new(
            name,
            McpServerSpec {
                remote: Some(RemoteServer {
                    url: format!("http://{name}.example/mcp"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        s.status = Some(McpServerStatus {
            tools: Some(DiscoveredTools {
                count: tools,
                names: (0..tools).map(|i| format!("t{i}")).collect(),
                ..Default::default()
            }),
            conditions: vec![condition("Ready", ready, "x", "", Some(1))],
            ..Default::default()
        });
        s
    }

    fn applied(hash: &str, available: i32) -> Rollout {
        Rollout::Applied {
            config_hash: hash.into(),
            available,
            wanted: 2,
        }
    }

    fn observe(
        portal: &McpPortal,
        selected: &[&McpServer],
        left_out: &[(String, String)],
        rollout: Rollout,
    ) -> (McpPortalStatus, Vec<Notice>) {
        status(&Observed {
            portal,
            selected,
            missing_servers: &[],
            policies_rendered: 1,
            policies_left_out: left_out,
            rollout,
            url: "http://demo-portal.default.svc.cluster.local/mcp".into(),
        })
    }

    fn reasons(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.reason).collect()
    }

    /// `p` as it is after `status` was written.
    fn after(p: &McpPortal, status: McpPortalStatus) -> McpPortal {
        let mut p = p.clone();
        p.status = Some(status);
        p
    }

    #[test]
    fn a_rendered_portal_with_ready_servers_and_replicas_is_ready_and_counts_their_tools() {
        let (wiki, tickets) = (server("wiki", true, 3), server("tickets", true, 2));
        let p = portal();
        let (st, notices) = observe(&p, &[&wiki, &tickets], &[], applied("abc", 2));
        assert!(notices.is_empty(), "first render: no event");
        assert_eq!(st.config_hash.as_deref(), Some("abc"));
        assert_eq!(st.servers_summary.as_deref(), Some("2/2"));
        assert_eq!(st.tools_exposed, 5);
        assert_eq!(
            st.url.as_deref(),
            Some("http://demo-portal.default.svc.cluster.local/mcp")
        );
        assert_eq!(st.observed_generation, Some(1));
        let rendered = condition_of(&st.conditions, "ConfigRendered");
        assert_eq!(rendered.status, "True");
        assert_eq!(
            rendered.message,
            "ConfigMap demo-portal holds 2 server(s) and 1 polic(ies)"
        );
        assert_eq!(
            condition_of(&st.conditions, "PoliciesAccepted").status,
            "True"
        );
        assert_eq!(
            condition_of(&st.conditions, "ServersReady").reason,
            "AllServersReady"
        );
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Available")
        );
        assert_eq!(ready.message, "2/2 proxy replicas available");
        assert_eq!(requeue_after(&st), Duration::from_secs(300));
    }

    #[test]
    fn a_new_config_hash_is_an_event_and_the_same_one_again_is_not() {
        let wiki = server("wiki", true, 1);
        let p = portal();
        let (first, _) = observe(&p, &[&wiki], &[], applied("one", 2));
        let (second, notices) =
            observe(&after(&p, first.clone()), &[&wiki], &[], applied("two", 2));
        assert_eq!(reasons(&notices), ["ConfigChanged"]);
        assert!(!notices[0].warning);
        assert_eq!(
            notices[0].note,
            "configuration two rolled out to the proxy pods"
        );
        let (third, notices) =
            observe(&after(&p, second.clone()), &[&wiki], &[], applied("two", 2));
        assert!(notices.is_empty());
        assert_eq!(
            third, second,
            "settled: the same status, transition times kept"
        );
    }

    #[test]
    fn servers_that_are_not_ready_or_do_not_exist_are_named() {
        let (wiki, tickets) = (server("wiki", true, 3), server("tickets", false, 9));
        let p = portal();
        let (st, _) = observe(&p, &[&wiki, &tickets], &[], applied("h", 2));
        let c = condition_of(&st.conditions, "ServersReady");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ServersNotReady")
        );
        assert_eq!(
            c.message,
            "not ready: tickets (see kubectl describe mcpserver)"
        );
        assert_eq!(st.servers_summary.as_deref(), Some("1/2"));
        assert_eq!(
            st.tools_exposed, 3,
            "a server that is not ready exposes nothing"
        );
        assert_eq!(requeue_after(&st), Duration::from_secs(15));

        let missing = ["wiki".to_owned(), "tickets".to_owned()];
        let (st, _) = status(&Observed {
            portal: &p,
            selected: &[],
            missing_servers: &missing,
            policies_rendered: 0,
            policies_left_out: &[],
            rollout: applied("h", 2),
            url: String::new(),
        });
        let c = condition_of(&st.conditions, "ServersReady");
        assert_eq!(c.reason, "NoServersSelected");
        assert_eq!(
            c.message,
            "no McpServer in this namespace matches spec.servers (not found: wiki, tickets)"
        );
        assert_eq!(st.servers_summary.as_deref(), Some("0/0"));
    }

    #[test]
    fn tools_hidden_by_an_override_are_not_exposed() {
        let mut wiki = server("wiki", true, 3);
        wiki.spec.tools = vec![ToolOverride {
            name: "t1".into(),
            hidden: true,
            ..Default::default()
        }];
        let p = portal();
        let (st, _) = observe(&p, &[&wiki], &[], applied("h", 2));
        assert_eq!(st.tools_exposed, 2);
    }

    #[test]
    fn no_available_proxy_replica_is_not_ready() {
        let wiki = server("wiki", true, 1);
        let p = portal();
        let (st, _) = observe(&p, &[&wiki], &[], applied("h", 0));
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DeploymentUnavailable")
        );
        assert_eq!(
            ready.message,
            "0/2 proxy replicas available; see kubectl describe deployment demo-portal"
        );
    }

    #[test]
    fn a_left_out_policy_is_a_condition_and_one_event_until_the_list_changes() {
        let wiki = server("wiki", true, 1);
        let p = portal();
        let left_out = [("bad".to_owned(), "spec.dlp[0]: broken".to_owned())];
        let (st, notices) = observe(&p, &[&wiki], &left_out, applied("h", 2));
        let c = condition_of(&st.conditions, "PoliciesAccepted");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidPoliciesLeftOut")
        );
        assert_eq!(
            c.message,
            "left out of the configuration, so their rules and DLP do not apply: McpPolicy bad (spec.dlp[0]: broken)"
        );
        assert_eq!(reasons(&notices), ["PolicyLeftOut"]);
        assert!(notices[0].warning);
        assert_eq!(notices[0].note, c.message);
        let (_, again) = observe(&after(&p, st.clone()), &[&wiki], &left_out, applied("h", 2));
        assert!(again.is_empty(), "same list: no second event");
        let more = [left_out[0].clone(), ("worse".to_owned(), "x".to_owned())];
        let (_, changed) = observe(&after(&p, st), &[&wiki], &more, applied("h", 2));
        assert_eq!(reasons(&changed), ["PolicyLeftOut"]);
    }

    #[test]
    fn split_valid_leaves_out_invalid_policies_naming_the_field() {
        let good = named(McpPolicy::new("good", McpPolicySpec::default()));
        let mut bad = named(McpPolicy::new("bad", McpPolicySpec::default()));
        bad.spec.dlp = vec![crds::policy::DlpRule {
            name: "x".into(),
            patterns: vec!["([a-z".into()],
            ..Default::default()
        }];
        let (valid, left_out) = split_valid(vec![&bad, &good]);
        assert_eq!(
            valid.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(left_out.len(), 1);
        assert_eq!(left_out[0].0, "bad");
        assert!(
            left_out[0].1.contains("spec.dlp[0].patterns[0]"),
            "{left_out:?}"
        );
    }

    fn secret(name: &str, rv: &str, keys: &[&str]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        s.data = Some(
            keys.iter()
                .map(|k| (k.to_string(), k8s_openapi::ByteString(Vec::new())))
                .collect(),
        );
        s
    }

    fn key_ref(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn secrets_are_checked_by_name_and_key_and_their_versions_recorded() {
        let session = secret("session", "7", &["key"]);
        let lookup = |n: &str| (n == "session").then(|| session.clone());
        let ok = check_secrets(&[key_ref("session", "key")], lookup);
        assert!(ok.missing.is_empty());
        assert_eq!(ok.versions.get("session").map(String::as_str), Some("7"));
        let bad = check_secrets(
            &[key_ref("session", "other"), key_ref("signing", "pem")],
            lookup,
        );
        assert_eq!(
            bad.missing,
            ["session/other (no key \"other\")", "Secret \"signing\""]
        );
    }

    #[test]
    fn a_missing_secret_blocks_the_config_keeps_the_hash_and_warns_once() {
        let mut p = portal();
        p.status = Some(McpPortalStatus {
            config_hash: Some("running".into()),
            ..Default::default()
        });
        let missing = ["Secret \"session\"".to_owned()];
        let b = blocked(&p, &[], &missing).expect("blocked");
        assert_eq!(b.reason, "SecretMissing");
        let (st, notices) = observe(&p, &[], &[], Rollout::Blocked(b.clone()));
        assert_eq!(
            st.config_hash.as_deref(),
            Some("running"),
            "the running config stays"
        );
        let c = condition_of(&st.conditions, "ConfigRendered");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretMissing")
        );
        assert_eq!(
            c.message,
            "missing Secret \"session\": create it or fix the reference; the running proxy keeps its last configuration"
        );
        assert_eq!(
            condition_of(&st.conditions, "Ready").reason,
            "ConfigNotRendered"
        );
        assert_eq!(reasons(&notices), ["SecretMissing"]);
        assert!(notices[0].warning);
        let (_, again) = observe(&after(&p, st), &[], &[], Rollout::Blocked(b));
        assert!(again.is_empty(), "same reason: no second event");
    }

    #[test]
    fn an_invalid_spec_comes_before_missing_secrets_and_a_prefix_conflict_after() {
        let mut p = portal();
        p.spec.public = None; // neither auth nor public
        let b = blocked(&p, &[], &["x".to_owned()]).expect("blocked");
        assert_eq!(b.reason, "InvalidSpec");
        assert!(
            b.message
                .ends_with("; the running proxy keeps its last configuration")
        );

        let p = portal();
        let (a, mut c) = (server("a", true, 1), server("c", true, 1));
        c.spec.prefix = Some("a".into());
        assert_eq!(blocked(&p, &[&a], &[]), None);
        let b = blocked(&p, &[&a, &c], &[]).expect("blocked");
        assert_eq!(b.reason, "PrefixConflict");
        assert!(
            b.message.contains("both use the tool prefix \"a\""),
            "{}",
            b.message
        );
    }
}
