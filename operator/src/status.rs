//! Conditions: building them, and keeping `lastTransitionTime` when the status did not change.

use crds::{Condition, McpPolicyStatus, McpPortalStatus, McpServerStatus};

/// A condition of `generation` with the current time as its transition time.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(now()),
        observed_generation: generation,
    }
}

/// Current time, RFC 3339 with seconds.
pub fn now() -> String {
    let ts = k8s_openapi::jiff::Timestamp::now();
    ts.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(ts)
        .to_string()
}

/// `new` with each condition's transition time taken from `old` when its status is unchanged.
pub fn merge(old: &[Condition], mut new: Vec<Condition>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_)
            && o.status == c.status
            && o.last_transition_time.is_some()
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    new
}

/// Whether `conds` holds `type_` with status `True`.
pub fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// A status with standard conditions: what `controller::settle_status` re-merges
/// against the API server's copy before it decides to write.
pub trait Conditioned {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, to take transition times from another copy.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

impl Conditioned for McpPortalStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl Conditioned for McpServerStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl Conditioned for McpPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}
