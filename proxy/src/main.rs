//! `portcullis-proxy`: serves one portal from manifests (a file, a directory, or a ConfigMap).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use proxy::{config, http, portal::Portal};

/// One governed MCP endpoint over many upstream MCP servers.
///
/// Without a subcommand it serves a portal: `portcullis-proxy --manifests FILE --portal NAME`.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Data-loss-prevention tools.
    #[command(subcommand)]
    Dlp(DlpCommand),
    /// Inbound inspection tools (prompt injection, tool poisoning, topics).
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show what a subject (with groups and claims) could see and call through a portal,
    /// without logging in. Connects to the portal's upstreams to learn their tools.
    Access(AccessArgs),
    /// List every upstream tool of a portal with its definition hash, pinning state and
    /// screening findings: the hashes to copy into `spec.pinning.approved`.
    Tools(ToolsArgs),
    /// Show a subject's LLM budgets (spent, reserved, remaining, reset) as a running portal
    /// counts them: asks its admin endpoint (`GET /admin/spend`).
    Spend(SpendArgs),
    /// Shadow-MCP discovery in HTTP request logs.
    #[command(subcommand)]
    Shadow(ShadowCommand),
}

#[derive(Debug, clap::Args)]
struct SpendArgs {
    /// The portal's admin address (`--admin-listen` of the running proxy).
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_URL",
        default_value = "http://127.0.0.1:9464"
    )]
    admin: String,
    /// The subject (the token's `sub`).
    #[arg(long)]
    subject: String,
    /// A group of the subject (repeatable): group budgets apply to members only.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A claim of the subject, `name=value` (repeatable), for policies that select by claim.
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

async fn spend(a: SpendArgs) -> anyhow::Result<()> {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query = format!("subject={}", enc(&a.subject));
    for g in &a.groups {
        query.push_str(&format!("&group={}", enc(g)));
    }
    for (n, v) in &a.claims {
        query.push_str(&format!("&claim={}", enc(&format!("{n}={v}"))));
    }
    let url = format!("{}/admin/spend?{query}", a.admin.trim_end_matches('/'));
    proxy::tls::install_crypto_provider();
    let resp = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {text}");
    }
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let budgets = report["budgets"].as_array().cloned().unwrap_or_default();
    if budgets.is_empty() {
        writeln!(out, "no budget applies to {}", a.subject)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<32} {:<14} {:<5} {:>12} {:>12} {:>12} {:>10}",
        "BUDGET", "WINDOW", "MODE", "SPENT", "RESERVED", "LIMIT", "RESETS IN"
    )?;
    for b in budgets {
        let fmt = |v: &serde_json::Value| {
            let t = &v["tokens"];
            let c = &v["cost"];
            match (t.is_null(), c.is_null() || c == "0") {
                (false, true) => format!("{t} tok"),
                (true, false) => c.as_str().unwrap_or("").to_owned(),
                _ => format!("{t} tok/{}", c.as_str().unwrap_or("")),
            }
        };
        let limit = match (&b["limit"]["tokens"], &b["limit"]["cost"]) {
            (t, c) if !t.is_null() && !c.is_null() => {
                format!("{t} tok/{}", c.as_str().unwrap_or(""))
            }
            (t, _) if !t.is_null() => format!("{t} tok"),
            (_, c) => c.as_str().unwrap_or("").to_owned(),
        };
        writeln!(
            out,
            "{:<32} {:<14} {:<5} {:>12} {:>12} {:>12} {:>9}s",
            b["budget"].as_str().unwrap_or(""),
            b["window"].as_str().unwrap_or(""),
            b["enforcement"].as_str().unwrap_or(""),
            fmt(&b["spent"]),
            fmt(&b["reserved"]),
            limit,
            b["resetsInSeconds"],
        )?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ToolsArgs {
    /// Manifests file or directory.
    #[arg(long, env = "PORTCULLIS_MANIFESTS")]
    manifests: PathBuf,
    /// The McpPortal. May be omitted when the manifests hold exactly one.
    #[arg(long, env = "PORTCULLIS_PORTAL")]
    portal: Option<String>,
    /// Directory of mounted Secrets (`<dir>/<secret>/<key>`).
    #[arg(long, env = "PORTCULLIS_SECRETS_DIR", default_value = config::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// How long to wait for upstreams to list their tools, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    settle_ms: u64,
    /// Output format: a table, or JSON (McpServer name -> verdicts).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

async fn tools(a: ToolsArgs) -> anyhow::Result<()> {
    init_logging("text");
    let verdicts = proxy::portal::pinning::inspect(
        &a.manifests,
        a.portal.as_deref(),
        &a.secrets_dir,
        Duration::from_millis(a.settle_ms),
    )
    .await?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string_pretty(&verdicts)?)?;
    } else {
        write!(out, "{}", proxy::portal::pinning::to_text(&verdicts))?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum ShadowCommand {
    /// Finds MCP traffic in HTTP request logs (nginx or Envoy JSON access logs, HAR files, JSON
    /// lines of {host, path, method, headers, body}) and prints a per-destination summary:
    /// host, requests, confidence, evidence, sanctioned or shadow. Destinations of the
    /// manifests' McpServers and McpPortals, and --sanctioned hosts, are sanctioned.
    ///
    /// Exit status: 0 when no shadow MCP traffic was found, 1 when some was, 2 on errors (a file
    /// that cannot be read, an unknown format, bad rules or manifests). Records that cannot be
    /// read are reported on stderr as FILE:LINE: message and counted; the scan goes on.
    Scan(ShadowScanArgs),
}

#[derive(Debug, clap::Args)]
struct ShadowScanArgs {
    /// Input format (auto: decided per file from its first record).
    #[arg(long, value_enum, default_value = "auto")]
    format: proxy::shadow::Format,
    /// A rules file extending (or with `replace: true`, replacing) the built-in rules
    /// (repeatable; later files win).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Manifests file or directory: its McpServers and McpPortals are sanctioned destinations.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// A sanctioned host, host:port or URL (repeatable).
    #[arg(long = "sanctioned")]
    sanctioned: Vec<String>,
    /// One JSON object per MCP request on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Print the built-in rules and exit.
    #[arg(long, exclusive = true)]
    print_default_rules: bool,
    /// The log files.
    #[arg(required_unless_present = "print_default_rules")]
    files: Vec<PathBuf>,
}

/// Bad records echoed on stderr before only counting them.
const SHADOW_BAD_SHOWN: u64 = 20;

fn shadow_scan(a: ShadowScanArgs) -> anyhow::Result<bool> {
    use proxy::shadow::{Classifier, ClassifierRules, Event, Sanctioned, Scanner};
    if a.print_default_rules {
        print!("{}", proxy::shadow::rules::DEFAULT_RULES);
        return Ok(false);
    }
    let rule_files: Vec<&std::path::Path> = a.rules.iter().map(PathBuf::as_path).collect();
    let rules = ClassifierRules::load(&rule_files)?;
    let mut sanctioned = Sanctioned::new();
    if let Some(path) = &a.manifests {
        let m = config::manifests::load(path)?;
        sanctioned
            .add_manifests(&m)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    for s in &a.sanctioned {
        sanctioned
            .add(s, "--sanctioned")
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let mut scanner = Scanner::new(Classifier::new(rules), sanctioned);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad_shown = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    for file in &a.files {
        scanner.scan_file(file, a.format, &mut |event| match event {
            Event::Hit(hit) => {
                if a.json && write_err.is_none() {
                    let line = serde_json::to_string(hit).unwrap_or_default();
                    if let Err(e) = writeln!(out, "{line}") {
                        write_err = Some(e);
                    }
                }
            }
            Event::Bad(bad) => {
                bad_shown += 1;
                if bad_shown <= SHADOW_BAD_SHOWN {
                    eprintln!("{bad}");
                }
            }
        })?;
        if let Some(e) = write_err.take() {
            return Err(e.into());
        }
    }
    let report = scanner.finish();
    if !a.json {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    if report.bad_records > SHADOW_BAD_SHOWN {
        eprintln!(
            "{} bad records in all ({} shown)",
            report.bad_records, SHADOW_BAD_SHOWN
        );
    }
    Ok(report.has_shadow())
}

#[derive(Debug, clap::Args)]
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
    /// The client's IP address, for `sourceCidrs` conditions.
    #[arg(long)]
    source_ip: Option<String>,
    /// An `amr` value of the token (repeatable), for `authMethod` conditions: `mfa`, `hwk`...
    #[arg(long = "amr")]
    amr: Vec<String>,
    /// The token's `acr`, for `authMethod` conditions.
    #[arg(long)]
    acr: Option<String>,
    /// A PEM client certificate file, read as the portal reads one a trusted ingress
    /// forwards, for `clientCertificate` conditions.
    #[arg(long)]
    client_cert: Option<PathBuf>,
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
    init_logging("text");
    // Connects to the portal's upstreams to learn their tools (as the portal would) and reports
    // what the identity could use. Makes no request as the user.
    let (portal, shutdown) = Portal::start_from_manifests(
        &a.manifests,
        a.portal.as_deref(),
        &a.secrets_dir,
        Duration::from_millis(a.settle_ms),
    )
    .await?;
    let client_cert_pem = match &a.client_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--client-cert {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let identity = proxy::http::admin::AccessContext {
        source_ip: a.source_ip,
        amr: a.amr,
        acr: a.acr,
        client_cert_pem,
    }
    .apply(proxy::model::Identity::from_parts(
        a.subject, a.groups, a.claims,
    ))
    .map_err(|e| {
        anyhow::anyhow!(
            "--{}",
            e.replacen("sourceIp", "source-ip", 1)
                .replacen("clientCert", "client-cert", 1)
        )
    })?;
    let report = portal.access(&identity);
    shutdown.cancel();
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum DlpCommand {
    /// Runs a portal's DLP rules (or every built-in detector) over a text or JSON document and
    /// prints one JSON line per finding: detector, rule, action, path, start, end (characters).
    Scan {
        /// Manifests holding the portal and its McpPolicies.
        #[arg(long, required_unless_present = "all_detectors")]
        manifests: Option<PathBuf>,
        /// The McpPortal whose rules to run.
        #[arg(long, requires = "manifests")]
        portal: Option<String>,
        /// Run every built-in detector (action log) instead of a portal's rules.
        #[arg(long, conflicts_with = "manifests")]
        all_detectors: bool,
        /// The document to scan; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Runs a portal's inspection rules (or `promptInjection` and `toolPoisoning` at threshold
    /// 50) over text, each line on its own, and prints one JSON line per finding: line (from
    /// 1), detector, signal, rule, score (1-99), action, start, end (characters within the
    /// line). Exit 0 whether or not anything was found, 2 on bad input.
    Scan {
        /// Manifests holding the portal and its McpPolicies.
        #[arg(long, required_unless_present = "all_detectors")]
        manifests: Option<PathBuf>,
        /// The McpPortal whose rules to run.
        #[arg(long, requires = "manifests")]
        portal: Option<String>,
        /// Run every tier-1 detector (rule `allDetectors`, action log) instead of a portal's
        /// rules.
        #[arg(long, conflicts_with = "manifests")]
        all_detectors: bool,
        /// The text to scan; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verifies the chain of an audit log; names the first broken line.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// A file holding the chain key (`spec.audit.keyFrom`), its bytes used as they are (as
        /// the Secret's value is mounted). Every line must then carry a mac under it. Repeat
        /// the flag while a key is being rotated: each line may match any of them.
        #[arg(long = "key", value_name = "FILE")]
        keys: Vec<PathBuf>,
        /// `SEQ:HEAD` from a checkpoint the proxy logged: the log must hold that line, so a log
        /// whose tail was cut off fails.
        #[arg(long)]
        checkpoint: Option<proxy::audit::Checkpoint>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
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
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    admin_listen: String,
    /// Address of the HTTPS listener of `spec.tls` (the same endpoints; client certificates
    /// requested when `spec.tls.clientCaFrom` is set). Defaults to `0.0.0.0:<spec.tls.port>`;
    /// refused without `spec.tls`.
    #[arg(long, env = "PORTCULLIS_TLS_LISTEN")]
    tls_listen: Option<String>,
    /// Directory of mounted Secrets (`<dir>/<secret>/<key>`).
    #[arg(long, env = "PORTCULLIS_SECRETS_DIR", default_value = config::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// How often to check the manifests for changes, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    reload_interval_ms: u64,
    /// Append audit events (hash-chained JSON lines) to this file too.
    #[arg(long, env = "PORTCULLIS_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
    /// Do not write audit events to stdout.
    #[arg(long, env = "PORTCULLIS_NO_AUDIT_STDOUT")]
    no_audit_stdout: bool,
    /// Log format on stderr.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Dlp(DlpCommand::Scan {
            manifests,
            portal,
            all_detectors,
            file,
        })) => dlp_scan(manifests, portal, all_detectors, file),
        Some(Command::Inspect(InspectCommand::Scan {
            manifests,
            portal,
            all_detectors,
            file,
        })) => match inspect_scan(manifests, portal, all_detectors, file) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(2);
            }
        },
        Some(Command::Audit(AuditCommand::Verify {
            file,
            keys,
            checkpoint,
        })) => audit_verify(&file, &keys, checkpoint),
        Some(Command::Access(a)) => access(a).await,
        Some(Command::Tools(a)) => tools(a).await,
        Some(Command::Spend(a)) => spend(a).await,
        Some(Command::Shadow(ShadowCommand::Scan(a))) => match shadow_scan(a) {
            Ok(shadow) => std::process::exit(i32::from(shadow)),
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(2);
            }
        },
        None => serve(cli.serve).await,
    }
}

fn dlp_scan(
    manifests: Option<PathBuf>,
    portal: Option<String>,
    all_detectors: bool,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Read;
    let engine = if all_detectors {
        proxy::dlp::Engine::all_detectors()
    } else {
        let path = manifests.context("--manifests or --all-detectors is required")?;
        let m = config::manifests::load(&path)?;
        let name = config::portal_name(&m, portal.as_deref(), &path)?;
        let cfg = config::resolve(&m, &name, std::path::Path::new(config::DEFAULT_SECRETS_DIR))?;
        let rules = proxy::portal::guardrails::dlp_rules(cfg.policies.iter());
        proxy::dlp::Engine::compile(&rules)?
    };
    let mut text = String::new();
    match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
        }
        _ => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    let mut out = std::io::stdout().lock();
    for f in proxy::dlp::scan_document(&engine, &text) {
        let line = serde_json::json!({
            "detector": f.detector,
            "policy": f.policy,
            "rule": f.rule,
            "action": f.action,
            "path": f.path,
            "key": f.key,
            "start": f.start,
            "end": f.end,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn inspect_scan(
    manifests: Option<PathBuf>,
    portal: Option<String>,
    all_detectors: bool,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Read;
    let engine = if all_detectors {
        proxy::inspect::Engine::all_detectors()
    } else {
        let path = manifests.context("--manifests or --all-detectors is required")?;
        let m = config::manifests::load(&path)?;
        let name = config::portal_name(&m, portal.as_deref(), &path)?;
        let cfg = config::resolve(&m, &name, std::path::Path::new(config::DEFAULT_SECRETS_DIR))?;
        let rules = proxy::portal::guardrails::inspection_rules(cfg.policies.iter());
        proxy::inspect::Engine::compile(&rules)?
    };
    let mut bytes = Vec::new();
    match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        }
        _ => {
            std::io::stdin().read_to_end(&mut bytes)?;
        }
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            file.as_deref()
                .map_or("standard input".into(), |p| p.display().to_string()),
            e.utf8_error().valid_up_to()
        )
    })?;
    let mut out = std::io::stdout().lock();
    for (i, line) in text.lines().enumerate() {
        for f in engine.scan_text(line) {
            let mut j = serde_json::json!({
                "line": i + 1,
                "detector": f.detector,
                "signal": f.signal,
                "rule": f.rule,
                "score": f.score,
                "action": f.action,
                "start": f.start,
                "end": f.end,
            });
            if let Some(t) = &f.topic {
                j["topic"] = t.as_ref().into();
            }
            if f.shadow {
                j["shadow"] = true.into();
            }
            writeln!(out, "{j}")?;
        }
    }
    Ok(())
}

fn audit_verify(
    file: &std::path::Path,
    keys: &[PathBuf],
    checkpoint: Option<proxy::audit::Checkpoint>,
) -> anyhow::Result<()> {
    let keys = keys
        .iter()
        .map(|k| {
            let key =
                std::fs::read(k).with_context(|| format!("--key {}: cannot read", k.display()))?;
            anyhow::ensure!(
                key.len() >= 32,
                "--key {}: {} bytes; a chain key has at least 32 (spec.audit.keyFrom)",
                k.display(),
                key.len()
            );
            Ok(key)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("{}: cannot open", file.display()))?,
    );
    let options = proxy::audit::VerifyOptions { keys, checkpoint };
    match proxy::audit::verify_with(reader, &options) {
        Ok(r) => {
            println!(
                "{}: ok: {} lines, seq {:?}..{:?}, {} restart(s), {}, head {}{}",
                file.display(),
                r.lines,
                r.first_seq,
                r.last_seq,
                r.restarts,
                if r.keyed {
                    "keyed (mac)"
                } else {
                    "unkeyed (hash)"
                },
                r.last_hash.unwrap_or_default(),
                if options.checkpoint.is_some() {
                    ", checkpoint found"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => anyhow::bail!("{}: {e}", file.display()),
    }
}

/// The portal listener's connection limits (`spec.limits`), read at start.
fn serve_limits(spec: &crds::McpPortalSpec) -> http::serve::ServeLimits {
    let limits = spec.limits.as_ref();
    let defaults = http::serve::ServeLimits::default();
    http::serve::ServeLimits {
        max_connections: limits
            .and_then(|l| l.max_connections)
            .map_or(defaults.max_connections, |n| n as usize),
        header_read_timeout: limits
            .and_then(|l| l.header_read_timeout_seconds)
            .map_or(defaults.header_read_timeout, |s| {
                Duration::from_secs(u64::from(s))
            }),
    }
}

/// The settings read once, at start: the audit log's key and checkpoint interval, and the
/// limits (the listener's, and those of `/mcp`: `http::Limits`, the body size).
fn restart_settings(
    cfg: &config::PortalConfig,
) -> (
    Option<config::KeyBytes>,
    Option<u32>,
    Option<crds::portal::PortalLimits>,
) {
    (
        cfg.audit_key.clone(),
        cfg.spec.audit.as_ref().and_then(|a| a.checkpoint_seconds),
        cfg.spec.limits.clone(),
    )
}

async fn serve(cli: ServeArgs) -> anyhow::Result<()> {
    init_logging(&cli.log_format);
    let manifests_path = cli.manifests.clone().context("--manifests is required")?;
    let manifests = config::manifests::load(&manifests_path)?;
    let portal_name = config::portal_name(&manifests, cli.portal.as_deref(), &manifests_path)?;
    let cfg = config::resolve(&manifests, &portal_name, &cli.secrets_dir)?;
    let tls = http::tls::listener(&manifests, &portal_name, &cfg.spec, &cli.secrets_dir)?;
    let tls_listen = match (&tls, &cli.tls_listen, &cfg.spec.tls) {
        (None, Some(_), _) => anyhow::bail!(
            "--tls-listen: McpPortal {portal_name} has no spec.tls (certificate and key)"
        ),
        (Some(_), Some(addr), _) => Some(addr.clone()),
        (Some(_), None, Some(t)) => Some(format!(
            "0.0.0.0:{}",
            t.port.unwrap_or(crds::portal::DEFAULT_TLS_PORT)
        )),
        _ => None,
    };
    if cfg.session_key.is_none() {
        tracing::warn!(
            "no spec.sessionKeyFrom: legacy sessions are sealed with a random key and only this process can serve them"
        );
    }

    let mut sinks = Vec::new();
    if !cli.no_audit_stdout {
        sinks.push(proxy::audit::Sink::Stdout);
    }
    if let Some(path) = &cli.audit_file {
        sinks.push(proxy::audit::Sink::File(path.clone()));
    }
    let at_start = restart_settings(&cfg);
    let audit = if sinks.is_empty() {
        None
    } else {
        let settings = cfg.spec.audit.as_ref();
        let options = proxy::audit::Options {
            key: cfg.audit_key.as_ref().map(|k| k.to_vec()),
            checkpoint_every: Duration::from_secs(
                settings
                    .and_then(|a| a.checkpoint_seconds)
                    .map_or(60, u64::from),
            ),
            ..proxy::audit::Options::default()
        };
        Some(Arc::new(
            proxy::audit::AuditLog::with_options(sinks, options)
                .context("opening the audit log")?,
        ))
    };

    let shutdown = CancellationToken::new();
    let portal = Portal::start(cfg, audit.clone(), shutdown.clone()).await?;

    let (listener, addr) = http::bind(&cli.listen).await?;
    let (admin_listener, admin_addr) = http::bind(&cli.admin_listen).await?;
    let tls_listener = match &tls_listen {
        Some(a) => Some(http::bind(a).await?),
        None => None,
    };
    let options = http::ServeOptions {
        loopback: addr.ip().is_loopback(),
    };
    let limits = serve_limits(&portal.config().spec);
    http::serve::raise_open_files_limit(limits.max_connections);
    let router = http::app(portal.clone(), &options);
    let admin = http::admin_app(portal.clone());

    let (tx, mut rx) = tokio::sync::watch::channel(portal.config());
    let reload_metrics = portal.metrics.clone();
    config::watch::spawn(
        manifests_path.clone(),
        portal_name.clone(),
        cli.secrets_dir.clone(),
        Duration::from_millis(cli.reload_interval_ms.max(100)),
        tx,
        shutdown.clone(),
        {
            let reload_metrics = reload_metrics.clone();
            // Manifests that do not read or resolve: counted here. Those that do are counted
            // once the portal has put them in force, or refused them (below).
            move |ok| {
                if !ok {
                    count_reload(&reload_metrics, false);
                }
            }
        },
    );
    let reloader = {
        let portal = portal.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let cfg = rx.borrow_and_update().clone();
                if restart_settings(&cfg) != at_start {
                    tracing::warn!(
                        "spec.audit.keyFrom, audit.checkpointSeconds or spec.limits changed: they take effect when the proxy restarts"
                    );
                }
                let applied = portal.reconfigure(cfg).await;
                if let Err(e) = &applied {
                    tracing::error!(error = %e, "the configuration in force stays");
                }
                count_reload(&reload_metrics, applied.is_ok());
            }
        })
    };

    // Give upstreams a moment so the first clients see a full list; serving starts regardless.
    portal.upstreams.settled(Duration::from_secs(5)).await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "portcullis-proxy: portal {portal_name} serving http://{addr}/mcp"
    )?;
    if let (Some((_, tls_addr)), Some(t)) = (&tls_listener, &tls) {
        writeln!(
            out,
            "portcullis-proxy: portal {portal_name} serving https://{tls_addr}/mcp (client certificates {})",
            if t.client_certificates {
                "requested"
            } else {
                "not requested"
            }
        )?;
    }
    writeln!(out, "portcullis-proxy: admin http://{admin_addr}")?;
    out.flush()?;
    drop(out);

    tokio::spawn(signals(shutdown.clone()));
    let admin_task = tokio::spawn(http::serve(admin_listener, admin, shutdown.clone()));
    let tls_task = match (tls_listener, tls) {
        (Some((listener, _)), Some(t)) => Some(tokio::spawn(http::serve::serve_tls_with(
            listener,
            t,
            router.clone(),
            shutdown.clone(),
            limits,
        ))),
        _ => None,
    };
    http::serve::serve_with(listener, router, shutdown.clone(), limits)
        .await
        .context("serving the portal")?;
    let _ = admin_task.await;
    if let Some(t) = tls_task {
        let _ = t.await;
    }
    reloader.abort();
    if let Some(audit) = audit {
        audit.flush().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    // Colours only for a person at a terminal: log collectors would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
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

/// Counts one configuration reload in `portcullis_config_reloads_total{result}`.
fn count_reload(metrics: &proxy::metrics::Metrics, ok: bool) {
    metrics
        .config_reloads
        .get_or_create(&proxy::metrics::ReloadLabels {
            result: if ok { "success" } else { "failure" }.into(),
        })
        .inc();
}
