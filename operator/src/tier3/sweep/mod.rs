//! The Tier 3 sweep: on a cron schedule, and only on the leader, it reviews
//! every IncidentMemory, finds the problems runtime fixes do not hold
//! (`findings`), opens or updates one `jules-fix` issue with a brief for
//! each in the repository of the policy that covers the workload
//! (`publish`), and records the run in each policy's `status.sweep`. A run
//! missed while the operator was down is made once at start, within the
//! starting deadline (`schedule`).

pub mod brief;
pub mod findings;
pub mod publish;
pub mod schedule;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::crd::{
    Incident, IncidentMemory, RemediationPolicy, SweepFinding, SweepStatus, WorkloadRef,
};
use crate::lease::Fence;
use crate::{Error, Result};

pub use findings::{Finding, FixClass, Rule, Thresholds, findings};
pub use schedule::Schedule;

/// The sweep's schedule and thresholds.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Tier 3 sweep")]
pub struct SweepOptions {
    /// When the sweep runs: a cron expression of five fields (minute hour
    /// day-of-month month day-of-week), read in the sweep's time zone; the
    /// documented choice is `0 5 * * *` (05:00 daily). Unset or empty: no
    /// sweep.
    #[arg(long, env = "SRE_SPACE_SWEEP_SCHEDULE", value_name = "CRON")]
    pub sweep_schedule: Option<String>,
    /// The IANA time zone the schedule is read in (`Europe/Berlin`).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_TIME_ZONE",
        value_name = "ZONE",
        default_value = "UTC"
    )]
    pub sweep_time_zone: String,
    /// A run missed while the operator was down is made at start only if
    /// the operator is back within this many seconds of its scheduled time
    /// (as a CronJob's startingDeadlineSeconds); later, it is skipped and
    /// recorded as missed. At most 604800 (a week).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_STARTING_DEADLINE_SECONDS",
        value_name = "SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(i64).range(0..=604_800),
    )]
    pub sweep_starting_deadline_seconds: i64,
    /// A problem that occurred at least this many times within the window
    /// is architectural (1 to 50).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_RECURRENCES",
        value_name = "COUNT",
        default_value_t = 3,
        value_parser = clap::value_parser!(i64).range(1..=50),
    )]
    pub sweep_recurrences: i64,
    /// The window the rules look at, ending at the run, in hours (1 to
    /// 8760).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_WINDOW_HOURS",
        value_name = "HOURS",
        default_value_t = 168,
        value_parser = clap::value_parser!(i64).range(1..=8760),
    )]
    pub sweep_window_hours: i64,
    /// A mitigation that held less than this many minutes before the
    /// problem returned makes it architectural (0 to 10080; 0 turns the
    /// rule off).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_MIN_HELD_MINUTES",
        value_name = "MINUTES",
        default_value_t = 60,
        value_parser = clap::value_parser!(i64).range(0..=10_080),
    )]
    pub sweep_min_held_minutes: i64,
    /// The same fix applied more than this many times within the window
    /// makes a problem architectural (1 to 50).
    #[arg(
        long,
        env = "SRE_SPACE_SWEEP_MAX_SAME_FIX",
        value_name = "COUNT",
        default_value_t = 3,
        value_parser = clap::value_parser!(i64).range(1..=50),
    )]
    pub sweep_max_same_fix: i64,
}

/// The sweep's checked settings.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub schedule: Schedule,
    pub starting_deadline_seconds: i64,
    pub thresholds: Thresholds,
}

impl SweepConfig {
    /// None when no schedule is set; a schedule or time zone that cannot be
    /// used is an error naming its variable.
    pub fn from_options(o: &SweepOptions) -> Result<Option<Self>> {
        let Some(expression) = o
            .sweep_schedule
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        schedule::time_zone(o.sweep_time_zone.trim())
            .map_err(|e| Error::Config(format!("SRE_SPACE_SWEEP_TIME_ZONE: {e}")))?;
        let schedule = Schedule::parse(expression, &o.sweep_time_zone)
            .map_err(|e| Error::Config(format!("SRE_SPACE_SWEEP_SCHEDULE: {e}")))?;
        Ok(Some(Self {
            schedule,
            starting_deadline_seconds: o.sweep_starting_deadline_seconds.clamp(0, 604_800),
            thresholds: Thresholds {
                recurrences: o.sweep_recurrences.clamp(1, 50),
                window_seconds: o.sweep_window_hours.clamp(1, 8760).saturating_mul(3600),
                min_held_seconds: o.sweep_min_held_minutes.clamp(0, 10_080).saturating_mul(60),
                max_same_fix: o.sweep_max_same_fix.clamp(1, 50),
            },
        }))
    }
}

/// What a finding hands on: everything a Jules session (or any other
/// architect) needs to start from it.
#[derive(Clone, Debug)]
pub struct Handoff {
    pub finding: Finding,
    /// The policy that covers the workload, `namespace/name`; None when no
    /// policy does.
    pub policy: Option<String>,
    /// `owner/name`, when the policy names one.
    pub repository: Option<String>,
    pub title: String,
    /// The brief, markdown, as the issue's body.
    pub brief: String,
    /// The `jules-fix` issue, once opened.
    pub issue_number: Option<i64>,
    pub issue_url: Option<String>,
}

/// Where each finding is handed on after its issue is written; the hook
/// for Tier 3 sessions (`crate::jules`). It must return quickly (spawn
/// what takes long).
pub type FindingSink = Arc<dyn Fn(Handoff) + Send + Sync>;

/// One run's result.
#[derive(Clone, Debug)]
pub struct Report {
    pub scheduled: Timestamp,
    pub started: Timestamp,
    pub duration_millis: i64,
    pub handoffs: Vec<Handoff>,
}

/// The sweep and what it reaches.
#[derive(Clone)]
pub struct Sweeper {
    pub client: Client,
    /// The one namespace the operator watches; None: all.
    pub namespace: Option<String>,
    pub github: crate::github::Access,
    pub clock: Arc<dyn Clock>,
    pub config: SweepConfig,
    pub sink: Option<FindingSink>,
    /// Jules, when a key is configured: each finding with an issue starts
    /// (or finds again) one session on the policy's repository.
    pub jules: Option<crate::jules::Jules>,
    /// How often the scheduler looks at the clock while it waits.
    pub tick: Duration,
}

/// A policy read from the cluster, with where it is.
struct Policy {
    namespace: String,
    name: String,
    policy: RemediationPolicy,
}

impl Sweeper {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The readable policies in scope; one that cannot be read is left out
    /// (its own status says why).
    async fn policies(&self) -> Result<Vec<Policy>> {
        let list = self
            .api::<DeserializeGuard<RemediationPolicy>>()
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|g| g.0.ok())
            .map(|p| Policy {
                namespace: p.namespace().unwrap_or_default(),
                name: p.name_any(),
                policy: p,
            })
            .collect())
    }

    /// The latest scheduled time recorded on any policy, run or missed.
    pub async fn last_recorded(&self) -> Result<Option<Timestamp>> {
        Ok(self
            .policies()
            .await?
            .iter()
            .filter_map(|p| p.policy.status.as_ref()?.sweep.as_ref())
            .flat_map(|s| [&s.last_schedule_time, &s.missed_schedule_time])
            .filter_map(|t| t.as_ref().map(|t| t.0))
            .max())
    }

    /// Runs the schedule until the task is aborted: first the catch-up
    /// (one run for a schedule missed within the deadline, or the miss
    /// recorded), then each fire time as it comes.
    pub async fn run<F: Fence + Send + Sync>(&self, fence: &F) {
        let schedule = &self.config.schedule;
        let deadline = self.config.starting_deadline_seconds;
        let last = self.last_recorded().await.unwrap_or_else(|e| {
            warn!(error = %e, "could not read when the sweep last ran; no catch-up");
            None
        });
        let now = self.clock.now();
        if let Some(due) = schedule.catch_up(last, now, deadline) {
            info!(scheduled = %due, "catching up the sweep missed while the operator was down");
            self.run_logged(due, fence).await;
        } else if let Some(missed) = schedule.latest_due(last, now) {
            self.missed(missed, now, fence).await;
        }
        let mut after = self.clock.now();
        loop {
            let Some(next) = schedule.next_fire(after) else {
                warn!(
                    schedule = schedule.expression(),
                    "the sweep's schedule fires no more"
                );
                return;
            };
            self.wait_until(next).await;
            let now = self.clock.now();
            if now.duration_since(next).as_secs() > deadline {
                self.missed(next, now, fence).await;
            } else {
                self.run_logged(next, fence).await;
            }
            after = self.clock.now().max(next);
        }
    }

    async fn wait_until(&self, t: Timestamp) {
        loop {
            let now = self.clock.now();
            if now >= t {
                return;
            }
            let left = t.duration_since(now).unsigned_abs();
            tokio::time::sleep(left.min(self.tick)).await;
        }
    }

    async fn run_logged(&self, scheduled: Timestamp, fence: &impl Fence) {
        match self.run_once(scheduled, fence).await {
            Ok(r) => info!(
                scheduled = %scheduled,
                findings = r.handoffs.len(),
                duration_ms = r.duration_millis,
                "sweep finished"
            ),
            Err(e) => warn!(scheduled = %scheduled, error = %e, "the sweep failed"),
        }
    }

    /// Records a scheduled time that passed beyond the deadline, on every
    /// policy, so that no later start runs it.
    async fn missed(&self, missed: Timestamp, now: Timestamp, fence: &impl Fence) {
        warn!(
            scheduled = %missed,
            late_seconds = now.duration_since(missed).as_secs(),
            deadline_seconds = self.config.starting_deadline_seconds,
            "a sweep was missed and is past its starting deadline: skipped"
        );
        let patch =
            serde_json::json!({ "status": { "sweep": { "missedScheduleTime": Time(missed) } } });
        if let Err(e) = self.patch_all(&patch, fence).await {
            warn!(error = %e, "could not record the missed sweep");
        }
    }

    async fn patch_all(&self, patch: &serde_json::Value, fence: &impl Fence) -> Result<()> {
        for p in self.policies().await? {
            fence.renew().await?;
            Api::<RemediationPolicy>::namespaced(self.client.clone(), &p.namespace)
                .patch_status(&p.name, &params(), &Patch::Merge(patch))
                .await?;
        }
        Ok(())
    }

    /// One sweep now, for the scheduled time `scheduled`: finds the
    /// architectural problems, writes their issues, hands them on, and
    /// records the run on every policy in scope.
    pub async fn run_once(&self, scheduled: Timestamp, fence: &impl Fence) -> Result<Report> {
        let started = self.clock.now();
        let timer = Instant::now();
        let memories = self
            .api::<IncidentMemory>()
            .list(&ListParams::default())
            .await?
            .items;
        let policies = self.policies().await?;
        let found = findings(&memories, &self.config.thresholds, started);
        let mut handoffs = Vec::new();
        let mut recorded: BTreeMap<(String, String), Vec<SweepFinding>> = BTreeMap::new();
        for f in found {
            let latest = Api::<Incident>::namespaced(self.client.clone(), &f.namespace)
                .get_opt(&f.latest_incident)
                .await
                .ok()
                .flatten();
            let policy = covering(&policies, &f, latest.as_ref());
            let (handoff, entry) = self
                .hand_on(f, policy, latest.as_ref(), scheduled, fence)
                .await;
            if let Some(p) = policy {
                recorded
                    .entry((p.namespace.clone(), p.name.clone()))
                    .or_default()
                    .push(entry);
            }
            if let Some(sink) = &self.sink {
                sink(handoff.clone());
            }
            handoffs.push(handoff);
        }
        let duration_millis = i64::try_from(timer.elapsed().as_millis())
            .unwrap_or(i64::MAX)
            .min(crate::limits::MAX_SWEEP_MILLIS);
        for p in &policies {
            let mut findings = recorded
                .remove(&(p.namespace.clone(), p.name.clone()))
                .unwrap_or_default();
            let count = i32::try_from(findings.len())
                .unwrap_or(i32::MAX)
                .min(crate::limits::MAX_SWEEP_FINDINGS as i32);
            findings.truncate(50);
            let missed = p
                .policy
                .status
                .as_ref()
                .and_then(|s| s.sweep.as_ref())
                .and_then(|s| s.missed_schedule_time.clone());
            let status = SweepStatus {
                last_run_time: Some(Time(started)),
                last_schedule_time: Some(Time(scheduled)),
                duration_millis,
                missed_schedule_time: missed,
                finding_count: count,
                findings,
            };
            let patch = serde_json::json!({ "status": { "sweep": status } });
            fence.renew().await?;
            Api::<RemediationPolicy>::namespaced(self.client.clone(), &p.namespace)
                .patch_status(&p.name, &params(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(Report {
            scheduled,
            started,
            duration_millis,
            handoffs,
        })
    }

    /// Writes a finding's issue (when a repository and GitHub are there)
    /// and returns what is handed on and what the status records.
    async fn hand_on(
        &self,
        f: Finding,
        policy: Option<&Policy>,
        latest: Option<&Incident>,
        scheduled: Timestamp,
        fence: &impl Fence,
    ) -> (Handoff, SweepFinding) {
        let title = brief::title(&f);
        let body = brief::body(&f, latest);
        let target = policy.and_then(|p| p.policy.spec.github.as_ref());
        let known = policy
            .and_then(|p| p.policy.status.as_ref()?.sweep.as_ref())
            .and_then(|s| s.findings.iter().find(|x| x.fingerprint == f.fingerprint))
            .and_then(|x| x.issue_number);
        let mut entry = SweepFinding {
            memory: f.memory.clone(),
            fingerprint: f.fingerprint.chars().take(128).collect(),
            rule: f.rule_names(),
            fix_class: f
                .fix_class
                .as_ref()
                .map(|(c, _)| c.as_str().to_string())
                .unwrap_or_default(),
            occurrences: i32::try_from(f.history.len()).unwrap_or(i32::MAX),
            ..SweepFinding::default()
        };
        let gh = match (policy, target) {
            (Some(_), Some(_)) => self.github.for_namespace(&f.namespace).await,
            _ => None,
        };
        let outcome: std::result::Result<publish::Published, String> = match (policy, target) {
            (None, _) => Err("no RemediationPolicy covers this workload".into()),
            (Some(_), None) => Err("the policy names no GitHub repository".into()),
            (Some(_), Some(t)) => match &gh {
                None => Err("GitHub is not configured".into()),
                Some(gh) => {
                    let marker = brief::marker(&f);
                    let desired = publish::Desired {
                        repository: &t.repository,
                        title: &title,
                        body: &body,
                        marker: &marker,
                        extra_labels: &t.labels,
                        known,
                        run: scheduled.as_second(),
                    };
                    publish::publish(gh, &desired, fence)
                        .await
                        .map_err(|e| format!("{}: {e}", e.reason()))
                }
            },
        };
        match outcome {
            Ok(p) => {
                entry.issue_number = Some(p.number);
                entry.issue_url = Some(p.url.chars().take(500).collect());
                if let (Some(jules), Some(gh), Some(t)) = (&self.jules, &gh, target) {
                    let started = session::start(
                        &session::Start {
                            client: &self.client,
                            jules,
                            gh,
                            repository: &t.repository,
                            issue: p.number,
                            title: &title,
                            brief: &body,
                            finding: &f,
                            latest,
                            now: self.clock.now(),
                        },
                        fence,
                    )
                    .await;
                    match started {
                        Ok(s) => entry.jules_session = Some(s.chars().take(500).collect()),
                        Err(e) => {
                            warn!(memory = %f.memory, error = %e, "no Jules session for the sweep finding");
                            let why = format!("no Jules session: {e}");
                            entry.reason =
                                Some(crate::redact::text(&why).chars().take(500).collect());
                        }
                    }
                }
            }
            Err(reason) => {
                warn!(memory = %f.memory, namespace = %f.namespace, %reason, "sweep finding without an issue");
                entry.reason = Some(crate::redact::text(&reason).chars().take(500).collect());
            }
        }
        let handoff = Handoff {
            policy: policy.map(|p| format!("{}/{}", p.namespace, p.name)),
            repository: target.map(|t| t.repository.clone()),
            title,
            brief: body,
            issue_number: entry.issue_number,
            issue_url: entry.issue_url.clone(),
            finding: f,
        };
        (handoff, entry)
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The policy that covers a finding's workload: the one its latest
/// Incident names, else one in its namespace that lists the workload among
/// those it matches.
fn covering<'a>(
    policies: &'a [Policy],
    f: &Finding,
    latest: Option<&Incident>,
) -> Option<&'a Policy> {
    let in_ns = |p: &&Policy| p.namespace == f.namespace;
    let named = latest.map(|i| i.spec.policy.as_str());
    let matches = |w: &WorkloadRef| *w == f.target;
    policies
        .iter()
        .filter(in_ns)
        .find(|p| Some(p.name.as_str()) == named)
        .or_else(|| {
            policies.iter().filter(in_ns).find(|p| {
                p.policy
                    .status
                    .as_ref()
                    .is_some_and(|s| s.matched_workloads.iter().any(matches))
            })
        })
}
