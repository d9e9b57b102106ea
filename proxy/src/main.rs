//! `portcullis-proxy`: serves one portal from manifests (a file, a directory, or a ConfigMap).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use proxy::{config, http, portal::Portal};

/// One governed MCP endpoint over many upstream MCP servers.
///
/// Without a subcommand: serve the portal.
#[derive(Debug, Parser)]
#[command(name = "portcullis-proxy", version, about, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A YAML file, or a directory of them, with McpServer, McpPortal and McpPolicy documents
    /// (and, locally, v1 Secrets).
    #[arg(long, env = "PORTCULLIS_MANIFESTS", required = true)]
    manifests: Option<PathBuf>,
    /// The McpPortal to serve. May be omitted when the manifests hold exactly one.
    #[arg(long, env = "PORTCULLIS_PORTAL")]
    portal: Option<String>,
    /// Address of the MCP endpoint.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of the admin endpoint (/metrics, /admin/*). Keep it internal.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    admin_listen: String,
    /// Directory of mounted Secrets (`<dir>/<secret>/<key>`).
    #[arg(long, env = "PORTCULLIS_SECRETS_DIR", default_value = config::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// How often to check the manifests for changes, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    reload_interval_ms: u64,
    /// Log format on stderr.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what a subject (with groups and claims) could see and call through a portal,
    /// without logging in. Connects to the portal's upstreams to learn their tools.
    Access(AccessArgs),
}

#[derive(Debug, Args)]
struct AccessArgs {
    /// Manifests file or directory.
    #[arg(long, env = "PORTCULLIS_MANIFESTS")]
    manifests: PathBuf,
    /// The McpPortal. May be omitted when the manifests hold exactly one.
    #[arg(long, env = "PORTCULLIS_PORTAL")]
    portal: Option<String>,
    /// The subject (omit for an anonymous user of a public portal).
    #[arg(long)]
    subject: Option<String>,
    /// A group of the subject (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A claim of the subject, `name=value` (repeatable).
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// Directory of mounted Secrets (`<dir>/<secret>/<key>`).
    #[arg(long, env = "PORTCULLIS_SECRETS_DIR", default_value = config::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// How long to wait for upstreams to list their tools, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    settle_ms: u64,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

async fn access(a: AccessArgs) -> anyhow::Result<()> {
    let query = proxy::policy::access::AccessQuery {
        manifests: a.manifests,
        portal: a.portal,
        secrets_dir: a.secrets_dir,
        subject: a.subject,
        groups: a.groups,
        claims: a.claims,
        settle: Duration::from_millis(a.settle_ms),
    };
    let report = proxy::policy::access::run(&query).await?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    if let Some(Command::Access(a)) = cli.command {
        return access(a).await;
    }
    let Some(manifests_path) = cli.manifests.clone() else {
        anyhow::bail!("--manifests is required");
    };
    let manifests = config::manifests::load(&manifests_path)?;
    let portal_name = match &cli.portal {
        Some(p) => p.clone(),
        None => match manifests.portals.as_slice() {
            [only] => only.metadata.name.clone().unwrap_or_default(),
            _ => anyhow::bail!(
                "{}: holds {} McpPortals; choose one with --portal",
                manifests_path.display(),
                manifests.portals.len()
            ),
        },
    };
    let cfg = config::resolve(&manifests, &portal_name, &cli.secrets_dir)?;
    if cfg.session_key.is_none() {
        tracing::warn!("no spec.sessionKeyFrom: legacy sessions are sealed with a random key and only this process can serve them");
    }

    let shutdown = CancellationToken::new();
    let portal = Portal::start(cfg, shutdown.clone()).await;

    let (listener, addr) = http::bind(&cli.listen).await?;
    let (admin_listener, admin_addr) = http::bind(&cli.admin_listen).await?;
    let options = http::ServeOptions { loopback: addr.ip().is_loopback() };
    let router = http::app(portal.clone(), &options);
    let admin = http::admin_app(portal.clone());

    let (tx, mut rx) = tokio::sync::watch::channel(portal.config());
    config::watch::spawn(
        manifests_path.clone(),
        portal_name.clone(),
        cli.secrets_dir.clone(),
        Duration::from_millis(cli.reload_interval_ms.max(100)),
        tx,
        shutdown.clone(),
        |_| {},
    );
    let reloader = {
        let portal = portal.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let cfg = rx.borrow_and_update().clone();
                portal.reconfigure(cfg).await;
            }
        })
    };

    // Give upstreams a moment so the first clients see a full list; serving starts regardless.
    portal.upstreams.settled(Duration::from_secs(5)).await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "portcullis-proxy: portal {portal_name} serving http://{addr}/mcp")?;
    writeln!(out, "portcullis-proxy: admin http://{admin_addr}")?;
    out.flush()?;
    drop(out);

    tokio::spawn(signals(shutdown.clone()));
    let admin_task = tokio::spawn(http::serve(admin_listener, admin, shutdown.clone()));
    http::serve(listener, router, shutdown.clone())
        .await
        .context("serving the portal")?;
    let _ = admin_task.await;
    reloader.abort();
    let _ = Arc::strong_count(&portal);
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining in-flight requests");
    shutdown.cancel();
}
