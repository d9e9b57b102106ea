//! `portcullis-operator`: runs the controllers (`run`, the default), prints what they would
//! apply for a set of manifests (`render`), or probes one MCP server (`probe`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use operator::controller::stores::Stores;
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
    #[command(flatten)]
    discovery: DiscoveryArgs,
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
    /// Shadow MCP discovery: MCP endpoints in the cluster that no McpServer backs.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ShadowCommand {
    /// Run one discovery pass and list the shadow MCP endpoints (namespace, workload, endpoint,
    /// evidence, probe result). Scans `--namespace`, else `--discover-namespaces`, else all.
    List {
        /// `table` or `json`.
        #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
        #[command(flatten)]
        source: ShadowSource,
    },
    /// Print, as YAML for GitOps, the NetworkPolicies that `--confine-shadow` would apply.
    Netpol {
        #[command(flatten)]
        source: ShadowSource,
    },
    /// Probe one HTTP endpoint (`http://host:port`) the way discovery does; prints JSON.
    Probe {
        /// Base URL, without the `/mcp` path.
        #[arg(long)]
        url: String,
    },
}

#[derive(Debug, clap::Args)]
struct ShadowSource {
    /// Read Services, Pods, McpServers and McpPortals from this YAML file or directory
    /// (`kubectl get svc,pods,mcpservers,mcpportals -A -o yaml`) instead of the cluster.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Do not probe: report only what names, appProtocols and labels say.
    #[arg(long)]
    no_probe: bool,
}

#[derive(Debug, clap::Args)]
struct DiscoveryArgs {
    /// Run shadow MCP discovery (opt-in) next to the controllers.
    #[arg(long, env = "PORTCULLIS_DISCOVER_SHADOW", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", global = true)]
    discover_shadow: bool,
    /// Namespaces discovery scans (comma-separated); empty scans all.
    #[arg(
        long,
        env = "PORTCULLIS_DISCOVER_NAMESPACES",
        value_delimiter = ',',
        global = true
    )]
    discover_namespaces: Vec<String>,
    /// Seconds between discovery passes.
    #[arg(long, env = "PORTCULLIS_DISCOVER_INTERVAL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86400), global = true)]
    discover_interval: u64,
    /// Seconds each discovery probe request may take.
    #[arg(long, env = "PORTCULLIS_DISCOVER_PROBE_TIMEOUT", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60), global = true)]
    discover_probe_timeout: u64,
    /// Apply a NetworkPolicy that confines each shadow endpoint's MCP ports to portal pods
    /// and the operator.
    #[arg(long, env = "PORTCULLIS_CONFINE_SHADOW", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", global = true)]
    confine_shadow: bool,
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
    /// Namespace of resources that name none (render; default `default`); the namespace
    /// `shadow` scans (default: `--discover-namespaces`, else all).
    #[arg(long, global = true)]
    namespace: Option<String>,
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
    /// Namespace the operator runs in: its Lease, and the only namespace whose operator pods
    /// deployed servers' NetworkPolicies admit.
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    lease_namespace: String,
    /// Seconds a probe of an MCP server may take.
    #[arg(long, default_value_t = 15)]
    probe_timeout_seconds: u64,
    /// Seconds between reads of the LLM spend of each McpPolicy with budgets from its portals
    /// (their admin port) into `status.spend`; 0 turns it off.
    #[arg(long, env = "PORTCULLIS_SPEND_INTERVAL", default_value_t = operator::spend::DEFAULT_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(0..=86400))]
    spend_interval_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "json", value_parser = ["text", "json"])]
    log_format: String,
}

/// `operator_namespace`: where the operator runs (`POD_NAMESPACE`, the Lease's namespace).
fn render_options(a: &RenderArgs, operator_namespace: &str) -> RenderOptions {
    RenderOptions {
        proxy_image: a.proxy_image.clone(),
        image_pull_policy: a.proxy_image_pull_policy.clone(),
        cluster_domain: a.cluster_domain.clone(),
        default_namespace: a.namespace.clone().unwrap_or_else(|| "default".into()),
        service_monitor: a.service_monitor == "true",
        operator_namespace: operator_namespace.to_owned(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    operator::probe::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Render { manifests } => {
            let m = crds::manifests::load(&manifests)?;
            let objects = operator::desired::render_all(
                &m,
                &render_options(&cli.render, &cli.run.lease_namespace),
            )?;
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
                serde_json::to_string_pretty(&operator::desired::tools::summarize(&defs))?
            );
            Ok(())
        }
        Command::Shadow { command } => shadow(command, &cli.render, &cli.run, &cli.discovery).await,
        Command::Run => run(cli.render, cli.run, cli.discovery).await,
    }
}

fn discovery_options(
    render: &RenderArgs,
    run: &RunArgs,
    d: &DiscoveryArgs,
) -> operator::discovery::DiscoveryOptions {
    operator::discovery::DiscoveryOptions {
        namespaces: d
            .discover_namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        interval: Duration::from_secs(d.discover_interval),
        confine: d.confine_shadow,
        cluster_domain: render.cluster_domain.clone(),
        operator_namespace: Some(run.lease_namespace.clone()),
        probe: true,
        concurrency: 8,
    }
}

async fn shadow(
    command: ShadowCommand,
    render: &RenderArgs,
    run: &RunArgs,
    d: &DiscoveryArgs,
) -> anyhow::Result<()> {
    use operator::discovery::{self, probe::HttpShadowProber, probe::ShadowProber};
    let prober: Arc<dyn ShadowProber> = Arc::new(HttpShadowProber::new(Duration::from_secs(
        d.discover_probe_timeout,
    )));
    let mut opts = discovery_options(render, run, d);
    if let Some(ns) = &render.namespace {
        opts.namespaces = vec![ns.clone()];
    }
    let source = match command {
        ShadowCommand::Probe { url } => {
            let outcome = prober.probe(url).await;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            return Ok(());
        }
        ShadowCommand::List { ref source, .. } | ShadowCommand::Netpol { ref source } => source,
    };
    opts.probe = !source.no_probe;
    let inv = match &source.from {
        Some(path) => {
            let mut inv = discovery::inventory_from_files(path, "default")?;
            inv.retain_namespaces(&opts.namespaces);
            inv
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (kubeconfig)")?;
            discovery::list_inventory(&client, &opts.namespaces)
                .await
                .context("listing Services, Pods, McpServers and McpPortals")?
        }
    };
    let scan = discovery::scan(&inv, prober, &opts).await;
    match command {
        ShadowCommand::List { output, .. } if output == "json" => {
            println!("{}", serde_json::to_string_pretty(&scan.endpoints)?);
        }
        ShadowCommand::List { .. } => print!("{}", discovery::to_table(&scan.endpoints)),
        _ => {
            let callers = discovery::sanctioned_callers(&inv, &opts);
            for p in discovery::netpol::network_policies(&scan.endpoints, &callers) {
                let mut v = serde_json::to_value(&p)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("apiVersion".into(), "networking.k8s.io/v1".into());
                    o.insert("kind".into(), "NetworkPolicy".into());
                }
                print!("---\n{}", serde_yaml::to_string(&v)?);
            }
        }
    }
    Ok(())
}

async fn run(render: RenderArgs, args: RunArgs, disc: DiscoveryArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let mut options = render_options(&render, &args.lease_namespace);
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
    let (stores, writers) = Stores::new();
    let spend = operator::spend::SpendOptions {
        fetcher: (args.spend_interval_seconds > 0).then(|| {
            Arc::new(operator::spend::HttpSpendFetcher::new(
                operator::spend::READ_TIMEOUT,
            )) as Arc<dyn operator::spend::SpendFetcher>
        }),
        interval: Duration::from_secs(args.spend_interval_seconds.max(1)),
    };
    let ctx = Arc::new(
        Context::new(client.clone(), options, prober, metrics.clone(), stores).with_spend(spend),
    );
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
    let discovery = disc.discover_shadow.then(|| {
        use operator::discovery::{Discovery, probe::HttpShadowProber};
        let d = Discovery::new(
            ctx.clone(),
            Arc::new(HttpShadowProber::new(Duration::from_secs(
                disc.discover_probe_timeout,
            ))),
            discovery_options(&render, &args, &disc),
        );
        let stop = controllers_stop.clone();
        tokio::spawn(async move { d.run(stop).await })
    });
    tracing::info!("starting controllers");
    controller::run(ctx, writers, controllers_stop.clone()).await;
    if let Some(d) = discovery {
        controllers_stop.cancel();
        let _ = d.await;
    }
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
