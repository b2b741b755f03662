//! The diagnosis evaluation over the captured scenario suite.

use std::time::Duration;

use sre_space::brain::eval;
use sre_space::llm::{LlmConfig, OpenAiModel};
use sre_space_e2e::fake_openai::{Behaviour, FakeOpenAi};
use sre_space_e2e::repo_dir;

#[tokio::test]
async fn the_rules_diagnose_every_captured_scenario_correctly() {
    let suite = eval::load(&repo_dir().join("scenarios")).expect("scenarios load");
    assert!(suite.len() >= 8, "the suite has its scenarios");
    let rows = eval::run(&suite, None).await;
    let table = eval::render(&rows);
    println!("{table}");
    for r in &rows {
        assert!(r.rules_correct, "rules got {} wrong:\n{table}", r.scenario);
    }
    assert!(table.contains(&format!("rules: {n}/{n} correct", n = suite.len())));
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
    let rows = eval::run(&suite, Some((&model, &cfg))).await;
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
