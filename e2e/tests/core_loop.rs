//! The detect → diagnose → fix → verify → learn loop on the real local
//! cluster, each scenario with its own namespace and its own operator process.
#![cfg(feature = "cluster")]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use sre_space::crd::SignalKind;
use sre_space::crd::{
    ActionState, ActionType, Category, Incident, IncidentMemory, Outcome, Phase, RemediationPolicy,
};
use sre_space_e2e::incident_of;
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Operator, Scenario, kubectl_output, wait_incident, wait_ready, wait_until};

fn phase(i: &Incident) -> Phase {
    i.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn executed(i: &Incident) -> Vec<(ActionType, ActionState)> {
    i.status
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| (a.type_, a.state))
        .collect()
}

fn fast(v: &mut serde_json::Value, cooldown: i64, window: i64) {
    v["spec"]["guardrails"]["cooldownSeconds"] = cooldown.into();
    v["spec"]["guardrails"]["verificationWindowSeconds"] = window.into();
}

#[tokio::test]
async fn oom_kill_raises_memory_and_resolves_with_postmortem_and_memory() -> Result<()> {
    let s = Scenario::builder("e2e-oom")
        .policy(|v| fast(v, 5, 5))
        .deploy("quote", 2, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("quote").oom().await?;
    let inc = s
        .resolved(&incident_of("quote", SignalKind::OOMKilled))
        .await?;
    // The condition users wait on works with kubectl itself.
    kubectl_output(&[
        "wait",
        "-n",
        s.name(),
        "--for=condition=Resolved",
        &format!("incident/{}", incident_of("quote", SignalKind::OOMKilled)),
        "--timeout=5s",
    ])?;

    let status = inc.status.clone().unwrap_or_default();
    let diagnosis = status.diagnosis.clone().expect("diagnosed");
    assert_eq!(diagnosis.category, Category::OutOfMemory);
    assert!(
        diagnosis.root_cause.contains("64Mi"),
        "{}",
        diagnosis.root_cause
    );
    assert_eq!(
        executed(&inc),
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)]
    );
    let action = &status.actions[0];
    assert_eq!(
        (action.from.as_deref(), action.to.as_deref()),
        (Some("64Mi"), Some("96Mi"))
    );
    assert_eq!(action.outcome, Some(Outcome::Effective));
    let limit = s
        .deployment("quote")
        .await?
        .spec
        .template
        .spec
        .expect("spec")
        .containers[0]
        .resources
        .clone()
        .and_then(|r| r.limits)
        .and_then(|l| l.get("memory").cloned())
        .map(|q| q.0);
    assert_eq!(
        limit.as_deref(),
        Some("96Mi"),
        "the workload really got more memory"
    );
    let pm = status.post_mortem.clone().expect("post-mortem written");
    assert!(
        pm.contains("Root cause") && pm.contains("OutOfMemory") && pm.contains("RaiseMemoryLimit"),
        "{pm}"
    );
    assert_eq!(s.incidents().await?.len(), 1, "one problem, one incident");

    let memory = Api::<IncidentMemory>::namespaced(s.client.clone(), s.name())
        .get(&incident_of("quote", SignalKind::OOMKilled))
        .await?;
    assert_eq!(memory.spec.occurrences.len(), 1);
    assert_eq!(memory.spec.occurrences[0].outcome, Some(Outcome::Effective));
    assert_eq!(
        memory.status.and_then(|m| m.best_action),
        Some(ActionType::RaiseMemoryLimit)
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_crash_looping_rollout_is_diagnosed_and_rolled_back() -> Result<()> {
    let s = Scenario::builder("e2e-rollout")
        .policy(|v| fast(v, 5, 8))
        .deploy("policy", 2, "128Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("policy").bad_rollout().await?;
    let inc = s
        .resolved(&incident_of("policy", SignalKind::CrashLoopBackOff))
        .await?;
    let status = inc.status.clone().unwrap_or_default();
    let diagnosis = status.diagnosis.expect("diagnosed");
    assert_eq!(diagnosis.category, Category::BadRollout);
    assert!(
        diagnosis.root_cause.contains("containers[app].args"),
        "names the changed field: {}",
        diagnosis.root_cause
    );
    assert_eq!(
        executed(&inc)[0],
        (ActionType::Rollback, ActionState::Succeeded)
    );

    let template = s.deployment("policy").await?.spec.template;
    let args = template.spec.expect("spec").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert_eq!(args, ["--port=8080"], "the bad argument is gone");
    let simulate = template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(sre_chaos::SIMULATE).cloned());
    assert_eq!(simulate, None);
    wait_ready(&s.client, s.name(), "policy", 2, LONG).await?;
    s.cleanup().await
}

#[tokio::test]
async fn a_fault_repeating_within_the_cooldown_gets_no_extra_action_then_escalates() -> Result<()> {
    let s = Scenario::builder("e2e-repeat")
        .policy(|v| {
        // The verification window must outlast the gaps between the
        // injected faults: on a loaded machine an injection can take
        // seconds, and a window of 4 s once passed quietly, so the first
        // action was verified, the incident resolved, and the next fault
        // escalated it as a recurrence instead of failing the verification.
        fast(v, 15, 12);
        v["spec"]["guardrails"]["escalateAfterAttempts"] = 2.into();
        v["spec"]["actions"] = serde_json::json!([{ "type": "RestartPod" }, { "type": "RolloutRestart" }, { "type": "Escalate" }]);
    })
        // Two replicas: the only ready pod of a workload is never evicted.
        .deploy("user", 2, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    // The fault keeps coming back, every two seconds, whatever is done.
    let chaos = s.chaos("user");
    let started = tokio::time::Instant::now();
    let inc = loop {
        let _ = chaos.oom().await;
        let inc = Api::<Incident>::namespaced(s.client.clone(), s.name())
            .get_opt(&incident_of("user", SignalKind::OOMKilled))
            .await?;
        if let Some(inc) = inc.as_ref().filter(|i| phase(i) == Phase::Escalated) {
            break inc.clone();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "not escalated in time: {inc:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let status = inc.status.clone().unwrap_or_default();
    let taken: Vec<_> = status
        .actions
        .iter()
        .filter(|a| a.state == ActionState::Succeeded && a.type_ != ActionType::Escalate)
        .collect();
    assert_eq!(
        taken.iter().map(|a| a.type_).collect::<Vec<_>>(),
        [ActionType::RestartPod, ActionType::RolloutRestart],
        "one action per step, none repeated"
    );
    let gap = taken[1]
        .recorded_at
        .0
        .duration_since(taken[0].finished_at.clone().expect("finished").0);
    assert!(
        gap.as_secs() >= 15,
        "the second action waited for the cooldown, gap {gap:?}"
    );
    assert!(
        status
            .escalation_reason
            .unwrap_or_default()
            .contains("2 attempt(s)")
    );
    assert!(status.post_mortem.unwrap_or_default().contains("escalated"));
    s.cleanup().await
}

#[tokio::test]
async fn an_oom_of_a_bare_pod_never_deletes_it_the_restart_is_refused_and_the_ladder_moves_on()
-> Result<()> {
    let s = Scenario::builder("e2e-barepod")
        .policy(|v| {
            fast(v, 1, 5);
            v["spec"]["actions"] =
                serde_json::json!([{ "type": "RestartPod" }, { "type": "Escalate" }]);
        })
        .start()
        .await?;
    // A pod without a controller: deleted, nothing would bring it back.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), s.name());
    let bare: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "batch-runner", "labels": { "app": "batch-runner", "sre.space/protected": "true" } },
        "spec": { "containers": [{
            "name": "app",
            "image": "registry.local/batch-runner:1",
            "resources": { "limits": { "memory": "64Mi" }, "requests": { "memory": "16Mi" } }
        }] }
    }))?;
    let uid = pods.create(&PostParams::default(), &bare).await?.uid();
    wait_until(LONG, "the bare pod to run", || async {
        let p = pods.get("batch-runner").await?;
        Ok(p.status.and_then(|st| st.phase).as_deref() == Some("Running"))
    })
    .await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("batch-runner")
        .oom_pod(pods.get("batch-runner").await?)
        .await?;
    // The first step is decided one way or the other.
    let decided = |i: &Incident| {
        i.status
            .as_ref()
            .and_then(|st| st.actions.first())
            .is_some_and(|a| a.state != ActionState::Pending)
    };
    wait_until(LONG, "the incident's first step to be decided", || async {
        Ok(s.incidents().await?.iter().any(decided))
    })
    .await?;
    let after = pods.get_opt("batch-runner").await?;
    assert!(
        after
            .as_ref()
            .is_some_and(|p| p.uid() == uid && p.metadata.deletion_timestamp.is_none()),
        "the bare pod still exists, untouched"
    );
    let inc = s
        .incidents()
        .await?
        .into_iter()
        .find(decided)
        .expect("the incident");
    let inc = wait_incident(
        &s.client,
        s.name(),
        &inc.name_any(),
        LONG,
        "Escalated",
        |i| phase(i) == Phase::Escalated,
    )
    .await?;
    let status = inc.status.clone().unwrap_or_default();
    let refused = &status.actions[0];
    assert_eq!(
        (refused.type_, refused.state),
        (ActionType::RestartPod, ActionState::Failed),
        "{:?}",
        status.actions
    );
    assert!(
        refused.detail.contains("no controller") && refused.detail.contains("for good"),
        "the incident says why: {}",
        refused.detail
    );
    assert_eq!(
        status.actions.last().map(|a| a.type_),
        Some(ActionType::Escalate),
        "the ladder moved on to its next step"
    );
    assert!(
        pods.get_opt("batch-runner").await?.is_some(),
        "still there after the escalation"
    );
    s.cleanup().await
}

/// A policy that restarts one pod at a time, lets two go at once (so only
/// the one-change-per-workload guard can hold a second restart back), and
/// verifies for 30 s.
fn restart_two_pods(v: &mut serde_json::Value, mode: &str) {
    fast(v, 5, 30);
    v["spec"]["mode"] = mode.into();
    v["spec"]["guardrails"]["maxPodsDisrupted"] = 2.into();
    v["spec"]["actions"] = serde_json::json!([{ "type": "RestartPod" }, { "type": "Escalate" }]);
}

/// Two incidents of one workload at once, and what each of them did.
trait TwoIncidents {
    async fn oom_and_crashloop_at_once(&self, app: &str) -> Result<[String; 2]>;
    async fn restarts(&self, names: &[String]) -> Result<Vec<(Incident, usize)>>;
    async fn one_restart_and_one_waiting(&self, names: &[String], saying: &str) -> Result<()>;
}

impl TwoIncidents for Scenario {
    /// OOM-kills one pod of the app and crash-loops the other in the same
    /// moment: two incidents of one workload. Returns their names.
    async fn oom_and_crashloop_at_once(&self, app: &str) -> Result<[String; 2]> {
        let chaos = self.chaos(app);
        let mut pods = chaos.running_pods().await?;
        let (second, first) = (pods.remove(1), pods.remove(0));
        let (oom, crash) = tokio::join!(chaos.oom_pod(first), chaos.crashloop_pod(second, 5));
        oom?;
        crash?;
        Ok([
            incident_of(app, SignalKind::OOMKilled),
            incident_of(app, SignalKind::CrashLoopBackOff),
        ])
    }

    /// The named incidents, each with how many restarts it started.
    async fn restarts(&self, names: &[String]) -> Result<Vec<(Incident, usize)>> {
        Ok(self
            .incidents()
            .await?
            .into_iter()
            .filter(|i| names.contains(&i.name_any()))
            .map(|i| {
                let n = executed(&i)
                    .iter()
                    .filter(|(t, st)| {
                        *t == ActionType::RestartPod
                            && matches!(st, ActionState::Pending | ActionState::Succeeded)
                    })
                    .count();
                (i, n)
            })
            .collect())
    }

    /// Waits until one of the incidents has restarted a pod and another
    /// says (with `saying` in its message) that it waits for that change;
    /// then checks that, well inside the first restart's cooldown and
    /// verification window (35 s), no second restart followed.
    async fn one_restart_and_one_waiting(&self, names: &[String], saying: &str) -> Result<()> {
        let waits = |i: &Incident| {
            i.status.as_ref().is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.reason == "WorkloadChangedByAnotherIncident" && c.message.contains(saying)
                })
            })
        };
        wait_until(
            LONG,
            "one restart and one incident waiting for it",
            || async {
                let ours = self.restarts(names).await?;
                Ok(ours.len() == names.len()
                    && ours.iter().map(|(_, n)| n).sum::<usize>() == 1
                    && ours.iter().any(|(i, _)| waits(i)))
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let per_incident: Vec<(String, usize)> = self
            .restarts(names)
            .await?
            .iter()
            .map(|(i, n)| (i.name_any(), *n))
            .collect();
        assert_eq!(
            per_incident.iter().map(|(_, n)| n).sum::<usize>(),
            1,
            "exactly one restart across the incidents: {per_incident:?}"
        );
        Ok(())
    }
}

#[tokio::test]
async fn two_faults_of_one_workload_at_once_get_one_change() -> Result<()> {
    let s = Scenario::builder("e2e-twofaults")
        .policy(|v| restart_two_pods(v, "Automatic"))
        // A third pod stays ready: the OOM-killed pod is never the last ready one.
        .deploy("cart", 3, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    // Two incidents of one workload plan at once.
    let names = s.oom_and_crashloop_at_once("cart").await?;
    s.one_restart_and_one_waiting(&names, "waiting until")
        .await?;
    s.cleanup().await
}

#[tokio::test]
async fn two_approvals_for_one_workload_at_once_make_one_change() -> Result<()> {
    let s = Scenario::builder("e2e-twoapprovals")
        .policy(|v| restart_two_pods(v, "Manual"))
        // A third pod stays ready: the OOM-killed pod is never the last ready one.
        .deploy("basket", 3, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    let names = s.oom_and_crashloop_at_once("basket").await?;
    let mut waiting = vec![];
    for name in &names {
        let inc = wait_incident(&s.client, s.name(), name, LONG, "AwaitingApproval", |i| {
            phase(i) == Phase::AwaitingApproval
        })
        .await?;
        let id = inc.status.expect("status").actions[0].id.clone();
        waiting.push((name.clone(), id));
    }
    // On-call approves both in the same moment.
    let api: Api<Incident> = Api::namespaced(s.client.clone(), s.name());
    let approvals = waiting.into_iter().map(|(name, id)| {
        let api = api.clone();
        async move {
            let approval = serde_json::json!({ "spec": { "approval": { "actionId": id, "decision": "Approve", "by": "oncall" } } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(approval))
                .await
        }
    });
    for approved in futures::future::join_all(approvals).await {
        approved?;
    }
    s.one_restart_and_one_waiting(&names, "is approved").await?;
    s.cleanup().await
}

#[tokio::test]
async fn dry_run_records_what_it_would_do_and_changes_nothing() -> Result<()> {
    let s = Scenario::builder("e2e-dryrun")
        .policy(|v| {
            v["spec"]["mode"] = "DryRun".into();
            fast(v, 5, 5);
        })
        .deploy("front", 2, "64Mi")
        .start()
        .await?;
    let before = s.deployment("front").await?;
    let pods_before = s.pod_names("front").await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("front").oom().await?;
    let inc = s
        .resolved(&incident_of("front", SignalKind::OOMKilled))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RaiseMemoryLimit, ActionState::DryRun)]
    );
    let action = &inc.status.as_ref().expect("status").actions[0];
    assert_eq!(
        action.to.as_deref(),
        Some("96Mi"),
        "the dry run says what it would set"
    );
    let after = s.deployment("front").await?;
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the Deployment was not changed"
    );
    assert_eq!(
        s.pod_names("front").await?,
        pods_before,
        "no pod was touched"
    );
    s.cleanup().await
}

#[tokio::test]
async fn manual_mode_waits_for_approval_then_acts_once() -> Result<()> {
    let s = Scenario::builder("e2e-manual")
        .policy(|v| {
            v["spec"]["mode"] = "Manual".into();
            fast(v, 5, 5);
        })
        .deploy("ledger", 2, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("ledger").crashloop(5).await?;
    let pods_before = s.pod_names("ledger").await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("ledger", SignalKind::CrashLoopBackOff),
        LONG,
        "AwaitingApproval",
        |i| phase(i) == Phase::AwaitingApproval,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.pod_names("ledger").await?,
        pods_before,
        "nothing happens without approval"
    );
    let waiting = inc
        .status
        .as_ref()
        .and_then(|s| s.actions.last())
        .expect("an action waits")
        .clone();
    assert_eq!(
        (waiting.type_, waiting.state),
        (ActionType::RestartPod, ActionState::AwaitingApproval)
    );

    let approval = serde_json::json!({ "spec": { "approval": { "actionId": waiting.id, "decision": "Approve", "by": "oncall" } } });
    Api::<Incident>::namespaced(s.client.clone(), s.name())
        .patch(
            &incident_of("ledger", SignalKind::CrashLoopBackOff),
            &PatchParams::default(),
            &Patch::Merge(approval),
        )
        .await?;
    let inc = s
        .resolved(&incident_of("ledger", SignalKind::CrashLoopBackOff))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RestartPod, ActionState::Succeeded)],
        "acted once"
    );
    let after = s.pod_names("ledger").await?;
    assert_eq!(
        pods_before.difference(&after).count(),
        1,
        "exactly one pod was restarted"
    );
    s.cleanup().await
}

#[tokio::test]
async fn an_operator_killed_between_recording_and_acting_acts_exactly_once() -> Result<()> {
    let s = Scenario::builder("e2e-crash")
        .policy(|v| fast(v, 5, 5))
        .deploy("billing", 3, "64Mi")
        .start()
        .await?;

    // Every pod ever seen, to count replacements.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), s.name());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let watch = {
        let seen = seen.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(list) = pods
                    .list(&ListParams::default().labels("app=billing"))
                    .await
                    && let Ok(mut s) = seen.lock()
                {
                    s.extend(list.items.iter().map(|p| p.name_any()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut first = s
        .operator(&[("SRE_SPACE_TEST_CRASH_AFTER_RECORD", "1")])
        .await?;
    s.chaos("billing").crashloop(5).await?;
    first.wait_exit(LONG).await?;
    let inc = Api::<Incident>::namespaced(s.client.clone(), s.name())
        .get(&incident_of("billing", SignalKind::CrashLoopBackOff))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RestartPod, ActionState::Pending)],
        "the intent was recorded first"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen.lock().expect("lock").len(),
        3,
        "nothing was restarted before the crash"
    );

    let _second = s.operator(&[]).await?;
    let inc = s
        .resolved(&incident_of("billing", SignalKind::CrashLoopBackOff))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RestartPod, ActionState::Succeeded)]
    );
    wait_ready(&s.client, s.name(), "billing", 3, LONG).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    watch.abort();
    assert_eq!(
        seen.lock().expect("lock").len(),
        4,
        "exactly one pod was replaced"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_pod_disruption_budget_blocks_the_restart_and_the_incident_says_why() -> Result<()> {
    let s = Scenario::builder("e2e-pdb")
        .policy(|v| {
            fast(v, 1, 5);
            v["spec"]["actions"] =
                serde_json::json!([{ "type": "RestartPod" }, { "type": "Escalate" }]);
        })
        .deploy("orders", 2, "64Mi")
        .start()
        .await?;
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "orders" },
            "spec": { "minAvailable": 2, "selector": { "matchLabels": { "app": "orders" } } }
        }))?;
    Api::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &pdb)
        .await?;
    let pods_before = s.pod_names("orders").await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("orders").crashloop(5).await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("orders", SignalKind::CrashLoopBackOff),
        LONG,
        "Escalated",
        |i| phase(i) == Phase::Escalated,
    )
    .await?;
    let blocked = &inc.status.as_ref().expect("status").actions[0];
    assert_eq!(
        (blocked.type_, blocked.state),
        (ActionType::RestartPod, ActionState::Blocked)
    );
    assert!(
        blocked.detail.contains("PodDisruptionBudget"),
        "{}",
        blocked.detail
    );
    assert_eq!(
        s.pod_names("orders").await?,
        pods_before,
        "no pod was evicted"
    );
    s.cleanup().await
}

#[tokio::test]
async fn normal_churn_opens_no_incident() -> Result<()> {
    let s = Scenario::builder("e2e-noop")
        .policy(|v| {
        v["spec"]["triggers"] = serde_json::json!([
            { "type": "OOMKilled" }, { "type": "CrashLoopBackOff" }, { "type": "ImagePullBackOff" },
            { "type": "Unschedulable", "gracePeriodSeconds": 10 }, { "type": "ReadinessFailing", "gracePeriodSeconds": 10 }
        ]);
    })
        .deploy("catalog", 3, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), s.name());

    // A rolling update to a new image.
    let image = serde_json::json!({ "spec": { "template": { "spec": { "containers": [
        { "name": "app", "image": "registry.local/catalog:2" }
    ] } } } });
    deployments
        .patch("catalog", &PatchParams::default(), &Patch::Strategic(image))
        .await?;
    wait_until(LONG, "the rollout to finish", || async {
        let d = deployments.get("catalog").await?;
        let st = d.status.unwrap_or_default();
        Ok(
            st.updated_replicas == Some(3)
                && st.ready_replicas == Some(3)
                && st.replicas == Some(3),
        )
    })
    .await?;
    // Scale to zero and back.
    for replicas in [0, 3] {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        deployments
            .patch("catalog", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        wait_ready(&s.client, s.name(), "catalog", replicas as usize, LONG).await?;
    }
    // A Job that completes.
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "nightly" },
        "spec": { "template": {
            "metadata": { "labels": { "sre.space/protected": "true" } },
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "run", "image": "registry.local/batch:1" }] }
        } }
    }))?;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(s.client.clone(), s.name());
    jobs.create(&PostParams::default(), &job).await?;
    wait_until(LONG, "the job to complete", || async {
        Ok(jobs.get("nightly").await?.status.and_then(|s| s.succeeded) == Some(1))
    })
    .await?;
    // Past the grace periods, still nothing.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let incidents = s.incidents().await?;
    assert!(
        incidents.is_empty(),
        "churn opened incidents: {:?}",
        incidents.iter().map(|i| i.name_any()).collect::<Vec<_>>()
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_policy_whose_cap_is_below_a_current_limit_is_not_ready_and_says_what_to_fix()
-> Result<()> {
    let s = Scenario::builder("e2e-cap")
        .deploy("search", 1, "2Gi")
        .policy(|_| {})
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;
    let api: Api<RemediationPolicy> = Api::namespaced(s.client.clone(), s.name());
    let ready_condition = |p: RemediationPolicy| {
        p.status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
    };
    wait_until(LONG, "Ready=False", || async {
        Ok(ready_condition(api.get("demo-services").await?)
            .is_some_and(|c| c.reason == "CapBelowCurrentLimit"))
    })
    .await?;
    let last = ready_condition(api.get("demo-services").await?);
    let ready = last.expect("a Ready condition");
    assert_eq!(ready.status, sre_space::crd::ConditionStatus::False);
    assert!(
        ready.message.contains("Deployment/search") && ready.message.contains("2Gi"),
        "{}",
        ready.message
    );
    let events = kubectl_output(&[
        "get",
        "events",
        "-n",
        s.name(),
        "--field-selector",
        "reason=PolicyInvalid",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "a Warning event is published");
    s.cleanup().await
}

#[tokio::test]
async fn a_configured_model_is_consulted_and_a_failing_one_never_blocks_the_loop() -> Result<()> {
    use sre_space_e2e::fake_openai::{Behaviour, FakeOpenAi};
    let s = Scenario::builder("e2e-llm")
        .policy(|v| fast(v, 5, 5))
        .deploy("pricing", 1, "64Mi")
        .deploy("tax", 1, "64Mi")
        .start()
        .await?;
    let (fake, url) = FakeOpenAi::start().await;
    let agrees = serde_json::json!({ "hypotheses": [{
        "category": "OutOfMemory", "statement": "pricing leaks memory under load", "confidence": 0.8,
        "evidence": ["e1"], "proposed_action": "RaiseMemoryLimit"
    }]});
    fake.then(Behaviour::Answer(agrees.to_string()));
    for _ in 0..4 {
        fake.then(Behaviour::Fail {
            status: 503,
            retry_after: Some(0),
        });
    }
    let env = [
        ("SRE_SPACE_LLM_BASE_URL", url.as_str()),
        ("SRE_SPACE_LLM_MODEL", "fake"),
        ("SRE_SPACE_LLM_TIMEOUT_SECONDS", "5"),
    ];
    let _operator = s.operator(&env).await?;

    s.chaos("pricing").oom().await?;
    let inc = s
        .resolved(&incident_of("pricing", SignalKind::OOMKilled))
        .await?;
    let status = inc.status.clone().unwrap_or_default();
    assert_eq!(
        status.diagnosis.as_ref().map(|d| d.analyzer.as_str()),
        Some("rules+llm")
    );
    let consulted = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ModelConsulted")
        .expect("condition");
    assert_eq!(
        (consulted.status, consulted.reason.as_str()),
        (sre_space::crd::ConditionStatus::True, "Answered")
    );

    // The model's server now fails: the rules' diagnosis stands and the
    // incident is still fixed.
    s.chaos("tax").oom().await?;
    let inc = s
        .resolved(&incident_of("tax", SignalKind::OOMKilled))
        .await?;
    let status = inc.status.clone().unwrap_or_default();
    assert_eq!(
        status.diagnosis.as_ref().map(|d| d.analyzer.as_str()),
        Some("rules")
    );
    let consulted = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ModelConsulted")
        .expect("condition");
    assert_eq!(consulted.status, sre_space::crd::ConditionStatus::False);
    assert_eq!(
        consulted.reason, "ModelServerError",
        "{}",
        consulted.message
    );
    assert_eq!(
        executed(&inc),
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)]
    );
    s.cleanup().await
}

#[tokio::test]
async fn an_oom_is_reported_on_github_and_fixed_through_a_merged_pull_request() -> Result<()> {
    use sre_space_e2e::fake_github::{self, FakeGitHub};
    let values = "policyService:\n  resources:\n    limits:\n      memory: 64Mi\n";
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("acme/deploy", &[("deploy/values.yaml", values)]);
    let s = Scenario::builder("e2e-gitops")
        .policy(|v| {
        fast(v, 5, 5);
        v["spec"]["github"] = serde_json::json!({
            "repository": "acme/deploy",
            "gitops": { "path": "deploy/values.yaml", "valuesKey": "policyService.resources.limits.memory" }
        });
    })
        .deploy("checkout", 1, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&fake_github::operator_env(&url)).await?;

    s.chaos("checkout").oom().await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("checkout", SignalKind::OOMKilled),
        LONG,
        "a pull request",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.actions.last())
                .is_some_and(|a| a.state == ActionState::AwaitingMerge)
        },
    )
    .await?;
    let pr = inc
        .status
        .as_ref()
        .and_then(|s| s.actions.last())
        .and_then(|a| a.pull_request.clone())
        .expect("pr");
    let branch_file = fake
        .file("acme/deploy", &pr.branch, "deploy/values.yaml")
        .expect("branch");
    assert_eq!(branch_file, values.replace("64Mi", "96Mi"));
    let limit = |d: Deployment| {
        d.spec
            .template
            .spec
            .and_then(|s| s.containers[0].resources.clone())
            .and_then(|r| r.limits)
            .and_then(|l| l.get("memory").cloned())
            .map(|q| q.0)
    };
    assert_eq!(
        limit(s.deployment("checkout").await?).as_deref(),
        Some("64Mi"),
        "GitOps: the cluster is not patched"
    );

    fake.merge("acme/deploy", pr.number);
    let inc = s
        .resolved(&incident_of("checkout", SignalKind::OOMKilled))
        .await?;
    let link = inc
        .status
        .as_ref()
        .and_then(|s| s.github.clone())
        .expect("linked to its issue");
    wait_until(LONG, "the issue to be closed", || {
        let fake = fake.clone();
        async move {
            Ok(fake
                .issues("acme/deploy")
                .first()
                .is_some_and(|i| i.state == "closed"))
        }
    })
    .await?;
    let issues = fake.issues("acme/deploy");
    assert_eq!(issues.len(), 1);
    assert_eq!(Some(issues[0].number), link.issue_number);
    assert!(issues[0].labels.contains(&"Status: Fixed".to_string()));
    assert!(issues[0].comments.iter().any(|c| c.contains("Diagnosis")));
    assert!(issues[0].comments.iter().any(|c| c.contains("Post-mortem")));
    assert!(
        fake.requests().iter().all(|r| !r.contains("/merge")),
        "the operator never merges"
    );
    s.cleanup().await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn only_the_leader_acts_and_a_killed_leader_is_replaced() -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let s = Scenario::builder("e2e-leader")
        .policy(|v| fast(v, 5, 5))
        .deploy("ads", 1, "64Mi")
        .deploy("search", 1, "64Mi")
        .start()
        .await?;
    let ports = [free_port(), free_port()];
    let start = async |id: &str, port: u16| {
        let addr = format!("127.0.0.1:{port}");
        let env = [
            ("SRE_SPACE_LEASE_NAMESPACE", s.name()),
            ("SRE_SPACE_LEASE_DURATION_SECONDS", "6"),
            ("POD_NAME", id),
            ("SRE_SPACE_HTTP_ADDR", addr.as_str()),
        ];
        Operator::start_standby(s.name(), &env).await
    };
    let mut a = start("replica-a", ports[0]).await?;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), s.name());
    wait_until(LONG, "replica-a to lead", || async {
        Ok(leases
            .get_opt("sre-space")
            .await?
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("replica-a"))
    })
    .await?;
    let mut b = start("replica-b", ports[1]).await?;
    wait_until(LONG, "the follower to serve /readyz", || async {
        Ok(http_get(ports[1], "/readyz")
            .await
            .is_ok_and(|r| r.contains("200")))
    })
    .await?;

    s.chaos("ads").oom().await?;
    let inc = s
        .resolved(&incident_of("ads", SignalKind::OOMKilled))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)],
        "acted once, by the leader"
    );
    let metrics = http_get(ports[0], "/metrics").await?;
    assert!(
        metrics
            .contains("sre_space_actions_total{type=\"RaiseMemoryLimit\",result=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sre_space_leader 1"), "{metrics}");
    let follower = http_get(ports[1], "/metrics").await?;
    assert!(
        follower.contains("sre_space_leader 0"),
        "the follower does not lead: {follower}"
    );

    // The leader dies; the follower takes the Lease once it expires and
    // handles the next fault.
    a.kill();
    let killed = tokio::time::Instant::now();
    wait_until(LONG, "replica-b to lead", || async {
        Ok(leases
            .get_opt("sre-space")
            .await?
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("replica-b"))
    })
    .await?;
    let failover = killed.elapsed();
    println!("failover after SIGKILL: {failover:?} (lease 6 s)");
    assert!(
        failover < Duration::from_secs(15),
        "took over within the lease and a renewal: {failover:?}"
    );
    s.chaos("search").oom().await?;
    let inc = s
        .resolved(&incident_of("search", SignalKind::OOMKilled))
        .await?;
    assert_eq!(
        executed(&inc),
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)]
    );
    let before = Api::<Incident>::namespaced(s.client.clone(), s.name())
        .get(&incident_of("ads", SignalKind::OOMKilled))
        .await?;
    assert_eq!(
        executed(&before),
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)],
        "the new leader repeated nothing"
    );
    b.kill();
    s.cleanup().await
}

/// A restart planned for one pod never evicts another pod that took its name
/// since (a StatefulSet's pod comes back under the same name): the eviction
/// carries the planned pod's UID as a precondition, and the API server
/// refuses it. kube's `Api::evict` sends that precondition under a field
/// the API server drops, so this failed before the operator wrote the
/// eviction itself.
#[tokio::test]
async fn a_replayed_restart_does_not_evict_a_pod_that_took_the_planned_pods_name() -> Result<()> {
    let s = Scenario::builder("e2e-stale-uid")
        .policy(|v| fast(v, 30, 5))
        .deploy("ledger", 2, "64Mi")
        .start()
        .await?;
    let mut first = s
        .operator(&[("SRE_SPACE_TEST_CRASH_AFTER_RECORD", "1")])
        .await?;
    s.chaos("ledger").crashloop(5).await?;
    first.wait_exit(LONG).await?;
    let incidents: Api<Incident> = Api::namespaced(s.client.clone(), s.name());
    let name = incident_of("ledger", SignalKind::CrashLoopBackOff);
    let mut inc = incidents.get(&name).await?;
    let pending = inc
        .status
        .as_mut()
        .and_then(|st| st.actions.last_mut())
        .expect("the recorded restart");
    assert_eq!(pending.state, ActionState::Pending);
    let pod_name = pending
        .target
        .as_ref()
        .map(|t| t.name.clone())
        .expect("the restart names its pod");
    // As if the planned pod had been deleted and another had taken its name.
    pending.target_uid = Some("uid-of-the-pod-the-plan-saw".into());
    inc.metadata.managed_fields = None;
    incidents
        .replace_status(&name, &PostParams::default(), &inc)
        .await?;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), s.name());
    let uid_before = pods.get(&pod_name).await?.metadata.uid;

    let _second = s.operator(&[]).await?;
    wait_until(LONG, "the replayed restart finished", || async {
        let inc = incidents.get(&name).await?;
        let first = inc.status.as_ref().and_then(|st| st.actions.first());
        Ok(first.is_some_and(|a| a.state != ActionState::Pending))
    })
    .await?;
    let inc = incidents.get(&name).await?;
    let taken = inc
        .status
        .as_ref()
        .and_then(|st| st.actions.first())
        .expect("the replayed restart");
    let still = pods.get_opt(&pod_name).await?;
    assert_eq!(
        still.and_then(|p| p.metadata.uid),
        uid_before,
        "the pod that now holds the name was not evicted ({:?}: {})",
        taken.state,
        taken.detail
    );
    s.cleanup().await
}
