//! What an McpPolicy becomes: nothing but status (the portals read policies themselves).

use std::collections::BTreeSet;

use crds::select;
use crds::validate::{policy_problems, summary};
use crds::{McpPolicy, McpPolicyStatus, McpPortal};
use kube::ResourceExt;

use super::Notice;
use crate::status::{condition, merge};

/// The status of `policy` given the portals of its namespace, and the Event to publish: a
/// `Rejected` warning when the policy turns invalid (not again while it stays invalid).
/// Transition times are kept from the policy's current status where a condition is unchanged.
pub fn status(policy: &McpPolicy, portals: &[&McpPortal]) -> (McpPolicyStatus, Vec<Notice>) {
    let generation = policy.metadata.generation;
    let old = policy.status.clone().unwrap_or_default();
    let problems = policy_problems(policy);
    let bound: BTreeSet<String> = portals
        .iter()
        .filter(|p| select::policy_binds(policy, p))
        .map(|p| p.name_any())
        .collect();
    let missing: Vec<&str> = policy
        .spec
        .portals
        .iter()
        .filter(|n| !bound.contains(*n))
        .map(String::as_str)
        .collect();
    let accepted = if problems.is_empty() {
        condition("Accepted", true, "Valid", "the policy is valid", generation)
    } else {
        condition(
            "Accepted",
            false,
            "Invalid",
            format!(
                "{}; the policy is left out of every portal's configuration until fixed",
                summary(&problems)
            ),
            generation,
        )
    };
    let was_invalid = old
        .conditions
        .iter()
        .any(|c| c.type_ == "Accepted" && c.status == "False");
    let mut notices = Vec::new();
    if !problems.is_empty() && !was_invalid {
        notices.push(Notice::warning(
            "Rejected",
            "Validate",
            accepted.message.clone(),
        ));
    }
    let bound_condition = if !missing.is_empty() {
        condition(
            "Bound",
            !bound.is_empty(),
            "PortalNotFound",
            format!(
                "no McpPortal named {} in this namespace",
                missing.join(", ")
            ),
            generation,
        )
    } else if bound.is_empty() {
        condition(
            "Bound",
            false,
            "NoPortals",
            "no McpPortal in this namespace yet",
            generation,
        )
    } else {
        condition(
            "Bound",
            true,
            "Bound",
            format!("bound to {} portal(s)", bound.len()),
            generation,
        )
    };
    let status = McpPolicyStatus {
        portals: super::names_csv(&bound),
        conditions: merge(&old.conditions, vec![accepted, bound_condition]),
        observed_generation: generation,
        // Spend is read from the portals by the controller (crate::spend); kept as it is here.
        spend: old.spend.clone(),
    };
    (status, notices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::testing::{condition_of, named};
    use crds::{McpPolicySpec, McpPortalSpec};

    fn policy(portals: &[&str]) -> McpPolicy {
        named(McpPolicy::new(
            "p",
            McpPolicySpec {
                portals: portals.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        ))
    }

    fn portal(name: &str) -> McpPortal {
        named(McpPortal::new(name, McpPortalSpec::default()))
    }

    fn invalid(mut p: McpPolicy) -> McpPolicy {
        p.spec.dlp = vec![crds::policy::DlpRule {
            name: "x".into(),
            patterns: vec!["([a-z".into()],
            ..Default::default()
        }];
        p
    }

    #[test]
    fn a_valid_policy_for_every_portal_is_accepted_and_bound_to_each_without_an_event() {
        let (a, b) = (portal("a"), portal("b"));
        let (st, notices) = status(&policy(&[]), &[&a, &b]);
        assert_eq!(condition_of(&st.conditions, "Accepted").reason, "Valid");
        let bound = condition_of(&st.conditions, "Bound");
        assert_eq!(
            (bound.status.as_str(), bound.reason.as_str()),
            ("True", "Bound")
        );
        assert_eq!(bound.message, "bound to 2 portal(s)");
        assert_eq!(st.portals.as_deref(), Some("a,b"));
        assert_eq!(st.observed_generation, Some(1));
        assert!(notices.is_empty());
    }

    #[test]
    fn a_named_portal_that_does_not_exist_is_reported_and_the_rest_stay_bound() {
        let a = portal("a");
        let (st, _) = status(&policy(&["a", "nope"]), &[&a]);
        let bound = condition_of(&st.conditions, "Bound");
        assert_eq!(bound.status, "True", "bound to a");
        assert_eq!(bound.reason, "PortalNotFound");
        assert_eq!(bound.message, "no McpPortal named nope in this namespace");
        let (st, _) = status(&policy(&["nope"]), &[&a]);
        assert_eq!(condition_of(&st.conditions, "Bound").status, "False");
        assert_eq!(st.portals, None);
    }

    #[test]
    fn no_portal_in_the_namespace_is_not_bound() {
        let (st, _) = status(&policy(&[]), &[]);
        let bound = condition_of(&st.conditions, "Bound");
        assert_eq!(
            (bound.status.as_str(), bound.reason.as_str()),
            ("False", "NoPortals")
        );
    }

    #[test]
    fn an_invalid_policy_is_rejected_naming_the_field_with_one_event_until_it_is_fixed() {
        let bad = invalid(policy(&[]));
        let (first, notices) = status(&bad, &[]);
        let accepted = condition_of(&first.conditions, "Accepted");
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(
            accepted.message.contains("spec.dlp[0].patterns[0]"),
            "{accepted:?}"
        );
        assert_eq!(notices.len(), 1);
        assert!(notices[0].warning);
        assert_eq!(notices[0].reason, "Rejected");
        assert_eq!(notices[0].note, accepted.message);
        // Still invalid on the next reconcile: no second event.
        let mut again = bad.clone();
        again.status = Some(first.clone());
        let (second, notices) = status(&again, &[]);
        assert!(notices.is_empty());
        assert_eq!(second, first, "same status, transition times kept");
    }
}
