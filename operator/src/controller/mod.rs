//! The controllers: shared context, server-side apply, events, error policy and `run`.
//!
//! Each reconcile is one straight line: read the object and the caches ([`stores`]), compute
//! the desired objects, status and Events (`desired`, pure), apply the objects, publish the
//! Events, settle the status ([`settle_status`]: written only when it differs).

pub mod policy;
pub mod portal;
pub mod server;
pub mod stores;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::desired::{Notice, Object, RenderOptions};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::probe::Prober;
use crate::status::{Conditioned, merge};
use stores::{Stores, Writers};

/// Everything a reconciler needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events (`kubectl describe`).
    pub recorder: Recorder,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// What to render.
    pub options: RenderOptions,
    /// Lists an MCP server's tools.
    pub prober: Arc<dyn Prober>,
    /// The caches the reconcilers read instead of listing.
    pub stores: Stores,
    /// Which portals read which Secret: `(namespace, secret)` -> portal names. Filled by the
    /// portal reconciler, read by the Secret watch's mapper.
    pub secret_index: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    /// Consecutive failures per object, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// How the policy reconciler reads portals' LLM spend (off unless [`Context::with_spend`]).
    pub spend: crate::spend::SpendOptions,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .field("spend", &self.spend)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context over `client`, reading `stores` (filled by `run`'s watches from the
    /// [`Writers`] of [`Stores::new`]).
    pub fn new(
        client: Client,
        options: RenderOptions,
        prober: Arc<dyn Prober>,
        metrics: Arc<Metrics>,
        stores: Stores,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            options,
            prober,
            stores,
            secret_index: Mutex::default(),
            failures: Mutex::default(),
            spend: crate::spend::SpendOptions::default(),
        }
    }

    /// This context, reading LLM spend for McpPolicy status as `spend` says.
    pub fn with_spend(mut self, spend: crate::spend::SpendOptions) -> Self {
        self.spend = spend;
        self
    }

    /// Publishes an Event about `obj`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.into()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Publishes what a `desired::*::status` decided to tell about `obj`, in order.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, notices: &[Notice]) {
        for n in notices {
            self.event(obj, n.warning, n.reason, n.action, n.note.clone())
                .await;
        }
    }

    /// Records the portals that read each Secret of `secrets`, replacing what `portal` had.
    pub fn index_secrets(&self, namespace: &str, portal: &str, secrets: &BTreeSet<String>) {
        let mut idx = self.secret_index.lock().unwrap_or_else(|e| e.into_inner());
        for ((ns, secret), portals) in idx.iter_mut() {
            if ns == namespace && !secrets.contains(secret) {
                portals.remove(portal);
            }
        }
        for s in secrets {
            idx.entry((namespace.to_owned(), s.clone()))
                .or_default()
                .insert(portal.to_owned());
        }
        idx.retain(|_, p| !p.is_empty());
    }

    /// Portals that read `secret` in `namespace`.
    pub fn portals_reading(&self, namespace: &str, secret: &str) -> Vec<String> {
        let idx = self.secret_index.lock().unwrap_or_else(|e| e.into_inner());
        idx.get(&(namespace.to_owned(), secret.to_owned()))
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn backoff(&self, key: String) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// 5s, 10s, 20s, ... capped at 5 minutes.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Error policy shared by the controllers: count the failure and back off exponentially.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let controller = K::kind(&()).to_lowercase();
    tracing::warn!(controller, name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    ctx.metrics.failure(&controller, error.metric_label());
    Action::requeue(ctx.backoff(key(obj.as_ref())))
}

/// Wraps a reconciler: metrics, and resetting the backoff after a success.
pub(crate) async fn instrumented<K, F>(obj: Arc<K>, ctx: Arc<Context>, f: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action>>,
{
    let controller = K::kind(&()).to_lowercase();
    let _timer = ctx.metrics.reconcile(&controller);
    let out = f.await;
    if out.is_ok() {
        ctx.succeeded(&key(obj.as_ref()));
    }
    out
}

/// Annotation on every object the operator applies: a hash of what it applied last. With it,
/// a reconcile that would apply the same object again sends nothing (see [`apply_settled`]).
pub const APPLIED_HASH_ANNOTATION: &str = "portcullis.dev/applied-hash";

/// Server-side applies a typed object under the operator's field manager, unless the live
/// object already is what it would apply ([`apply_settled`]).
pub async fn apply_typed<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("object", "namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    apply_settled(&api, &obj.name_any(), obj).await
}

/// Server-side applies `obj` as `name` through `api`, and settles: when the live object carries
/// the hash of this very object in [`APPLIED_HASH_ANNOTATION`] (nothing was added to or taken
/// out of what the operator applies since its last apply) and every field of `obj` has its
/// value in the live object (nobody changed one by hand), nothing is sent and the live object
/// is returned. A read instead of a write: an operator at rest makes no writes, even though its
/// reconcilers run on every watch event and requeue.
pub async fn apply_settled<K>(api: &Api<K>, name: &str, obj: &impl Serialize) -> Result<K>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    let serialize = |source| Error::Serialize {
        what: name.to_owned(),
        source,
    };
    let mut desired = serde_json::to_value(obj).map_err(serialize)?;
    let hash = crate::desired::sha256_hex(
        serde_json::to_string(&desired)
            .map_err(serialize)?
            .as_bytes(),
    )[..16]
        .to_owned();
    if let Some(meta) = desired
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH_ANNOTATION.into(), hash.into());
        }
    }
    if let Some(live) = api.get_opt(name).await? {
        let live_value = serde_json::to_value(&live).map_err(serialize)?;
        if covers(&live_value, &desired) {
            return Ok(live);
        }
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(name, &pp, &Patch::Apply(&desired)).await?)
}

/// Whether `live` holds every field of `desired` with the same value: objects field by field,
/// lists element by element (same length), scalars equal. Fields the apiserver adds (defaults,
/// status, metadata) do not matter; an empty map or list in `desired` matches an absent one.
pub fn covers(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => covers(lv, dv),
            None => is_empty(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (Value::Null, d) => is_empty(d),
        (l, d) => l == d,
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(o) => o.values().all(is_empty),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Server-side applies `objects` in order; returns the available and wanted replicas of the
/// Deployment among them (0 and 0 without one).
pub async fn apply_all(client: &Client, objects: Vec<Object>) -> Result<(i32, i32)> {
    let (mut available, mut wanted) = (0, 0);
    for obj in objects {
        if let Object::Deployment(d) = &obj {
            wanted = d.spec.replicas.unwrap_or(1);
        }
        if let Some(dep) = apply_object(client, &obj).await? {
            available = dep.status.and_then(|s| s.available_replicas).unwrap_or(0);
        }
    }
    Ok((available, wanted))
}

/// Server-side applies one desired object; returns the Deployment as the server has it.
pub async fn apply_object(client: &Client, obj: &Object) -> Result<Option<Deployment>> {
    match obj {
        Object::ConfigMap(o) => apply_typed(client, o).await.map(|_| None),
        Object::Service(o) => apply_typed(client, o).await.map(|_| None),
        Object::NetworkPolicy(o) => apply_typed(client, o).await.map(|_| None),
        Object::PodDisruptionBudget(o) => apply_typed(client, o).await.map(|_| None),
        Object::Deployment(o) => apply_typed(client, o.as_ref()).await.map(Some),
        Object::ServiceMonitor(o) => {
            let ns = o
                .namespace()
                .ok_or(Error::MissingField("ServiceMonitor", "namespace"))?;
            let ar = crate::desired::portal::service_monitor_resource();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            apply_settled(&api, &o.name_any(), o).await?;
            Ok(None)
        }
    }
}

/// Writes `status` as `obj`'s status unless the API server already holds it; returns whether
/// it wrote.
///
/// `obj` comes from the controller's store, which can lag behind the operator's own last write:
/// a Deployment event that arrives before the watch has delivered the status just patched
/// reconciles a stale copy, whose older conditions give a fresh `lastTransitionTime` to a
/// transition already written. So a status that differs from the store's is compared once more
/// with the server's copy (read, transition times merged from it) before it is written; a settled
/// portal brings no writes (the cluster suite counts them in the audit log).
pub async fn settle_status<K, S>(
    client: &Client,
    obj: &K,
    status_of: fn(&K) -> Option<&S>,
    mut status: S,
) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
    S: Conditioned + PartialEq + Serialize,
{
    if status_of(obj) == Some(&status) {
        return Ok(false);
    }
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("object", "namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let fresh = api.get_status(&obj.name_any()).await?;
    if let Some(current) = status_of(&fresh) {
        let merged = merge(
            current.conditions(),
            std::mem::take(status.conditions_mut()),
        );
        *status.conditions_mut() = merged;
        if current == &status {
            return Ok(false);
        }
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&obj.name_any(), &pp, &Patch::Apply(&patch))
        .await?;
    Ok(true)
}

/// Deletes `name` of kind `K` in `ns`; absent is fine.
pub async fn delete_if_present<K>(client: &Client, ns: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the three controllers until `shutdown` is cancelled (or a signal arrives), filling the
/// caches of `ctx.stores` through `writers`.
///
/// Each cache is written by a watch of one controller, the one whose reconciles read it
/// (portals: McpServers, McpPolicies, Secrets; policies: McpPortals), in the same stream that
/// triggers them: see [`stores`] for why that keeps the reads consistent.
pub async fn run(ctx: Arc<Context>, writers: Writers, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().any_semantic();
    let Writers {
        servers,
        policies,
        portals,
        secrets,
    } = writers;

    let portal_controller =
        Controller::new(Api::<crds::McpPortal>::all(client.clone()), wc.clone());
    let portal_store = portal_controller.store();
    let (ps1, ps2) = (portal_store.clone(), portal_store.clone());
    let ctx_for_secrets = ctx.clone();
    // A change of an McpServer or McpPolicy can add it to a portal or take it away: each
    // portal of its namespace re-resolves. Every kind a portal owns is watched, so an object edited or deleted by hand is restored
    // at once rather than at the next requeue.
    let portal_controller = portal_controller
        .owns(Api::<Deployment>::all(client.clone()), wc.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), wc.clone())
        .owns(Api::<Service>::all(client.clone()), wc.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), wc.clone())
        .watches_stream(
            stores::reflect(
                servers,
                Api::all(client.clone()),
                wc.clone(),
                stores::without_managed_fields,
            ),
            move |s: crds::McpServer| stores::refs_in_namespace(&ps1, s.namespace().as_deref()),
        )
        .watches_stream(
            stores::reflect(
                policies,
                Api::all(client.clone()),
                wc.clone(),
                stores::without_managed_fields,
            ),
            move |p: crds::McpPolicy| stores::refs_in_namespace(&ps2, p.namespace().as_deref()),
        )
        .watches_stream(
            stores::reflect(
                secrets,
                Api::all(client.clone()),
                wc.clone(),
                stores::keys_only,
            ),
            move |s: Secret| {
                let ns = s.namespace().unwrap_or_default();
                ctx_for_secrets
                    .portals_reading(&ns, &s.name_any())
                    .into_iter()
                    .map(move |p| kube::runtime::reflector::ObjectRef::new(&p).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(portal::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move { log_result("mcpportal", r) });

    let server_controller =
        Controller::new(Api::<crds::McpServer>::all(client.clone()), wc.clone())
            .owns(Api::<Deployment>::all(client.clone()), wc.clone())
            .owns(Api::<ConfigMap>::all(client.clone()), wc.clone())
            .owns(Api::<Service>::all(client.clone()), wc.clone())
            .owns(Api::<NetworkPolicy>::all(client.clone()), wc.clone())
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(server::reconcile, error_policy, ctx.clone())
            .for_each(|r| async move { log_result("mcpserver", r) });

    let policy_controller =
        Controller::new(Api::<crds::McpPolicy>::all(client.clone()), wc.clone());
    let policy_store = policy_controller.store();
    let policy_controller = policy_controller
        .watches_stream(
            stores::reflect(
                portals,
                Api::all(client.clone()),
                wc.clone(),
                stores::without_managed_fields,
            ),
            move |p: crds::McpPortal| {
                stores::refs_in_namespace(&policy_store, p.namespace().as_deref())
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(policy::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move { log_result("mcppolicy", r) });

    tokio::join!(portal_controller, server_controller, policy_controller);
}

fn log_result<T: Debug, E: std::fmt::Display>(controller: &str, r: std::result::Result<T, E>) {
    match r {
        Ok(o) => tracing::debug!(controller, object = ?o, "reconciled"),
        Err(e) => tracing::debug!(controller, error = %e, "reconcile did not complete"),
    }
}

#[cfg(test)]
mod tests {
    use super::covers;
    use serde_json::json;

    #[test]
    fn a_live_object_with_server_defaults_covers_what_was_applied() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "proxy", "image": "p:1"}]}}}, "metadata": {"labels": {}}});
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600, "template": {"spec": {"containers": [{"name": "proxy", "image": "p:1", "terminationMessagePath": "/dev/termination-log"}], "dnsPolicy": "ClusterFirst"}}}, "metadata": {"uid": "u", "resourceVersion": "7"}, "status": {"replicas": 2}});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn a_value_changed_by_hand_is_not_covered() {
        let desired = json!({"spec": {"replicas": 2}});
        assert!(!covers(&json!({"spec": {"replicas": 3}}), &desired));
        assert!(!covers(&json!({"spec": {}}), &desired));
    }

    #[test]
    fn a_list_of_another_length_is_not_covered() {
        let desired = json!({"volumes": [{"name": "a"}, {"name": "b"}]});
        assert!(!covers(&json!({"volumes": [{"name": "a"}]}), &desired));
        assert!(!covers(
            &json!({"volumes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
            &desired
        ));
        assert!(covers(
            &json!({"volumes": [{"name": "a", "x": 1}, {"name": "b"}]}),
            &desired
        ));
    }
}
