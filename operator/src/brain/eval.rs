//! The diagnosis evaluation: every scenario of the suite (facts captured from
//! the local cluster, with the expected answer) through the rules and, when
//! one is configured, the model; a table of who got what right.

use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Facts, advisor, diagnose};
use crate::clock::SystemClock;
use crate::crd::Category;
use crate::llm::{ChatModel, IncidentKey, LlmConfig, TokenLedger};

/// One captured incident and the answer a good diagnosis gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub expected_category: Category,
    /// The workload the root cause must name.
    pub expected_workload: String,
    pub facts: Facts,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub expected: String,
    pub rules: Category,
    pub rules_correct: bool,
    /// The merged answer when a model was consulted, or why not.
    pub model: Option<Result<(Category, bool, u64), String>>,
    pub latency_ms: u128,
}

/// Reads every `*.json` scenario in a folder, in name order.
pub fn load(dir: &Path) -> crate::Result<Vec<Scenario>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| crate::Error::Invalid(format!("reading {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| crate::Error::Invalid(format!("{}: {e}", p.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| crate::Error::Invalid(format!("{}: {e}", p.display())))
        })
        .collect()
}

/// Runs the scenarios.
pub async fn run(scenarios: &[Scenario], model: Option<(&dyn ChatModel, &LlmConfig)>) -> Vec<Row> {
    let ledger = TokenLedger::default();
    let mut rows = Vec::new();
    for s in scenarios {
        let now = s
            .facts
            .observation
            .as_ref()
            .map(|o| o.observed_at.0)
            .unwrap_or_else(Timestamp::now);
        let rules = diagnose(&s.facts, now);
        let correct = |c: Category, cause: &str| {
            c == s.expected_category && cause.contains(&s.expected_workload)
        };
        let started = Instant::now();
        let model = match model {
            None => None,
            Some((m, cfg)) => {
                let signal = s.facts.signal.as_str();
                let kind = s.facts.target.kind.as_str();
                Some(
                    match advisor::consult(
                        m,
                        cfg,
                        &ledger,
                        &IncidentKey::new("eval", &s.name),
                        signal,
                        kind,
                        &rules,
                        &SystemClock,
                    )
                    .await
                    {
                        Ok((d, tokens)) => {
                            Ok((d.category, correct(d.category, &d.root_cause), tokens))
                        }
                        Err(f) => Err(f.reason().to_string()),
                    },
                )
            }
        };
        rows.push(Row {
            scenario: s.name.clone(),
            expected: format!("{:?} {}", s.expected_category, s.expected_workload),
            rules: rules.category,
            rules_correct: correct(rules.category, &rules.root_cause),
            model,
            latency_ms: started.elapsed().as_millis(),
        });
    }
    rows
}

/// The table, as printed.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<28} {:<34} {:<14} {:<5} {:<22} {:<5} {:>7} {:>9}\n",
        "scenario", "expected", "rules", "ok", "model", "ok", "tokens", "latency"
    );
    let mark = |b: bool| if b { "yes" } else { "NO" };
    for r in rows {
        let (model, ok, tokens) = match &r.model {
            None => (
                "(not configured)".to_string(),
                "-".to_string(),
                "-".to_string(),
            ),
            Some(Ok((c, ok, t))) => (format!("{c:?}"), mark(*ok).to_string(), t.to_string()),
            Some(Err(reason)) => (
                format!("failed: {reason}"),
                "-".to_string(),
                "-".to_string(),
            ),
        };
        out.push_str(&format!(
            "{:<28} {:<34} {:<14} {:<5} {:<22} {:<5} {:>7} {:>7}ms\n",
            r.scenario,
            r.expected,
            format!("{:?}", r.rules),
            mark(r.rules_correct),
            model,
            ok,
            tokens,
            r.latency_ms
        ));
    }
    let n = rows.len();
    let rules_ok = rows.iter().filter(|r| r.rules_correct).count();
    out.push_str(&format!("\nrules: {rules_ok}/{n} correct\n"));
    let consulted: Vec<_> = rows.iter().filter_map(|r| r.model.as_ref()).collect();
    if !consulted.is_empty() {
        let ok = consulted
            .iter()
            .filter(|m| matches!(m, Ok((_, true, _))))
            .count();
        let tokens: u64 = consulted
            .iter()
            .filter_map(|m| m.as_ref().ok())
            .map(|m| m.2)
            .sum();
        out.push_str(&format!(
            "rules+model: {ok}/{} correct, {tokens} tokens\n",
            consulted.len()
        ));
    }
    out
}
