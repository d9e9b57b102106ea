//! The request validator of the hot path (`http::validate::check_post`): a POST's headers and
//! body, the JSON-RPC shape check, the fast path's `parse_call` and its header qualification
//! (`Mcp-Method`, `Mcp-Name`, `Mcp-Protocol-Version`, `Accept`, `Content-Type`, `Host`,
//! `Origin`, `Mcp-Session-Id`), answered through a real portal (no upstreams: a qualifying call
//! runs the pipeline and is answered "unknown tool").
//!
//! Input: a flags byte (bit 0: a loopback listener, which checks `Host`), header lines
//! (`name: value`), an empty line, then the body. Properties: an answer is a JSON body with the
//! status the validator gives; a request passed on keeps its body byte for byte.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::body::{Body, to_bytes};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use proxy::config::{self, Manifests};
use proxy::http::fast::FastPath;
use proxy::http::session::SessionSeal;
use proxy::http::validate::{Checked, Validate, check_post};
use proxy::portal::Portal;
use tokio_util::sync::CancellationToken;

const MAX_BODY: usize = 64 * 1024;

const PORTAL: &str = "
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata:
  name: fuzz
spec:
  public: true
";

struct World {
    rt: tokio::runtime::Runtime,
    portal: Arc<Portal>,
    /// Session ids the fast path opens (fixed key: a sealed id in the corpus stays valid).
    seal: Arc<SessionSeal>,
    _shutdown: CancellationToken,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut m = Manifests::default();
    config::manifests::parse_into(&mut m, Path::new("fuzz.yaml"), PORTAL).unwrap();
    let cfg = config::resolve(&m, "fuzz", Path::new("/nonexistent")).unwrap();
    let shutdown = CancellationToken::new();
    let portal = rt
        .block_on(Portal::start(cfg, None, shutdown.clone()))
        .unwrap();
    World {
        rt,
        portal,
        seal: SessionSeal::new(Some(b"portcullis fuzz session key, 32+ bytes")),
        _shutdown: shutdown,
    }
});

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let mut request = Request::builder().method(Method::POST).uri("/mcp");
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let world = &*WORLD;
    let limits = Validate {
        max_bytes: MAX_BODY,
        body_timeout: std::time::Duration::from_secs(30),
        fast: FastPath::new(world.portal.clone(), flags & 1 == 1, world.seal.clone()),
    };
    world.rt.block_on(async {
        match check_post(&limits, request).await {
            Checked::Answered(answer) => {
                let status = answer.status();
                assert!(
                    matches!(
                        status,
                        StatusCode::OK
                            | StatusCode::BAD_REQUEST
                            | StatusCode::NOT_FOUND
                            | StatusCode::PAYLOAD_TOO_LARGE
                    ),
                    "{status}"
                );
                let bytes = to_bytes(answer.into_body(), usize::MAX).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"));
                assert_eq!(v["jsonrpc"], "2.0", "{v}");
            }
            Checked::Forward(req) => {
                assert!(body.len() <= MAX_BODY);
                let bytes = to_bytes(req.into_body(), usize::MAX).await.unwrap();
                assert_eq!(&bytes[..], body);
                serde_json::from_slice::<serde_json::Value>(body).expect("forwarded body is JSON");
            }
        }
    });
});
