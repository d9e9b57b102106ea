use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, RequestId,
};
use serde_json::{Map, Value, json};

use super::*;
use crate::model::Identity;
use crate::model::identity::{DEFAULT_HEADER, header_is_reserved};

// Test-only keys (generated with `openssl genpkey`), never used anywhere else.
const ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIABis2UcDDO1xIvhvAb/Wb5axz7nn40fNnk/S/xG6m9A
-----END PRIVATE KEY-----
";
const P256: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZ9LVZNixo5ONmnw8
e6q2PhtLv/yPLSPqOeAzqoAyOOahRANCAATj0Er0I8IO6vE4oXlnRJmgSYf3Ietr
KvxBaIsPEGRSyP4vTMMvxgHqfP2dIYE4AQiJIc0KdDHpAIRb87ePxSp0
-----END PRIVATE KEY-----
";
const P384: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDB9oqPKWdz1zEROOa90
tQhkVMErXwLQDXxmYFXhGiNwXfWwFTkbCD2ro+2W1Q+IvAWhZANiAARNbL7nVKe1
92cPeOccs6sKAP/Uqq/vyvbI0qRhbRFDrkg48b4/9BSq4GRBus+uxQpIbLeyVDk0
1TBl8tvPXe9vLStYUDb43ZCTJPLnHSA24lknd2cHXq9YbaXXfExxilY=
-----END PRIVATE KEY-----
";
const SEC1_P256: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEII8OY9aC6b7cE7/5caf8hLIt/UWa5kpbwxOGfI1bYuSSoAoGCCqGSM49
AwEHoUQDQgAE462t74Tyo0yqyVYaXBLUnv2bJqCUgMrKt5rYezFw1+Rywb7PD/Tq
-----END EC PRIVATE KEY-----
";

fn config(claims: &[&str]) -> IdentityConfig {
    IdentityConfig {
        header: DEFAULT_HEADER.into(),
        ttl: Duration::from_secs(60),
        claims: claims.iter().map(|c| c.to_string()).collect(),
    }
}

fn alice() -> Identity {
    Identity::user("alice", ["finance", "engineering"])
        .with_claim("email", json!("alice@example.com"))
        .with_claim("sub", json!("alice"))
        .with_claim("exp", json!(1))
}

/// Verifies `token` the way an upstream would: with a key from the published JWKS, picked by
/// the token's `kid`.
fn verify(signer: &Signer, token: &str, audience: &str) -> Map<String, Value> {
    let set: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(header.alg);
    v.set_audience(&[audience]);
    v.set_issuer(&["https://portal.example.com"]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .unwrap()
        .claims
}

#[test]
fn tokens_carry_the_caller_for_one_server_and_verify_with_the_published_jwks() {
    for (pem, alg) in [(ED25519, Algorithm::EdDSA), (P256, Algorithm::ES256)] {
        let signer = Signer::from_pem(pem.as_bytes(), "https://portal.example.com").unwrap();
        assert_eq!(signer.algorithm(), alg);
        let token = signer
            .sign(&alice(), "wiki", &config(&["email", "missing"]))
            .unwrap()
            .expect("a token for an authenticated caller");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.kid.as_deref(), Some(signer.kid()));
        assert_eq!(header.typ.as_deref(), Some(TOKEN_TYPE));
        let c = verify(&signer, &token, "wiki");
        assert_eq!(c["iss"], "https://portal.example.com");
        assert_eq!(c["aud"], "wiki");
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["groups"], json!(["finance", "engineering"]));
        assert_eq!(c["email"], "alice@example.com");
        assert!(!c.contains_key("missing"));
        let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, 60, "short-lived: exp = iat + ttl");
        assert_eq!(c["jti"].as_str().unwrap().len(), 22, "128-bit jti");
        let keys: Vec<_> = c.keys().map(String::as_str).collect();
        assert_eq!(
            keys.len(),
            8,
            "only the portal's claims and the selected ones: {keys:?}"
        );
    }
}

#[test]
fn a_token_for_one_server_is_refused_by_another_and_each_call_gets_its_own_jti() {
    let signer = Signer::from_pem(ED25519.as_bytes(), "https://portal.example.com").unwrap();
    let a = signer
        .sign(&alice(), "wiki", &config(&[]))
        .unwrap()
        .unwrap();
    let b = signer
        .sign(&alice(), "wiki", &config(&[]))
        .unwrap()
        .unwrap();
    assert_ne!(
        verify(&signer, &a, "wiki")["jti"],
        verify(&signer, &b, "wiki")["jti"]
    );
    let set: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
    let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["tickets"]);
    let e = jsonwebtoken::decode::<Value>(&a, &key, &v).unwrap_err();
    assert_eq!(e.kind(), &jsonwebtoken::errors::ErrorKind::InvalidAudience);
}

#[test]
fn an_expired_token_is_refused_by_a_verifier() {
    let signer = Signer::from_pem(P256.as_bytes(), "https://portal.example.com").unwrap();
    let mut cfg = config(&[]);
    cfg.ttl = Duration::ZERO;
    let token = signer.sign(&alice(), "wiki", &cfg).unwrap().unwrap();
    let set: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
    let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["wiki"]);
    v.leeway = 0;
    // exp == iat: expired once the clock passes iat.
    std::thread::sleep(Duration::from_millis(1100));
    let e = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap_err();
    assert_eq!(e.kind(), &jsonwebtoken::errors::ErrorKind::ExpiredSignature);
}

#[test]
fn anonymous_and_unidentified_callers_get_no_token() {
    let signer = Signer::from_pem(ED25519.as_bytes(), "p").unwrap();
    for who in [Identity::anonymous(), Identity::nobody()] {
        assert_eq!(signer.sign(&who, "wiki", &config(&[])).unwrap(), None);
    }
}

#[test]
fn the_jwks_holds_the_public_key_only_with_kid_alg_and_use() {
    for (pem, alg, kty) in [(ED25519, "EdDSA", "OKP"), (P256, "ES256", "EC")] {
        let signer = Signer::from_pem(pem.as_bytes(), "p").unwrap();
        let jwks = signer.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kty"], kty);
        assert_eq!(k["alg"], alg);
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kid"], signer.kid());
        assert!(
            k.get("d").is_none(),
            "private key material in the JWKS: {k}"
        );
        // The kid is the RFC 7638 thumbprint: stable across replicas and restarts.
        let again = Signer::from_pem(pem.as_bytes(), "other").unwrap();
        assert_eq!(again.kid(), signer.kid());
    }
    // RFC 8037 appendix A.3: the RFC 7638 thumbprint of its example Ed25519 key.
    let okp = jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(
        serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})).unwrap(),
    );
    assert_eq!(
        thumbprint(&okp).unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn keys_that_are_not_p256_or_ed25519_pkcs8_are_refused_with_a_reason() {
    let rsa = include_str!("../auth/testdata/rsa.pem");
    for (pem, want) in [
        (P384, "not on P-256"),
        (SEC1_P256, "PKCS#8"),
        (rsa, "PKCS#8"),
        ("garbage", "PKCS#8"),
    ] {
        let e = Signer::from_pem(pem.as_bytes(), "p").unwrap_err();
        assert!(e.contains(want), "{e}");
        assert!(!e.contains("MII"), "the key is quoted in the error: {e}");
    }
    let debug = format!("{:?}", Signer::from_pem(P256.as_bytes(), "p").unwrap());
    assert!(!debug.contains("MIG"), "{debug}");
}

fn call_message(signed: Option<&str>) -> ClientJsonRpcMessage {
    let mut req = CallToolRequest::new(CallToolRequestParams::new("echo"));
    if let Some(t) = signed {
        req.extensions.insert(SignedIdentity(t.into()));
    }
    ClientJsonRpcMessage::request(ClientRequest::CallToolRequest(req), RequestId::Number(1))
}

#[test]
fn the_signed_identity_moves_into_the_header_of_an_upstream_that_opted_in_and_never_into_the_body()
{
    let header = HeaderName::from_static("x-portcullis-identity");
    let mut msg = call_message(Some("signed.jwt.token"));
    let mut headers = HashMap::new();
    take_into_header(&mut msg, Some(&header), &mut headers);
    assert_eq!(
        headers[&header],
        HeaderValue::from_static("signed.jwt.token")
    );
    assert!(headers[&header].is_sensitive(), "kept out of debug output");
    let body = serde_json::to_string(&msg).unwrap();
    assert!(!body.contains("signed.jwt.token"), "{body}");
    // Taken out: a retry of the same message object does not find it again.
    let mut again = HashMap::new();
    take_into_header(&mut msg, Some(&header), &mut again);
    assert!(again.is_empty());
}

#[test]
fn an_upstream_that_did_not_opt_in_gets_neither_header_nor_token() {
    let mut msg = call_message(Some("signed.jwt.token"));
    let mut headers = HashMap::new();
    take_into_header(&mut msg, None, &mut headers);
    assert!(headers.is_empty());
    // What a stdio upstream would read: the serialized message.
    let body = serde_json::to_string(&call_message(Some("signed.jwt.token"))).unwrap();
    assert!(!body.contains("signed.jwt.token"), "{body}");
}

#[test]
fn a_client_supplied_identity_in_meta_or_params_never_becomes_the_header() {
    // Whatever a client writes on the wire deserializes into `_meta` or params, never into
    // the extensions the identity travels in.
    let wire = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "echo",
            "_meta": {"dev.portcullis/identity": "forged", "SignedIdentity": "forged"},
            "arguments": {"x-portcullis-identity": "forged"}
        }
    });
    let mut msg: ClientJsonRpcMessage = serde_json::from_value(wire).unwrap();
    let header = HeaderName::from_static("x-portcullis-identity");
    let mut headers = HashMap::new();
    take_into_header(&mut msg, Some(&header), &mut headers);
    assert!(headers.is_empty(), "{headers:?}");
}

#[test]
fn transport_session_and_credential_headers_are_reserved() {
    for h in [
        "Authorization",
        "cookie",
        "Mcp-Session-Id",
        "mcp-protocol-version",
        "content-type",
        "Host",
    ] {
        assert!(header_is_reserved(h), "{h}");
    }
    assert!(!header_is_reserved(DEFAULT_HEADER));
    assert!(!header_is_reserved("X-User-Token"));
}
