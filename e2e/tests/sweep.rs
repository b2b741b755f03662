//! The Tier 3 sweep in-process against the real API server and the GitHub
//! test server (through the real octocrab client), with the clock
//! injected: a recurring fingerprint opens one `jules-fix` issue that the
//! next run updates, and a sweep missed while the operator was down is
//! caught up once within the starting deadline and recorded as missed
//! past it.
#![cfg(feature = "cluster")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sre_space::allowlist::{Shared, parse};
use sre_space::clock::ManualClock;
use sre_space::crd::{
    ActionType, Category, Diagnosis, Evidence, EvidenceKind, Incident, IncidentMemory,
    IncidentMemorySpec, IncidentSpec, IncidentStatus, OccurrenceRecord, Outcome, Phase,
    RemediationPolicy, SignalKind, SweepStatus, WorkloadKind, WorkloadRef,
};
use sre_space::github::{Access, GitHub, GitHubAuth, GitHubConfig};
use sre_space::lease::Unfenced;
use sre_space::tier3::sweep::{Handoff, Schedule, SweepConfig, Sweeper, Thresholds};
use sre_space_e2e::fake_github::FakeGitHub;
use sre_space_e2e::{TestNamespace, client, create_policy, install_crds, wait_until};

const REPO: &str = "acme/deploy";
const POLICY: &str = "web";
const MEMORY: &str = "web-oomkilled";
/// What a crashing process may print: it must reach GitHub redacted.
const SECRET: &str = "DB_PASSWORD=hunter2";

fn at(s: &str) -> Timestamp {
    s.parse().expect("a timestamp")
}

fn shift(t: Timestamp, secs: i64) -> Timestamp {
    sre_space::tier3::sweep::findings::shift(t, secs)
}

/// An OOM kill at `t`, mitigated in ten minutes by a higher limit and a
/// rollout restart.
fn oom(t: Timestamp) -> OccurrenceRecord {
    OccurrenceRecord {
        incident: MEMORY.into(),
        detected_at: Time(t),
        category: Some(Category::OutOfMemory),
        actions: vec![ActionType::RaiseMemoryLimit, ActionType::RolloutRestart],
        outcome: Some(Outcome::Effective),
        time_to_mitigate_seconds: Some(600),
        summary: None,
    }
}

async fn create_memory(
    client: &Client,
    ns: &str,
    occurrences: Vec<OccurrenceRecord>,
) -> Result<()> {
    let memory = IncidentMemory::new(
        MEMORY,
        IncidentMemorySpec {
            fingerprint: "web-f00d".into(),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            },
            signal: SignalKind::OOMKilled,
            occurrences,
            actions: vec![],
            keywords: vec![],
        },
    );
    Api::<IncidentMemory>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &memory)
        .await?;
    Ok(())
}

/// The latest occurrence's Incident, with trace evidence that carries a
/// secret.
async fn create_incident(client: &Client, ns: &str, t: Timestamp) -> Result<()> {
    let api = Api::<Incident>::namespaced(client.clone(), ns);
    let incident = Incident::new(
        MEMORY,
        IncidentSpec {
            fingerprint: "web-f00d".into(),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            },
            signal: SignalKind::OOMKilled,
            policy: POLICY.into(),
            approval: None,
        },
    );
    api.create(&PostParams::default(), &incident).await?;
    let status = IncidentStatus {
        phase: Phase::Resolved,
        diagnosis: Some(Diagnosis {
            analyzer: "rules".into(),
            category: Category::OutOfMemory,
            root_cause: "app of Deployment/web needs more memory than 128Mi".into(),
            confidence: 0.9,
            hypotheses: vec![],
            evidence: vec![Evidence {
                id: "e1".into(),
                kind: EvidenceKind::Trace,
                source: "jaeger/web".into(),
                summary: format!(
                    "trace 4bf92f3577b34da6: GET /quote 2.1 s before the kill; {SECRET}"
                ),
                observed_at: None,
            }],
            proposed_action: Some(ActionType::RaiseMemoryLimit),
            rules_category: None,
            diagnosed_at: Time(t),
        }),
        ..IncidentStatus::default()
    };
    api.patch_status(
        MEMORY,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// The sweep of namespace `ns`, at the clock's time, over the GitHub test
/// server at `url` (the allow-list gives `ns` the repository), handing
/// each finding to `handed`.
fn sweeper(
    client: &Client,
    ns: &str,
    url: &str,
    clock: Arc<ManualClock>,
    handed: Arc<Mutex<Vec<Handoff>>>,
) -> Result<Sweeper> {
    let list = format!("namespaces:\n- namespace: {ns}\n  github:\n  - repository: {REPO}\n");
    let allow = Shared::fixed(parse(&list).map_err(anyhow::Error::msg)?);
    let gh = GitHub::guarded(
        &GitHubConfig {
            api_url: url.into(),
            auth: GitHubAuth::Token("ghp_test".into()),
        },
        allow.clone(),
    )?;
    Ok(Sweeper {
        client: client.clone(),
        namespace: Some(ns.into()),
        github: Access::new(Some(gh), allow, client.clone()),
        clock,
        config: SweepConfig {
            schedule: Schedule::parse("0 5 * * *", "UTC").map_err(anyhow::Error::msg)?,
            starting_deadline_seconds: 3600,
            thresholds: Thresholds::default(),
        },
        sink: Some(Arc::new(move |h| {
            if let Ok(mut v) = handed.lock() {
                v.push(h);
            }
        })),
        jules: None,
        tick: Duration::from_millis(50),
    })
}

async fn sweep_status(client: &Client, ns: &str) -> Result<SweepStatus> {
    Api::<RemediationPolicy>::namespaced(client.clone(), ns)
        .get(POLICY)
        .await?
        .status
        .and_then(|s| s.sweep)
        .context("no status.sweep")
}

async fn policy(client: &Client, ns: &str, repository: Option<&str>) -> Result<()> {
    create_policy(client, ns, |v| {
        v["metadata"]["name"] = POLICY.into();
        if let Some(r) = repository {
            v["spec"]["github"] = serde_json::json!({ "repository": r });
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_recurring_oom_opens_one_jules_fix_issue_that_the_next_run_updates() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "sweep").await?;
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    policy(&client, &ns.name, Some(REPO)).await?;

    // Four OOM kills within two days, each mitigated in ten minutes and
    // back 50 minutes later.
    let five = at("2026-12-03T05:00:00Z");
    let history: Vec<_> = [27i64, 26, 25, 24]
        .iter()
        .map(|h| oom(shift(five, -h * 3600)))
        .collect();
    create_memory(&client, &ns.name, history.clone()).await?;
    create_incident(&client, &ns.name, shift(five, -24 * 3600)).await?;

    let clock = Arc::new(ManualClock::at(five));
    let handed = Arc::new(Mutex::new(Vec::new()));
    let sweeper = sweeper(&client, &ns.name, &url, clock.clone(), handed.clone())?;
    let report = sweeper.run_once(five, &Unfenced).await?;
    assert_eq!(report.handoffs.len(), 1, "{:?}", report.handoffs);

    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1, "one issue: {issues:?}");
    let issue = &issues[0];
    assert!(
        issue.labels.iter().any(|l| l == "jules-fix"),
        "{:?}",
        issue.labels
    );
    assert!(issue.title.contains("MemoryLeak"), "{}", issue.title);
    for shown in [
        "4 occurrence(s)",
        "Recurring",
        "ShortHold",
        "SameFix",
        "**MTTR**: 10 min",
        "RaiseMemoryLimit",
        "50 min",
        "4bf92f3577b34da6",
        "memory leak",
    ] {
        assert!(issue.body.contains(shown), "{shown} in:\n{}", issue.body);
    }
    assert!(!issue.body.contains("hunter2"), "redacted:\n{}", issue.body);

    let status = sweep_status(&client, &ns.name).await?;
    assert_eq!(status.last_schedule_time, Some(Time(five)));
    assert_eq!(status.last_run_time, Some(Time(five)));
    assert_eq!(status.finding_count, 1);
    assert_eq!(status.findings[0].fingerprint, "web-f00d");
    assert_eq!(status.findings[0].rule, "Recurring,ShortHold,SameFix");
    assert_eq!(status.findings[0].fix_class, "MemoryLeak");
    assert_eq!(status.findings[0].issue_number, Some(issue.number));

    // The Jules hook got what a session needs.
    {
        let handed = handed.lock().expect("lock");
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].repository.as_deref(), Some(REPO));
        assert_eq!(handed[0].issue_number, Some(issue.number));
        assert_eq!(handed[0].brief, issue.body);
    }

    // It happens again that evening; the next day's sweep updates the same
    // issue.
    let api = Api::<IncidentMemory>::namespaced(client.clone(), &ns.name);
    let mut memory = api.get(MEMORY).await?;
    memory.spec.occurrences.push(oom(shift(five, 12 * 3600)));
    api.replace(MEMORY, &PostParams::default(), &memory).await?;
    clock.advance(24 * 3600);
    let next = shift(five, 24 * 3600);
    sweeper.run_once(next, &Unfenced).await?;

    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1, "never a second issue: {issues:?}");
    assert_eq!(issues[0].number, issue.number);
    assert!(
        issues[0].body.contains("5 occurrence(s)"),
        "{}",
        issues[0].body
    );
    assert_eq!(issues[0].comments.len(), 1, "one comment for the change");
    let status = sweep_status(&client, &ns.name).await?;
    assert_eq!(status.last_schedule_time, Some(Time(next)));
    assert_eq!(status.findings[0].occurrences, 5);
    assert_eq!(status.findings[0].issue_number, Some(issue.number));

    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn a_missed_sweep_runs_once_at_start_within_the_deadline_and_is_recorded_as_missed_after()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "sweep-catchup").await?;
    let (_fake, url) = FakeGitHub::start().await;
    // No repository: the finding is still recorded, with the reason.
    policy(&client, &ns.name, None).await?;
    let today = at("2026-12-03T05:00:00Z");
    let yesterday = shift(today, -24 * 3600);
    let history: Vec<_> = [30i64, 20, 10]
        .iter()
        .map(|h| oom(shift(today, -h * 3600)))
        .collect();
    create_memory(&client, &ns.name, history).await?;
    create_incident(&client, &ns.name, shift(today, -10 * 3600)).await?;
    let api = Api::<RemediationPolicy>::namespaced(client.clone(), &ns.name);
    let ran_yesterday = serde_json::json!({ "status": { "sweep": {
        "lastScheduleTime": Time(yesterday), "lastRunTime": Time(yesterday),
    } } });
    api.patch_status(
        POLICY,
        &PatchParams::default(),
        &Patch::Merge(&ran_yesterday),
    )
    .await?;

    // 05:20, deadline 1 h: the scheduler runs the missed 05:00 sweep at once.
    let handed = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(ManualClock::at(shift(today, 20 * 60)));
    let sweeper1 = sweeper(&client, &ns.name, &url, clock, handed.clone())?;
    let scheduler = tokio::spawn(async move { sweeper1.run(&Unfenced).await });
    wait_until(Duration::from_secs(30), "the catch-up run", || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move { Ok(sweep_status(&client, &ns).await?.last_schedule_time == Some(Time(today))) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.abort();
    let status = sweep_status(&client, &ns.name).await?;
    assert_eq!(status.last_run_time, Some(Time(shift(today, 20 * 60))));
    assert_eq!(status.missed_schedule_time, None);
    assert_eq!(status.finding_count, 1);
    assert_eq!(status.findings[0].issue_number, None);
    assert_eq!(
        status.findings[0].reason.as_deref(),
        Some("the policy names no GitHub repository")
    );
    assert_eq!(handed.lock().expect("lock").len(), 1, "it ran once");

    // The same, but back at 07:00: past the deadline, it does not run and
    // says so.
    api.patch_status(
        POLICY,
        &PatchParams::default(),
        &Patch::Merge(&ran_yesterday),
    )
    .await?;
    let handed = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(ManualClock::at(shift(today, 2 * 3600)));
    let sweeper2 = sweeper(&client, &ns.name, &url, clock, handed.clone())?;
    let scheduler = tokio::spawn(async move { sweeper2.run(&Unfenced).await });
    wait_until(Duration::from_secs(30), "the miss recorded", || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            Ok(sweep_status(&client, &ns).await?.missed_schedule_time == Some(Time(today)))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.abort();
    let status = sweep_status(&client, &ns.name).await?;
    assert_eq!(status.last_schedule_time, Some(Time(yesterday)), "not run");
    assert!(handed.lock().expect("lock").is_empty(), "nothing handed on");

    ns.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn with_a_jules_key_a_finding_starts_one_session_that_its_latest_incident_follows()
-> Result<()> {
    use sre_space::jules::Jules;
    use sre_space::jules::client::{JulesClient, Key};
    use sre_space_e2e::fake_jules::{self, FakeJules};

    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "sweep-jules").await?;
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    policy(&client, &ns.name, Some(REPO)).await?;
    let five = at("2026-12-03T05:00:00Z");
    let history: Vec<_> = [27i64, 26, 25, 24]
        .iter()
        .map(|h| oom(shift(five, -h * 3600)))
        .collect();
    create_memory(&client, &ns.name, history).await?;
    create_incident(&client, &ns.name, shift(five, -24 * 3600)).await?;

    let (jules_fake, jules_url) = FakeJules::start().await;
    jules_fake.sources(&[REPO], 0);
    let clock = Arc::new(ManualClock::at(five));
    let mut sweeper = sweeper(
        &client,
        &ns.name,
        &url,
        clock.clone(),
        Arc::new(Mutex::new(Vec::new())),
    )?;
    sweeper.jules = Some(Jules::new(
        Arc::new(JulesClient::new(
            &jules_url,
            Key::Fixed(fake_jules::KEY.into()),
        )?),
        "main".into(),
    ));
    sweeper.run_once(five, &Unfenced).await?;
    clock.advance(24 * 3600);
    sweeper.run_once(shift(five, 24 * 3600), &Unfenced).await?;

    // One session over both runs, on the policy's repository, the brief as
    // its prompt (redacted), the plan waiting for a person.
    let created = jules_fake.created();
    assert_eq!(created.len(), 1, "one session for two runs: {created:?}");
    assert_eq!(created[0]["requirePlanApproval"], true);
    assert_eq!(created[0]["automationMode"], "AUTO_CREATE_PR");
    assert_eq!(
        created[0]["sourceContext"]["source"],
        format!("sources/github/{REPO}")
    );
    let prompt = created[0]["prompt"].as_str().unwrap_or_default();
    assert!(
        prompt.contains("Recurring") && prompt.contains("memory leak"),
        "the brief is the prompt: {prompt}"
    );
    assert!(!prompt.contains("hunter2"), "redacted: {prompt}");

    // The jules-fix issue names the session once; the finding records it.
    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1, "{issues:?}");
    let naming: Vec<_> = issues[0]
        .comments
        .iter()
        .filter(|c| c.contains("### Jules session"))
        .collect();
    assert_eq!(naming.len(), 1, "{:?}", issues[0].comments);
    assert!(naming[0].contains(MEMORY), "{}", naming[0]);
    let status = sweep_status(&client, &ns.name).await?;
    let session = status.findings[0].jules_session.clone().unwrap_or_default();
    assert!(!session.is_empty(), "{status:?}");

    // The latest Incident follows it, where the Jules follower takes over.
    let js = Api::<Incident>::namespaced(client.clone(), &ns.name)
        .get(MEMORY)
        .await?
        .status
        .and_then(|s| s.jules)
        .context("status.jules on the latest incident")?;
    assert!(js.session.starts_with("sessions/"), "{js:?}");
    assert_eq!(js.url.as_deref(), Some(session.as_str()));

    ns.cleanup().await?;
    Ok(())
}
