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

/// The `portcullis-demo` binary (the bundled demo servers, a workspace member of its own), built
/// into this build's target directory first: `cargo test` builds the binaries of the package
/// under test only.
#[allow(dead_code)] // not every test file runs the demo servers
pub fn demo_binary() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // <target>/<profile>/deps/<this test>: the binary goes to <target>/<profile>.
            let exe = std::env::current_exe().expect("the test's own path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("a test binary lives in <target>/<profile>/deps");
            let target_dir = profile_dir.parent().expect("<target>/<profile>");
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args([
                    "build",
                    "-q",
                    "-p",
                    "portcullis-demo",
                    "--bin",
                    "portcullis-demo",
                ])
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
                .env("CARGO_TARGET_DIR", target_dir);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("running cargo to build portcullis-demo");
            assert!(status.success(), "cargo build -p portcullis-demo failed");
            profile_dir.join("portcullis-demo").display().to_string()
        })
        .clone()
}
