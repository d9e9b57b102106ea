//! The catalogue of inspection detectors: the names a policy may use in
//! `spec.inspection[].detectors` (`promptInjection`, `toolPoisoning`, `topics`); the rules
//! themselves are in `policy`.
//!
//! As with DLP detectors, the names are an enum in the CRD schema (the apiserver refuses an
//! unknown one at `kubectl apply`), while a stored name this version does not know reads as
//! [`InspectorName::Unknown`] so that one old object cannot fail a whole list; `validate`
//! reports it naming the field and the proxy refuses the manifest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An inspection detector, by its camelCase name.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Inspector {
    /// Text that tries to take over the model: the built-in linear classifier's score over
    /// character and word n-grams, "ignore previous instructions" overrides and chat-template
    /// role markers (`<|im_start|>system`, `[INST]`, `<<SYS>>`).
    PromptInjection,
    /// Instructions aimed at the model hidden in data: Unicode tag characters and zero-width
    /// text, HTML/markdown that hides text, exfiltration links (images whose URL carries data),
    /// role markers, overrides, and requests to call other tools or reveal secrets or the
    /// system prompt.
    ToolPoisoning,
    /// The rule's own `topics`: phrases the portal owner lists per topic.
    Topics,
}

impl Inspector {
    /// Every inspection detector, in a stable order.
    pub const ALL: [Inspector; 3] = [
        Inspector::PromptInjection,
        Inspector::ToolPoisoning,
        Inspector::Topics,
    ];

    /// The stable camelCase name (the serialized form).
    pub fn id(self) -> &'static str {
        match self {
            Inspector::PromptInjection => "promptInjection",
            Inspector::ToolPoisoning => "toolPoisoning",
            Inspector::Topics => "topics",
        }
    }

    /// Looks a detector up by its name.
    pub fn from_id(id: &str) -> Option<Inspector> {
        Inspector::ALL.into_iter().find(|d| d.id() == id)
    }

    /// Every name, comma-separated (for error messages).
    pub fn known() -> String {
        Inspector::ALL.map(Inspector::id).join(", ")
    }
}

impl std::fmt::Display for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// An inspection detector name as a policy stores it: a known [`Inspector`] or a name this
/// version does not know (kept as written, for the error message).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InspectorName {
    /// A known detector.
    Known(Inspector),
    /// Any other name.
    Unknown(String),
}

impl InspectorName {
    /// The detector, if the name is one.
    pub fn known(&self) -> Option<Inspector> {
        match self {
            InspectorName::Known(d) => Some(*d),
            InspectorName::Unknown(_) => None,
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        match self {
            InspectorName::Known(d) => d.id(),
            InspectorName::Unknown(s) => s,
        }
    }
}

impl From<Inspector> for InspectorName {
    fn from(d: Inspector) -> InspectorName {
        InspectorName::Known(d)
    }
}

impl std::fmt::Display for InspectorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for InspectorName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InspectorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<InspectorName, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match Inspector::from_id(&name) {
            Some(known) => InspectorName::Known(known),
            None => InspectorName::Unknown(name),
        })
    }
}

/// The schema is the [`Inspector`] enum: what the apiserver accepts.
impl JsonSchema for InspectorName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        Inspector::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Inspector::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_known_or_unknown_and_write_back_as_they_were() {
        for d in Inspector::ALL {
            let n: InspectorName = serde_json::from_value(d.id().into()).unwrap();
            assert_eq!(n, InspectorName::Known(d));
            assert_eq!(serde_json::to_value(&n).unwrap(), d.id());
        }
        let n: InspectorName = serde_json::from_str("\"jailbreak\"").unwrap();
        assert_eq!(n, InspectorName::Unknown("jailbreak".into()));
        assert_eq!(serde_json::to_value(&n).unwrap(), "jailbreak");
    }
}
