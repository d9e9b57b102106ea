//! Starting an in-process portal for the integration tests: manifests in, URL out.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy::config::{self, Manifests};
use proxy::http::{self, ServeOptions};
use proxy::portal::Portal;
use tokio_util::sync::CancellationToken;

/// Starts the portal `demo` of `yaml`, waits until `ready` holds (up to 30 s; the assertion
/// names the upstreams' states), and serves it on a loopback port until `shutdown`.
/// Returns the portal and its `/mcp` URL.
pub async fn serve_portal(
    yaml: &str,
    shutdown: &CancellationToken,
    ready: impl AsyncFn(&Portal) -> bool,
) -> (Arc<Portal>, String) {
    let mut m = Manifests::default();
    config::manifests::parse_into(&mut m, Path::new("test.yaml"), yaml).unwrap();
    let cfg = config::resolve(&m, "demo", Path::new("/nonexistent")).unwrap();
    let portal = Portal::start(cfg, None, shutdown.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&portal).await {
        assert!(
            Instant::now() < deadline,
            "portal not ready: {:?}",
            portal.upstreams.status().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (listener, addr) = http::bind("127.0.0.1:0").await.unwrap();
    let router = http::app(portal.clone(), &ServeOptions { loopback: true });
    tokio::spawn(http::serve(listener, router, shutdown.clone()));
    (portal, format!("http://{addr}/mcp"))
}
