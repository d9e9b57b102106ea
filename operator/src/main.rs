//! `portcullis-operator`: runs the controllers (`run`, the default), prints what they would
//! apply for a set of manifests (`render`), or probes one MCP server (`probe`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use operator::controller::{self, Context};
use operator::desired::RenderOptions;
use operator::lease::{self, LeaseConfig};
use operator::metrics::Metrics;
use operator::probe::{McpProber, Prober};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "portcullis-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    render: RenderArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Print every object the operator would apply for FILE_OR_DIR, as multi-document YAML.
    Render {
        /// A YAML file, or a directory of them, with McpServer, McpPortal and McpPolicy documents.
        #[arg(long)]
        manifests: PathBuf,
    },
    /// Connect to one MCP server and print its tool summary as JSON.
    Probe {
        /// The server's Streamable HTTP endpoint.
        #[arg(long)]
        url: String,
        /// `Name: value` headers to send.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// Image of the proxy.
    #[arg(
        long,
        env = "PORTCULLIS_PROXY_IMAGE",
        default_value = "ghcr.io/portcullis/portcullis-proxy:latest",
        global = true
    )]
    proxy_image: String,
    /// Pull policy of the proxy image.
    #[arg(
        long,
        env = "PORTCULLIS_PROXY_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        global = true
    )]
    proxy_image_pull_policy: String,
    /// Cluster DNS domain.
    #[arg(
        long,
        env = "PORTCULLIS_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        global = true
    )]
    cluster_domain: String,
    /// Namespace of resources that name none (render).
    #[arg(long, default_value = "default", global = true)]
    namespace: String,
    /// Render ServiceMonitors: `true`, `false`, or `auto` (when the CRD exists; `render`
    /// treats auto as false).
    #[arg(long, env = "PORTCULLIS_SERVICE_MONITOR", default_value = "auto", value_parser = ["auto", "true", "false"], global = true)]
    service_monitor: String,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PORTCULLIS_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: String,
    /// Compete for a Lease so only one replica reconciles.
    #[arg(long, env = "PORTCULLIS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    lease_namespace: String,
    /// Seconds a probe of an MCP server may take.
    #[arg(long, default_value_t = 15)]
    probe_timeout_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "json", value_parser = ["text", "json"])]
    log_format: String,
}

fn render_options(a: &RenderArgs) -> RenderOptions {
    RenderOptions {
        proxy_image: a.proxy_image.clone(),
        image_pull_policy: a.proxy_image_pull_policy.clone(),
        cluster_domain: a.cluster_domain.clone(),
        default_namespace: a.namespace.clone(),
        service_monitor: a.service_monitor == "true",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Render { manifests } => {
            let m = operator::manifests::load(&manifests)?;
            let objects = operator::desired::render_all(&m, &render_options(&cli.render))?;
            print!("{}", operator::desired::to_yaml(&objects)?);
            Ok(())
        }
        Command::Probe { url, headers } => {
            let headers = headers
                .iter()
                .map(|h| {
                    let (k, v) = h.split_once(':').context("headers are `Name: value`")?;
                    Ok((k.trim().to_owned(), v.trim().to_owned()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let defs = McpProber::new(Duration::from_secs(cli.run.probe_timeout_seconds))
                .probe(url, headers)
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&operator::probe::summarize(&defs))?
            );
            Ok(())
        }
        Command::Run => run(cli.render, cli.run).await,
    }
}

async fn run(render: RenderArgs, args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let mut options = render_options(&render);
    if render.service_monitor == "auto" {
        options.service_monitor = service_monitor_crd_exists(&client).await;
        tracing::info!(
            enabled = options.service_monitor,
            "ServiceMonitor support (auto)"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(&args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { m.encode() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let server_shutdown = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_shutdown.cancelled_owned())
            .await
    });

    let prober: Arc<dyn Prober> = Arc::new(McpProber::new(Duration::from_secs(
        args.probe_timeout_seconds,
    )));
    let ctx = Arc::new(Context::new(
        client.clone(),
        options,
        prober,
        metrics.clone(),
    ));
    let controllers_stop = if args.leader_election {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("portcullis-operator-{}", std::process::id()));
        let cfg = LeaseConfig {
            name: "portcullis-operator".into(),
            namespace: args.lease_namespace.clone(),
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        match lease::lead(client, cfg, shutdown.clone()).await {
            Some(token) => token,
            None => return Ok(()),
        }
    } else {
        shutdown.clone()
    };
    metrics.leader.set(1);
    tracing::info!("starting controllers");
    controller::run(ctx, controllers_stop.clone()).await;
    metrics.leader.set(0);
    let lost = !shutdown.is_cancelled();
    shutdown.cancel();
    let _ = http.await;
    if lost {
        anyhow::bail!("lost the leader lease");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn service_monitor_crd_exists(client: &kube::Client) -> bool {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    matches!(
        api.get_opt("servicemonitors.monitoring.coreos.com").await,
        Ok(Some(_))
    )
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight reconciles");
    shutdown.cancel();
}
