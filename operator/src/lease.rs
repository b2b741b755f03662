//! Leader election on a coordination.k8s.io Lease. Only the holder runs the
//! controllers; the others wait. The holder renews the Lease; if it cannot
//! renew before the Lease would expire, it stops acting at once and exits,
//! so the Deployment restarts it as a follower.
//!
//! Acting is fenced by the Lease itself, not by local clocks: right before
//! each call that changes the cluster or a repository, the Fixer renews the
//! Lease with a compare-and-swap on the resourceVersion it last wrote
//! (`Leadership::renew_now`). A conflict means another replica wrote the
//! Lease since: this one is no longer the leader and does not act. A
//! renewal that succeeded allows acting for one lease duration measured on
//! the monotonic clock from before the request was sent.
//!
//! On shutdown the leader releases the Lease (empty holder), so the next
//! replica takes over at its next retry instead of a whole lease duration
//! later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams, WatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::{FIELD_MANAGER, Result};

/// Asked right before each call that changes the cluster or a repository:
/// may this replica still act? The leader's answer renews its Lease (a
/// compare-and-swap) and allows the call only within the lease duration
/// measured from before that renewal, so a deposed leader that has not
/// noticed yet changes nothing. A multi-call action asks before each call.
pub trait Fence: Sync {
    fn renew(&self) -> impl std::future::Future<Output = Result<(), NotLeader>> + Send;
}

/// This replica may not act: it does not hold the Lease, or could not prove
/// that it still does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: {0}")]
pub struct NotLeader(pub String);

/// No fencing: a process that runs alone (and tests).
pub struct Unfenced;

impl Fence for Unfenced {
    async fn renew(&self) -> Result<(), NotLeader> {
        Ok(())
    }
}

/// Where the Lease is and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// Leader election and this replica's name.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaseOptions {
    /// Elect a leader on a Lease in this namespace (the chart sets the
    /// release's namespace); unset or empty: no election, this process acts
    /// alone.
    #[arg(long, env = "SRE_SPACE_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The Lease's name.
    #[arg(
        long,
        env = "SRE_SPACE_LEASE_NAME",
        value_name = "NAME",
        default_value = "sre-space"
    )]
    pub lease_name: String,
    /// How long the Lease holds without a renewal; the leader renews it
    /// every third of that. At least 3.
    #[arg(
        long,
        env = "SRE_SPACE_LEASE_DURATION_SECONDS",
        value_name = "SECONDS",
        default_value_t = 15,
        value_parser = lease_seconds,
    )]
    pub lease_duration_seconds: u64,
    /// This replica's name: its identity in the Lease, and the instance its
    /// events name (the chart sets the pod's name). Unset: the host name and
    /// process id in the Lease, `local` in events.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
}

fn lease_seconds(v: &str) -> std::result::Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|s| *s >= 3)
        .ok_or_else(|| "a whole number of seconds, at least 3".into())
}

impl LeaseConfig {
    /// Leader election is on when a Lease namespace is set; None otherwise.
    /// The identity is the pod's name, or the host name and process id.
    pub fn from_options(o: &LeaseOptions) -> Option<Self> {
        let namespace = o.lease_namespace.clone().filter(|n| !n.is_empty())?;
        let seconds = o.lease_duration_seconds;
        let identity = o
            .pod_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
        Some(Self {
            namespace,
            name: o.lease_name.clone(),
            identity,
            duration: Duration::from_secs(seconds),
            renew_every: Duration::from_secs((seconds / 3).max(1)),
        })
    }
}

/// Whether this process holds the Lease now.
#[derive(Clone, Default)]
pub struct Leadership {
    /// Until when (unix ms) the Lease is ours; 0 when not held. `i64::MAX`
    /// when leader election is off (a single replica).
    valid_until_ms: Arc<AtomicI64>,
    /// The Lease this process holds; None for a process that runs alone.
    lease: Option<Arc<Held>>,
}

/// The held Lease: where it is, and the object as this process last wrote
/// it. Its resourceVersion is what the next renewal swaps against; the lock
/// also keeps the renew loop, fenced renewals and the release in sequence.
struct Held {
    api: Api<Lease>,
    cfg: LeaseConfig,
    last: tokio::sync::Mutex<Option<Lease>>,
    /// Set once the Lease is released: nothing renews or acts after that.
    released: AtomicBool,
}

/// A renewal that succeeded: acting is allowed until `deadline`, one lease
/// duration after the moment before the renewal was sent (monotonic clock).
#[derive(Clone, Copy, Debug)]
pub struct FenceToken {
    /// None when leader election is off.
    deadline: Option<Instant>,
}

impl FenceToken {
    /// Whether acting is still allowed now.
    pub fn check(&self) -> Result<(), NotLeader> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(NotLeader(
                "the Lease renewal took longer than the lease duration; another replica may lead by now".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl Leadership {
    /// A process that runs alone: always the leader.
    pub fn sole() -> Self {
        Self {
            valid_until_ms: Arc::new(AtomicI64::new(i64::MAX)),
            lease: None,
        }
    }

    /// Whether this process believes it holds the Lease, by its own clock.
    /// A cheap early check only: acting is fenced by `renew_now`.
    pub fn is_held(&self) -> bool {
        let margin = 1_000;
        Timestamp::now().as_millisecond() + margin < self.valid_until_ms.load(Ordering::SeqCst)
    }

    fn hold_until(&self, t: Timestamp) {
        self.valid_until_ms
            .store(t.as_millisecond(), Ordering::SeqCst);
    }

    /// Renews the Lease now, as a compare-and-swap on the resourceVersion
    /// this process last wrote. A conflict means another replica wrote the
    /// Lease since: this one is not the leader. Without a Lease (a single
    /// replica) this is a no-op.
    pub async fn renew_now(&self) -> Result<FenceToken, NotLeader> {
        let Some(held) = &self.lease else {
            return if self.valid_until_ms.load(Ordering::SeqCst) == i64::MAX {
                Ok(FenceToken { deadline: None })
            } else {
                Err(NotLeader("this replica does not hold the Lease".into()))
            };
        };
        let mut last = held.last.lock().await;
        if held.released.load(Ordering::SeqCst) {
            return Err(NotLeader(
                "the Lease was released: this replica is stopping".into(),
            ));
        }
        let Some(mut lease) = last.clone() else {
            return Err(NotLeader("this replica does not hold the Lease".into()));
        };
        let before = Instant::now();
        let wall = Timestamp::now();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(wall));
        }
        match held
            .api
            .replace(&held.cfg.name, &post_params(), &lease)
            .await
        {
            Ok(written) => {
                *last = Some(written);
                self.hold_until(wall + signed(held.cfg.duration));
                Ok(FenceToken {
                    deadline: Some(before + held.cfg.duration),
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The renew loop finds out who holds it now, and stops this
                // process if it is another replica.
                self.hold_until(Timestamp::UNIX_EPOCH);
                Err(NotLeader(
                    "another replica wrote the Lease since this one last renewed it".into(),
                ))
            }
            Err(e) => Err(NotLeader(format!("could not renew the Lease: {e}"))),
        }
    }

    /// Gives the Lease up for a clean shutdown: the holder is emptied, so
    /// the next replica takes it at its next attempt instead of waiting for
    /// it to expire. After this nothing renews the Lease or acts.
    pub async fn release(&self) {
        let Some(held) = &self.lease else {
            return;
        };
        let mut last = held.last.lock().await;
        held.released.store(true, Ordering::SeqCst);
        self.hold_until(Timestamp::UNIX_EPOCH);
        let Some(mut lease) = last.take() else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            // Replicas of older versions only look at the expiry: one second.
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match held
            .api
            .replace(&held.cfg.name, &post_params(), &lease)
            .await
        {
            Ok(_) => info!(lease = %held.cfg.name, "released the Lease"),
            Err(e) => {
                warn!(error = %e, "could not release the Lease; the next leader takes over when it expires")
            }
        }
    }
}

impl Fence for Leadership {
    async fn renew(&self) -> Result<(), NotLeader> {
        self.renew_now().await?.check()
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::from_secs(15))
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// Whether another replica may take the Lease: nobody holds it (it was
/// released), or its holder stopped renewing it.
fn lease_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
}

/// Takes or renews the Lease once; returns it as written when it is ours
/// afterwards.
async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Option<Lease>> {
    let now = Timestamp::now();
    let pp = post_params();
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
                Ok(written) => Ok(Some(written)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours && !lease_free(&spec, now) {
                return Ok(None);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            lease.spec = Some(fresh(
                transitions,
                if ours { spec.acquire_time } else { None },
            ));
            // The resourceVersion makes this a compare-and-swap: two
            // contenders cannot both win.
            match api.replace(&cfg.name, &pp, &lease).await {
                Ok(written) => Ok(Some(written)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// A follower waits until the Lease changes (its holder releases it on
/// shutdown, say) or `most` passes, whichever comes first: a released Lease
/// is taken within a round trip, not at the next poll. The wait starts from
/// the version just read, so a change in between is not missed.
async fn wait_for_change(api: &Api<Lease>, name: &str, most: Duration) {
    let started = Instant::now();
    let watched = async {
        let version = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.metadata.resource_version);
        let Some(version) = version else {
            return false;
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(most.as_secs().clamp(1, 290) as u32);
        match api.watch(&params, &version).await {
            Ok(events) => {
                futures::pin_mut!(events);
                events.next().await.is_some()
            }
            Err(_) => false,
        }
    };
    let changed = tokio::time::timeout(most, watched).await.unwrap_or(false);
    // An answer without a change (an error, a closed watch) waits out the
    // rest, so a broken watch never spins.
    if !changed {
        tokio::time::sleep(most.saturating_sub(started.elapsed())).await;
    }
}

/// Waits until this process holds the Lease, then keeps renewing it in the
/// background. Losing it ends the process.
pub async fn lead(client: Client, cfg: LeaseConfig) -> Result<Leadership> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    info!(lease = %cfg.name, identity = %cfg.identity, "waiting to lead");
    let held = Arc::new(Held {
        api: api.clone(),
        cfg: cfg.clone(),
        last: tokio::sync::Mutex::new(None),
        released: AtomicBool::new(false),
    });
    let leadership = Leadership {
        valid_until_ms: Arc::default(),
        lease: Some(held.clone()),
    };
    loop {
        let attempt = Timestamp::now();
        match try_hold(&api, &cfg).await {
            Ok(Some(lease)) => {
                *held.last.lock().await = Some(lease);
                leadership.hold_until(attempt + signed(cfg.duration));
                break;
            }
            Ok(None) => {
                wait_for_change(&api, &cfg.name, cfg.renew_every).await;
                continue;
            }
            Err(e) => warn!(error = %e, "could not reach the Lease; retrying"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
    info!(lease = %cfg.name, identity = %cfg.identity, "leading");
    let leader = leadership.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cfg.renew_every).await;
            let mut last = held.last.lock().await;
            if held.released.load(Ordering::SeqCst) {
                return;
            }
            let attempt = Timestamp::now();
            match try_hold(&api, &cfg).await {
                Ok(Some(lease)) => {
                    *last = Some(lease);
                    leader.hold_until(attempt + signed(cfg.duration));
                }
                Ok(None) => {
                    leader.hold_until(Timestamp::UNIX_EPOCH);
                    warn!("another replica holds the Lease now; stopping");
                    std::process::exit(1);
                }
                Err(e) if leader.is_held() => warn!(error = %e, "could not renew the Lease yet"),
                Err(e) => {
                    leader.hold_until(Timestamp::UNIX_EPOCH);
                    warn!(error = %e, "the Lease expired before it could be renewed; stopping");
                    std::process::exit(1);
                }
            }
        }
    });
    Ok(leadership)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: Some(MicroTime(renewed.parse().expect("time"))),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_released_lease_is_free_at_once_and_a_held_one_only_once_expired() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().expect("time");
        assert!(lease_free(&spec(None, "2026-12-01T10:00:00Z", 15), now));
        assert!(lease_free(&spec(Some(""), "2026-12-01T10:00:00Z", 15), now));
        assert!(!lease_free(
            &spec(Some("a"), "2026-12-01T09:59:50Z", 15),
            now
        ));
        assert!(lease_free(
            &spec(Some("a"), "2026-12-01T09:59:40Z", 15),
            now
        ));
    }

    #[tokio::test]
    async fn without_a_lease_the_fence_is_a_no_op_and_a_follower_is_refused() {
        assert!(Leadership::sole().renew().await.is_ok());
        assert!(Leadership::default().renew().await.is_err());
    }
}
