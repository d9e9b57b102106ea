//! Configuration: from manifests to the resolved view of one portal.
//!
//! The files, by concern: [`types`] (the resolved configuration as plain data), [`secrets`]
//! (reading Secret values), [`watch`] (reloading manifests); this file resolves one portal from
//! the manifests ([`resolve`]). Reading and checking manifest files, and which servers and
//! policies a portal selects, are the API's meaning and live in `crds` (shared with the operator).

pub mod secrets;
pub mod types;
pub mod watch;

/// The one manifest reader of the API (shared with the operator), in `crds`.
pub use crds::manifests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crds::server::{DeployedTransport, RemoteTransport};
use crds::{McpPolicy, McpPortalSpec, McpServer, select};

use crate::error::{Error, Result};
pub use manifests::Manifests;
pub use secrets::Secrets;
pub use types::{
    BudgetStoreConfig, DEFAULT_LLM_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RATE_LIMIT_STORE_TIMEOUT, DEFAULT_SECRETS_DIR, DEFAULT_TIMEOUT, KeyBytes, LlmConfig,
    LlmRouteConfig, LlmTargetConfig, PortalConfig, PriceConfig, RateLimitStoreConfig, RedisConfig,
    ServerConfig, ServerPins, SigningKey, Transport, UpstreamOAuth,
};

/// The portal to serve: `portal` when given, else the only McpPortal in the manifests read from
/// `path` (an error naming the file when there are none or several).
pub fn portal_name(manifests: &Manifests, portal: Option<&str>, path: &Path) -> Result<String> {
    match (portal, manifests.portals.as_slice()) {
        (Some(p), _) => Ok(p.to_owned()),
        (None, [only]) => Ok(only.metadata.name.clone().unwrap_or_default()),
        (None, all) => Err(Error::Config(format!(
            "{}: holds {} McpPortals; choose one with --portal",
            path.display(),
            all.len()
        ))),
    }
}

/// Resolves portal `name` from the manifests: its servers, policies and secrets.
pub fn resolve(manifests: &Manifests, name: &str, secrets_dir: &Path) -> Result<PortalConfig> {
    let portal = manifests
        .portals
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| {
            let known: Vec<_> = manifests
                .portals
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            Error::Config(format!(
                "no McpPortal named {name:?} in {} (portals found: {})",
                manifests
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    let secrets = Secrets::new(manifests, secrets_dir);
    let spec = portal.spec.clone();
    // The reader has checked the portal (crds::validate); selection is the operator's too.
    if let Some(wanted) = select::missing_server_names(portal, &manifests.servers).first() {
        return Err(Error::Config(format!(
            "McpPortal {name}: spec.servers.names: no McpServer named {wanted:?}"
        )));
    }
    let mut servers = Vec::new();
    let mut pins = BTreeMap::new();
    for server in select::selected_servers(portal, &manifests.servers) {
        servers.push(server_config(server, &secrets)?);
        pins.insert(
            server.metadata.name.clone().unwrap_or_default(),
            ServerPins::of(server),
        );
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    check_prefixes(name, &servers)?;
    let policies: Vec<McpPolicy> = select::bound_policies(portal, &manifests.policies)
        .into_iter()
        .cloned()
        .collect();
    let session_key = spec
        .session_key_from
        .as_ref()
        .map(|r| symmetric_key(name, "spec.sessionKeyFrom", r, &secrets))
        .transpose()?;
    let audit_key = spec
        .audit
        .as_ref()
        .and_then(|a| a.key_from.as_ref())
        .map(|r| symmetric_key(name, "spec.audit.keyFrom", r, &secrets))
        .transpose()?;
    let identity_key = identity_key(name, &spec, &servers, &secrets)?;
    let llm = spec
        .llm
        .as_ref()
        .map(|l| llm_config(name, l, &secrets))
        .transpose()?;
    let rate_limit_store = spec
        .rate_limit_store
        .as_ref()
        .map(|s| rate_limit_store(name, s, &secrets))
        .transpose()?;
    let max_body_bytes = spec
        .limits
        .as_ref()
        .and_then(|l| l.max_body_bytes)
        .map(|b| b as usize)
        .unwrap_or(DEFAULT_MAX_BODY_BYTES);
    Ok(PortalConfig {
        name: name.to_owned(),
        spec,
        servers,
        policies,
        session_key,
        audit_key,
        max_body_bytes,
        pins,
        identity_key,
        llm,
        rate_limit_store,
    })
}

/// The `redis://` URL a store's `urlFrom` (at `field`) names; an error naming the field when the
/// Secret is missing or holds something else.
fn redis_url(
    portal: &str,
    field: &str,
    from: &crds::SecretKeyRef,
    secrets: &Secrets<'_>,
) -> Result<String> {
    let url = secrets
        .text(from)
        .map_err(|e| Error::Config(format!("McpPortal {portal}: {field}.urlFrom: {e}")))?;
    let url = url.trim().to_owned();
    if !url.starts_with("redis://") {
        return Err(Error::Config(format!(
            "McpPortal {portal}: {field}.urlFrom: the Secret's value is not a redis:// URL"
        )));
    }
    Ok(url)
}

/// `spec.rateLimitStore` with its Redis URL read and defaults applied.
fn rate_limit_store(
    portal: &str,
    store: &crds::portal::RateLimitStore,
    secrets: &Secrets<'_>,
) -> Result<RateLimitStoreConfig> {
    let r = &store.redis;
    let url = redis_url(portal, "spec.rateLimitStore.redis", &r.url_from, secrets)?;
    Ok(RateLimitStoreConfig {
        redis: RedisConfig {
            url,
            key_prefix: r
                .key_prefix
                .clone()
                .unwrap_or_else(|| format!("portcullis:ratelimit:{portal}:")),
            timeout: r
                .timeout_millis
                .map_or(DEFAULT_RATE_LIMIT_STORE_TIMEOUT, |t| {
                    Duration::from_millis(u64::from(t))
                }),
        },
        on_unavailable: store.on_unavailable.unwrap_or_default(),
    })
}

/// `spec.llm` with defaults applied and every target's API key read.
fn llm_config(portal: &str, spec: &crds::llm::LlmSpec, secrets: &Secrets<'_>) -> Result<LlmConfig> {
    let mut routes = Vec::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let mut targets = Vec::new();
        for (j, t) in r.targets.iter().enumerate() {
            let field = format!("spec.llm.routes[{i}].targets[{j}]");
            let base_url = t
                .base_url
                .as_deref()
                .or(t.provider.default_base_url())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "McpPortal {portal}: {field}.baseUrl: required for provider {}",
                        t.provider.id()
                    ))
                })?
                .trim_end_matches('/')
                .to_owned();
            let api_key = match &t.api_key_from {
                Some(k) => Some(secrets.text(k).map_err(|e| {
                    Error::Config(format!("McpPortal {portal}: {field}.apiKeyFrom: {e}"))
                })?),
                None => None,
            };
            targets.push(LlmTargetConfig {
                provider: t.provider,
                base_url,
                model: t.model.clone(),
                api_key,
                weight: t.weight.unwrap_or(1).max(1),
                timeout: t
                    .timeout_seconds
                    .map(|s| Duration::from_secs(s.into()))
                    .unwrap_or(DEFAULT_LLM_TIMEOUT),
                price: t
                    .price
                    .as_ref()
                    .map(|p| price_config(portal, &field, p))
                    .transpose()?,
            });
        }
        routes.push(LlmRouteConfig {
            alias: r.alias.clone(),
            strategy: r.strategy,
            targets,
        });
    }
    let mut budget_store = BudgetStoreConfig::default();
    if let Some(store) = &spec.budget_store {
        budget_store.on_unavailable = store.on_unavailable;
        if let Some(r) = &store.redis {
            let url = redis_url(portal, "spec.llm.budgetStore.redis", &r.url_from, secrets)?;
            budget_store.redis = Some(RedisConfig {
                url,
                key_prefix: r
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| format!("portcullis:budget:{portal}:")),
                timeout: Duration::from_millis(u64::from(r.timeout_millis.unwrap_or(500))),
            });
        }
    }
    Ok(LlmConfig {
        routes,
        budget_store,
    })
}

/// A target's `price` in nano-units per million tokens.
fn price_config(portal: &str, field: &str, p: &crds::budget::Price) -> Result<PriceConfig> {
    let read = |name: &str, v: &str| {
        crds::budget::parse_money(v).ok_or_else(|| {
            Error::Config(format!(
                "McpPortal {portal}: {field}.price.{name}: {v:?} is not an amount"
            ))
        })
    };
    let input = read("input", &p.input)?;
    Ok(PriceConfig {
        input,
        output: read("output", &p.output)?,
        cached_input: match &p.cached_input {
            Some(c) => read("cachedInput", c)?,
            None => input,
        },
    })
}

/// The portal's identity signing key: required when a selected server asks for identity, so
/// that every replica signs with the same key.
/// A symmetric key from its Secret (the session seal's, the audit chain's): 32 bytes or more,
/// else an error naming the portal, the field and the Secret.
fn symmetric_key(
    portal: &str,
    field: &str,
    r: &crds::SecretKeyRef,
    secrets: &Secrets,
) -> Result<KeyBytes> {
    let key = secrets.bytes(r)?;
    if key.len() < 32 {
        return Err(Error::Config(format!(
            "McpPortal {portal}: {field}: secret {}/{} holds {} bytes; at least 32 are needed",
            r.name,
            r.key,
            key.len()
        )));
    }
    Ok(KeyBytes(key))
}

fn identity_key(
    portal: &str,
    spec: &McpPortalSpec,
    servers: &[ServerConfig],
    secrets: &Secrets<'_>,
) -> Result<Option<SigningKey>> {
    let Some(r) = &spec.identity_signing_key_from else {
        if let Some(s) = servers.iter().find(|s| s.identity.is_some()) {
            return Err(Error::Config(format!(
                "McpPortal {portal}: McpServer {} sets spec.identity, but spec.identitySigningKeyFrom is not set: name a Secret key holding a PEM private key (EC P-256 or Ed25519; `openssl genpkey -algorithm ed25519`)",
                s.name
            )));
        }
        return Ok(None);
    };
    let pem = secrets.bytes(r).map_err(|e| match e {
        Error::MissingSecret { .. } => Error::Config(format!(
            "McpPortal {portal}: spec.identitySigningKeyFrom: {e}"
        )),
        other => other,
    })?;
    let issuer = match &spec.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => portal.to_owned(),
    };
    for s in servers {
        if s.identity.is_some() && matches!(s.transport, Transport::Stdio { .. }) {
            tracing::warn!(portal, server = %s.name, "spec.identity has no effect on a stdio server (no headers): it gets no identity");
        }
    }
    Ok(Some(SigningKey {
        pem,
        issuer,
        source: format!(
            "McpPortal {portal}: spec.identitySigningKeyFrom: secret {}/{}",
            r.name, r.key
        ),
    }))
}

/// `spec.identity` with defaults applied and the header and claim names checked.
fn identity_config(
    name: &str,
    spec: &crds::server::IdentityHeader,
    transport: &Transport,
) -> Result<crate::model::IdentityConfig> {
    let header = spec
        .header
        .clone()
        .unwrap_or_else(|| crate::model::identity::DEFAULT_HEADER.to_owned());
    if http::HeaderName::from_bytes(header.as_bytes()).is_err()
        || crate::model::identity::header_is_reserved(&header)
    {
        return Err(Error::Config(format!(
            "McpServer {name}: spec.identity.header: {header:?} is not a header name the portal may set (transport, session and credential headers are reserved)"
        )));
    }
    let static_headers = match transport {
        Transport::StreamableHttp { headers, .. } | Transport::Sse { headers, .. } => {
            headers.as_slice()
        }
        Transport::Stdio { .. } => &[],
    };
    if static_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(&header))
    {
        return Err(Error::Config(format!(
            "McpServer {name}: spec.identity.header: {header:?} is also in spec.remote.headers"
        )));
    }
    for c in &spec.claims {
        if crate::model::identity::RESERVED_CLAIMS.contains(&c.as_str()) {
            return Err(Error::Config(format!(
                "McpServer {name}: spec.identity.claims: {c:?} is set by the portal itself"
            )));
        }
    }
    Ok(crate::model::IdentityConfig {
        header,
        ttl: spec
            .ttl_seconds
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(crate::model::identity::DEFAULT_TTL),
        claims: spec.claims.clone(),
    })
}

fn server_config(server: &McpServer, secrets: &Secrets<'_>) -> Result<ServerConfig> {
    let name = server.metadata.name.clone().unwrap_or_default();
    let spec = &server.spec;
    let ctx = |e: Error| match e {
        Error::MissingSecret { .. } => Error::Config(format!("McpServer {name}: {e}")),
        other => other,
    };
    let oauth = match spec.remote.as_ref().and_then(|r| r.oauth.as_ref()) {
        None => None,
        Some(o) => Some(UpstreamOAuth {
            token_url: o.token_url.clone(),
            client_id: secrets.text(&o.client_id_from).map_err(ctx)?,
            client_secret: secrets.text(&o.client_secret_from).map_err(ctx)?,
            scopes: o.scopes.clone(),
            resource: o.resource.clone(),
        }),
    };
    let transport = if let Some(remote) = &spec.remote {
        if remote.oauth.is_some()
            && let Some(h) = remote
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        {
            // Two Authorization headers would leave the upstream to pick one.
            return Err(Error::Config(format!(
                "McpServer {name}: spec.remote.headers: {:?} conflicts with spec.remote.oauth (the portal sends its own bearer token)",
                h.name
            )));
        }
        let mut headers = Vec::new();
        for h in &remote.headers {
            let value = match (&h.value, &h.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(r)) => secrets.text(r).map_err(ctx)?,
                (None, None) => String::new(),
            };
            headers.push((h.name.clone(), value));
        }
        match remote.transport {
            RemoteTransport::StreamableHttp => Transport::StreamableHttp {
                url: remote.url.clone(),
                headers,
            },
            RemoteTransport::Sse => Transport::Sse {
                url: remote.url.clone(),
                headers,
            },
        }
    } else if let Some(dep) = &spec.deployment {
        match dep.transport {
            DeployedTransport::Stdio => {
                let mut env = Vec::new();
                for e in &dep.env {
                    let value = match (&e.value, &e.value_from) {
                        (Some(v), _) => v.clone(),
                        (None, Some(r)) => secrets.text(r).map_err(ctx)?,
                        (None, None) => String::new(),
                    };
                    env.push((e.name.clone(), value));
                }
                let mut argv = dep.command.iter().chain(dep.args.iter()).cloned();
                let command = argv.next().unwrap_or_default();
                Transport::Stdio {
                    command,
                    args: argv.collect(),
                    env,
                }
            }
            DeployedTransport::Http => {
                // In the cluster the operator fronts it with a sidecar on this Service URL.
                let port = dep.port.unwrap_or(8080);
                let path = dep.path.clone().unwrap_or_else(|| "/mcp".into());
                Transport::StreamableHttp {
                    url: format!("http://{name}:{port}{path}"),
                    headers: Vec::new(),
                }
            }
        }
    } else {
        return Err(Error::Config(format!(
            "McpServer {name}: exactly one of spec.remote and spec.deployment must be set"
        )));
    };
    let identity = match &spec.identity {
        Some(i) => Some(identity_config(&name, i, &transport)?),
        None => None,
    };
    Ok(ServerConfig {
        identity,
        prefix: spec.prefix.clone().unwrap_or_else(|| name.clone()),
        name,
        timeout: spec
            .timeout_seconds
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(DEFAULT_TIMEOUT),
        transport,
        overrides: spec.tools.clone(),
        oauth,
    })
}

/// Two servers with the same prefix would make names ambiguous; at most one may be unprefixed.
fn check_prefixes(portal: &str, servers: &[ServerConfig]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for s in servers {
        if let Some(other) = seen.insert(s.prefix.clone(), s.name.clone()) {
            return Err(Error::Config(format!(
                "McpPortal {portal}: McpServers {other} and {} both use the prefix {:?}; set spec.prefix on one of them",
                s.name, s.prefix
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(text: &str) -> Manifests {
        let mut m = Manifests::default();
        manifests::parse_into(&mut m, Path::new("t.yaml"), text).unwrap();
        m
    }

    const SERVERS: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: a, labels: {team: x}}
spec:
  remote:
    url: http://127.0.0.1:1/mcp
    headers: [{name: X-Api-Key, valueFrom: {name: keys, key: a}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: b, labels: {team: y}}
spec: {remote: {url: "http://127.0.0.1:2/sse", transport: sse}, timeoutSeconds: 5}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {a: "s3cret\n"}
"#;

    #[test]
    fn portal_selects_servers_by_label_and_by_name_and_resolves_secrets() {
        let m = manifests(&format!(
            "{SERVERS}---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {{name: p}}\nspec:\n  public: true\n  servers:\n    names: [b]\n    selector: {{matchLabels: {{team: x}}}}\n"
        ));
        let cfg = resolve(&m, "p", Path::new("/nonexistent")).unwrap();
        let names: Vec<_> = cfg.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            cfg.servers[0].transport
                == Transport::StreamableHttp {
                    url: "http://127.0.0.1:1/mcp".into(),
                    headers: vec![("X-Api-Key".into(), "s3cret".into())]
                }
        );
        assert_eq!(cfg.servers[1].timeout, Duration::from_secs(5));
        assert!(!format!("{:?}", cfg.servers[0]).contains("s3cret"));
    }

    #[test]
    fn missing_portal_secret_and_server_are_clear_errors() {
        let m = manifests(SERVERS);
        let e = resolve(&m, "nope", Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no McpPortal named \"nope\""), "{e}");
        let m = manifests(&format!(
            "{SERVERS}---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true, servers: {{names: [zzz]}}}}\n"
        ));
        let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("no McpServer named \"zzz\""), "{e}");
        let m = manifests(&format!(
            "{SERVERS}---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true, sessionKeyFrom: {{name: nokey, key: k}}}}\n"
        ));
        let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("secret nokey/k not found"), "{e}");
    }

    #[test]
    fn a_short_session_or_audit_key_is_refused_naming_its_field() {
        for (field, yaml) in [
            (
                "spec.sessionKeyFrom",
                "sessionKeyFrom: {name: short, key: k}",
            ),
            (
                "spec.audit.keyFrom",
                "audit: {keyFrom: {name: short, key: k}}",
            ),
        ] {
            let m = manifests(&format!(
                "{SERVERS}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: short}}\nstringData: {{k: only-16-bytes-ok}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true, {yaml}}}\n"
            ));
            let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "{field}: secret short/k holds 16 bytes; at least 32"
                )),
                "{e}"
            );
        }
    }

    const IDENTITY_KEY: &str = "-----BEGIN PRIVATE KEY-----\n    MC4CAQAwBQYDK2VwBCIEIABis2UcDDO1xIvhvAb/Wb5axz7nn40fNnk/S/xG6m9A\n    -----END PRIVATE KEY-----";

    fn identity_manifests(identity: &str, portal_extra: &str) -> Manifests {
        manifests(&format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: McpServer\nmetadata: {{name: wiki}}\nspec: {{remote: {{url: http://127.0.0.1:1/mcp, headers: [{{name: X-Api-Key, value: k}}]}}, identity: {identity}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: signing}}\nstringData:\n  key: |\n    {IDENTITY_KEY}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true, publicUrl: 'https://mcp.example.com/', servers: {{names: [wiki]}}{portal_extra}}}\n"
        ))
    }

    #[test]
    fn identity_defaults_apply_and_the_issuer_is_the_public_url() {
        let m = identity_manifests("{}", ", identitySigningKeyFrom: {name: signing, key: key}");
        let cfg = resolve(&m, "p", Path::new("/x")).unwrap();
        let id = cfg.servers[0].identity.as_ref().unwrap();
        assert_eq!(id.header, "X-Portcullis-Identity");
        assert_eq!(id.ttl, Duration::from_secs(60));
        let key = cfg.identity_key.as_ref().unwrap();
        assert_eq!(key.issuer, "https://mcp.example.com");
        assert!(
            !format!("{cfg:?}").contains("MC4CAQ"),
            "the key in debug output"
        );
    }

    #[test]
    fn identity_without_a_signing_key_or_with_a_bad_one_is_refused_naming_the_field() {
        let m = identity_manifests("{}", "");
        let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
        assert!(
            e.contains("McpPortal p: McpServer wiki sets spec.identity")
                && e.contains("spec.identitySigningKeyFrom is not set"),
            "{e}"
        );
        let m = identity_manifests("{}", ", identitySigningKeyFrom: {name: nope, key: key}");
        let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
        assert!(
            e.contains("spec.identitySigningKeyFrom: secret nope/key not found"),
            "{e}"
        );
        let mut m = identity_manifests("{}", ", identitySigningKeyFrom: {name: signing, key: key}");
        m.secrets.get_mut("signing").unwrap().insert(
            "key".into(),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
        );
        // Read as bytes here; the portal refuses it when it makes a signer of it.
        let cfg = resolve(&m, "p", Path::new("/x")).unwrap();
        let e = crate::identity::Signer::from_key(cfg.identity_key.as_ref().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "McpPortal p: spec.identitySigningKeyFrom: secret signing/key: not a PKCS#8 PEM"
            ),
            "{e}"
        );
    }

    #[test]
    fn identity_header_and_claims_may_not_take_over_what_the_portal_sets() {
        let key = ", identitySigningKeyFrom: {name: signing, key: key}";
        for (identity, want) in [
            (
                "{header: Authorization}",
                "spec.identity.header: \"Authorization\" is not a header name",
            ),
            (
                "{header: Mcp-Session-Id}",
                "spec.identity.header: \"Mcp-Session-Id\"",
            ),
            ("{header: x-api-key}", "is also in spec.remote.headers"),
            (
                "{claims: [email, sub]}",
                "spec.identity.claims: \"sub\" is set by the portal",
            ),
        ] {
            let e = resolve(&identity_manifests(identity, key), "p", Path::new("/x"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("McpServer wiki: ") && e.contains(want),
                "{identity}: {e}"
            );
        }
    }

    #[test]
    fn a_static_authorization_header_beside_oauth_is_refused_naming_both_fields() {
        let m = manifests(
            "apiVersion: portcullis.dev/v1alpha1\nkind: McpServer\nmetadata: {name: wiki}\nspec: {remote: {url: http://127.0.0.1:1/mcp, headers: [{name: Authorization, value: Basic x}], oauth: {tokenUrl: http://127.0.0.1:1/token, clientIdFrom: {name: c, key: id}, clientSecretFrom: {name: c, key: secret}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: c}\nstringData: {id: i, secret: s}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {name: p}\nspec: {public: true, servers: {names: [wiki]}}\n",
        );
        let e = resolve(&m, "p", Path::new("/x")).unwrap_err().to_string();
        assert!(
            e.contains("McpServer wiki: spec.remote.headers: \"Authorization\" conflicts with spec.remote.oauth"),
            "{e}"
        );
    }
}
