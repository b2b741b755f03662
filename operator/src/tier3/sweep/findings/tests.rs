use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::{IncidentMemorySpec, OccurrenceRecord, WorkloadKind};

/// The start of the tests' history.
pub const BASE: &str = "2026-12-01T00:00:00Z";

fn base() -> Timestamp {
    BASE.parse().expect("time")
}

/// An occurrence `hour` hours after BASE.
pub fn occurrence(
    hour: i64,
    category: Category,
    actions: &[ActionType],
    ttm: Option<i64>,
) -> OccurrenceRecord {
    OccurrenceRecord {
        incident: "web-oomkilled".into(),
        detected_at: Time(shift(base(), hour * 3600)),
        category: Some(category),
        actions: actions.to_vec(),
        outcome: Some(if ttm.is_some() {
            Outcome::Effective
        } else {
            Outcome::Ineffective
        }),
        time_to_mitigate_seconds: ttm,
        summary: None,
    }
}

/// An OOM `hour` hours after BASE, mitigated by a higher limit and a
/// rollout restart in `ttm` seconds.
pub fn oom(hour: i64, ttm: i64) -> OccurrenceRecord {
    occurrence(
        hour,
        Category::OutOfMemory,
        &[ActionType::RaiseMemoryLimit, ActionType::RolloutRestart],
        Some(ttm),
    )
}

pub fn memory(workload: &str, occurrences: Vec<OccurrenceRecord>) -> IncidentMemory {
    let mut m = IncidentMemory::new(
        &format!("{workload}-oomkilled"),
        IncidentMemorySpec {
            fingerprint: format!("{workload}-f00d"),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: workload.into(),
            },
            signal: SignalKind::OOMKilled,
            occurrences,
            actions: vec![],
            keywords: vec![],
        },
    );
    m.metadata.namespace = Some("shop".into());
    m
}

fn at_hour(hour: i64) -> Timestamp {
    shift(base(), hour * 3600)
}

fn rules(f: &[Finding]) -> Vec<Vec<Rule>> {
    f.iter()
        .map(|f| f.rules.iter().map(|(r, _)| *r).collect())
        .collect()
}

/// Thresholds that let one rule at a time speak.
fn only(rule: Rule) -> Thresholds {
    let t = Thresholds::default();
    Thresholds {
        recurrences: if rule == Rule::Recurring { 3 } else { 1000 },
        min_held_seconds: if rule == Rule::ShortHold { 3600 } else { 0 },
        max_same_fix: if rule == Rule::SameFix { 3 } else { 1000 },
        ..t
    }
}

#[test]
fn recurring_needs_n_occurrences_inside_the_window() {
    let t = only(Rule::Recurring);
    // Each mitigated in 10 minutes and back a day later.
    let cases: &[(&str, Vec<i64>, i64, bool)] = &[
        ("two are not enough", vec![0, 24], 30, false),
        ("exactly three are", vec![0, 24, 48], 50, true),
        ("four are", vec![0, 12, 24, 36], 40, true),
        // The window is 168 h: at hour 200, the one at hour 0 is outside.
        ("one fell out of the window", vec![0, 100, 150], 200, false),
        (
            "at the window's edge it counts",
            vec![32, 100, 150],
            200,
            true,
        ),
    ];
    for (what, hours, now, fires) in cases {
        let m = memory("web", hours.iter().map(|h| oom(*h, 600)).collect());
        let found = findings(&[m], &t, at_hour(*now));
        assert_eq!(!found.is_empty(), *fires, "{what}: {found:?}");
        if *fires {
            assert_eq!(rules(&found), vec![vec![Rule::Recurring]], "{what}");
        }
    }
}

#[test]
fn short_hold_is_a_mitigation_that_held_less_than_the_threshold() {
    let t = only(Rule::ShortHold);
    // Mitigated after 10 minutes; back 10 min + held later.
    let back = |held: i64| {
        let mut second = oom(0, 600);
        second.detected_at = Time(shift(at_hour(0), 600 + held));
        vec![oom(0, 600), second]
    };
    for (what, held, fires) in [
        ("held 59 min 59 s", 3599, true),
        ("held exactly 60 min", 3600, false),
        ("held 61 min", 3660, false),
        ("held 5 min", 300, true),
    ] {
        let found = findings(&[memory("web", back(held))], &t, at_hour(10));
        assert_eq!(!found.is_empty(), fires, "{what}: {found:?}");
        if fires {
            assert_eq!(found[0].history[0].held_seconds, Some(held), "{what}");
            assert_eq!(rules(&found), vec![vec![Rule::ShortHold]], "{what}");
        }
    }
    // Not mitigated (ineffective): it did not hold at all, but nothing
    // "held" either; only a mitigation counts.
    let unmitigated = vec![
        occurrence(0, Category::OutOfMemory, &[ActionType::RestartPod], None),
        oom(1, 600),
    ];
    assert!(findings(&[memory("web", unmitigated)], &t, at_hour(10)).is_empty());
}

#[test]
fn same_fix_is_one_action_applied_more_than_m_times() {
    let t = only(Rule::SameFix);
    let restarts = |n: i64| -> Vec<OccurrenceRecord> {
        (0..n)
            .map(|i| {
                occurrence(
                    i * 24,
                    Category::CrashLoop,
                    &[ActionType::RestartPod, ActionType::RestartPod],
                    Some(60),
                )
            })
            .collect()
    };
    let none = findings(&[memory("web", restarts(3))], &t, at_hour(100));
    assert!(
        none.is_empty(),
        "three times is not more than three: {none:?}"
    );
    let found = findings(&[memory("web", restarts(4))], &t, at_hour(100));
    assert_eq!(rules(&found), vec![vec![Rule::SameFix]]);
    assert!(found[0].rules[0].1.contains("RestartPod 4 times"));
    // Escalate is not a fix.
    let escalations: Vec<_> = (0..5)
        .map(|i| occurrence(i * 24, Category::CrashLoop, &[ActionType::Escalate], None))
        .collect();
    assert!(findings(&[memory("web", escalations)], &t, at_hour(130)).is_empty());
}

#[test]
fn the_history_gives_mttr_and_how_long_each_action_held() {
    // Four OOMs in two days, each mitigated in 10 min, back 12 h later.
    let m = memory("web", (0..4).map(|i| oom(i * 12, 600)).collect());
    let found = findings(&[m], &Thresholds::default(), at_hour(40));
    let f = &found[0];
    assert_eq!(rules(&found), vec![vec![Rule::Recurring, Rule::SameFix]]);
    assert_eq!(f.mttr_seconds, Some(600));
    assert_eq!(f.category, Some(Category::OutOfMemory));
    let held: Vec<_> = f.history.iter().map(|o| o.held_seconds).collect();
    assert_eq!(held, [Some(42_600), Some(42_600), Some(42_600), None]);
    assert_eq!(f.actions.len(), 2);
    assert_eq!(f.actions[0].action, ActionType::RaiseMemoryLimit);
    assert_eq!(f.actions[0].applied, 4);
    assert_eq!(f.actions[0].held_seconds.len(), 3);
    assert_eq!(
        f.fix_class.as_ref().map(|(c, _)| *c),
        Some(FixClass::MemoryLeak)
    );
    assert_eq!(
        f.summary(),
        "4 occurrence(s); rules: Recurring,SameFix; class: MemoryLeak"
    );
}

#[test]
fn the_class_of_fix_follows_category_and_evidence_or_is_none() {
    let t = Thresholds::default();
    let class = |category: Category, actions: &[ActionType], gap_secs: i64| {
        let occ: Vec<_> = (0..3)
            .map(|i| {
                let mut o = occurrence(0, category, actions, Some(60));
                o.detected_at = Time(shift(base(), i * (60 + gap_secs)));
                o
            })
            .collect();
        let mut m = memory("api", occ);
        m.spec.signal = SignalKind::TraceErrorRate;
        findings(&[m], &t, at_hour(24 * 4))
            .pop()
            .and_then(|f| f.fix_class)
            .map(|(c, _)| c)
    };
    let day = 86_400;
    assert_eq!(
        class(Category::Dependency, &[ActionType::RestartPod], day),
        Some(FixClass::CircuitBreakerOrTimeout)
    );
    assert_eq!(
        class(Category::Latency, &[ActionType::Scale], day / 4),
        Some(FixClass::Cache)
    );
    assert_eq!(
        class(Category::Latency, &[ActionType::RolloutRestart], day / 4),
        Some(FixClass::CircuitBreakerOrTimeout)
    );
    assert_eq!(
        class(Category::ErrorRate, &[ActionType::RestartPod], 300),
        Some(FixClass::RetryStorm),
        "back within minutes of each recovery"
    );
    assert_eq!(
        class(Category::ErrorRate, &[ActionType::RestartPod], day / 4),
        None,
        "errors that stay away for hours are no retry storm"
    );
    assert_eq!(
        class(Category::BadImage, &[ActionType::Rollback], day / 4),
        None,
        "nothing fits: no class is invented"
    );
}

#[test]
fn durations_read_as_people_say_them() {
    assert_eq!(duration(45), "45 s");
    assert_eq!(duration(600), "10 min");
    assert_eq!(duration(3600), "1 h");
    assert_eq!(duration(3600 + 300), "1 h 5 min");
    assert_eq!(duration(2 * 86_400 + 4 * 3600), "2 d 4 h");
    assert_eq!(duration(-5), "0 s");
}
