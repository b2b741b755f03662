//! The ladder with similar problems of other workloads: table tests of
//! `next_step_recalled`.

use super::*;
use crate::crd::{ActionTally, WorkloadKind, WorkloadRef};
use crate::memory::similar::Recalled;

fn step(t: ActionType) -> ActionStep {
    ActionStep {
        type_: t,
        on_categories: vec![],
        max_replicas: None,
        memory: None,
    }
}

/// The ladder [RolloutRestart, Rollback, Escalate] (or the one given).
fn policy(ladder: &[ActionType]) -> RemediationPolicySpec {
    RemediationPolicySpec {
        selector: Default::default(),
        triggers: vec![],
        actions: ladder.iter().map(|t| step(*t)).collect(),
        mode: crate::crd::Mode::Automatic,
        guardrails: Guardrails::default(),
        github: None,
        notify: None,
        runbooks: None,
    }
}

const LADDER: [ActionType; 3] = [
    ActionType::RolloutRestart,
    ActionType::Rollback,
    ActionType::Escalate,
];

fn tally(t: ActionType, effective: i32, ineffective: i32) -> ActionTally {
    ActionTally {
        type_: t,
        effective,
        ineffective,
        last_tried: None,
    }
}

/// Workload `a`'s problem, diagnosed BadRollout, with these outcomes.
fn on_a(actions: Vec<ActionTally>) -> Recalled {
    Recalled {
        memory: "a-crashloopbackoff".into(),
        target: WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "a".into(),
        },
        signal: crate::crd::SignalKind::CrashLoopBackOff,
        score: 1.0,
        shared: vec!["crashloopbackoff".into()],
        categories: vec![Category::BadRollout],
        actions,
    }
}

fn own(actions: Vec<ActionTally>) -> IncidentMemorySpec {
    IncidentMemorySpec {
        fingerprint: "shop/Deployment/b/CrashLoopBackOff".into(),
        target: WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "b".into(),
        },
        signal: crate::crd::SignalKind::CrashLoopBackOff,
        occurrences: vec![],
        actions,
        keywords: vec![],
    }
}

struct Case {
    name: &'static str,
    ladder: &'static [ActionType],
    category: Category,
    own: Option<IncidentMemorySpec>,
    similar: Vec<Recalled>,
    expected: Option<ActionType>,
}

#[test]
fn similar_problems_rank_the_ladder_within_its_rules() {
    use ActionType::*;
    let cases = vec![
        Case {
            name: "nothing recalled: the ladder's order",
            ladder: &LADDER,
            category: Category::BadRollout,
            own: None,
            similar: vec![],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "a step that held on a similar problem moves up",
            ladder: &LADDER,
            category: Category::BadRollout,
            own: None,
            similar: vec![on_a(vec![
                tally(RolloutRestart, 0, 1),
                tally(Rollback, 2, 0),
            ])],
            expected: Some(Rollback),
        },
        Case {
            name: "a step that failed on a similar problem is not moved up",
            ladder: &[Rollback, RolloutRestart, Escalate],
            category: Category::BadRollout,
            own: None,
            similar: vec![on_a(vec![tally(RolloutRestart, 0, 3)])],
            expected: Some(Rollback),
        },
        Case {
            name: "a step that failed there more often than it worked is not moved up",
            ladder: &LADDER,
            category: Category::BadRollout,
            own: None,
            similar: vec![on_a(vec![tally(Rollback, 1, 2)])],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "what worked on this problem itself outranks a similar problem",
            ladder: &[RestartPod, RolloutRestart, Rollback, Escalate],
            category: Category::BadRollout,
            own: Some(own(vec![tally(RolloutRestart, 1, 0)])),
            similar: vec![on_a(vec![tally(Rollback, 5, 0)])],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "a step this problem proved ineffective stays skipped, whatever worked elsewhere",
            ladder: &LADDER,
            category: Category::BadRollout,
            own: Some(own(vec![tally(Rollback, 0, 1)])),
            similar: vec![on_a(vec![tally(Rollback, 4, 0)])],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "a step the policy does not list is never chosen",
            ladder: &[RolloutRestart, Escalate],
            category: Category::BadRollout,
            own: None,
            similar: vec![on_a(vec![tally(Rollback, 4, 0)])],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "a step that cannot help this category is never chosen",
            ladder: &LADDER,
            category: Category::CrashLoop,
            own: None,
            similar: vec![Recalled {
                categories: vec![Category::CrashLoop],
                ..on_a(vec![tally(Rollback, 4, 0)])
            }],
            expected: Some(RolloutRestart),
        },
        Case {
            name: "a similar problem of another category does not move a step",
            ladder: &[RestartPod, RolloutRestart, Escalate],
            category: Category::CrashLoop,
            own: None,
            similar: vec![on_a(vec![tally(RolloutRestart, 4, 0)])],
            expected: Some(RestartPod),
        },
        Case {
            name: "escalating is never moved up",
            ladder: &LADDER,
            category: Category::BadRollout,
            own: None,
            similar: vec![on_a(vec![tally(Escalate, 4, 0)])],
            expected: Some(RolloutRestart),
        },
    ];
    for c in cases {
        let p = policy(c.ladder);
        let history = History {
            own: c.own.as_ref(),
            similar: &c.similar,
        };
        let chosen = next_step_recalled(&p, c.category, &[], history).map(|s| s.type_);
        assert_eq!(chosen, c.expected, "{}", c.name);
    }
}

#[test]
fn the_plan_takes_the_step_that_held_elsewhere_and_says_why() {
    let p = policy(&LADDER);
    let similar = vec![on_a(vec![
        tally(ActionType::RolloutRestart, 0, 1),
        tally(ActionType::Rollback, 2, 0),
    ])];
    let history = History {
        own: None,
        similar: &similar,
    };
    let budget = Budget {
        breaker_limit: 20,
        ..Budget::default()
    };
    let plan = plan_recalled(
        &p,
        Category::BadRollout,
        None,
        &[],
        history,
        &budget,
        crate::testing::now(),
    );
    assert_eq!(plan, Plan::Act(step(ActionType::Rollback)));
    let why = recalled(&similar, Category::BadRollout, ActionType::Rollback).unwrap_or_default();
    assert!(why.contains("Rollback on Deployment/a 2 time(s)"), "{why}");
    assert_eq!(
        recalled(&similar, Category::BadRollout, ActionType::RolloutRestart),
        None
    );
}
