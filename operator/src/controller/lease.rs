//! Leader election on a coordination.k8s.io Lease. Only the holder runs the
//! controllers; the others wait. The holder renews the Lease; if it cannot
//! renew before the Lease would expire, it stops acting at once and exits,
//! so the Deployment restarts it as a follower. Actions are fenced: the Fixer
//! asks `Leadership::is_held` right before it acts.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::{FIELD_MANAGER, Result};

/// Where the Lease is and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Leader election is on when `SRE_SPACE_LEASE_NAMESPACE` is set (the
    /// chart sets it to the release's namespace). `SRE_SPACE_LEASE_NAME`
    /// (default `sre-space`), `SRE_SPACE_LEASE_DURATION_SECONDS` (15); the
    /// identity is `POD_NAME`, or the host name and process id.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(namespace) = std::env::var("SRE_SPACE_LEASE_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
        else {
            return Ok(None);
        };
        let seconds = match std::env::var("SRE_SPACE_LEASE_DURATION_SECONDS") {
            Ok(v) => v.parse::<u64>().ok().filter(|s| *s >= 3).ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "SRE_SPACE_LEASE_DURATION_SECONDS={v:?}: a whole number of seconds, at least 3"
                ))
            })?,
            Err(_) => 15,
        };
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
        Ok(Some(Self {
            namespace,
            name: std::env::var("SRE_SPACE_LEASE_NAME").unwrap_or_else(|_| "sre-space".into()),
            identity,
            duration: Duration::from_secs(seconds),
            renew_every: Duration::from_secs((seconds / 3).max(1)),
        }))
    }
}

/// Whether this process holds the Lease now.
#[derive(Clone, Default)]
pub struct Leadership {
    /// Until when (unix ms) the Lease is ours; 0 when not held. `i64::MAX`
    /// when leader election is off (a single replica).
    valid_until_ms: Arc<AtomicI64>,
}

impl Leadership {
    /// A process that runs alone: always the leader.
    pub fn sole() -> Self {
        Self {
            valid_until_ms: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// Whether it is safe to act now: the Lease is ours with a margin, so a
    /// deposed leader cannot act after another one took over.
    pub fn is_held(&self) -> bool {
        let margin = 1_000;
        Timestamp::now().as_millisecond() + margin < self.valid_until_ms.load(Ordering::SeqCst)
    }

    fn hold_until(&self, t: Timestamp) {
        self.valid_until_ms
            .store(t.as_millisecond(), Ordering::SeqCst);
    }
}

fn lease_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
}

/// Takes or renews the Lease once; true when it is ours afterwards.
async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool> {
    let now = Timestamp::now();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let fresh = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(fresh(0, None)),
            };
            match api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours && !lease_expired(&spec, now) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            lease.spec = Some(fresh(
                transitions,
                if ours { spec.acquire_time } else { None },
            ));
            // The resourceVersion makes this a compare-and-swap: two
            // contenders cannot both win.
            match api.replace(&cfg.name, &pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Waits until this process holds the Lease, then keeps renewing it in the
/// background. Losing it ends the process.
pub async fn lead(client: Client, cfg: LeaseConfig) -> Result<Leadership> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let leadership = Leadership::default();
    info!(lease = %cfg.name, identity = %cfg.identity, "waiting to lead");
    loop {
        let attempt = Timestamp::now();
        match try_hold(&api, &cfg).await {
            Ok(true) => {
                leadership.hold_until(
                    attempt
                        + SignedDuration::try_from(cfg.duration)
                            .unwrap_or(SignedDuration::from_secs(15)),
                );
                break;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "could not reach the Lease; retrying"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
    info!(lease = %cfg.name, identity = %cfg.identity, "leading");
    let held = leadership.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cfg.renew_every).await;
            let attempt = Timestamp::now();
            match try_hold(&api, &cfg).await {
                Ok(true) => held.hold_until(
                    attempt
                        + SignedDuration::try_from(cfg.duration)
                            .unwrap_or(SignedDuration::from_secs(15)),
                ),
                Ok(false) => {
                    held.hold_until(Timestamp::UNIX_EPOCH);
                    warn!("another replica holds the Lease now; stopping");
                    std::process::exit(1);
                }
                Err(e) if held.is_held() => warn!(error = %e, "could not renew the Lease yet"),
                Err(e) => {
                    held.hold_until(Timestamp::UNIX_EPOCH);
                    warn!(error = %e, "the Lease expired before it could be renewed; stopping");
                    std::process::exit(1);
                }
            }
        }
    });
    Ok(leadership)
}
