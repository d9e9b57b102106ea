//! Probing an MCP server: connect (server/discover, falling back to initialize) and list every
//! tool. What the definitions mean for status is `desired::tools`.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::ProtocolVersion;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use rmcp::{ClientLifecycleMode, ClientServiceExt};

use crate::error::{Error, Result};

/// Installs ring as the process's rustls crypto provider. reqwest is built without a provider of
/// its own (one provider in the workspace: see proxy/src/tls.rs) and panics when a client is
/// built before one is installed, so every client constructor here calls this first.
pub fn install_crypto_provider() {
    // Err means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lists the tools of an MCP endpoint. A trait so controller tests can answer without a
/// network; [`McpProber`] is the real one.
pub trait Prober: Send + Sync {
    /// The tool definitions (as JSON) of the server at `url`, sent `headers`.
    fn probe(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>>>;
}

/// Probes over Streamable HTTP with the official SDK, either protocol era.
#[derive(Debug, Clone)]
pub struct McpProber {
    http: reqwest::Client,
    timeout: Duration,
}

impl McpProber {
    /// A prober whose whole probe (connect and list) is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { http, timeout }
    }
}

impl Prober for McpProber {
    fn probe(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>>> {
        let http = self.http.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let err = |message: String| Error::Probe {
                url: url.clone(),
                message,
            };
            let mut custom = HashMap::new();
            for (k, v) in &headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| err(format!("invalid header name {k:?}")))?;
                let mut value = http::HeaderValue::from_str(v)
                    .map_err(|_| err(format!("invalid value for header {k:?}")))?;
                value.set_sensitive(true);
                custom.insert(name, value);
            }
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            let transport = StreamableHttpClientTransport::with_client(http, config);
            let lifecycle = ClientLifecycleMode::Auto {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                legacy_version: Some(ProtocolVersion::V_2025_11_25),
            };
            let work = async {
                let mut client =
                    ().serve_with_lifecycle(transport, lifecycle)
                        .await
                        .map_err(|e| err(format!("connecting: {e}")))?;
                let tools = client
                    .list_all_tools()
                    .await
                    .map_err(|e| err(format!("tools/list: {e}")));
                let _ = client.close_with_timeout(Duration::from_secs(2)).await;
                tools
            };
            let tools = tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| err(format!("no answer within {}s", timeout.as_secs())))??;
            tools
                .iter()
                .map(|t| {
                    serde_json::to_value(t).map_err(|source| Error::Serialize {
                        what: "tool".into(),
                        source,
                    })
                })
                .collect()
        })
    }
}
