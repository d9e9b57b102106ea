//! The portal: shared state and the MCP server handler clients talk to.

pub mod catalog;
pub mod handler;
pub mod pagination;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::PortalConfig;
use crate::upstream::Upstreams;
pub use catalog::Catalog;
pub use handler::PortalHandler;

/// Everything a request needs: the live configuration, the upstreams, the merged catalog.
pub struct Portal {
    config: ArcSwap<PortalConfig>,
    /// The upstream connections.
    pub upstreams: Arc<Upstreams>,
    catalog: ArcSwap<Catalog>,
    catalog_changes: watch::Sender<[u8; 32]>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Validates access tokens (keys cached across requests).
    pub authenticator: Arc<crate::auth::Authenticator>,
    /// The compiled McpPolicies in force (follows the configuration).
    policy: ArcSwap<crate::policy::PolicySet>,
    /// Per-subject rate limits.
    pub limiter: crate::policy::ratelimit::RateLimiter,
    /// Authentication and authorization counters, for metrics.
    pub counters: Arc<crate::policy::AccessCounters>,
}

impl Portal {
    /// Starts the portal's upstreams and the task that keeps the merged catalog current.
    pub async fn start(config: PortalConfig, shutdown: CancellationToken) -> Arc<Portal> {
        let upstreams = Upstreams::new(shutdown.clone());
        let counters = Arc::new(crate::policy::AccessCounters::default());
        let policy = crate::policy::PolicySet::for_config(&config);
        warn_about_policy(&config, &policy);
        let portal = Arc::new(Portal {
            authenticator: Arc::new(crate::auth::Authenticator::new(counters.clone())),
            policy: ArcSwap::from_pointee(policy),
            limiter: Default::default(),
            counters,
            config: ArcSwap::from_pointee(config),
            upstreams,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            catalog_changes: watch::channel([0; 32]).0,
            shutdown,
        });
        portal.upstreams.apply(&portal.config().servers).await;
        tokio::spawn(rebuild_on_change(portal.clone()));
        portal
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<PortalConfig> {
        self.config.load_full()
    }

    /// Replaces the configuration; upstreams that did not change keep their connections and
    /// in-flight requests finish on the old ones.
    pub async fn reconfigure(&self, config: Arc<PortalConfig>) {
        self.upstreams.apply(&config.servers).await;
        let policy = crate::policy::PolicySet::for_config(&config);
        warn_about_policy(&config, &policy);
        self.policy.store(Arc::new(policy));
        self.config.store(config);
        self.rebuild().await;
    }

    /// The McpPolicies in force, compiled.
    pub fn policy(&self) -> Arc<crate::policy::PolicySet> {
        self.policy.load_full()
    }

    /// The merged catalog in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Changes whenever the merged catalog's definitions change (value: the catalog hash).
    pub fn catalog_changes(&self) -> watch::Receiver<[u8; 32]> {
        self.catalog_changes.subscribe()
    }

    async fn rebuild(&self) {
        let cfg = self.config();
        let mut inputs = Vec::new();
        for server in &cfg.servers {
            if let Some(up) = self.upstreams.get(&server.name).await {
                let st = up.state();
                if st.health == crate::upstream::Health::Ready {
                    inputs.push((server.clone(), st.catalog.clone()));
                    continue;
                }
            }
            inputs.push((server.clone(), Arc::new(Default::default())));
        }
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

fn warn_about_policy(cfg: &PortalConfig, policy: &crate::policy::PolicySet) {
    if policy.is_open() {
        tracing::warn!(portal = %cfg.name, "public portal without McpPolicy: every tool is open to everyone");
    } else if cfg.policies.is_empty() {
        tracing::warn!(portal = %cfg.name, "no McpPolicy binds to this portal: users will see no tools");
    }
}

async fn rebuild_on_change(portal: Arc<Portal>) {
    let mut changes = portal.upstreams.subscribe();
    loop {
        portal.rebuild().await;
        tokio::select! {
            _ = portal.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}
