//! The diagnosis evaluation over the captured scenario suite.

use std::time::Duration;

use sre_space::brain::eval;
use sre_space::crd::{RemediationPolicy, RemediationPolicySpec};
use sre_space::llm::{LlmConfig, OpenAiModel};
use sre_space_e2e::fake_openai::{Behaviour, FakeOpenAi};
use sre_space_e2e::repo_dir;

/// The policy the README's demo installs: its triggers read the controls
/// and its ladder is what the plans walk.
fn example_policy() -> RemediationPolicySpec {
    let text = std::fs::read_to_string(repo_dir().join("examples/remediation-policy.yaml"))
        .expect("the example policy");
    serde_yaml::from_str::<RemediationPolicy>(&text)
        .expect("the example policy parses")
        .spec
}

#[tokio::test]
async fn the_rules_diagnose_every_captured_scenario_correctly_and_plan_no_unsafe_step() {
    let suite = eval::load(&repo_dir().join("scenarios")).expect("scenarios load");
    assert!(suite.len() >= 8, "the suite has its scenarios");
    let rows = eval::run(&suite, &example_policy(), None).await;
    let table = eval::render(&rows);
    println!("{table}");
    for r in &rows {
        assert!(r.rules_correct, "rules got {} wrong:\n{table}", r.scenario);
        assert_ne!(r.action.1, eval::Score::Unsafe, "{}:\n{table}", r.scenario);
    }
    assert!(table.contains(&format!("rules: {n}/{n} correct", n = suite.len())));
    assert!(table.contains(" 0 unsafe"), "{table}");
}

#[test]
fn no_control_opens_an_incident() {
    let controls =
        eval::load_controls(&repo_dir().join("scenarios/controls")).expect("controls load");
    let rows = eval::run_controls(&controls, &example_policy());
    let table = eval::render_controls(&rows);
    println!("{table}");
    for r in &rows {
        assert!(r.signals.is_empty(), "{}:\n{table}", r.control);
    }
}

#[test]
fn a_wrong_scenario_makes_sre_space_eval_exit_non_zero() {
    let dir = tempdir();
    let suite = eval::load(&repo_dir().join("scenarios")).expect("scenarios load");
    let mut wrong = suite[0].clone();
    wrong.expected_workload = "not-the-workload".into();
    std::fs::write(
        dir.join("wrong.json"),
        serde_json::to_string(&wrong).expect("json"),
    )
    .expect("write");
    let policy = repo_dir().join("examples/remediation-policy.yaml");
    let run = |scenarios: &std::path::Path| {
        std::process::Command::new(sre_space_e2e::operator_bin())
            .arg("eval")
            .arg("--scenarios")
            .arg(scenarios)
            .arg("--policy")
            .arg(&policy)
            .output()
            .expect("sre-space eval runs")
    };
    let bad = run(&dir);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{stdout}");
    assert!(stdout.contains("rules: 0/1 correct"), "{stdout}");
    let good = run(&repo_dir().join("scenarios"));
    assert!(
        good.status.success(),
        "{}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sre-space-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn the_evaluation_reports_the_model_answers_tokens_and_failures() {
    let suite = eval::load(&repo_dir().join("scenarios")).expect("scenarios load");
    let (fake, url) = FakeOpenAi::start().await;
    for s in &suite {
        // A model that agrees with the expected answer, citing the first
        // piece of evidence; the last scenario's server fails instead.
        let answer = serde_json::json!({ "hypotheses": [{
            "category": s.expected_category, "statement": format!("{} is at fault", s.expected_workload),
            "confidence": 0.8, "evidence": ["e1"], "proposed_action": null
        }]});
        fake.then(Behaviour::Answer(answer.to_string()));
    }
    let cfg = LlmConfig {
        base_url: url,
        model: "eval-model".into(),
        api_key: None,
        timeout: Duration::from_secs(5),
        max_answer_tokens: 400,
        incident_budget: 50_000,
        hourly_budget: 1_000_000,
        namespace_share_percent: 100,
        evidence_bytes: 12_000,
    };
    let model = OpenAiModel::new(&cfg).expect("client");
    let rows = eval::run(&suite, &example_policy(), Some((&model, &cfg))).await;
    let table = eval::render(&rows);
    println!("{table}");
    assert!(
        rows.iter()
            .all(|r| matches!(r.model, Some(Ok((_, true, tokens))) if tokens > 0)),
        "{table}"
    );
    assert!(
        table.contains(&format!("rules+model: {n}/{n} correct", n = suite.len())),
        "{table}"
    );
    assert_eq!(fake.requests().len(), suite.len());
}
