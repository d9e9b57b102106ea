//! The catalogue of built-in DLP detectors: the names a policy may use in `spec.dlp[].detectors`.
//!
//! The names are an enum in the CRD schema, so the apiserver refuses an unknown one at
//! `kubectl apply`; the proxy implements each detector (`proxy/src/dlp`) and looks it up by this
//! enum, so the two lists cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A built-in DLP detector, by its camelCase name: what policies, findings, redaction markers
/// (`[REDACTED:<name>]`) and audit events use.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Detector {
    /// Payment card numbers (Luhn, issuer prefix and length, space or dash separators).
    CreditCard,
    /// US social security numbers in `AAA-GG-SSSS` form with valid ranges.
    UsSsn,
    /// International bank account numbers (country length table and mod-97 check).
    Iban,
    /// Email addresses.
    Email,
    /// Phone numbers: E.164 (`+` prefix) and formatted NANP numbers.
    Phone,
    /// IPv4 addresses (not version strings).
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON Web Tokens whose header decodes to JSON with `alg`.
    Jwt,
    /// PEM/PGP private key blocks.
    PrivateKey,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// GitHub tokens (`ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// GitLab personal access tokens (`glpat-`).
    GitlabToken,
    /// Slack tokens (`xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`).
    SlackToken,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// Stripe live secret and restricted keys (`sk_live_`, `rk_live_`).
    StripeKey,
    /// OpenAI-style keys (`sk-…`, `sk-proj-…`).
    OpenaiKey,
    /// Anthropic keys (`sk-ant-…`).
    AnthropicKey,
    /// High-entropy values assigned to secret-like names (`password=`, `"api_key": "…"`).
    GenericSecret,
}

impl Detector {
    /// Every built-in detector, in a stable order.
    pub const ALL: [Detector; 18] = [
        Detector::CreditCard,
        Detector::UsSsn,
        Detector::Iban,
        Detector::Email,
        Detector::Phone,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Jwt,
        Detector::PrivateKey,
        Detector::AwsAccessKey,
        Detector::GithubToken,
        Detector::GitlabToken,
        Detector::SlackToken,
        Detector::GoogleApiKey,
        Detector::StripeKey,
        Detector::OpenaiKey,
        Detector::AnthropicKey,
        Detector::GenericSecret,
    ];

    /// The stable camelCase name (the serialized form).
    pub fn id(self) -> &'static str {
        match self {
            Detector::CreditCard => "creditCard",
            Detector::UsSsn => "usSsn",
            Detector::Iban => "iban",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::PrivateKey => "privateKey",
            Detector::AwsAccessKey => "awsAccessKey",
            Detector::GithubToken => "githubToken",
            Detector::GitlabToken => "gitlabToken",
            Detector::SlackToken => "slackToken",
            Detector::GoogleApiKey => "googleApiKey",
            Detector::StripeKey => "stripeKey",
            Detector::OpenaiKey => "openaiKey",
            Detector::AnthropicKey => "anthropicKey",
            Detector::GenericSecret => "genericSecret",
        }
    }

    /// Looks a detector up by its name.
    pub fn from_id(id: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.id() == id)
    }

    /// Every name, comma-separated (for error messages).
    pub fn known() -> String {
        Detector::ALL.map(Detector::id).join(", ")
    }
}

impl std::fmt::Display for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// A detector name as a policy stores it: a built-in [`Detector`], or a name this version does
/// not know.
///
/// The CRD schema holds the [`Detector`] enum, so the apiserver refuses an unknown name at
/// `kubectl apply`. But an McpPolicy written before an upgrade (under an older schema, e.g. with
/// the names `phoneNumber` or `ipAddress`) stays in etcd as it was. Reading such an object must
/// not fail: one undecodable item fails a whole list or watch, and the operator would stop seeing
/// every policy. So an unknown name reads as [`DetectorName::Unknown`], and
/// `validate::policy_problems` reports it, naming the field; the operator then says so
/// in the policy's status and events, and the proxy refuses the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetectorName {
    /// A built-in detector.
    Known(Detector),
    /// A name that is not a built-in detector (kept as written, for the error message).
    Unknown(String),
}

impl DetectorName {
    /// The built-in detector, if the name is one.
    pub fn known(&self) -> Option<Detector> {
        match self {
            DetectorName::Known(d) => Some(*d),
            DetectorName::Unknown(_) => None,
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        match self {
            DetectorName::Known(d) => d.id(),
            DetectorName::Unknown(s) => s,
        }
    }
}

impl From<Detector> for DetectorName {
    fn from(d: Detector) -> DetectorName {
        DetectorName::Known(d)
    }
}

impl std::fmt::Display for DetectorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DetectorName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DetectorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DetectorName, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match Detector::from_id(&name) {
            Some(known) => DetectorName::Known(known),
            None => DetectorName::Unknown(name),
        })
    }
}

/// The schema is the [`Detector`] enum: what the apiserver accepts from now on.
impl JsonSchema for DetectorName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        Detector::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Detector::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detector_serializes_as_its_id_and_reads_back() {
        for d in Detector::ALL {
            let json = serde_json::to_value(d).unwrap();
            assert_eq!(json, serde_json::Value::String(d.id().into()));
            assert_eq!(serde_json::from_value::<Detector>(json).unwrap(), d);
            assert_eq!(Detector::from_id(d.id()), Some(d));
        }
    }

    #[test]
    fn the_catalogue_lists_each_variant_once() {
        let mut ids: Vec<_> = Detector::ALL.iter().map(|d| d.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Detector::ALL.len());
    }

    #[test]
    fn a_stored_name_reads_as_known_or_unknown_and_writes_back_as_it_was() {
        for d in Detector::ALL {
            let n: DetectorName = serde_json::from_value(d.id().into()).unwrap();
            assert_eq!(n, DetectorName::Known(d));
            assert_eq!(serde_json::to_value(&n).unwrap(), d.id());
        }
        let n: DetectorName = serde_json::from_str("\"phoneNumber\"").unwrap();
        assert_eq!(n, DetectorName::Unknown("phoneNumber".into()));
        assert_eq!(n.known(), None);
        assert_eq!(serde_json::to_value(&n).unwrap(), "phoneNumber");
    }

    #[test]
    fn the_schema_of_a_stored_name_is_the_detector_enum() {
        assert_eq!(
            schemars::schema_for!(DetectorName),
            schemars::schema_for!(Detector)
        );
    }

    #[test]
    fn names_the_old_operator_list_invented_are_not_detectors() {
        for bogus in ["phoneNumber", "ipAddress", "ssn", ""] {
            assert_eq!(Detector::from_id(bogus), None, "{bogus}");
            assert!(serde_json::from_str::<Detector>(&format!("{bogus:?}")).is_err());
        }
    }
}
