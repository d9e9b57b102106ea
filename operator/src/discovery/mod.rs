//! In-cluster shadow MCP discovery (opt-in): Services and Pods that speak MCP and that no
//! McpServer backs, reported as Events (`ShadowMcp`), metrics and a CLI listing, and optionally
//! confined by a NetworkPolicy to sanctioned callers.
//!
//! One pass: list Services, Pods (the configured namespaces, or all), McpServers and McpPortals
//! -> [`candidates::candidates`] (evidence from names, appProtocol, labels, images) -> drop the
//! ones [`backed::Sanctioned`] accepts -> [`probe::ShadowProber`] each (bounded concurrency) ->
//! keep those with strong evidence or a probe that says MCP. The loop repeats every interval,
//! as leader only; Events are published when an endpoint is first seen or its findings change.

pub mod backed;
pub mod candidates;
pub mod netpol;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::controller::{Context, apply_typed, delete_if_present};
use crate::error::{Error, Result};
use backed::Sanctioned;
use candidates::{Candidate, SourceKind};
use netpol::{SHADOW_LABEL, SanctionedCallers};
use probe::{ProbeOutcome, ShadowProber};

/// Event reason of a shadow MCP endpoint.
pub const EVENT_REASON: &str = "ShadowMcp";

/// Settings of discovery (flags / Helm values).
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Namespaces to scan; empty scans all.
    pub namespaces: Vec<String>,
    /// Time between passes.
    pub interval: Duration,
    /// Apply a NetworkPolicy confining each shadow endpoint.
    pub confine: bool,
    /// Cluster DNS domain (Service URLs).
    pub cluster_domain: String,
    /// The operator's namespace (admitted by confining policies); `None`: any.
    pub operator_namespace: Option<String>,
    /// Probe candidates (the CLI can turn it off).
    pub probe: bool,
    /// Probes in flight at once.
    pub concurrency: usize,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            interval: Duration::from_secs(300),
            confine: false,
            cluster_domain: "cluster.local".into(),
            operator_namespace: None,
            probe: true,
            concurrency: 8,
        }
    }
}

/// What one pass looks at.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Services of the scanned namespaces.
    pub services: Vec<Service>,
    /// Pods of the scanned namespaces.
    pub pods: Vec<Pod>,
    /// Every McpServer.
    pub servers: Vec<crds::McpServer>,
    /// Every McpPortal.
    pub portals: Vec<crds::McpPortal>,
}

impl Inventory {
    /// Keeps only the Services and Pods of `namespaces` (all when empty).
    pub fn retain_namespaces(&mut self, namespaces: &[String]) {
        if namespaces.is_empty() {
            return;
        }
        let keep = |ns: Option<String>| ns.is_some_and(|n| namespaces.contains(&n));
        self.services.retain(|s| keep(s.namespace()));
        self.pods.retain(|p| keep(p.namespace()));
    }
}

/// One shadow MCP endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowEndpoint {
    /// Namespace.
    pub namespace: String,
    /// `Deployment/x`, `Pod/x`, `Service/x`.
    pub workload: String,
    /// `Service` or `Pod`: the object the endpoint was found on.
    pub kind: SourceKind,
    /// Name of that object.
    pub name: String,
    /// `svc.ns.svc:port` or `podIP:port`.
    pub endpoint: String,
    /// Why it is thought to speak MCP.
    pub evidence: Vec<String>,
    /// What the probe said.
    pub probe: ProbeOutcome,
    /// The candidate it came from (for NetworkPolicies).
    #[serde(skip)]
    pub candidate: Candidate,
}

impl ShadowEndpoint {
    fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.kind.as_str(),
            self.name,
            self.candidate.port
        )
    }

    fn fingerprint(&self) -> String {
        format!("{:?}|{}", self.evidence, self.probe.label())
    }

    /// One line for an Event note or a log.
    pub fn summary(&self) -> String {
        format!(
            "MCP endpoint {} of {} is not backed by an McpServer; evidence: {}; probe: {}",
            self.endpoint,
            self.workload,
            self.evidence.join("; "),
            self.probe
        )
    }
}

/// The result of one pass.
#[derive(Debug, Clone, Default)]
pub struct ScanResult {
    /// Shadow endpoints, ordered by namespace, workload, endpoint.
    pub endpoints: Vec<ShadowEndpoint>,
    /// Probes made, by outcome label.
    pub probes: BTreeMap<&'static str, u64>,
    /// Candidates found before the backed check.
    pub candidates: usize,
    /// Candidates an McpServer or McpPortal backs.
    pub sanctioned: usize,
}

/// Finds the shadow endpoints of an inventory.
pub async fn scan(
    inv: &Inventory,
    prober: Arc<dyn ShadowProber>,
    opts: &DiscoveryOptions,
) -> ScanResult {
    let all = candidates::candidates(&inv.services, &inv.pods, &opts.cluster_domain);
    let sanctioned = Sanctioned::new(&inv.servers, &inv.portals, &opts.cluster_domain);
    let total = all.len();
    let shadow: Vec<Candidate> = all
        .into_iter()
        .filter(|c| match sanctioned.backing(c) {
            Some(why) => {
                tracing::debug!(endpoint = %c.endpoint, why, "MCP candidate is sanctioned");
                false
            }
            None => true,
        })
        .collect();
    let sanctioned_count = total - shadow.len();
    let probed: Vec<(Candidate, ProbeOutcome)> = futures::stream::iter(shadow)
        .map(|c| {
            let prober = prober.clone();
            let enabled = opts.probe;
            async move {
                let outcome = match (&c.base_url, enabled) {
                    (_, false) => ProbeOutcome::NotProbed("probing disabled".into()),
                    (None, _) => ProbeOutcome::NotProbed("no address to probe".into()),
                    (Some(url), true) => prober.probe(url.clone()).await,
                };
                (c, outcome)
            }
        })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut probes = BTreeMap::new();
    let mut endpoints = Vec::new();
    for (c, outcome) in probed {
        if !matches!(outcome, ProbeOutcome::NotProbed(_)) {
            *probes.entry(outcome.label()).or_insert(0) += 1;
        }
        if !(c.has_strong_evidence() || outcome.is_mcp()) {
            continue;
        }
        endpoints.push(ShadowEndpoint {
            namespace: c.namespace.clone(),
            workload: c.workload.clone(),
            kind: c.kind,
            name: c.name.clone(),
            endpoint: c.endpoint.clone(),
            evidence: c.evidence.iter().map(|e| e.detail.clone()).collect(),
            probe: outcome,
            candidate: c,
        });
    }
    endpoints.sort_by(|a, b| {
        (&a.namespace, &a.workload, &a.endpoint).cmp(&(&b.namespace, &b.workload, &b.endpoint))
    });
    ScanResult {
        endpoints,
        probes,
        candidates: total,
        sanctioned: sanctioned_count,
    }
}

/// Who may still call a confined endpoint, from the inventory.
pub fn sanctioned_callers(inv: &Inventory, opts: &DiscoveryOptions) -> SanctionedCallers {
    let portal_namespaces: BTreeSet<String> =
        inv.portals.iter().filter_map(|p| p.namespace()).collect();
    SanctionedCallers {
        portal_namespaces: portal_namespaces.into_iter().collect(),
        operator_namespace: opts.operator_namespace.clone(),
    }
}

async fn list_all<K>(api: Api<K>, tolerate_missing: bool) -> Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        // The CRDs are not installed: nothing backs anything.
        Err(kube::Error::Api(s)) if tolerate_missing && s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Lists what a pass needs from the cluster.
pub async fn list_inventory(client: &Client, namespaces: &[String]) -> Result<Inventory> {
    let mut inv = Inventory::default();
    if namespaces.is_empty() {
        inv.services = list_all(Api::all(client.clone()), false).await?;
        inv.pods = list_all(Api::all(client.clone()), false).await?;
    } else {
        for ns in namespaces {
            inv.services
                .extend(list_all(Api::namespaced(client.clone(), ns), false).await?);
            inv.pods
                .extend(list_all(Api::namespaced(client.clone(), ns), false).await?);
        }
    }
    inv.servers = list_all(Api::all(client.clone()), true).await?;
    inv.portals = list_all(Api::all(client.clone()), true).await?;
    Ok(inv)
}

/// Reads an inventory from YAML files (`kubectl get svc,pods,mcpservers,mcpportals -A -o yaml`
/// output, `List`s or single documents); other kinds are ignored. Objects without a namespace
/// get `default_namespace`.
pub fn inventory_from_files(path: &Path, default_namespace: &str) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for file in crds::manifests::manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let err = |kind: String, message: String| Error::Manifest {
                path: file.clone(),
                document: index + 1,
                kind,
                message,
            };
            let value: serde_yaml::Value = serde::Deserialize::deserialize(de)
                .map_err(|e| err(String::new(), format!("not valid YAML: {e}")))?;
            let items = match value.get("kind").and_then(|k| k.as_str()) {
                Some(k) if k.ends_with("List") => value
                    .get("items")
                    .and_then(|i| i.as_sequence())
                    .cloned()
                    .unwrap_or_default(),
                _ => vec![value],
            };
            for item in items {
                let kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                let label = format!(
                    " ({kind}/{})",
                    item.get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                );
                let parse_err = |e: serde_yaml::Error| err(label.clone(), e.to_string());
                match kind {
                    "Service" => inv
                        .services
                        .push(serde_yaml::from_value(item).map_err(parse_err)?),
                    "Pod" => inv
                        .pods
                        .push(serde_yaml::from_value(item).map_err(parse_err)?),
                    "McpServer" => inv
                        .servers
                        .push(serde_yaml::from_value(item).map_err(parse_err)?),
                    "McpPortal" => inv
                        .portals
                        .push(serde_yaml::from_value(item).map_err(parse_err)?),
                    _ => {}
                }
            }
        }
    }
    let fill = |m: &mut kube::api::ObjectMeta| {
        if m.namespace.is_none() {
            m.namespace = Some(default_namespace.to_owned());
        }
    };
    inv.services.iter_mut().for_each(|o| fill(&mut o.metadata));
    inv.pods.iter_mut().for_each(|o| fill(&mut o.metadata));
    inv.servers.iter_mut().for_each(|o| fill(&mut o.metadata));
    inv.portals.iter_mut().for_each(|o| fill(&mut o.metadata));
    Ok(inv)
}

/// A table of endpoints (`shadow list -o table`).
pub fn to_table(endpoints: &[ShadowEndpoint]) -> String {
    let header = ["NAMESPACE", "WORKLOAD", "ENDPOINT", "EVIDENCE", "PROBE"];
    let rows: Vec<[String; 5]> = endpoints
        .iter()
        .map(|e| {
            [
                e.namespace.clone(),
                e.workload.clone(),
                e.endpoint.clone(),
                e.evidence.join("; "),
                e.probe.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}

#[derive(Debug, Default)]
struct LoopState {
    /// Endpoint key -> fingerprint of what was last reported in an Event.
    reported: HashMap<String, String>,
    /// Namespaces whose gauge was set by the last pass.
    gauged: BTreeSet<String>,
}

/// The discovery loop: passes, Events, metrics and (optionally) NetworkPolicies.
pub struct Discovery {
    ctx: Arc<Context>,
    prober: Arc<dyn ShadowProber>,
    opts: DiscoveryOptions,
    state: Mutex<LoopState>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery over `ctx`'s client, recorder and metrics.
    pub fn new(ctx: Arc<Context>, prober: Arc<dyn ShadowProber>, opts: DiscoveryOptions) -> Self {
        Self {
            ctx,
            prober,
            opts,
            state: Mutex::default(),
        }
    }

    /// Runs passes every interval until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(namespaces = ?self.opts.namespaces, confine = self.opts.confine, "shadow MCP discovery started");
        loop {
            let pass = self.pass();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = pass => if let Err(e) = r {
                    tracing::warn!(error = %e, "shadow MCP discovery pass failed");
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.opts.interval) => {}
            }
        }
    }

    /// One pass: list, scan, report (Events for new or changed findings, metrics), confine.
    pub async fn pass(&self) -> Result<Vec<ShadowEndpoint>> {
        let out = self.pass_inner().await;
        let result = if out.is_ok() { "ok" } else { "error" };
        self.ctx.metrics.shadow_scan(result);
        out
    }

    async fn pass_inner(&self) -> Result<Vec<ShadowEndpoint>> {
        let inv = list_inventory(&self.ctx.client, &self.opts.namespaces).await?;
        let scan = scan(&inv, self.prober.clone(), &self.opts).await;
        for (outcome, n) in &scan.probes {
            self.ctx.metrics.shadow_probes(outcome, *n);
        }
        tracing::info!(
            candidates = scan.candidates,
            sanctioned = scan.sanctioned,
            shadow = scan.endpoints.len(),
            "shadow MCP discovery pass"
        );
        let policies = if self.opts.confine {
            netpol::network_policies(&scan.endpoints, &sanctioned_callers(&inv, &self.opts))
        } else {
            Vec::new()
        };
        self.report(&scan.endpoints, &policies).await;
        if self.opts.confine {
            for p in &policies {
                apply_typed(&self.ctx.client, p).await?;
            }
            self.delete_stale_policies(&policies).await?;
        }
        Ok(scan.endpoints)
    }

    async fn report(&self, endpoints: &[ShadowEndpoint], policies: &[NetworkPolicy]) {
        let mut per_ns: BTreeMap<String, i64> = BTreeMap::new();
        for e in endpoints {
            *per_ns.entry(e.namespace.clone()).or_insert(0) += 1;
        }
        let confined: BTreeSet<(String, String)> = policies
            .iter()
            .filter_map(|p| {
                p.annotations()
                    .get(netpol::CONFINES_ANNOTATION)
                    .map(|c| (p.namespace().unwrap_or_default(), c.clone()))
            })
            .collect();
        let to_publish: Vec<&ShadowEndpoint> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for ns in st.gauged.difference(&per_ns.keys().cloned().collect()) {
                self.ctx.metrics.shadow_endpoints(ns, 0);
            }
            for (ns, n) in &per_ns {
                self.ctx.metrics.shadow_endpoints(ns, *n);
            }
            st.gauged = per_ns.keys().cloned().collect();
            let current: BTreeSet<String> = endpoints.iter().map(ShadowEndpoint::key).collect();
            st.reported.retain(|k, _| current.contains(k));
            endpoints
                .iter()
                .filter(|e| st.reported.insert(e.key(), e.fingerprint()) != Some(e.fingerprint()))
                .collect()
        };
        for e in to_publish {
            tracing::warn!(namespace = %e.namespace, workload = %e.workload, endpoint = %e.endpoint, probe = %e.probe, "shadow MCP endpoint");
            let object = format!("{}/{}", e.kind.as_str(), e.name);
            let mut note = e.summary();
            if confined.contains(&(e.namespace.clone(), object)) {
                note.push_str(&format!(
                    "; confined by NetworkPolicy {}",
                    netpol::policy_name(e.kind, &e.name)
                ));
            }
            // Event notes are limited to 1 KiB.
            let note: String = note.chars().take(1000).collect();
            let ev = Event {
                type_: EventType::Warning,
                reason: EVENT_REASON.into(),
                note: Some(note),
                action: "Discover".into(),
                secondary: None,
            };
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some(e.kind.as_str().into()),
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                uid: e.candidate.uid.clone(),
                ..Default::default()
            };
            if let Err(err) = self.ctx.recorder.publish(&ev, &reference).await {
                tracing::warn!(error = %err, "could not publish the ShadowMcp event");
            }
        }
    }

    /// Deletes discovery's NetworkPolicies (by label) that no shadow endpoint needs any more.
    async fn delete_stale_policies(&self, keep: &[NetworkPolicy]) -> Result<()> {
        let keep: BTreeSet<(String, String)> = keep
            .iter()
            .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
            .collect();
        let lp = ListParams::default().labels(&format!("{SHADOW_LABEL}=true"));
        let mut existing = Vec::new();
        if self.opts.namespaces.is_empty() {
            let api: Api<NetworkPolicy> = Api::all(self.ctx.client.clone());
            existing.extend(api.list(&lp).await?.items);
        } else {
            for ns in &self.opts.namespaces {
                let api: Api<NetworkPolicy> = Api::namespaced(self.ctx.client.clone(), ns);
                existing.extend(api.list(&lp).await?.items);
            }
        }
        for p in existing {
            let ns = p.namespace().unwrap_or_default();
            if !keep.contains(&(ns.clone(), p.name_any())) {
                tracing::info!(namespace = %ns, name = %p.name_any(), "deleting a NetworkPolicy no shadow endpoint needs");
                delete_if_present::<NetworkPolicy>(&self.ctx.client, &ns, &p.name_any()).await?;
            }
        }
        Ok(())
    }
}

/// Fixture builders for the unit tests of discovery.
#[cfg(test)]
pub(crate) mod testkit {
    use k8s_openapi::api::core::v1::{Pod, Service};
    use serde_json::{Value, json};

    /// A Service `name` in `ns` selecting `app: <name>` with `ports` (JSON ServicePorts).
    pub fn svc(ns: &str, name: &str, ports: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-svc-{name}")},
            "spec": {"selector": {"app": name}, "clusterIP": "10.0.0.1", "ports": ports},
        }))
        .unwrap()
    }

    /// A running Pod `name` in `ns` with `labels`, one container of `image` with `ports`.
    pub fn pod(ns: &str, name: &str, labels: Value, image: &str, ports: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-pod-{name}"),
                         "labels": labels},
            "spec": {"containers": [{"name": "c", "image": image, "ports": ports}]},
            "status": {"phase": "Running", "podIP": "10.1.0.7"},
        }))
        .unwrap()
    }
}
