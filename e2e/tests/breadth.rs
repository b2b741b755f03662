//! The failures real clusters have beyond crashes and OOM kills, each caused
//! for real on the local cluster: a missing ConfigMap, a failing init
//! container, a Job past its backoff limit, an unbound claim, a quota
//! refusal and a failing liveness probe. Each is detected, explained with
//! the object and the field at fault, and never "fixed" by a step that
//! cannot help.
//!
//! Containers run on the real node (`make test NODE=real`), where the
//! kubelet really refuses to start them; the claim and the quota need only
//! the control plane.
#![cfg(feature = "real-node")]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sre_space::crd::{
    ActionState, ActionType, Category, Incident, Phase, SignalKind, WorkloadKind, WorkloadRef,
};
use sre_space_e2e::{Scenario, real_node, real_node_pod_spec, wait_incident, wait_until};

/// Long enough for the kubelet's back-off and the Job controller's retries
/// on a 2-core machine running the whole cluster.
const LONG: Duration = Duration::from_secs(180);

/// The example policy, with grace periods short enough for a test.
async fn scenario(prefix: &str) -> Result<Scenario> {
    Scenario::builder(prefix)
        .policy(|v| {
            for t in v["spec"]["triggers"].as_array_mut().into_iter().flatten() {
                if t.get("gracePeriodSeconds").is_some() {
                    t["gracePeriodSeconds"] = 5.into();
                }
                if t.get("restartThreshold").is_some() {
                    t["restartThreshold"] = 1.into();
                }
            }
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
        })
        .start()
        .await
}

/// A one-pod Deployment on the real node running the test workload with
/// `args`, labelled as the example policy selects, with `edit` applied to
/// its pod spec.
fn real_deployment(name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Deployment {
    let mut spec = real_node_pod_spec(args, Some("64Mi"));
    edit(&mut spec);
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "sre.space/protected": "true" } },
                "spec": spec
            }
        }
    }))
    .expect("a valid Deployment")
}

async fn create_deployment(s: &Scenario, d: &Deployment) -> Result<()> {
    Api::<Deployment>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), d)
        .await?;
    Ok(())
}

fn incident_name(kind: WorkloadKind, name: &str, signal: SignalKind) -> String {
    sre_space::workload::incident_name(
        &WorkloadRef {
            kind,
            name: name.into(),
        },
        signal,
    )
}

/// Waits until the incident is diagnosed and has left the diagnosing
/// phases, and returns it.
async fn diagnosed(s: &Scenario, name: &str) -> Result<Incident> {
    wait_incident(
        &s.client,
        s.name(),
        name,
        LONG,
        "diagnosed and planned",
        |i| {
            i.status.as_ref().is_some_and(|st| {
                st.diagnosis.is_some()
                    && matches!(
                        st.phase,
                        Phase::Escalated | Phase::Remediating | Phase::Verifying | Phase::Resolved
                    )
            })
        },
    )
    .await
}

fn category_and_cause(i: &Incident) -> (Category, String) {
    let d = i
        .status
        .as_ref()
        .and_then(|s| s.diagnosis.clone())
        .expect("diagnosed");
    (d.category, d.root_cause)
}

/// The actions the operator took (or recorded), other than handing the
/// problem to people.
fn actions_taken(i: &Incident) -> Vec<ActionType> {
    i.status
        .as_ref()
        .map(|s| {
            s.actions
                .iter()
                .map(|a| a.type_)
                .filter(|t| *t != ActionType::Escalate)
                .collect()
        })
        .unwrap_or_default()
}

/// An escalation that says why no step on the ladder could help.
fn escalation_says_not_applicable(i: &Incident) -> String {
    let text = serde_json::to_string(&i.status).unwrap_or_default();
    assert!(
        text.contains("NotApplicable"),
        "the incident says which steps could not help: {text}"
    );
    text
}

#[tokio::test]
async fn a_missing_config_map_is_a_config_error_naming_it_and_nothing_is_restarted() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-config").await?;
    let _operator = s.operator(&[]).await?;
    create_deployment(
        &s,
        &real_deployment("web", &["sleep"], |spec| {
            spec["containers"][0]["envFrom"] =
                json!([{ "configMapRef": { "name": "app-config" } }]);
        }),
    )
    .await?;

    let name = incident_name(WorkloadKind::Deployment, "web", SignalKind::ConfigError);
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::ConfigError, "{cause}");
    assert!(cause.contains("app-config"), "names the ConfigMap: {cause}");
    assert!(cause.contains("envFrom"), "names the field: {cause}");
    assert_eq!(inc.status.as_ref().map(|s| s.phase), Some(Phase::Escalated));
    assert_eq!(
        actions_taken(&inc),
        vec![],
        "a restart cannot create a ConfigMap"
    );
    escalation_says_not_applicable(&inc);
    let others: Vec<String> = s
        .incident_names()
        .await?
        .into_iter()
        .filter(|n| *n != name)
        .collect();
    assert!(others.is_empty(), "one fault, one incident: {others:?}");
    s.cleanup().await
}

#[tokio::test]
async fn a_failing_init_container_is_an_init_failure_naming_it() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-init").await?;
    let _operator = s.operator(&[]).await?;
    create_deployment(
        &s,
        &real_deployment("ledger", &["sleep"], |spec| {
            let mut init = spec["containers"][0].clone();
            init["name"] = "migrate".into();
            // The workload refuses an unknown command with exit code 2.
            init["args"] = json!(["migrate-schema"]);
            spec["initContainers"] = json!([init]);
        }),
    )
    .await?;

    let name = incident_name(
        WorkloadKind::Deployment,
        "ledger",
        SignalKind::InitContainerFailed,
    );
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::InitFailure, "{cause}");
    assert!(
        cause.contains("migrate"),
        "names the init container: {cause}"
    );
    assert_eq!(actions_taken(&inc), vec![], "{cause}");
    s.cleanup().await
}

#[tokio::test]
async fn a_job_past_its_backoff_limit_is_a_job_failure_and_its_pods_are_left_alone() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-job").await?;
    let _operator = s.operator(&[]).await?;
    let mut spec = real_node_pod_spec(&["no-such-command"], Some("64Mi"));
    spec["restartPolicy"] = "Never".into();
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "nightly-report" },
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": { "labels": { "app": "nightly-report", "sre.space/protected": "true" } },
                "spec": spec
            }
        }
    }))?;
    Api::<Job>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &job)
        .await?;

    let name = incident_name(WorkloadKind::Job, "nightly-report", SignalKind::JobFailed);
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::JobFailure, "{cause}");
    assert!(cause.contains("nightly-report"), "{cause}");
    assert!(
        cause.contains("BackoffLimitExceeded") || cause.contains("backoff limit"),
        "says why the Job failed: {cause}"
    );
    assert_eq!(
        actions_taken(&inc),
        vec![],
        "nothing recreates a Job's pods"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_job_killed_at_its_memory_limit_is_one_out_of_memory_incident() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-job-oom").await?;
    let _operator = s.operator(&[]).await?;
    let mut spec = real_node_pod_spec(&["alloc", "256"], Some("64Mi"));
    spec["restartPolicy"] = "Never".into();
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "thumbnails" },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { "app": "thumbnails", "sre.space/protected": "true" } },
                "spec": spec
            }
        }
    }))?;
    Api::<Job>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &job)
        .await?;

    let name = incident_name(WorkloadKind::Job, "thumbnails", SignalKind::OOMKilled);
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::OutOfMemory, "{cause}");
    assert!(cause.contains("64Mi"), "names the limit: {cause}");
    // A Job's template cannot change, and its pod is not evicted: such a
    // step is recorded as failed before any call, with why, and touches
    // no object.
    for a in inc.status.iter().flat_map(|s| s.actions.iter()) {
        if a.type_ == ActionType::Escalate {
            continue;
        }
        assert_eq!(a.state, ActionState::Failed, "{a:?}");
        assert_eq!(a.target, None, "nothing was called: {a:?}");
        assert!(a.detail.contains("Job"), "says why: {}", a.detail);
    }
    // The Job's own failure came after, and joined the OOM incident.
    wait_until(Duration::from_secs(30), "the Job to fail", || {
        let jobs = Api::<Job>::namespaced(s.client.clone(), s.name());
        async move {
            let job = jobs.get("thumbnails").await?;
            Ok(job
                .status
                .and_then(|st| st.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True"))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.incident_names().await?,
        vec![name],
        "one fault, one incident"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_claim_of_a_storage_class_that_does_not_exist_is_storage_unavailable() -> Result<()> {
    let s = scenario("e2e-storage").await?;
    let _operator = s.operator(&[]).await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "reports" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast-ssd",
            "resources": { "requests": { "storage": "1Gi" } }
        }
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &claim)
        .await?;
    let mut d = serde_json::to_value(sre_space_e2e::deployment("archive", 1, "64Mi"))?;
    d["spec"]["template"]["spec"]["volumes"] =
        json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "reports" } }]);
    create_deployment(&s, &serde_json::from_value(d)?).await?;

    let name = incident_name(
        WorkloadKind::Deployment,
        "archive",
        SignalKind::Unschedulable,
    );
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::StorageUnavailable, "{cause}");
    assert!(cause.contains("reports"), "names the claim: {cause}");
    assert!(
        cause.contains("fast-ssd"),
        "names the missing class: {cause}"
    );
    assert_eq!(actions_taken(&inc), vec![], "{cause}");
    escalation_says_not_applicable(&inc);
    s.cleanup().await
}

#[tokio::test]
async fn a_quota_refusal_is_seen_though_no_pod_exists() -> Result<()> {
    let s = scenario("e2e-quota").await?;
    let _operator = s.operator(&[]).await?;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "team-memory" },
        "spec": { "hard": { "limits.memory": "32Mi" } }
    }))?;
    Api::<ResourceQuota>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &quota)
        .await?;
    create_deployment(&s, &sre_space_e2e::deployment("billing", 1, "64Mi")).await?;

    let name = incident_name(
        WorkloadKind::Deployment,
        "billing",
        SignalKind::FailedCreate,
    );
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::QuotaExceeded, "{cause}");
    assert!(cause.contains("team-memory"), "names the quota: {cause}");
    assert_eq!(actions_taken(&inc), vec![], "{cause}");
    escalation_says_not_applicable(&inc);
    s.cleanup().await
}

#[tokio::test]
async fn a_failing_liveness_probe_is_a_probe_failure_naming_port_and_path() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-liveness").await?;
    let _operator = s.operator(&[]).await?;
    create_deployment(
        &s,
        &real_deployment("front", &["serve", "8080"], |spec| {
            // Nothing listens on 8081: the kubelet kills the container.
            spec["containers"][0]["livenessProbe"] = json!({
                "httpGet": { "path": "/healthz", "port": 8081 },
                "periodSeconds": 1, "failureThreshold": 1
            });
        }),
    )
    .await?;

    let name = incident_name(
        WorkloadKind::Deployment,
        "front",
        SignalKind::CrashLoopBackOff,
    );
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::ProbeFailure, "{cause}");
    assert!(cause.contains("8081"), "names the port: {cause}");
    assert!(cause.contains("/healthz"), "names the path: {cause}");
    assert!(
        cause.contains("nothing listens"),
        "says whether anything listens there: {cause}"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_rollout_past_its_progress_deadline_is_stalled_and_blamed_on_the_rollout() -> Result<()> {
    real_node()?;
    let s = scenario("e2e-stalled").await?;
    let mut d = serde_json::to_value(real_deployment("pricing", &["sleep"], |_| {}))?;
    d["spec"]["progressDeadlineSeconds"] = 10.into();
    create_deployment(&s, &serde_json::from_value(d)?).await?;
    sre_space_e2e::wait_ready(&s.client, s.name(), "pricing", 1, LONG).await?;
    let _operator = s.operator(&[]).await?;
    // An image the node does not have, and may not pull: the new pod never
    // starts and the rollout makes no progress.
    Api::<Deployment>::namespaced(s.client.clone(), s.name())
        .patch(
            "pricing",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(json!({ "spec": { "template": { "spec": {
                "containers": [{ "name": "app", "image": "sre.space/workload:missing" }]
            } } } })),
        )
        .await?;

    let name = incident_name(
        WorkloadKind::Deployment,
        "pricing",
        SignalKind::RolloutStalled,
    );
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::BadRollout, "{cause}");
    assert!(cause.contains("ProgressDeadlineExceeded"), "{cause}");
    assert!(cause.contains("image"), "names the changed field: {cause}");
    let taken = actions_taken(&inc);
    assert!(
        taken.iter().all(|a| *a == ActionType::Rollback),
        "only a rollback can help: {taken:?}"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_pod_evicted_for_node_pressure_blames_the_node_not_the_workload() -> Result<()> {
    let s = scenario("e2e-evicted").await?;
    create_deployment(&s, &sre_space_e2e::deployment("cache", 1, "64Mi")).await?;
    sre_space_e2e::wait_ready(&s.client, s.name(), "cache", 1, LONG).await?;
    let _operator = s.operator(&[]).await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.client.clone(), s.name());
    let pod = pods
        .list(&kube::api::ListParams::default().labels("app=cache"))
        .await?
        .items
        .into_iter()
        .next()
        .expect("the cache pod");
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    // What the kubelet's eviction manager writes; kwok is told to keep out.
    pods.patch(
        &pod_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "metadata": { "annotations": {
            "kwok.x-k8s.io/status": "custom"
        } } })),
    )
    .await?;
    let message =
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 61440Ki. ";
    pods.patch_status(
        &pod_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "status": {
            "phase": "Failed", "reason": "Evicted", "message": message,
            "conditions": [{ "type": "DisruptionTarget", "status": "True",
                "reason": "TerminationByKubelet", "message": message }]
        } })),
    )
    .await?;

    let name = incident_name(WorkloadKind::Deployment, "cache", SignalKind::NodeFailure);
    let inc = diagnosed(&s, &name).await?;
    let (category, cause) = category_and_cause(&inc);
    assert_eq!(category, Category::NodeFailure, "{cause}");
    assert!(cause.contains("memory"), "names the pressure: {cause}");
    assert!(
        cause.contains("not Deployment/cache"),
        "the workload is not blamed: {cause}"
    );
    assert_eq!(actions_taken(&inc), vec![], "{cause}");
    s.cleanup().await
}
