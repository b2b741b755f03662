use super::*;
use crate::crd::{ActionTally, OccurrenceRecord, Outcome, WorkloadKind};

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn facts(signal: SignalKind) -> Facts {
    Facts {
        namespace: "shop".into(),
        target: WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        },
        signal,
        observation: Some(SignalObservation {
            pod: Some("web-1".into()),
            container: Some("app".into()),
            reason: signal.as_str().into(),
            message: format!("container app of pod web-1: {}", signal.as_str()),
            observed_at: Time(now()),
            key: "k".into(),
        }),
        pod: None,
        events: vec![],
        owner_chain: vec![
            "Pod/web-1".into(),
            "ReplicaSet/web-abc".into(),
            "Deployment/web".into(),
        ],
        rollout: None,
        resources: vec![ContainerResources {
            container: "app".into(),
            memory_limit: Some("64Mi".into()),
            memory_request: Some("32Mi".into()),
        }],
        memory: None,
        traces: None,
        logs: vec![],
        workload: None,
        claims: vec![],
        claim_events: vec![],
        storage_classes: None,
        node: None,
        template: None,
        alert_category: None,
        metric_category: None,
        similar: vec![],
    }
}

fn command_rollout() -> Rollout {
    Rollout {
        revision: 2,
        previous_revision: 1,
        at: Some(Time(now())),
        changes: vec![TemplateChange {
            field: "containers[app].command".into(),
            from: r#"["/web"]"#.into(),
            to: r#"["/web", "--crash"]"#.into(),
        }],
        failing_pod_is_new: true,
    }
}

fn cited_kinds(d: &Diagnosis, h: &Hypothesis) -> Vec<EvidenceKind> {
    h.evidence
        .iter()
        .map(|id| {
            d.evidence
                .iter()
                .find(|e| &e.id == id)
                .expect("cited evidence exists")
                .kind
        })
        .collect()
}

#[test]
fn oom_kill_is_out_of_memory_citing_the_limit() {
    let d = diagnose(&facts(SignalKind::OOMKilled), now());
    assert_eq!(d.category, Category::OutOfMemory);
    assert_eq!(d.proposed_action, Some(ActionType::RaiseMemoryLimit));
    assert!(d.root_cause.contains("64Mi"), "{}", d.root_cause);
    let kinds = cited_kinds(&d, &d.hypotheses[0]);
    assert!(
        kinds.contains(&EvidenceKind::ContainerState) && kinds.contains(&EvidenceKind::Resources)
    );
    assert_eq!(d.analyzer, "rules");
}

#[test]
fn crash_loop_after_a_rollout_is_bad_rollout_naming_the_field() {
    let mut f = facts(SignalKind::CrashLoopBackOff);
    f.rollout = Some(command_rollout());
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
    assert!(
        d.root_cause.contains("containers[app].command"),
        "{}",
        d.root_cause
    );
    assert!(cited_kinds(&d, &d.hypotheses[0]).contains(&EvidenceKind::Rollout));
    assert_eq!(
        d.hypotheses[1].category,
        Category::CrashLoop,
        "the alternative is still shown"
    );
}

#[test]
fn crash_loop_without_a_rollout_is_a_crash_loop() {
    let d = diagnose(&facts(SignalKind::CrashLoopBackOff), now());
    assert_eq!(d.category, Category::CrashLoop);
    assert_eq!(d.proposed_action, Some(ActionType::RestartPod));
}

#[test]
fn a_rollout_the_failing_pod_does_not_run_is_not_blamed() {
    let mut f = facts(SignalKind::CrashLoopBackOff);
    f.rollout = Some(Rollout {
        failing_pod_is_new: false,
        ..command_rollout()
    });
    assert_eq!(diagnose(&f, now()).category, Category::CrashLoop);
}

#[test]
fn image_pull_failure_after_an_image_change_is_bad_rollout() {
    let mut f = facts(SignalKind::ImagePullBackOff);
    assert_eq!(diagnose(&f, now()).category, Category::BadImage);
    f.rollout = Some(Rollout {
        changes: vec![TemplateChange {
            field: "containers[app].image".into(),
            from: "web:1".into(),
            to: "web:does-not-exist".into(),
        }],
        ..command_rollout()
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout);
    assert!(d.root_cause.contains("containers[app].image"));
}

#[test]
fn unschedulable_and_probe_failure_have_their_categories() {
    assert_eq!(
        diagnose(&facts(SignalKind::Unschedulable), now()).category,
        Category::Unschedulable
    );
    let d = diagnose(&facts(SignalKind::ReadinessFailing), now());
    assert_eq!(d.category, Category::ProbeFailure);
    assert_eq!(d.proposed_action, Some(ActionType::RestartPod));
}

#[test]
fn history_of_a_failed_action_lowers_it_and_is_cited() {
    let mut f = facts(SignalKind::OOMKilled);
    f.memory = Some(IncidentMemorySpec {
        fingerprint: "x".into(),
        target: f.target.clone(),
        signal: SignalKind::OOMKilled,
        occurrences: vec![OccurrenceRecord {
            incident: "web-oomkilled".into(),
            detected_at: Time(now()),
            category: Some(Category::OutOfMemory),
            actions: vec![ActionType::RaiseMemoryLimit],
            outcome: Some(Outcome::Ineffective),
            time_to_mitigate_seconds: None,
            summary: None,
        }],
        actions: vec![ActionTally {
            type_: ActionType::RaiseMemoryLimit,
            effective: 0,
            ineffective: 2,
            last_tried: None,
        }],
        keywords: vec![],
    });
    let d = diagnose(&f, now());
    let h = &d.hypotheses[0];
    assert!(h.confidence < 0.9);
    assert!(cited_kinds(&d, h).contains(&EvidenceKind::History));
}

#[test]
fn hypotheses_are_ranked_and_cite_only_existing_evidence() {
    let mut f = facts(SignalKind::CrashLoopBackOff);
    f.rollout = Some(command_rollout());
    let d = diagnose(&f, now());
    for pair in d.hypotheses.windows(2) {
        assert!(pair[0].confidence >= pair[1].confidence);
    }
    for h in &d.hypotheses {
        assert!(!h.evidence.is_empty(), "every hypothesis rests on evidence");
        cited_kinds(&d, h);
    }
}

/// Findings for the service `web` where `service`'s `operation` is where
/// the failures start, reached through `chain`.
fn trace_findings(service: &str, operation: &str, chain: &[&str]) -> traces::TraceFindings {
    let window = traces::WindowStats {
        spans: 40,
        errors: 30,
        p50_ms: 4.0,
        p95_ms: 9.0,
    };
    traces::TraceFindings {
        unavailable: None,
        service: "web".into(),
        window_traces: 40,
        baseline_traces: 100,
        operations: vec![traces::OperationStats {
            service: service.into(),
            operation: operation.into(),
            window: window.clone(),
            baseline: None,
        }],
        culprit: Some(traces::Culprit {
            symptom: traces::Symptom::Errors,
            service: service.into(),
            operation: operation.into(),
            window,
            baseline: Some(traces::WindowStats {
                spans: 100,
                errors: 1,
                p50_ms: 4.0,
                p95_ms: 8.0,
            }),
            traces: 30,
            self_p95_ms: None,
            chain: chain.iter().map(|s| s.to_string()).collect(),
            trace_ids: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
        }),
    }
}

fn measured(signal: SignalKind) -> Facts {
    Facts {
        pod: None,
        observation: Some(SignalObservation {
            pod: None,
            container: None,
            ..facts(signal).observation.expect("observation")
        }),
        ..facts(signal)
    }
}

#[test]
fn an_error_starting_in_a_callee_is_a_dependency_naming_its_service_and_operation() {
    let mut f = measured(SignalKind::TraceErrorRate);
    f.traces = Some(trace_findings(
        "user-service",
        "check_eligibility",
        &["frontend", "web", "user-service"],
    ));
    // A rollout of web does not explain a failure that starts elsewhere.
    f.rollout = Some(command_rollout());
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::Dependency, "{}", d.root_cause);
    assert_eq!(d.proposed_action, Some(ActionType::Escalate));
    assert!(
        d.root_cause.contains(
            "operation check_eligibility of service user-service fails (30 of 40 spans, up from 1% in the baseline), propagating through frontend → web → user-service"
        ),
        "{}",
        d.root_cause
    );
    assert!(
        d.root_cause
            .contains("Deployment/web (service web) calls it and fails with it"),
        "{}",
        d.root_cause
    );
    let cited = &d.hypotheses[0].evidence;
    let trace = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Trace && cited.contains(&e.id))
        .expect("the trace evidence is cited");
    assert!(
        trace.summary.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{}",
        trace.summary
    );
    assert_eq!(
        d.hypotheses[1].category,
        Category::BadRollout,
        "still shown"
    );
}

#[test]
fn an_error_starting_in_the_target_is_its_error_rate_and_a_recent_rollout_of_it_stays_first() {
    for signal in [
        SignalKind::ConversionRate,
        SignalKind::HealthCheck,
        SignalKind::TraceErrorRate,
    ] {
        let mut f = measured(signal);
        f.traces = Some(trace_findings("web", "POST /buy", &["frontend", "web"]));
        let d = diagnose(&f, now());
        assert_eq!(
            d.category,
            Category::ErrorRate,
            "{signal:?}: {}",
            d.root_cause
        );
        assert!(
            d.root_cause
                .contains("operation POST /buy of service web fails"),
            "{}",
            d.root_cause
        );

        f.rollout = Some(command_rollout());
        let d = diagnose(&f, now());
        assert_eq!(d.category, Category::BadRollout, "{signal:?}");
        assert_eq!(d.proposed_action, Some(ActionType::Rollback));
        assert!(d.root_cause.contains("POST /buy"), "{}", d.root_cause);
        assert_eq!(d.hypotheses[1].category, Category::ErrorRate);
    }
}

#[test]
fn a_slow_operation_in_the_target_is_latency() {
    let mut f = measured(SignalKind::TraceLatency);
    let mut findings = trace_findings("web", "GET /quote", &["frontend", "web"]);
    if let Some(c) = findings.culprit.as_mut() {
        c.symptom = traces::Symptom::Latency;
        c.window.p95_ms = 950.0;
        c.self_p95_ms = Some(930.0);
    }
    f.traces = Some(findings);
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::Latency);
    assert!(
        d.root_cause
            .contains("operation GET /quote of service web is slow (p95 950 ms, 930 ms of it its own time; p95 8 ms in the baseline)"),
        "{}",
        d.root_cause
    );
}

#[test]
fn without_a_trace_store_the_diagnosis_says_no_trace_evidence_was_available() {
    let mut f = measured(SignalKind::TraceErrorRate);
    f.traces = Some(traces::TraceFindings::unavailable(
        "web",
        "no trace store is configured (SRE_SPACE_JAEGER_QUERY is unset)",
    ));
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::ErrorRate, "the signal's own category");
    let e = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Trace)
        .expect("a note on traces");
    assert!(
        e.summary.starts_with("no trace evidence was available"),
        "{}",
        e.summary
    );
    assert!(d.hypotheses[0].evidence.contains(&e.id));
}

/// A crash-looping pod whose termination message and events hold a token
/// and a password, and a rollout whose arguments hold a connection string.
fn leaky_facts() -> Facts {
    let mut f = facts(SignalKind::CrashLoopBackOff);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web-1" },
        "status": { "containerStatuses": [{
            "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 4,
            "state": { "waiting": { "reason": "CrashLoopBackOff",
                "message": "back-off; last log: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3ZWIifQ.c2ln" } },
            "lastState": { "terminated": { "exitCode": 1, "reason": "Error",
                "message": "fatal: auth ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA failed; DB_PASSWORD=hunter2 rejected" } }
        }] }
    }))
    .expect("pod");
    f.pod = Some(pod);
    f.events = vec![
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1.1" },
            "involvedObject": {},
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting; env DB_PASSWORD=hunter2",
        }))
        .expect("event"),
    ];
    f.rollout = Some(Rollout {
        changes: vec![TemplateChange {
            field: "containers[app].args".into(),
            from: r#"["--db=postgres://app:hunter2@db/x"]"#.into(),
            to: r#"["--db=postgres://app:hunter3@db/x"]"#.into(),
        }],
        ..command_rollout()
    });
    f
}

#[test]
fn secrets_in_a_termination_message_never_reach_the_diagnosis() {
    let secrets = [
        "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA",
        "hunter2",
        "hunter3",
        "eyJzdWIiOiJ3ZWIifQ",
    ];
    // The diagnosis redacts every evidence item it makes ...
    let d = diagnose(&leaky_facts(), now());
    let json = serde_json::to_string(&d).expect("json");
    assert!(json.contains("termination message"), "{json}");
    for s in secrets {
        assert!(!json.contains(s), "{s} reached the diagnosis: {json}");
    }
    assert!(json.contains("DB_PASSWORD=<redacted>"), "{json}");
    // ... and the facts are redacted where they are gathered, so a captured
    // scenario or any other use of them holds no secret either.
    let mut f = leaky_facts();
    f.redact();
    let json = serde_json::to_string(&f).expect("json");
    for s in secrets {
        assert!(!json.contains(s), "{s} survived in the facts: {json}");
    }
}

#[test]
fn an_alert_incident_cites_the_alert_and_takes_its_triggers_category() {
    let mut f = measured(SignalKind::Alert);
    if let Some(o) = f.observation.as_mut() {
        o.message = "alert HighErrorRate firing since 2026-12-03T07:30:00Z (2 series): \"fails\"; source: \"http://prometheus:9090/graph\"".into();
    }
    f.alert_category = Some(Category::Dependency);
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::Dependency, "{}", d.root_cause);
    let alert = d
        .evidence
        .iter()
        .find(|e| e.kind == crate::crd::EvidenceKind::Alert)
        .expect("the alert is evidence");
    assert_eq!(alert.source, "Alertmanager");
    assert!(alert.summary.contains("HighErrorRate"), "{}", alert.summary);
    assert!(
        d.hypotheses[0].evidence.contains(&alert.id),
        "the lead hypothesis cites it: {:?}",
        d.hypotheses
    );
}

/// Deployment/a's crash loop after a rollout, where each action fared so.
fn similar_on_a(actions: &[(ActionType, i32, i32)]) -> crate::memory::similar::Recalled {
    crate::memory::similar::Recalled {
        memory: "a-crashloopbackoff".into(),
        target: WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "a".into(),
        },
        signal: SignalKind::CrashLoopBackOff,
        score: 1.0,
        shared: vec!["crashloopbackoff".into(), "container:app".into()],
        categories: vec![Category::BadRollout],
        actions: actions
            .iter()
            .map(|(t, e, i)| crate::crd::ActionTally {
                type_: *t,
                effective: *e,
                ineffective: *i,
                last_tried: None,
            })
            .collect(),
    }
}

fn bad_rollout_facts() -> Facts {
    let mut f = facts(SignalKind::CrashLoopBackOff);
    f.rollout = Some(command_rollout());
    f
}

fn rollback_hypothesis(d: &Diagnosis) -> &Hypothesis {
    d.hypotheses
        .iter()
        .find(|h| h.proposed_action == Some(ActionType::Rollback))
        .expect("a rollback hypothesis")
}

#[test]
fn a_fix_that_held_on_another_workload_is_cited_and_raises_its_hypothesis() {
    let alone = diagnose(&bad_rollout_facts(), now());
    let mut f = bad_rollout_facts();
    f.similar = vec![similar_on_a(&[
        (ActionType::RolloutRestart, 0, 1),
        (ActionType::Rollback, 2, 0),
    ])];
    let d = diagnose(&f, now());
    let h = rollback_hypothesis(&d);
    assert!(cited_kinds(&d, h).contains(&EvidenceKind::SimilarIncident));
    let cited = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::SimilarIncident)
        .expect("similar evidence");
    assert!(
        cited
            .summary
            .contains("Rollback cleared the same problem on Deployment/a 2 time(s)"),
        "{}",
        cited.summary
    );
    assert!(cited.source.contains("incidentmemory/a-crashloopbackoff"));
    assert!(h.confidence > rollback_hypothesis(&alone).confidence);
}

#[test]
fn a_fix_that_failed_on_another_workload_is_cited_and_lowers_its_hypothesis() {
    let alone = diagnose(&bad_rollout_facts(), now());
    let mut f = bad_rollout_facts();
    f.similar = vec![similar_on_a(&[(ActionType::Rollback, 0, 2)])];
    let d = diagnose(&f, now());
    let h = rollback_hypothesis(&d);
    assert!(cited_kinds(&d, h).contains(&EvidenceKind::SimilarIncident));
    assert!(h.confidence < rollback_hypothesis(&alone).confidence);
}

#[test]
fn this_problems_own_history_outweighs_a_similar_one() {
    let mut own = bad_rollout_facts();
    own.memory = Some(crate::crd::IncidentMemorySpec {
        fingerprint: "shop/Deployment/web/CrashLoopBackOff".into(),
        target: own.target.clone(),
        signal: SignalKind::CrashLoopBackOff,
        occurrences: vec![crate::crd::OccurrenceRecord {
            incident: "web-crashloopbackoff".into(),
            detected_at: Time(now()),
            category: Some(Category::BadRollout),
            actions: vec![ActionType::Rollback],
            outcome: Some(crate::crd::Outcome::Ineffective),
            time_to_mitigate_seconds: None,
            summary: None,
        }],
        actions: vec![crate::crd::ActionTally {
            type_: ActionType::Rollback,
            effective: 0,
            ineffective: 1,
            last_tried: None,
        }],
        keywords: vec![],
    });
    let only_own = diagnose(&own, now());
    let mut both = own.clone();
    both.similar = vec![similar_on_a(&[(ActionType::Rollback, 5, 0)])];
    let d = diagnose(&both, now());
    assert_eq!(
        rollback_hypothesis(&d).confidence,
        rollback_hypothesis(&only_own).confidence,
        "the similar problem is cited, its weight is not added"
    );
    assert!(cited_kinds(&d, rollback_hypothesis(&d)).contains(&EvidenceKind::SimilarIncident));
}
