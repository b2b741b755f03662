//! The diagnosis evaluation: every scenario of the suite (facts captured from
//! the local cluster, with the expected answer) through the rules and, when
//! one is configured, the model; a table of who got what right.

use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Facts, advisor, diagnose};
use crate::clock::SystemClock;
use crate::crd::{ActionType, Category, RemediationPolicySpec};
use crate::fixer;
use crate::llm::{ChatModel, IncidentKey, LlmConfig, TokenLedger};

/// One captured incident and the answer a good diagnosis gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub expected_category: Category,
    /// The workload the root cause must name.
    pub expected_workload: String,
    /// The first step a good plan takes under the evaluation's policy.
    pub expected_action: ActionType,
    pub facts: Facts,
}

/// How the planned first step compares with the expected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// The expected step.
    Right,
    /// Another step that cannot make things worse: handing the problem to
    /// people, or a step that can help the problem and is no more invasive
    /// than the expected one or a restart of one pod (an eviction that
    /// respects the PodDisruptionBudget).
    Safe,
    /// A step that cannot help the problem and disrupts the workload all
    /// the same, or one more invasive than both the expected step and a
    /// one-pod restart.
    Unsafe,
}

impl Score {
    fn as_str(self) -> &'static str {
        match self {
            Self::Right => "right",
            Self::Safe => "safe",
            Self::Unsafe => "UNSAFE",
        }
    }
}

/// Scores the step the plan takes against the one expected for a problem
/// of `category`.
pub fn score(planned: ActionType, expected: ActionType, category: Category) -> Score {
    if planned == expected {
        Score::Right
    } else if planned == ActionType::Escalate
        || (fixer::can_help(planned, category)
            && fixer::invasiveness(planned)
                <= fixer::invasiveness(expected).max(fixer::invasiveness(ActionType::RestartPod)))
    {
        Score::Safe
    } else {
        Score::Unsafe
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub expected: String,
    pub rules: Category,
    pub rules_correct: bool,
    /// The rules' root cause, as the Incident would say it.
    pub root_cause: String,
    /// The first step the plan takes for the rules' diagnosis, and its score.
    pub action: (ActionType, Score),
    /// The merged answer when a model was consulted, or why not.
    pub model: Option<Result<(Category, bool, u64), String>>,
    pub latency_ms: u128,
}

impl Row {
    /// The diagnosis names the right category and workload, and the plan
    /// takes no unsafe step.
    pub fn passed(&self) -> bool {
        self.rules_correct && self.action.1 != Score::Unsafe
    }
}

/// The first step the policy's ladder takes for a diagnosis of a workload
/// of `kind`, before any guardrail holds it back: what the plan would do.
/// Steps that cannot change such a workload are passed over, as the
/// operator records them impossible and goes on.
pub fn first_step(
    policy: &RemediationPolicySpec,
    kind: crate::crd::WorkloadKind,
    diagnosis: &crate::crd::Diagnosis,
) -> ActionType {
    let mut fitting = policy.clone();
    fitting
        .actions
        .retain(|s| fixer::unfit(s.type_, kind).is_none());
    let category = fixer::planning_category(&fitting, Some(diagnosis), &[], None);
    fixer::next_step(&fitting, category, &[], None)
        .map(|s| s.type_)
        .unwrap_or(ActionType::Escalate)
}

/// Reads every `*.json` scenario in a folder, in name order.
pub fn load(dir: &Path) -> crate::Result<Vec<Scenario>> {
    read_all(dir)
}

/// Reads every `*.json` control in a folder (none when it does not exist).
pub fn load_controls(dir: &Path) -> crate::Result<Vec<Control>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    read_all(dir)
}

fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> crate::Result<Vec<T>> {
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

/// A situation with no fault, captured from the local cluster (a Job that
/// completed, a rollout that changed the image, a pod a person deleted):
/// the Scout must see no trouble in any of its objects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Control {
    pub name: String,
    pub description: String,
    /// When the objects were captured: the time they are read at.
    pub captured_at: Timestamp,
    /// The objects as `kubectl get -o json` prints them: pods, and the
    /// workloads that own them.
    pub objects: Vec<serde_json::Value>,
}

/// What the Scout saw in a control: the signals it would have opened
/// incidents for (none, when it is right).
#[derive(Clone, Debug)]
pub struct ControlRow {
    pub control: String,
    pub signals: Vec<String>,
}

/// Reads each control's objects as the Scout does, under `policy`'s
/// triggers.
pub fn run_controls(controls: &[Control], policy: &RemediationPolicySpec) -> Vec<ControlRow> {
    controls
        .iter()
        .map(|c| ControlRow {
            control: c.name.clone(),
            signals: crate::scout::detect(&c.objects, &policy.triggers, c.captured_at)
                .into_iter()
                .map(|s| format!("{} {}", s.kind.as_str(), s.message))
                .collect(),
        })
        .collect()
}

/// Each scenario's root cause as the rules state it, one per line.
pub fn render_causes(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| format!("{}: {}\n", r.scenario, r.root_cause))
        .collect()
}

/// The controls' part of the table.
pub fn render_controls(rows: &[ControlRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let seen = if r.signals.is_empty() {
            "no incident".to_string()
        } else {
            format!("INCIDENT: {}", r.signals.join("; "))
        };
        out.push_str(&format!("{:<34} control: {seen}\n", r.control));
    }
    let fired = rows.iter().filter(|r| !r.signals.is_empty()).count();
    out.push_str(&format!(
        "controls: {fired} of {} opened an incident\n",
        rows.len()
    ));
    out
}

/// Whether the evaluation passed: no scenario diagnosed wrong or planned
/// unsafely, and no control opened an incident. `sre-space eval` exits
/// non-zero with the error.
pub fn verdict(rows: &[Row], controls: &[ControlRow]) -> std::result::Result<(), String> {
    let wrong = rows.iter().filter(|r| !r.passed()).count();
    let fired = controls.iter().filter(|c| !c.signals.is_empty()).count();
    if wrong + fired > 0 {
        return Err(format!(
            "{wrong} scenario(s) diagnosed wrong or planned unsafely, {fired} control(s) opened an incident"
        ));
    }
    Ok(())
}

/// Runs the scenarios; `policy` is the ladder the plans are walked on.
pub async fn run(
    scenarios: &[Scenario],
    policy: &RemediationPolicySpec,
    model: Option<(&dyn ChatModel, &LlmConfig)>,
) -> Vec<Row> {
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
        let planned = first_step(policy, s.facts.target.kind, &rules);
        rows.push(Row {
            scenario: s.name.clone(),
            expected: format!("{:?} {}", s.expected_category, s.expected_workload),
            rules: rules.category,
            rules_correct: correct(rules.category, &rules.root_cause),
            root_cause: rules.root_cause.clone(),
            action: (
                planned,
                score(planned, s.expected_action, s.expected_category),
            ),
            model,
            latency_ms: started.elapsed().as_millis(),
        });
    }
    rows
}

/// The table, as printed.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<34} {:<34} {:<18} {:<5} {:<26} {:<22} {:<5} {:>7} {:>9}\n",
        "scenario", "expected", "rules", "ok", "action", "model", "ok", "tokens", "latency"
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
            "{:<34} {:<34} {:<18} {:<5} {:<26} {:<22} {:<5} {:>7} {:>7}ms\n",
            r.scenario,
            r.expected,
            format!("{:?}", r.rules),
            mark(r.rules_correct),
            format!("{} ({})", r.action.0.as_str(), r.action.1.as_str()),
            model,
            ok,
            tokens,
            r.latency_ms
        ));
    }
    let n = rows.len();
    let rules_ok = rows.iter().filter(|r| r.rules_correct).count();
    out.push_str(&format!("\nrules: {rules_ok}/{n} correct\n"));
    let count = |score: Score| rows.iter().filter(|r| r.action.1 == score).count();
    out.push_str(&format!(
        "actions: {} right, {} safe but not the best, {} unsafe\n",
        count(Score::Right),
        count(Score::Safe),
        count(Score::Unsafe)
    ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use ActionType::*;

    #[test]
    fn a_plan_is_scored_right_safe_or_unsafe_by_what_it_does_to_the_workload() {
        let cases = [
            // (planned, expected, category, score)
            (Rollback, Rollback, Category::BadRollout, Score::Right),
            (Escalate, Rollback, Category::BadRollout, Score::Safe),
            (RestartPod, Rollback, Category::BadRollout, Score::Safe),
            (RestartPod, Escalate, Category::ProbeFailure, Score::Safe),
            (RestartPod, Escalate, Category::ConfigError, Score::Unsafe),
            (RestartPod, Escalate, Category::Unschedulable, Score::Unsafe),
            (Rollback, Escalate, Category::CrashLoop, Score::Unsafe),
            (
                RaiseMemoryLimit,
                Escalate,
                Category::JobFailure,
                Score::Unsafe,
            ),
            (Scale, RestartPod, Category::CrashLoop, Score::Unsafe),
        ];
        for (planned, expected, category, want) in cases {
            assert_eq!(
                score(planned, expected, category),
                want,
                "{planned:?} for {category:?}, {expected:?} expected"
            );
        }
    }

    fn row(name: &str, rules_correct: bool, score: Score) -> Row {
        Row {
            scenario: name.into(),
            expected: "CrashLoop".into(),
            rules: Category::CrashLoop,
            rules_correct,
            root_cause: String::new(),
            action: (RestartPod, score),
            model: None,
            latency_ms: 0,
        }
    }

    fn control(name: &str, signals: &[&str]) -> ControlRow {
        ControlRow {
            control: name.into(),
            signals: signals.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_evaluation_fails_on_a_wrong_diagnosis_an_unsafe_plan_or_a_control_that_fires() {
        let right = || row("right", true, Score::Right);
        let quiet = || control("quiet", &[]);
        assert_eq!(verdict(&[right()], &[quiet()]), Ok(()));
        assert_eq!(
            verdict(&[right(), row("safe", true, Score::Safe)], &[quiet()]),
            Ok(()),
            "a safe step that is not the expected one passes"
        );
        assert_eq!(
            verdict(&[right(), row("wrong", false, Score::Right)], &[quiet()]),
            Err("1 scenario(s) diagnosed wrong or planned unsafely, 0 control(s) opened an incident".into())
        );
        assert!(verdict(&[row("unsafe", true, Score::Unsafe)], &[quiet()]).is_err());
        let fired = control("fired", &["CrashLoopBackOff api restarting"]);
        assert_eq!(
            verdict(&[right()], &[quiet(), fired]),
            Err("0 scenario(s) diagnosed wrong or planned unsafely, 1 control(s) opened an incident".into())
        );
    }
}
