//! Which memories count as the same problem on another workload.

use super::*;
use crate::crd::{IncidentMemoryStatus, OccurrenceRecord, Outcome, Phase, WorkloadKind};
use crate::testing;

/// The memory of `workload`'s OOMKilled problem in `namespace`, with these
/// keywords, diagnosed OutOfMemory, where RaiseMemoryLimit worked twice.
fn memory(namespace: &str, workload: &str, keywords: &[&str]) -> IncidentMemory {
    let target = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: workload.into(),
    };
    let mut m = IncidentMemory::new(
        &format!("{workload}-oomkilled"),
        IncidentMemorySpec {
            fingerprint: format!("{namespace}/Deployment/{workload}/OOMKilled"),
            target,
            signal: SignalKind::OOMKilled,
            occurrences: vec![OccurrenceRecord {
                incident: format!("{workload}-oomkilled"),
                detected_at: testing::at(-3600),
                category: Some(Category::OutOfMemory),
                actions: vec![ActionType::RaiseMemoryLimit],
                outcome: Some(Outcome::Effective),
                time_to_mitigate_seconds: Some(90),
                summary: None,
            }],
            actions: vec![ActionTally {
                type_: ActionType::RaiseMemoryLimit,
                effective: 2,
                ineffective: 0,
                last_tried: None,
            }],
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
        },
    );
    m.metadata.namespace = Some(namespace.into());
    m.status = Some(IncidentMemoryStatus {
        total_occurrences: 2,
        ..Default::default()
    });
    m
}

const SAME: [&str; 3] = ["oomkilled", "outofmemory", "container:app"];

fn recalled_names(memories: &[IncidentMemory]) -> Vec<String> {
    let incident = testing::incident(Phase::Diagnosing, vec![]);
    recall(&incident, None, memories)
        .into_iter()
        .map(|r| r.memory)
        .collect()
}

#[test]
fn the_same_problem_on_another_workload_of_the_namespace_is_recalled() {
    let found = recalled_names(&[memory("shop", "api", &SAME)]);
    assert_eq!(found, vec!["api-oomkilled"]);
}

#[test]
fn another_namespaces_history_is_never_recalled() {
    let found = recalled_names(&[memory("bank", "api", &SAME)]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_problem_sharing_too_few_terms_is_not_recalled() {
    // Only the signal in common: 1 shared of 6 terms.
    let unlike = memory(
        "shop",
        "api",
        &[
            "oomkilled",
            "badrollout",
            "container:db",
            "error",
            "evicted",
        ],
    );
    assert!(recalled_names(&[unlike]).is_empty());
}

#[test]
fn the_incidents_own_workload_is_not_a_similar_problem() {
    assert!(recalled_names(&[memory("shop", "web", &SAME)]).is_empty());
}

#[test]
fn a_history_without_outcomes_says_nothing_and_is_not_recalled() {
    let mut m = memory("shop", "api", &SAME);
    m.spec.actions.clear();
    assert!(recalled_names(&[m]).is_empty());
}

#[test]
fn recall_is_bounded_and_most_similar_first() {
    let mut many: Vec<IncidentMemory> = (0..10)
        .map(|i| {
            memory(
                "shop",
                &format!("svc{i}"),
                &["oomkilled", "outofmemory", "container:app", "evicted"],
            )
        })
        .collect();
    many.push(memory("shop", "best", &SAME));
    let found = recalled_names(&many);
    assert_eq!(found.len(), MAX_RECALLED);
    assert_eq!(found[0], "best-oomkilled");
}

#[test]
fn a_fix_held_when_it_worked_more_often_than_it_failed_on_the_same_category() {
    let incident = testing::incident(Phase::Diagnosing, vec![]);
    let r = recall(&incident, None, &[memory("shop", "api", &SAME)]);
    assert_eq!(
        held(&r, Category::OutOfMemory, ActionType::RaiseMemoryLimit),
        Some(2)
    );
    // Another category's history does not speak for this one.
    assert_eq!(
        held(&r, Category::BadRollout, ActionType::RaiseMemoryLimit),
        None
    );
    let mut failing = r.clone();
    failing[0].actions[0].ineffective = 3;
    assert_eq!(
        held(
            &failing,
            Category::OutOfMemory,
            ActionType::RaiseMemoryLimit
        ),
        None
    );
}

#[test]
fn the_citation_says_what_cleared_the_problem_where() {
    let incident = testing::incident(Phase::Diagnosing, vec![]);
    let r = recall(&incident, None, &[memory("shop", "api", &SAME)]);
    let s = r[0].sentence();
    assert!(
        s.contains("RaiseMemoryLimit cleared the same problem on Deployment/api 2 time(s)"),
        "{s}"
    );
}
