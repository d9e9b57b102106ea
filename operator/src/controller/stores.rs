//! The operator's caches: one reflector [`Store`] per kind a reconcile reads besides its own
//! object, fed by the watches `run` has anyway. A reconcile reads them instead of listing.
//!
//! Consistency: a store may lag behind the API server, but never behind the trigger that starts
//! a reconcile. Each store is written by the same watch stream that triggers the reconciles
//! that read it ([`reflect`]): an event is applied to the store first and only then mapped to
//! the objects to reconcile. So the reconcile an event triggers sees at least that event; one
//! that starts earlier and reads a state about to change is followed by the reconcile of the
//! change. A (re)list fills the store in one step at its end, and only then triggers, for
//! everything listed and for what the store held before (deletions missed while the watch was
//! down). The state the operator writes therefore converges on the state of the cluster;
//! the status writes themselves are compared with the API server's copy first
//! (`settle_status`), so a lagging store costs a read, never a wrong or a repeated write.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use crds::{McpPolicy, McpPortal, McpServer};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Read handles of the caches.
#[derive(Clone)]
pub struct Stores {
    /// Every McpServer (the portal reconciler selects from them).
    pub servers: Store<McpServer>,
    /// Every McpPolicy (the portal reconciler binds them).
    pub policies: Store<McpPolicy>,
    /// Every McpPortal (the policy reconciler reports which bind it).
    pub portals: Store<McpPortal>,
    /// Every Secret, keys only ([`keys_only`]): the portal reconciler checks references and
    /// folds resourceVersions into the config hash.
    pub secrets: Store<Secret>,
    /// Resolves once every cache holds its first list; `Err` names a cache whose watch ended
    /// before. One future shared by all waiters: kube's `Store::wait_until_ready` wakes only
    /// the last of several concurrent waiters (a oneshot receiver keeps one waker), so
    /// reconciles that waited side by side at startup would never resume.
    ready: Shared<BoxFuture<'static, std::result::Result<(), &'static str>>>,
}

/// Write handles of the caches, for [`reflect`] in `run`.
pub struct Writers {
    pub(crate) servers: Writer<McpServer>,
    pub(crate) policies: Writer<McpPolicy>,
    pub(crate) portals: Writer<McpPortal>,
    pub(crate) secrets: Writer<Secret>,
}

impl Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("servers", &self.servers.len())
            .field("policies", &self.policies.len())
            .field("portals", &self.portals.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Stores {
    /// Empty caches, ready once `run`'s watches have listed each kind.
    pub fn new() -> (Self, Writers) {
        let (servers, servers_w) = reflector::store();
        let (policies, policies_w) = reflector::store();
        let (portals, portals_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        let ready = {
            let (a, b, c, d) = (
                servers.clone(),
                policies.clone(),
                portals.clone(),
                secrets.clone(),
            );
            async move {
                a.wait_until_ready().await.map_err(|_| "McpServer")?;
                b.wait_until_ready().await.map_err(|_| "McpPolicy")?;
                c.wait_until_ready().await.map_err(|_| "McpPortal")?;
                d.wait_until_ready().await.map_err(|_| "Secret")?;
                Ok(())
            }
            .boxed()
            .shared()
        };
        (
            Self {
                servers,
                policies,
                portals,
                secrets,
                ready,
            },
            Writers {
                servers: servers_w,
                policies: policies_w,
                portals: portals_w,
                secrets: secrets_w,
            },
        )
    }

    /// Ready caches holding these objects (as a first list would fill them): for tests and the
    /// benchmark, which drive reconciles without watches.
    pub fn filled(
        servers: Vec<McpServer>,
        policies: Vec<McpPolicy>,
        portals: Vec<McpPortal>,
        secrets: Vec<Secret>,
    ) -> Self {
        let (stores, mut writers) = Self::new();
        writers.fill(servers, policies, portals, secrets);
        stores
    }

    /// Waits until every cache holds its first list (a reconcile before that would take a
    /// namespace for empty).
    pub async fn ready(&self) -> Result<()> {
        self.ready.clone().await.map_err(Error::StoreClosed)
    }

    /// The McpServers of `ns`.
    pub fn servers_in(&self, ns: &str) -> Vec<McpServer> {
        in_namespace(&self.servers, ns)
    }

    /// The McpPolicies of `ns`.
    pub fn policies_in(&self, ns: &str) -> Vec<McpPolicy> {
        in_namespace(&self.policies, ns)
    }

    /// The McpPortals of `ns`.
    pub fn portals_in(&self, ns: &str) -> Vec<McpPortal> {
        in_namespace(&self.portals, ns)
    }

    /// The Secret `name` of `ns` (keys only).
    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }
}

/// References to the objects of `store` in `ns`: the mapper of a watch after which every such
/// object of the namespace re-resolves.
pub fn refs_in_namespace<K>(store: &Store<K>, ns: Option<&str>) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == ns)
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn in_namespace<K>(store: &Store<K>, ns: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(ns))
        .map(|o| K::clone(o.as_ref()))
        .collect()
}

impl Writers {
    /// Replaces what each cache holds with these objects, as a (re)list does, and marks the
    /// caches ready: for tests and the benchmark, which drive reconciles without watches.
    pub fn fill(
        &mut self,
        servers: Vec<McpServer>,
        policies: Vec<McpPolicy>,
        portals: Vec<McpPortal>,
        secrets: Vec<Secret>,
    ) {
        fill(&mut self.servers, servers);
        fill(&mut self.policies, policies);
        fill(&mut self.portals, portals);
        fill(
            &mut self.secrets,
            secrets.into_iter().map(|mut s| {
                keys_only(&mut s);
                s
            }),
        );
    }
}

fn fill<K>(writer: &mut Writer<K>, objects: impl IntoIterator<Item = K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
}

/// What the Secret cache keeps of a Secret: metadata and the names of its keys. Values are
/// dropped on arrival (a portal needs to know that a key exists; its pods read the value from a
/// mounted volume), and so are annotations (`kubectl apply` copies the whole Secret, values
/// included, into one) and managed fields.
pub fn keys_only(secret: &mut Secret) {
    secret.metadata.annotations = None;
    secret.metadata.managed_fields = None;
    secret.string_data = None;
    for value in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        value.0 = Vec::new();
    }
}

/// The watch of `api`, written into `writer`'s store, as the stream of objects whose change
/// should trigger reconciles (for `Controller::watches_stream`). `trim` shapes each object
/// before it is stored. Each object is yielded after the store holds it; see the module
/// documentation for why that order makes the stores safe to read.
pub fn reflect<K>(
    writer: Writer<K>,
    api: Api<K>,
    wc: watcher::Config,
    trim: fn(&mut K),
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    reflect_events(writer, watcher::watcher(api, wc).modify(trim))
}

/// [`reflect`] over any stream of watch events.
fn reflect_events<K, W>(
    writer: Writer<K>,
    events: W,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>,
    K: Clone + Debug + Send + Sync + 'static,
    W: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
{
    let reader = writer.as_reader();
    let mut before: Vec<Arc<K>> = Vec::new();
    reflector::reflector(writer, events)
        .map(move |event| match event {
            Ok(Event::Apply(o) | Event::Delete(o)) => vec![Ok(o)],
            Ok(Event::Init) => {
                before = reader.state();
                Vec::new()
            }
            Ok(Event::InitApply(_)) => Vec::new(),
            Ok(Event::InitDone) => {
                let now = reader.state();
                let present: HashSet<ObjectRef<K>> = now
                    .iter()
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect();
                let gone = std::mem::take(&mut before)
                    .into_iter()
                    .filter(|o| !present.contains(&ObjectRef::from_obj(o.as_ref())));
                now.iter()
                    .cloned()
                    .chain(gone)
                    .map(|o| Ok(K::clone(&o)))
                    .collect()
            }
            Err(e) => vec![Err(e)],
        })
        .flat_map(stream::iter)
}

/// Drops an object's managed fields before it is cached (nothing reads them; they are often
/// the larger part of the metadata).
pub fn without_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str, version: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("ns".into());
        c.metadata.resource_version = Some(version.into());
        c
    }

    fn names(objs: &[ConfigMap]) -> Vec<String> {
        objs.iter()
            .map(|o| {
                format!(
                    "{}@{}",
                    o.name_any(),
                    o.resource_version().unwrap_or_default()
                )
            })
            .collect()
    }

    /// What [`reflect_events`] yields for `events`.
    async fn triggers(events: Vec<Event<ConfigMap>>) -> Vec<ConfigMap> {
        let (_store, writer) = reflector::store::<ConfigMap>();
        reflect_events(writer, stream::iter(events.into_iter().map(Ok)))
            .map(|r| r.expect("no watch error"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn each_object_is_yielded_after_the_store_holds_it() {
        let (store, writer) = reflector::store::<ConfigMap>();
        let events = vec![
            Event::Init,
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("b", "1")),
            Event::InitDone,
            Event::Apply(cm("a", "2")),
            Event::Delete(cm("b", "1")),
        ];
        let mut seen = Vec::new();
        let mut s = Box::pin(reflect_events(
            writer,
            stream::iter(events.into_iter().map(Ok)),
        ));
        while let Some(o) = s.next().await {
            let o = o.unwrap();
            let cached = store.get(&ObjectRef::from_obj(&o));
            if seen.len() < 3 {
                assert_eq!(
                    cached.and_then(|c| c.resource_version()),
                    o.resource_version(),
                    "{} yielded before the store held it",
                    o.name_any()
                );
            } else {
                assert!(
                    cached.is_none(),
                    "a deletion is yielded after it left the store"
                );
            }
            seen.push(o);
        }
        let mut listed = names(&seen[..2]);
        listed.sort();
        assert_eq!(listed, ["a@1", "b@1"]);
        assert_eq!(names(&seen[2..]), ["a@2", "b@1"]);
        assert!(store.get(&ObjectRef::new("b").within("ns")).is_none());
    }

    #[tokio::test]
    async fn a_relist_triggers_at_its_end_for_what_it_found_and_what_vanished() {
        let mut out = triggers(vec![
            Event::Init,
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("gone", "1")),
            Event::InitDone,
            // The watch broke; meanwhile `gone` was deleted and `c` created.
            Event::Init,
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("c", "1")),
            Event::InitDone,
        ])
        .await;
        let first: Vec<ConfigMap> = out.drain(..2).collect();
        let mut first = names(&first);
        first.sort();
        assert_eq!(first, ["a@1", "gone@1"]);
        let mut second = names(&out);
        second.sort();
        assert_eq!(
            second,
            ["a@1", "c@1", "gone@1"],
            "gone: its portals re-resolve too"
        );
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_first_list_resumes() {
        let (stores, mut writers) = Stores::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = stores.clone();
                tokio::spawn(async move { s.ready().await })
            })
            .collect();
        // Let each waiter register with its own waker before the caches fill.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "not ready before the list"
        );
        writers.fill(vec![], vec![], vec![], vec![]);
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("a waiter was never woken")
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn the_secret_cache_keeps_key_names_and_versions_not_values() {
        let mut s = Secret::default();
        s.metadata.name = Some("session".into());
        s.metadata.resource_version = Some("7".into());
        s.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{\"data\":{\"key\":\"c2VjcmV0\"}}".to_owned(),
            )]
            .into(),
        );
        s.data = Some([("key".to_owned(), ByteString(b"secret".to_vec()))].into());
        s.string_data = Some([("other".to_owned(), "secret".to_owned())].into());
        keys_only(&mut s);
        assert_eq!(s.resource_version().as_deref(), Some("7"));
        assert_eq!(s.metadata.annotations, None);
        assert_eq!(s.string_data, None);
        let data = s.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["key"]);
        assert!(data["key"].0.is_empty());
    }
}
