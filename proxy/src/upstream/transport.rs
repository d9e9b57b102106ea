//! The transport factory: from an upstream's configuration, the rmcp connection (Streamable
//! HTTP, legacy HTTP+SSE or a stdio child) and, for stateless Streamable HTTP upstreams, the
//! direct `tools/call` client.

use std::sync::Arc;

use rmcp::RoleClient;
use rmcp::model::ProtocolVersion;
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, Peer, RunningService};

use super::{DirectClient, Upstream, UpstreamClient, Upstreams, oauth, relay, sse};
use crate::config::{ServerConfig, Transport};

fn header_map(headers: &[(String, String)]) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| format!("invalid value for header {k:?}"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// The header an upstream that opted in to `spec.identity` gets the caller's signed identity in.
fn identity_header(config: &ServerConfig) -> Result<Option<reqwest::header::HeaderName>, String> {
    config
        .identity
        .as_ref()
        .map(|i| {
            reqwest::header::HeaderName::from_bytes(i.header.as_bytes())
                .map_err(|_| format!("invalid identity header name {:?}", i.header))
        })
        .transpose()
}

/// The direct `tools/call` client for a Streamable HTTP upstream that negotiated 2026-07-28
/// (stateless: a call is one POST). `None` for every other upstream.
pub(super) fn direct_client(
    all: &Upstreams,
    up: &Arc<Upstream>,
    peer: &Peer<RoleClient>,
) -> Option<Arc<DirectClient>> {
    let Transport::StreamableHttp { url, headers } = &up.config.transport else {
        return None;
    };
    if peer.peer_info()?.protocol_version != ProtocolVersion::V_2026_07_28 {
        return None;
    }
    // Both succeeded in `connect` moments ago; a failure here only means no direct path.
    let built = header_map(headers).and_then(|custom| {
        DirectClient::new(
            up.config.name.clone(),
            all.http.clone(),
            url,
            custom,
            up.tokens.clone(),
            identity_header(&up.config)?,
            Arc::downgrade(up),
        )
        .map(|client| client.with_relay(all.relay.get().cloned()))
    });
    match built {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::warn!(upstream = %up.config.name, error = %e, "no direct tools/call path");
            None
        }
    }
}

fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

pub(super) async fn connect(
    all: &Arc<Upstreams>,
    up: &Arc<Upstream>,
) -> Result<RunningService<RoleClient, UpstreamClient>, String> {
    let handler = UpstreamClient::new(
        up.config.name.clone(),
        Arc::downgrade(up),
        all.progress.clone(),
    )
    .with_relay(all.relay.get().cloned());
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match &up.config.transport {
        Transport::StreamableHttp { url, headers } => {
            use rmcp::transport::streamable_http_client::{
                StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
            };
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            let mut custom = std::collections::HashMap::new();
            for (k, v) in header_map(headers)? {
                if let Some(k) = k {
                    custom.insert(k, v);
                }
            }
            config = config.custom_headers(custom);
            // Each message arriving on the response stream of a POST relates to the request
            // posted: only this transport lets the portal relay server requests and logs.
            let associations = Arc::new(relay::Associations::default());
            let handler = handler.with_associations(associations.clone());
            let client = oauth::AuthorizedClient::new(
                all.http.clone(),
                up.tokens.clone(),
                identity_header(&up.config)?,
            )
            .with_associations(associations);
            let transport = StreamableHttpClientTransport::with_client(client, config);
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| err(&e))
        }
        Transport::Sse { url, headers } => {
            let (sink, stream) = sse::connect(
                all.http.clone(),
                url,
                header_map(headers)?,
                up.tokens.clone(),
                identity_header(&up.config)?,
                up.config.timeout,
            )
            .await
            .map_err(|e| err(&e))?;
            // Legacy SSE servers predate `server/discover`: go straight to initialize.
            handler
                .serve_with_lifecycle((sink, stream), ClientLifecycleMode::Initialize)
                .await
                .map_err(|e| err(&e))
        }
        Transport::Stdio { command, args, env } => {
            use rmcp::transport::TokioChildProcess;
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.env("PATH", child_path());
            cmd.kill_on_drop(true);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {command:?}: {e}"))?;
            if let Some(stderr) = stderr {
                forward_stderr(up.config.name.clone(), stderr);
            }
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| err(&e))
        }
    }
}

/// `PATH` for child processes: the proxy's own directory first, so bundled binaries (the demo
/// servers) are found next to it.
fn child_path() -> std::ffi::OsString {
    let mut parts = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_owned()))
    {
        parts.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

/// A stdio server's stderr is its log: forward it, line by line, to ours.
fn forward_stderr(name: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line: String = line.chars().take(2000).collect();
            tracing::info!(upstream = %name, "{line}");
        }
    });
}
