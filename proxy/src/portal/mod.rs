//! The portal: shared state and the MCP server handler clients talk to.

pub mod code_tools;
pub mod context;
pub mod forward;
pub mod guardrails;
pub mod handler;
pub mod pagination;
pub mod pinning;
pub mod pipeline;
pub mod ratelimit;
pub mod relay;
pub mod sessions;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, PortalTool};
use crate::config::PortalConfig;
use crate::upstream::Upstreams;
pub use handler::PortalHandler;

/// Everything a request needs: the live configuration, the upstreams, the merged catalog.
pub struct Portal {
    config: ArcSwap<PortalConfig>,
    /// The upstream connections.
    pub upstreams: Arc<Upstreams>,
    catalog: ArcSwap<Catalog>,
    catalog_changes: watch::Sender<[u8; 32]>,
    /// The upstream change generation ([`Upstreams::generation`]) the catalog last reflected.
    catalog_generation: watch::Sender<u64>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Bounds concurrent Code Mode executions.
    pub executions: Arc<tokio::sync::Semaphore>,
    guardrails: ArcSwap<guardrails::Guardrails>,
    /// Signs user identities for servers with `spec.identity` (from the configured key).
    signer: ArcSwapOption<crate::identity::Signer>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Validates access tokens (keys cached across requests).
    pub authenticator: Arc<crate::auth::Authenticator>,
    /// The compiled McpPolicies in force (follows the configuration).
    policy: ArcSwap<crate::policy::PolicySet>,
    /// Per-subject rate limits (shared by the replicas with `spec.rateLimitStore`).
    pub limiter: ratelimit::Limiter,
    /// Tool-definition pinning state (first-use baselines, what was reported).
    pinning: pinning::Pinning,
    /// The last verdict on every upstream tool, by server.
    verdicts: ArcSwap<pinning::Verdicts>,
    /// Log levels and resource subscriptions of legacy sessions.
    pub sessions: sessions::Sessions,
    /// The LLM gateway (`spec.llm`; follows the configuration).
    pub llm: crate::llm::Gateway,
}

impl Portal {
    /// A portal started from a manifests file for a one-off question (the `access` and `tools`
    /// commands): upstreams connected and listed, catalog built. Cancel the returned token to
    /// stop it.
    pub async fn start_from_manifests(
        manifests: &std::path::Path,
        portal: Option<&str>,
        secrets_dir: &std::path::Path,
        settle: std::time::Duration,
    ) -> crate::Result<(Arc<Portal>, CancellationToken)> {
        let loaded = crate::config::manifests::load(manifests)?;
        let name = crate::config::portal_name(&loaded, portal, manifests)?;
        let cfg = crate::config::resolve(&loaded, &name, secrets_dir)?;
        let shutdown = CancellationToken::new();
        let portal = Portal::start(cfg, None, shutdown.clone()).await?;
        portal.upstreams.settled(settle).await;
        portal.catalog_settled().await;
        Ok((portal, shutdown))
    }

    /// Starts the portal's upstreams and the task that keeps the merged catalog current.
    pub async fn start(
        config: PortalConfig,
        audit: Option<Arc<crate::audit::AuditLog>>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Portal>, crate::Error> {
        let upstreams = Upstreams::new(shutdown.clone());
        let config = Arc::new(config);
        let rails = guardrails::Guardrails::new(config.clone())?;
        let signer = signer_of(&config)?;
        let metrics = match &audit {
            Some(log) => crate::metrics::Metrics::with_audit(log.metrics().clone()),
            None => crate::metrics::Metrics::new(),
        };
        let policy = crate::policy::PolicySet::for_config(&config);
        warn_about_policy(&config, &policy);
        let llm = crate::llm::Gateway::new(&config, audit.clone(), metrics.clone());
        let portal = Arc::new(Portal {
            llm,
            authenticator: Arc::new(crate::auth::Authenticator::new(&metrics.auth)),
            policy: ArcSwap::from_pointee(policy),
            limiter: ratelimit::Limiter::new(config.rate_limit_store.as_ref()),
            guardrails: ArcSwap::from_pointee(rails),
            signer: ArcSwapOption::new(signer),
            audit,
            metrics,
            config: ArcSwap::new(config),
            upstreams,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            pinning: Default::default(),
            verdicts: Default::default(),
            sessions: Default::default(),
            catalog_changes: watch::channel([0; 32]).0,
            catalog_generation: watch::channel(0).0,
            shutdown,
            executions: Arc::new(tokio::sync::Semaphore::new(
                code_tools::MAX_CONCURRENT_EXECUTIONS,
            )),
        });
        // Upstream connections hand relayed traffic (sampling, elicitation, logs, resource
        // updates) to the portal; they hold it weakly.
        let relay: std::sync::Weak<Portal> = Arc::downgrade(&portal);
        portal
            .upstreams
            .set_relay(relay as std::sync::Weak<dyn crate::upstream::relay::Relay>);
        portal.upstreams.apply(&portal.config().servers).await;
        tokio::spawn(rebuild_on_change(portal.clone()));
        tokio::spawn(sweep_sessions(Arc::downgrade(&portal)));
        Ok(portal)
    }

    /// What `identity` can see and call here ([`crate::policy::access::effective_access`] over
    /// the policy and catalog in force): the admin endpoint's and the `access` CLI's report.
    pub fn access(&self, identity: &crate::model::Identity) -> crate::policy::access::AccessReport {
        let cfg = self.config();
        let servers: Vec<String> = cfg.servers.iter().map(|s| s.name.clone()).collect();
        crate::policy::access::effective_access(
            &cfg.name,
            &self.policy(),
            &self.catalog(),
            &servers,
            identity,
        )
    }

    /// The DLP guardrails of the configuration in force.
    pub fn guardrails(&self) -> Arc<guardrails::Guardrails> {
        self.guardrails.load_full()
    }

    /// The signer of user identities in force (`None`: the portal signs none).
    pub fn signer(&self) -> Option<Arc<crate::identity::Signer>> {
        self.signer.load_full()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<PortalConfig> {
        self.config.load_full()
    }

    /// Replaces the configuration; upstreams that did not change keep their connections and
    /// in-flight requests finish on the old ones. A configuration that cannot be put in force
    /// (DLP rules that do not compile, an unusable signing key) is refused as a whole: the
    /// one in force stays, and the error says why.
    pub async fn reconfigure(&self, config: Arc<PortalConfig>) -> crate::error::Result<()> {
        let rails = guardrails::Guardrails::new(config.clone()).map_err(|e| {
            crate::error::Error::Config(format!(
                "configuration change rejected: DLP rules do not compile: {e}"
            ))
        })?;
        let signer = signer_of(&config).map_err(|e| {
            crate::error::Error::Config(format!(
                "configuration change rejected: the identity signing key is unusable: {e}"
            ))
        })?;
        self.guardrails.store(Arc::new(rails));
        self.signer.store(signer);
        self.upstreams.apply(&config.servers).await;
        let policy = crate::policy::PolicySet::for_config(&config);
        warn_about_policy(&config, &policy);
        self.policy.store(Arc::new(policy));
        self.llm.reconfigure(&config);
        self.limiter.reconfigure(config.rate_limit_store.as_ref());
        self.config.store(config);
        self.rebuild().await;
        Ok(())
    }

    /// The merged catalog in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The McpPolicies in force, compiled.
    pub fn policy(&self) -> Arc<crate::policy::PolicySet> {
        self.policy.load_full()
    }

    /// The tools `identity` may see and call. `tools/list`, Code Mode search and Code Mode
    /// execute all use this, and call authorization uses the same policy filter
    /// ([`crate::policy::PolicySet::tool_access`]), so a tool hidden in one place is hidden in
    /// all.
    pub fn visible_tools(
        &self,
        identity: &crate::model::Identity,
        catalog: &Catalog,
    ) -> Vec<PortalTool> {
        self.policy()
            .visible_tools(identity, catalog)
            .cloned()
            .collect()
    }

    /// The last pinning and screening verdict on every upstream tool, by McpServer name
    /// (quarantined tools included: this is what `/admin/tools` and `portcullis-proxy tools`
    /// show).
    pub fn tool_verdicts(&self) -> Arc<pinning::Verdicts> {
        self.verdicts.load_full()
    }

    /// Waits until the merged catalog reflects every upstream change made before this call (or
    /// the portal shuts down).
    pub async fn catalog_settled(&self) {
        let target = self.upstreams.generation();
        let mut rebuilt = self.catalog_generation.subscribe();
        tokio::select! {
            _ = rebuilt.wait_for(|g| *g >= target) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Changes whenever the merged catalog's definitions change (value: the catalog hash).
    pub fn catalog_changes(&self) -> watch::Receiver<[u8; 32]> {
        self.catalog_changes.subscribe()
    }

    async fn rebuild(&self) {
        let cfg = self.config();
        let mut inputs = Vec::new();
        for server in &cfg.servers {
            let mut input = pinning::PinInput {
                server: server.clone(),
                catalog: Arc::new(Default::default()),
                ready: false,
            };
            if let Some(up) = self.upstreams.get(&server.name).await {
                let st = up.state();
                if st.health == crate::upstream::Health::Ready {
                    input.catalog = st.catalog.clone();
                    input.ready = true;
                }
            }
            inputs.push(input);
        }
        for input in &inputs {
            let labels = crate::metrics::ServerLabels {
                server: input.server.name.clone(),
            };
            self.metrics
                .upstream_up
                .get_or_create(&labels)
                .set(i64::from(input.ready));
            self.metrics
                .upstream_tools
                .get_or_create(&labels)
                .set(input.catalog.tools.len() as i64);
        }
        // Pinning and screening decide which upstream tools exist for the portal at all, so a
        // quarantined tool is absent from every path that reads the catalog.
        let applied = self
            .pinning
            .apply(&cfg, inputs, &self.metrics, &|e| self.audit(e));
        self.verdicts.store(Arc::new(applied.verdicts));
        let inputs = applied.inputs;
        let catalog = Catalog::build(&inputs);
        let hash = catalog.hash;
        self.catalog.store(Arc::new(catalog));
        self.catalog_changes.send_if_modified(|h| {
            let changed = *h != hash;
            *h = hash;
            changed
        });
    }
}

/// The signer of the configuration's identity key, if it names one.
fn signer_of(cfg: &PortalConfig) -> crate::Result<Option<Arc<crate::identity::Signer>>> {
    cfg.identity_key
        .as_ref()
        .map(|k| crate::identity::Signer::from_key(k).map(Arc::new))
        .transpose()
}

fn warn_about_policy(cfg: &PortalConfig, policy: &crate::policy::PolicySet) {
    if policy.is_open() {
        tracing::warn!(portal = %cfg.name, "public portal without McpPolicy tool rules: every tool is open to everyone");
    } else if cfg.policies.is_empty() {
        tracing::warn!(portal = %cfg.name, "no McpPolicy binds to this portal: users will see no tools");
    }
}

/// Forgets ended sessions (and the upstream subscriptions only they held) every few seconds.
async fn sweep_sessions(portal: std::sync::Weak<Portal>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(portal) = portal.upgrade() else {
            return;
        };
        if portal.shutdown.is_cancelled() {
            return;
        }
        portal.sessions.sweep(&portal).await;
    }
}

async fn rebuild_on_change(portal: Arc<Portal>) {
    let mut changes = portal.upstreams.subscribe();
    loop {
        let seen = *changes.borrow_and_update();
        portal.rebuild().await;
        portal.catalog_generation.send_replace(seen);
        tokio::select! {
            _ = portal.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}
