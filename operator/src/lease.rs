//! Leader election over a `coordination.k8s.io/v1` Lease (kube-runtime 5 has no helper).
//!
//! One replica holds the Lease and renews it every `renew`; the others retry. A holder that
//! cannot renew before `duration` passes gives up (its controllers stop) so two leaders never
//! act at once for long. Updates use the Lease's resourceVersion, so a race has one winner.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the operator's).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
}

/// Whether `lease` may be taken by `identity` at `now`.
pub fn can_acquire(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => t.0 + SignedDuration::from_secs(secs) < now,
        None => true,
    }
}

/// Tries once to take or renew the lease; `Ok(true)` when this replica holds it.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let spec = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: acquire,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(Some(MicroTime(now)), 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            if !can_acquire(&lease, &cfg.identity, now) {
                return Ok(false);
            }
            let old = lease.spec.clone().unwrap_or_default();
            let ours = old.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquire = if ours {
                old.acquire_time
            } else {
                Some(MicroTime(now))
            };
            lease.spec = Some(spec(acquire, transitions));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Waits until this replica holds the lease (or `shutdown`), then keeps renewing it in the
/// background; the returned token is cancelled when leadership is lost or on shutdown.
pub async fn lead(
    client: Client,
    cfg: LeaseConfig,
    shutdown: CancellationToken,
) -> Option<CancellationToken> {
    loop {
        match try_acquire(&client, &cfg).await {
            Ok(true) => break,
            Ok(false) => tracing::debug!(lease = %cfg.name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(cfg.renew) => {}
        }
    }
    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
    let lost = shutdown.child_token();
    let token = lost.clone();
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(cfg.renew) => {}
            }
            match try_acquire(&client, &cfg).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader lease taken by another replica; stopping");
                    token.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease");
                    if last_ok.elapsed() > cfg.duration {
                        tracing::error!("could not renew the leader lease in time; stopping");
                        token.cancel();
                        return;
                    }
                }
            }
        }
    });
    Some(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> Lease {
        let now = Timestamp::now();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_held_lease_is_taken_only_by_its_holder_or_after_it_expires() {
        let now = Timestamp::now();
        assert!(!can_acquire(&lease("a", 1), "b", now));
        assert!(can_acquire(&lease("a", 1), "a", now));
        assert!(can_acquire(&lease("a", 60), "b", now));
        assert!(can_acquire(&Lease::default(), "b", now));
    }
}
