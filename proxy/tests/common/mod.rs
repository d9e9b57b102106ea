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
/// into this build's target directory first: `cargo test -p portcullis-proxy` builds the
/// binaries of the package under test only.
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
                // The whole workspace's bins and tests: the feature set `cargo test --workspace`
                // and `make build` resolve, so after either this builds nothing (a `-p` build
                // resolves another set and rebuilds rmcp, tokio, ... into the same target).
                .args(["build", "-q", "--workspace", "--bins", "--tests"])
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"));
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            // Not the variables cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...):
            // build scripts that watch them (ring's) would see a change and rebuild, here and
            // again in the next plain cargo build.
            const SET_FOR_TESTS: [&str; 8] = [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ];
            for (k, _) in std::env::vars_os() {
                if let Some(k) = k.to_str()
                    && (SET_FOR_TESTS.contains(&k)
                        || k.starts_with("CARGO_PKG_")
                        || k.starts_with("CARGO_BIN_EXE_"))
                {
                    build.env_remove(k);
                }
            }
            build.env("CARGO_TARGET_DIR", target_dir);
            let status = build
                .status()
                .expect("running cargo to build portcullis-demo");
            assert!(
                status.success(),
                "cargo build --workspace --bins --tests (for portcullis-demo) failed"
            );
            profile_dir.join("portcullis-demo").display().to_string()
        })
        .clone()
}
