//! Sealed legacy session ids (`http::session::SessionSeal`): what a client presents in
//! `Mcp-Session-Id`, and what a replica opens.
//!
//! Input: a mode byte, then
//! - 0: a token as a client sends it (it must never open: forging needs the key);
//! - 1: a plaintext sealed under the portal's key (`$NOW` replaced by the current time), i.e.
//!   the payload parser behind the AEAD; what opens must seal and open to the same session;
//! - 2: internal id, subject and `initialize` params separated by 0xFF bytes: seal, then open
//!   gives back exactly those.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use proxy::http::session::SessionSeal;
use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::SessionState;
use sha2::{Digest, Sha256};

const SECRET: &[u8] = b"fuzzing key, 32 bytes or longer!";

static SEAL: LazyLock<Arc<SessionSeal>> = LazyLock::new(|| SessionSeal::new(Some(SECRET)));

/// The portal's cipher for `SECRET`, derived as `SessionSeal::new` derives it.
static CIPHER: LazyLock<XChaCha20Poly1305> = LazyLock::new(|| {
    let mut h = Sha256::new();
    h.update(b"portcullis session seal v1\0");
    h.update(SECRET);
    let key: [u8; 32] = h.finalize().into();
    XChaCha20Poly1305::new(&key.into())
});

fn params_json(state: &SessionState) -> serde_json::Value {
    serde_json::to_value(&state.initialize_params).expect("params serialize")
}

/// Seals and opens again: the same internal id, subject and params.
fn round_trip(internal: &str, state: &SessionState, subject: &str) {
    let token = SEAL.seal(internal, state, subject);
    let (i, reopened, s) = SEAL
        .open(&token)
        .unwrap_or_else(|e| panic!("a sealed token does not open: {e:?}"));
    assert_eq!(i, internal);
    assert_eq!(s, subject);
    assert_eq!(params_json(&reopened), params_json(state));
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                assert!(SEAL.open(token).is_err(), "a forged token opened");
            }
        }
        1 => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let plain = String::from_utf8_lossy(rest).replace("$NOW", &now);
            let nonce = [7u8; 24];
            let sealed = CIPHER
                .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
                .unwrap();
            let mut raw = nonce.to_vec();
            raw.extend(sealed);
            if let Ok((i, state, s)) = SEAL.open(&URL_SAFE_NO_PAD.encode(raw)) {
                round_trip(&i, &state, &s);
            }
        }
        _ => {
            let mut parts = rest.splitn(3, |b| *b == 0xFF);
            let internal = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let subject = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let Ok(params) =
                serde_json::from_slice::<InitializeRequestParams>(parts.next().unwrap_or_default())
            else {
                return;
            };
            round_trip(&internal, &SessionState::new(params), &subject);
        }
    }
});
