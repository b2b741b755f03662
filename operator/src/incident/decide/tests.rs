//! Every transition of the incident state machine, as tables: each row an
//! incident as it stands, and what the reconcile must decide.

use super::*;
use crate::crd::{ActionType, Condition, IncidentStatus, SignalObservation};
use crate::fixer::Budget;
use crate::fixer::EscalationReason;
use crate::testing::{approved, at, finished, incident, now, policy, record};

use ActionState::*;
use ApprovalDecision::{Approve, Reject};

fn budget() -> Budget {
    Budget {
        breaker_limit: 20,
        ..Budget::default()
    }
}

#[test]
fn each_phase_and_last_step_leads_to_its_decision() {
    let restart = |state| record(1, ActionType::RestartPod, state);
    let verified = |state| {
        let mut r = finished(restart(state), 10);
        r.outcome = Some(crate::crd::Outcome::Ineffective);
        r
    };
    let rows: Vec<(&str, Phase, Vec<ActionRecord>, Decision)> = vec![
        ("new incident", Phase::Detected, vec![], Decision::Plan),
        (
            "diagnosed, nothing tried",
            Phase::Diagnosing,
            vec![],
            Decision::Plan,
        ),
        (
            "step recorded, not taken",
            Phase::Remediating,
            vec![restart(Pending)],
            Decision::Replay,
        ),
        (
            "pull request open",
            Phase::Remediating,
            vec![restart(AwaitingMerge)],
            Decision::FollowPull,
        ),
        (
            "waiting for a person",
            Phase::AwaitingApproval,
            vec![restart(AwaitingApproval)],
            Decision::AwaitApproval,
        ),
        (
            "step taken",
            Phase::Verifying,
            vec![finished(restart(Succeeded), 10)],
            Decision::Verify,
        ),
        (
            "dry run recorded",
            Phase::Verifying,
            vec![finished(restart(DryRun), 10)],
            Decision::Verify,
        ),
        (
            "step judged ineffective",
            Phase::Remediating,
            vec![verified(Succeeded)],
            Decision::Plan,
        ),
        (
            "step failed",
            Phase::Remediating,
            vec![finished(restart(Failed), 10)],
            Decision::Plan,
        ),
        (
            "step blocked",
            Phase::Remediating,
            vec![finished(restart(Blocked), 10)],
            Decision::Plan,
        ),
        (
            "step rejected",
            Phase::Remediating,
            vec![finished(restart(Rejected), 10)],
            Decision::Plan,
        ),
        (
            "step superseded",
            Phase::Remediating,
            vec![finished(restart(Superseded), 10)],
            Decision::Plan,
        ),
        ("escalated", Phase::Escalated, vec![], Decision::Idle),
        ("failed", Phase::Failed, vec![], Decision::Idle),
    ];
    for (what, phase, actions, expected) in rows {
        let i = incident(phase, actions);
        let p = policy(Mode::Automatic);
        assert_eq!(decide(&i, Some(&p), now()), expected, "{what}");
    }
}

#[test]
fn an_incident_the_scout_has_not_counted_yet_waits() {
    let mut i = incident(Phase::Detected, vec![]);
    if let Some(s) = i.status.as_mut() {
        s.occurrences = 0;
    }
    assert_eq!(
        decide(&i, Some(&policy(Mode::Automatic)), now()),
        Decision::Idle
    );
    i.status = None;
    assert_eq!(
        decide(&i, Some(&policy(Mode::Automatic)), now()),
        Decision::Idle
    );
}

#[test]
fn without_its_policy_an_open_incident_does_nothing_but_say_so() {
    for phase in [Phase::Detected, Phase::Remediating, Phase::Verifying] {
        let i = incident(phase, vec![record(1, ActionType::RestartPod, Pending)]);
        assert_eq!(
            decide(&i, None, now()),
            Decision::PolicyNotFound,
            "{phase:?}"
        );
        assert!(!Decision::PolicyNotFound.needs_diagnosis());
    }
}

#[test]
fn approvals_decide_only_the_waiting_step_of_this_episode() {
    let waiting = record(1, ActionType::RestartPod, AwaitingApproval);
    let id = waiting.id.clone();
    let rows: Vec<(&str, Vec<ActionRecord>, &str, ApprovalDecision, Decision)> = vec![
        (
            "approve the waiting step",
            vec![waiting.clone()],
            &id,
            Approve,
            Decision::Approve,
        ),
        (
            "reject the waiting step",
            vec![waiting.clone()],
            &id,
            Reject,
            Decision::Reject,
        ),
    ];
    for (what, actions, approves, decision, expected) in rows {
        for mode in [Mode::Manual, Mode::Automatic, Mode::DryRun] {
            let i = approved(
                incident(Phase::AwaitingApproval, actions.clone()),
                approves,
                decision,
            );
            assert_eq!(
                decide(&i, Some(&policy(mode)), now()),
                expected,
                "{what} ({mode:?})"
            );
        }
    }
    // An approval of anything else is refused before any phase is judged,
    // so it is never left to decide a later step.
    let refused = [
        (
            "a past episode's id",
            vec![waiting.clone()],
            "e0-1-restartpod",
            Phase::AwaitingApproval,
        ),
        (
            "a step that is not waiting",
            vec![record(1, ActionType::RestartPod, Pending)],
            id.as_str(),
            Phase::Remediating,
        ),
        ("no step at all", vec![], id.as_str(), Phase::Diagnosing),
        (
            "a resolved incident",
            vec![finished(record(1, ActionType::RestartPod, Succeeded), 60)],
            id.as_str(),
            Phase::Resolved,
        ),
        (
            "an escalated incident",
            vec![],
            id.as_str(),
            Phase::Escalated,
        ),
    ];
    for (what, actions, approves, phase) in refused {
        let i = approved(incident(phase, actions), approves, Approve);
        assert!(
            matches!(
                decide(&i, Some(&policy(Mode::Manual)), now()),
                Decision::RefuseApproval(_)
            ),
            "{what}"
        );
    }
}

fn resolved(resolved_ago: i64, signal_ago: Option<i64>) -> IncidentStatus {
    let mut i = incident(Phase::Resolved, vec![]);
    let mut s = i.status.take().unwrap_or_default();
    s.resolved_at = Some(at(-resolved_ago));
    s.last_signal = signal_ago.map(|ago| SignalObservation {
        pod: None,
        container: None,
        reason: "OOMKilled".into(),
        message: "the container ran out of memory".into(),
        observed_at: at(-ago),
        key: "web-1/app/OOMKilled".into(),
    });
    s
}

#[test]
fn a_returning_problem_escalates_within_the_recurrence_window_and_opens_an_episode_after() {
    let rows: Vec<(&str, IncidentStatus, i64, &str)> = vec![
        ("no signal since", resolved(600, None), 3600, "not returned"),
        (
            "the signal predates the resolution",
            resolved(600, Some(700)),
            3600,
            "not returned",
        ),
        (
            "back after 100 s, window 3600 s",
            resolved(600, Some(500)),
            3600,
            "escalate",
        ),
        (
            "back after 100 s, window 60 s",
            resolved(600, Some(500)),
            60,
            "new episode",
        ),
        (
            "back after 100 s, no window",
            resolved(600, Some(500)),
            0,
            "new episode",
        ),
        (
            "back exactly at the window's end",
            resolved(600, Some(500)),
            100,
            "escalate",
        ),
    ];
    for (what, status, window, expected) in rows {
        let got = match recurrence(&status, window, now()) {
            Recurrence::NotReturned => "not returned",
            Recurrence::Escalate { .. } => "escalate",
            Recurrence::NewEpisode { .. } => "new episode",
        };
        assert_eq!(got, expected, "{what}");
    }
    let mut i = incident(Phase::Resolved, vec![]);
    i.status = Some(resolved(600, Some(500)));
    let mut p = policy(Mode::Automatic);
    p.spec.guardrails.recurrence_window_seconds = 3600;
    match decide(&i, Some(&p), now()) {
        Decision::Recur(Recurrence::Escalate { message }) => assert!(
            message.contains("returned 100 s after it was resolved"),
            "{message}"
        ),
        other => panic!("expected an escalation, got {other:?}"),
    }
}

fn signal(ongoing: bool) -> Signal {
    Signal {
        kind: crate::crd::SignalKind::OOMKilled,
        pod: Some("web-1".into()),
        container: Some("app".into()),
        reason: "OOMKilled".into(),
        message: "web-1/app was OOMKilled".into(),
        observed_at: now(),
        key: "web-1/app/OOMKilled".into(),
        ongoing,
    }
}

#[test]
fn a_step_is_ineffective_when_the_signal_returns_and_effective_after_a_clear_window() {
    let mut p = policy(Mode::Automatic);
    p.spec.guardrails.verification_window_seconds = 120;
    let taken = |ago| finished(record(1, ActionType::RestartPod, Succeeded), ago);
    let rows: Vec<(&str, ActionRecord, Vec<Signal>, &str)> = vec![
        (
            "not finished",
            record(1, ActionType::RestartPod, Succeeded),
            vec![],
            "not finished",
        ),
        ("clear, window open", taken(30), vec![], "watching"),
        (
            "a new event in the window",
            taken(30),
            vec![signal(false)],
            "ineffective",
        ),
        (
            "still present, window open",
            taken(30),
            vec![signal(true)],
            "watching",
        ),
        (
            "still present at the window's end",
            taken(120),
            vec![signal(true)],
            "ineffective",
        ),
        (
            "clear for the whole window",
            taken(120),
            vec![],
            "effective",
        ),
    ];
    for (what, last, signals, expected) in rows {
        let got = match verdict(&p, &last, &signals, now()) {
            Verdict::NotFinished => "not finished",
            Verdict::Watching { next_look } => {
                assert!(next_look <= VERIFY_POLL, "{what}: {next_look:?}");
                "watching"
            }
            Verdict::Ineffective { message } => {
                assert!(
                    message.starts_with("RestartPod did not clear the signal"),
                    "{message}"
                );
                "ineffective"
            }
            Verdict::Effective => "effective",
        };
        assert_eq!(got, expected, "{what}");
    }
}

fn planned(
    p: &RemediationPolicy,
    status: &IncidentStatus,
    b: &Budget,
    healthy: bool,
) -> PlanDecision {
    plan(&PlanInputs {
        policy: p,
        status,
        memory: None,
        similar: &[],
        budget: b,
        measured_healthy: healthy,
        now: now(),
    })
}

#[test]
fn each_guardrail_that_holds_a_step_back_is_its_own_wait() {
    let fresh = incident(Phase::Diagnosing, vec![])
        .status
        .unwrap_or_default();
    let p = policy(Mode::Automatic);
    let restart = ActionType::RestartPod;
    assert!(
        matches!(planned(&p, &fresh, &budget(), false), PlanDecision::Planned(Plan::Act(s)) if s.type_ == restart)
    );

    let full = Budget {
        global_recent_actions: 20,
        ..budget()
    };
    let rows: Vec<(&str, Budget, WaitReason)> = vec![
        ("breaker open", full, WaitReason::CircuitBreakerOpen),
        (
            "namespace share used",
            Budget {
                namespace_recent_actions: 10,
                namespace_limit: Some(10),
                ..budget()
            },
            WaitReason::NamespaceShareExhausted,
        ),
        (
            "hourly limit reached",
            Budget {
                policy_actions_last_hour: 100,
                ..budget()
            },
            WaitReason::RateLimited,
        ),
        (
            "pods going away",
            Budget {
                pods_disrupted: 5,
                ..budget()
            },
            WaitReason::TooManyPodsDisrupted,
        ),
        (
            "another incident acted",
            Budget {
                workload_changed: Some(crate::fixer::claims::Change {
                    at: now(),
                    by: "web-errors".into(),
                    action: ActionType::Rollback,
                }),
                ..budget()
            },
            WaitReason::WorkloadChangedByAnotherIncident,
        ),
    ];
    for (what, b, reason) in rows {
        match planned(&p, &fresh, &b, false) {
            PlanDecision::Planned(Plan::Wait {
                reason: got,
                message,
                ..
            }) => {
                assert_eq!(got, reason, "{what}");
                assert!(!message.is_empty(), "{what}");
            }
            other => panic!("{what}: expected a wait, got {other:?}"),
        }
    }
}

#[test]
fn a_measured_signal_cleared_by_another_incidents_change_needs_nothing_more() {
    let fresh = incident(Phase::Diagnosing, vec![])
        .status
        .unwrap_or_default();
    let p = policy(Mode::Automatic);
    let restart = ActionType::RestartPod;
    let changed = Budget {
        workload_changed: Some(crate::fixer::claims::Change {
            at: now(),
            by: "web-errors".into(),
            action: ActionType::Rollback,
        }),
        ..budget()
    };
    assert_eq!(
        planned(&p, &fresh, &changed, true),
        PlanDecision::ClearedByAnotherIncident,
        "a measured signal that reads healthy after another incident's change needs nothing more"
    );

    let cooling = incident(
        Phase::Remediating,
        vec![{
            let mut r = finished(record(1, restart, Succeeded), 10);
            r.outcome = Some(crate::crd::Outcome::Ineffective);
            r
        }],
    )
    .status
    .unwrap_or_default();
    let mut slow = policy(Mode::Automatic);
    slow.spec.guardrails.cooldown_seconds = 300;
    slow.spec.guardrails.escalate_after_attempts = 5;
    let mut then = slow.spec.actions[0].clone();
    then.type_ = ActionType::RolloutRestart;
    slow.spec.actions.insert(1, then);
    assert!(matches!(
        planned(&slow, &cooling, &budget(), false),
        PlanDecision::Planned(Plan::Wait {
            reason: WaitReason::CooldownActive,
            ..
        })
    ));
}

#[test]
fn planning_escalates_when_attempts_or_the_ladder_run_out_and_waits_for_a_broken_policy() {
    let fresh = incident(Phase::Diagnosing, vec![])
        .status
        .unwrap_or_default();
    let restart = ActionType::RestartPod;
    let tried = |n| {
        incident(
            Phase::Remediating,
            (1..=n)
                .map(|k| {
                    let mut r = finished(record(k, restart, Succeeded), 3600);
                    r.outcome = Some(crate::crd::Outcome::Ineffective);
                    r
                })
                .collect(),
        )
        .status
        .unwrap_or_default()
    };
    let mut once = policy(Mode::Automatic);
    once.spec.guardrails.escalate_after_attempts = 1;
    assert!(matches!(
        planned(&once, &tried(1), &budget(), false),
        PlanDecision::Planned(Plan::Escalate {
            reason: EscalationReason::AttemptsExhausted,
            ..
        })
    ));
    let mut patient = policy(Mode::Automatic);
    patient.spec.guardrails.escalate_after_attempts = 5;
    assert!(
        matches!(
            planned(&patient, &tried(1), &budget(), false),
            PlanDecision::Planned(Plan::Escalate {
                reason: EscalationReason::LadderExhausted,
                ..
            })
        ),
        "after the restart, the ladder's next step is Escalate"
    );

    let mut broken = policy(Mode::Automatic);
    broken.status = Some(crate::crd::RemediationPolicyStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ConditionStatus::False,
            reason: "ValueOutOfRange".into(),
            message: "guardrails.cooldownSeconds is too large".into(),
            last_transition_time: at(-60),
            observed_generation: None,
        }],
        ..Default::default()
    });
    assert!(matches!(
        planned(&broken, &fresh, &budget(), false),
        PlanDecision::PolicyNotReady { .. }
    ));
}

#[test]
fn the_mode_says_how_a_planned_step_is_recorded() {
    let rows = [
        (false, Mode::Automatic, Pending),
        (false, Mode::Manual, AwaitingApproval),
        (false, Mode::DryRun, DryRun),
        (true, Mode::Automatic, Failed),
        (true, Mode::Manual, Failed),
        (true, Mode::DryRun, Failed),
    ];
    for (impossible, mode, expected) in rows {
        assert_eq!(
            record_as(impossible, mode),
            expected,
            "impossible={impossible} {mode:?}"
        );
    }
}

#[test]
fn a_waiting_incident_keeps_verifying_or_shows_how_far_it_got() {
    let s = |phase, actions| incident(phase, actions).status.unwrap_or_default();
    assert_eq!(
        waiting_phase(&s(Phase::Verifying, vec![])),
        Phase::Verifying
    );
    assert_eq!(
        waiting_phase(&s(Phase::Detected, vec![])),
        Phase::Diagnosing
    );
    let tried = vec![finished(record(1, ActionType::RestartPod, Failed), 5)];
    assert_eq!(
        waiting_phase(&s(Phase::Diagnosing, tried)),
        Phase::Remediating
    );
}

#[test]
fn a_pull_request_is_followed_until_merged_or_closed() {
    assert_eq!(pull_outcome(true, "closed"), PullOutcome::Merged);
    assert_eq!(pull_outcome(false, "closed"), PullOutcome::Closed);
    assert_eq!(pull_outcome(false, "open"), PullOutcome::Open);
}

#[test]
fn a_step_that_held_on_another_workload_is_planned_first_and_the_reason_given() {
    let mut p = policy(Mode::Automatic);
    p.spec.actions.insert(
        1,
        crate::crd::ActionStep {
            type_: ActionType::RolloutRestart,
            on_categories: vec![],
            max_replicas: None,
            memory: None,
        },
    );
    let status = incident(Phase::Diagnosing, vec![])
        .status
        .unwrap_or_default();
    let similar = vec![crate::memory::similar::Recalled {
        memory: "api-oomkilled".into(),
        target: crate::crd::WorkloadRef {
            kind: crate::crd::WorkloadKind::Deployment,
            name: "api".into(),
        },
        signal: crate::crd::SignalKind::OOMKilled,
        score: 0.67,
        shared: vec!["oomkilled".into()],
        categories: vec![crate::crd::Category::OutOfMemory],
        actions: vec![crate::crd::ActionTally {
            type_: ActionType::RolloutRestart,
            effective: 2,
            ineffective: 0,
            last_tried: None,
        }],
    }];
    let b = budget();
    let inputs = |similar| PlanInputs {
        policy: &p,
        status: &status,
        memory: None,
        similar,
        budget: &b,
        measured_healthy: false,
        now: now(),
    };
    let recalled = inputs(&similar);
    match plan(&recalled) {
        PlanDecision::Planned(Plan::Act(step)) => {
            assert_eq!(step.type_, ActionType::RolloutRestart)
        }
        other => panic!("{other:?}"),
    }
    let why = recalled_first(&recalled, ActionType::RolloutRestart).unwrap_or_default();
    assert!(
        why.starts_with("RolloutRestart goes before RestartPod")
            && why.contains("RolloutRestart on Deployment/api 2 time(s)"),
        "{why}"
    );
    let alone = inputs(&[]);
    match plan(&alone) {
        PlanDecision::Planned(Plan::Act(step)) => assert_eq!(step.type_, ActionType::RestartPod),
        other => panic!("{other:?}"),
    }
    assert_eq!(recalled_first(&alone, ActionType::RestartPod), None);
}

#[test]
fn mitigated_at_is_the_first_clear_look_after_the_action_and_cleared_when_it_failed() {
    let finished = now();
    let later = at(3).0;
    let watching = Verdict::Watching {
        next_look: std::time::Duration::from_secs(2),
    };
    // The signal still fires: not mitigated yet.
    assert_eq!(
        mitigated_at(None, &watching, Some(finished), false, later),
        None
    );
    // The first clear look sets it, never before the action finished.
    assert_eq!(
        mitigated_at(None, &watching, Some(finished), true, later),
        Some(later)
    );
    let early = at(-5).0;
    assert_eq!(
        mitigated_at(None, &watching, Some(finished), true, early),
        Some(finished)
    );
    // Kept while the window runs and when it ends well.
    let much_later = at(300).0;
    assert_eq!(
        mitigated_at(Some(later), &watching, Some(finished), true, much_later),
        Some(later)
    );
    assert_eq!(
        mitigated_at(
            Some(later),
            &Verdict::Effective,
            Some(finished),
            true,
            much_later
        ),
        Some(later)
    );
    // The signal came back: that mitigation did not count.
    let failed = Verdict::Ineffective {
        message: "RestartPod did not clear the signal".into(),
    };
    assert_eq!(
        mitigated_at(Some(later), &failed, Some(finished), false, much_later),
        None
    );
}
