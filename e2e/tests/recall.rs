//! Recall across workloads, and runbooks, on the real local cluster: the
//! fix that held for workload A is the first step for the same problem on
//! workload B, B's diagnosis cites A's history and the policy's runbook, and
//! B's GitHub issue (a fake GitHub) and the dashboard link the runbook.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use sre_space::crd::{
    ActionState, ActionType, Category, ConditionStatus, EvidenceKind, Incident, IncidentMemory,
    Outcome, SignalKind,
};
use sre_space_e2e::fake_github::{self, FakeGitHub};
use sre_space_e2e::{Scenario, http_request, incident_of, wait_incident, wait_until};

const REPO: &str = "acme/deploy";
/// A's whole run: detection, a restart that does not hold, a rollback that
/// does, each with its cooldown and verification window.
const A_RUN: Duration = Duration::from_secs(240);
const RUNBOOK: &str = "# Bad rollout\n\nRoll back to the previous revision first, then read \
    the diff of the rollout with the team that shipped it.\n";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn taken(i: &Incident) -> Vec<(ActionType, ActionState, Option<Outcome>)> {
    i.status
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| (a.type_, a.state, a.outcome))
        .collect()
}

async fn runbooks(s: &Scenario) -> Result<()> {
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("runbooks".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "category.BadRollout.md".to_string(),
            RUNBOOK.to_string(),
        )])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

#[tokio::test]
async fn workload_b_gets_the_fix_that_held_for_workload_a_and_its_runbook() -> Result<()> {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    let s = Scenario::builder("e2e-recall")
        .policy(|v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 8.into();
            v["spec"]["guardrails"]["escalateAfterAttempts"] = 3.into();
            v["spec"]["actions"] = serde_json::json!([
                { "type": "RestartPod" }, { "type": "Rollback" }, { "type": "Escalate" }
            ]);
            v["spec"]["github"] = serde_json::json!({ "repository": REPO });
            v["spec"]["runbooks"] = serde_json::json!({ "configMap": "runbooks" });
        })
        .deploy("a", 2, "128Mi")
        .deploy("b", 2, "128Mi")
        .start()
        .await?;
    runbooks(&s).await?;
    let dashboard = format!("127.0.0.1:{}", free_port()?);
    let mut env = fake_github::operator_env(&url).to_vec();
    env.push(("SRE_SPACE_DASHBOARD_ADDR", dashboard.as_str()));
    env.push(("SRE_SPACE_DASHBOARD_PUBLIC_URL", "https://sre.example.com"));
    let _operator = s.operator(&env).await?;

    // A: the ladder's order, learned the hard way. (Not RolloutRestart
    // first: it makes a new revision of the broken template, and the
    // rollback after it would return to that.)
    s.chaos("a").bad_rollout().await?;
    let a = wait_incident(
        &s.client,
        s.name(),
        &incident_of("a", SignalKind::CrashLoopBackOff),
        A_RUN,
        "A resolved",
        |i| i.status.as_ref().is_some_and(|s| s.resolved_at.is_some()),
    )
    .await?;
    // Mitigated when the rollback had completed and the crash loop was
    // over, before the verification window let it resolve.
    let (mitigated, resolved, rolled_back) = a
        .status
        .as_ref()
        .map(|s| {
            (
                s.mitigated_at.clone(),
                s.resolved_at.clone(),
                s.actions.last().and_then(|x| x.finished_at.clone()),
            )
        })
        .unwrap_or_default();
    let (Some(mitigated), Some(resolved), Some(rolled_back)) = (mitigated, resolved, rolled_back)
    else {
        anyhow::bail!("A has mitigatedAt, resolvedAt and a finished rollback: {a:?}");
    };
    assert!(
        rolled_back.0 <= mitigated.0 && mitigated.0 < resolved.0,
        "the rollback {rolled_back:?}, mitigated {mitigated:?}, resolved {resolved:?}"
    );
    assert_eq!(
        taken(&a),
        [
            (
                ActionType::RestartPod,
                ActionState::Succeeded,
                Some(Outcome::Ineffective)
            ),
            (
                ActionType::Rollback,
                ActionState::Succeeded,
                Some(Outcome::Effective)
            ),
        ],
        "A: the restart did not hold, the rollback did"
    );
    let memories: Api<IncidentMemory> = Api::namespaced(s.client.clone(), s.name());
    let a_memory = incident_of("a", SignalKind::CrashLoopBackOff);
    wait_until(Duration::from_secs(30), "A's history", || {
        let memories = memories.clone();
        let name = a_memory.clone();
        async move {
            Ok(memories.get_opt(&name).await?.is_some_and(|m| {
                m.spec
                    .actions
                    .iter()
                    .any(|t| t.type_ == ActionType::Rollback && t.effective > 0)
            }))
        }
    })
    .await?;

    // B: the same problem; the rollback comes first.
    s.chaos("b").bad_rollout().await?;
    let b_name = incident_of("b", SignalKind::CrashLoopBackOff);
    let b = wait_incident(
        &s.client,
        s.name(),
        &b_name,
        A_RUN,
        "B's first action",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.actions.first())
                .is_some_and(|a| a.state != ActionState::Pending)
        },
    )
    .await?;
    let status = b.status.clone().unwrap_or_default();
    assert_eq!(
        status.actions[0].type_,
        ActionType::Rollback,
        "B's first step is what held for A: {:?}",
        taken(&b)
    );
    let d = status.diagnosis.expect("B diagnosed");
    assert_eq!(d.category, Category::BadRollout);
    let recall = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::SimilarIncident)
        .expect("B's diagnosis cites A");
    assert!(
        recall
            .summary
            .contains("Rollback cleared the same problem on Deployment/a 1 time(s)")
            && recall
                .summary
                .contains("RestartPod did not clear it on Deployment/a 1 time(s)"),
        "{}",
        recall.summary
    );
    assert!(recall.source.contains(&a_memory), "{}", recall.source);
    let lead = &d.hypotheses[0];
    assert_eq!(lead.proposed_action, Some(ActionType::Rollback));
    assert!(lead.evidence.contains(&recall.id), "{lead:?}");

    // The runbook: cited, and said so in a condition.
    let runbook = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Runbook)
        .expect("B's diagnosis cites the runbook");
    assert_eq!(runbook.source, "configmap/runbooks/category.BadRollout.md");
    assert!(
        runbook
            .summary
            .contains("Roll back to the previous revision")
    );
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Runbook")
        .expect("a Runbook condition");
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::True, "RunbookCited")
    );
    let b = s.resolved(&b_name).await?;
    assert_eq!(
        taken(&b),
        [(
            ActionType::Rollback,
            ActionState::Succeeded,
            Some(Outcome::Effective)
        )]
    );

    // The issue links the runbook on the dashboard.
    let link = format!(
        "**Runbook**: [`category.BadRollout.md` of ConfigMap `runbooks`](https://sre.example.com/runbooks/{}/runbooks/category.BadRollout.md)",
        s.name()
    );
    wait_until(
        Duration::from_secs(60),
        "B's issue to link the runbook",
        || {
            let (fake, link) = (fake.clone(), link.clone());
            async move {
                Ok(fake
                    .issues(REPO)
                    .iter()
                    .filter(|i| i.title.contains("/b "))
                    .flat_map(|i| i.comments.iter())
                    .any(|c| c.contains(&link)))
            }
        },
    )
    .await?;

    // The dashboard serves it as plain text, and no other ConfigMap.
    let path = format!("/runbooks/{}/runbooks/category.BadRollout.md", s.name());
    let (code, body) = http_request(&dashboard, "GET", &path).await?;
    assert_eq!((code, body.as_str()), (200, RUNBOOK));
    let other = format!(
        "/runbooks/{}/kube-root-ca.crt/category.BadRollout.md",
        s.name()
    );
    assert_eq!(http_request(&dashboard, "GET", &other).await?.0, 404);
    s.cleanup().await
}

#[tokio::test]
async fn a_missing_runbook_configmap_is_said_and_nothing_fails() -> Result<()> {
    let s = Scenario::builder("e2e-runbook-missing")
        .policy(|v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 8.into();
            v["spec"]["runbooks"] = serde_json::json!({ "configMap": "no-such-runbooks" });
        })
        .deploy("c", 2, "128Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;
    s.chaos("c").bad_rollout().await?;
    let c = s
        .resolved(&incident_of("c", SignalKind::CrashLoopBackOff))
        .await?;
    let status = c.status.unwrap_or_default();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Runbook")
        .expect("a Runbook condition");
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::False, "RunbookConfigMapMissing")
    );
    assert!(
        condition
            .message
            .contains("no-such-runbooks does not exist"),
        "{}",
        condition.message
    );
    assert_eq!(status.actions[0].type_, ActionType::Rollback);
    s.cleanup().await
}
