use super::*;
use crate::scout::measured::{Board, Reading, Subject};

const JAEGER: &str = "http://127.0.0.1:16686";

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_795_000_000 + second).expect("time")
}

fn iso(second: i64) -> String {
    at(second).to_string()
}

/// A resolved OOM incident as the operator writes it, with text that tries
/// to be markup and links that try to be scripts.
fn incident(phase: &str) -> Incident {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sre.space/v1alpha1",
        "kind": "Incident",
        "metadata": { "name": "quote-oomkilled", "namespace": "shop", "resourceVersion": "7" },
        "spec": {
            "fingerprint": "0123456789abcdef",
            "target": { "kind": "Deployment", "name": "quote" },
            "signal": "OOMKilled",
            "policy": "demo-services"
        },
        "status": {
            "phase": phase,
            "occurrences": 2,
            "firstSeen": iso(0),
            "detectedAt": iso(10),
            "resolvedAt": iso(60),
            "lastAction": "RaiseMemoryLimit: Succeeded",
            "lastSignal": {
                "reason": "OOMKilled",
                "message": "<img src=x onerror=alert(1)> exceeded 64Mi",
                "observedAt": iso(10)
            },
            "conditions": [
                { "type": "Resolved", "status": "True", "reason": "SignalCleared",
                  "message": "cleared for 5s", "lastTransitionTime": iso(60) },
                { "type": "Detected", "status": "True", "reason": "OOMKilled",
                  "message": "seen", "lastTransitionTime": iso(10) }
            ],
            "diagnosis": {
                "analyzer": "rules",
                "category": "OutOfMemory",
                "rootCause": "needs more than 64Mi",
                "confidence": 0.9,
                "proposedAction": "RaiseMemoryLimit",
                "diagnosedAt": iso(12),
                "hypotheses": [{
                    "category": "OutOfMemory", "statement": "needs more memory",
                    "confidence": 0.9, "evidence": ["e1", "e2"],
                    "proposedAction": "RaiseMemoryLimit"
                }],
                "evidence": [
                    { "id": "e1", "kind": "ContainerState", "source": "pod/quote-1/container/app",
                      "summary": "exit 137; slowest trace 4BF92F3577B34DA6A3CE929D0E0E4736 and again 4bf92f3577b34da6a3ce929d0e0e4736" },
                    { "id": "e2", "kind": "Event", "source": "fingerprint 0123456789abcdef",
                      "summary": "failing trace id: 00f067aa0ba902b7, span 1111222233334444" }
                ]
            },
            "actions": [{
                "id": "a1", "type": "RaiseMemoryLimit", "state": "Succeeded",
                "detail": "64Mi to 96Mi", "target": "Deployment/quote",
                "from": "64Mi", "to": "96Mi",
                "recordedAt": iso(15), "finishedAt": iso(16), "outcome": "Effective",
                "pullRequest": { "number": 4, "url": "https://github.com/acme/deploy/pull/4", "branch": "b" }
            }, {
                "id": "a2", "type": "Escalate", "state": "Blocked",
                "detail": "no", "recordedAt": iso(20),
                "pullRequest": { "number": 5, "url": "javascript:alert(1)", "branch": "b" }
            }],
            "github": {
                "repository": "acme/deploy", "issueNumber": 3,
                "issueUrl": "https://github.com/acme/deploy/issues/3"
            },
            "postMortem": "# Post-mortem\nRoot cause: <b>memory</b>"
        }
    }))
    .expect("a valid Incident")
}

fn reading(
    kind: SignalKind,
    workload: &str,
    verdict: Verdict,
    value: Option<f64>,
    second: i64,
) -> Reading {
    Reading {
        subject: Subject {
            namespace: "shop".into(),
            policy: "business".into(),
            kind,
            workload: workload.into(),
            workload_kind: crate::crd::WorkloadKind::Deployment,
        },
        verdict,
        summary: format!("{} {verdict:?}", kind.as_str()),
        value,
        threshold: value.map(|_| 0.3),
        at: at(second),
    }
}

#[test]
fn the_list_shows_phase_target_signal_and_when_detected_open_incidents_first() {
    let resolved = incident("Resolved");
    let mut open = incident("Verifying");
    open.metadata.name = Some("web-crashloopbackoff".into());
    open.status.as_mut().expect("status").detected_at = Some(Time(at(-500)));
    let rows = rows([&resolved, &open]);
    assert_eq!(
        rows[0].name, "web-crashloopbackoff",
        "open first although older"
    );
    assert!(rows[0].open && !rows[1].open);
    let r = &rows[1];
    assert_eq!(r.phase, Phase::Resolved);
    assert_eq!(r.target, "Deployment/quote");
    assert_eq!(r.signal, SignalKind::OOMKilled);
    assert_eq!(r.category, Some(Category::OutOfMemory));
    assert_eq!(r.detected_at.as_deref(), Some(iso(10).as_str()));
    let json = serde_json::to_value(r).expect("json");
    assert_eq!(json["phase"], "Resolved");
    assert_eq!(json["detectedAt"], iso(10));
    assert_eq!(json["lastAction"], "RaiseMemoryLimit: Succeeded");
}

#[test]
fn the_incident_page_gets_a_timeline_in_time_order_with_actions_and_their_outcomes() {
    let d = detail(&incident("Resolved"), JAEGER);
    let titles: Vec<&str> = d.timeline.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Detected: OOMKilled",
            "RaiseMemoryLimit recorded",
            "RaiseMemoryLimit Succeeded, Effective",
            "Escalate recorded",
            "Resolved True: SignalCleared",
            "Resolved",
        ]
    );
    assert_eq!(d.timeline[0].at, iso(10));
    assert!(d.timeline[0].detail.contains("exceeded 64Mi"));
    assert_eq!(d.actions[0].outcome, Some(Outcome::Effective));
    assert_eq!(
        (d.actions[0].from.as_deref(), d.actions[0].to.as_deref()),
        (Some("64Mi"), Some("96Mi"))
    );
    assert_eq!(d.actions[1].state, ActionState::Blocked);
    assert_eq!(d.resolved_at.as_deref(), Some(iso(60).as_str()));
    assert!(
        d.post_mortem
            .as_deref()
            .is_some_and(|p| p.starts_with("# Post-mortem"))
    );
    let diag = d.diagnosis.as_ref().expect("diagnosis");
    assert_eq!(diag.hypotheses[0].evidence, ["e1", "e2"]);
    assert_eq!(diag.evidence.len(), 2);
}

#[test]
fn trace_ids_in_evidence_link_to_jaeger_once_each_and_fingerprints_do_not() {
    let d = detail(&incident("Resolved"), "http://jaeger.local:16686/");
    let diag = d.diagnosis.expect("diagnosis");
    assert_eq!(
        diag.evidence[0].traces,
        [Link {
            label: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            url: "http://jaeger.local:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736".into()
        }]
    );
    // A 16-digit id counts only after "trace": the fingerprint and the span
    // id in the same evidence are not traces.
    let short: Vec<&str> = diag.evidence[1]
        .traces
        .iter()
        .map(|l| l.label.as_str())
        .collect();
    assert_eq!(short, ["00f067aa0ba902b7"]);
    assert!(trace_links("no ids here, deadbeef", JAEGER).is_empty());
}

#[test]
fn only_http_links_reach_the_page_and_cluster_text_stays_text() {
    let d = detail(&incident("Resolved"), JAEGER);
    assert_eq!(
        d.issue,
        Some(Link {
            label: "acme/deploy#3".into(),
            url: "https://github.com/acme/deploy/issues/3".into()
        })
    );
    assert_eq!(d.pull_requests.len(), 1, "the javascript: URL is dropped");
    assert_eq!(d.pull_requests[0].label, "#4");
    assert_eq!(d.actions[1].pull_request, None);
    assert_eq!(safe_url("JavaScript:alert(1)"), None);
    assert_eq!(
        safe_url(" https://x.test/a "),
        Some("https://x.test/a".into())
    );
    // The view model passes text through unchanged (the page writes it as
    // text); it never pre-renders markup.
    let json = serde_json::to_string(&d).expect("json");
    assert!(json.contains("<img src=x onerror=alert(1)>"));
    assert!(json.contains("<b>memory</b>"));
}

#[test]
fn the_conversion_chart_gets_the_ratio_and_its_threshold_over_time() {
    let board = Board::default();
    for (i, v) in [0.5, 0.45, 0.1].into_iter().enumerate() {
        let verdict = if v < 0.3 {
            Verdict::Firing
        } else {
            Verdict::Healthy
        };
        board.post(reading(
            SignalKind::ConversionRate,
            "policy-service",
            verdict,
            Some(v),
            i as i64 * 5,
        ));
    }
    // Unknown without a value adds no point; health checks are not charted.
    board.post(reading(
        SignalKind::ConversionRate,
        "policy-service",
        Verdict::Unknown,
        None,
        20,
    ));
    board.post(reading(
        SignalKind::HealthCheck,
        "quote",
        Verdict::Healthy,
        None,
        20,
    ));
    let series = conversion(&board.snapshot());
    assert_eq!(series.len(), 1);
    let s = &series[0];
    assert_eq!(
        (s.workload.as_str(), s.policy.as_str()),
        ("policy-service", "business")
    );
    assert_eq!(s.verdict, "Unknown", "the latest judgement");
    assert_eq!(
        s.firing_since.as_deref(),
        Some(iso(10).as_str()),
        "unknown ends nothing"
    );
    let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
    assert_eq!(values, [0.5, 0.45, 0.1]);
    assert!(s.points.iter().all(|p| p.threshold == Some(0.3)));
    assert_eq!(s.points[2].t - s.points[0].t, 10_000, "milliseconds");
    let json = serde_json::to_value(s).expect("json");
    assert_eq!(json["points"][2]["value"], 0.1);
    assert_eq!(json["points"][2]["threshold"], 0.3);
}

#[test]
fn a_ratio_that_is_not_a_number_is_left_out_of_the_chart() {
    let board = Board::default();
    board.post(reading(
        SignalKind::ConversionRate,
        "p",
        Verdict::Unknown,
        Some(f64::NAN),
        0,
    ));
    board.post(reading(
        SignalKind::ConversionRate,
        "p",
        Verdict::Healthy,
        Some(0.4),
        1,
    ));
    let s = &conversion(&board.snapshot())[0];
    assert_eq!(s.points.len(), 1);
    assert!(serde_json::to_string(s).is_ok());
}

#[test]
fn service_health_joins_ready_pods_and_health_checks() {
    let pod = |w: &str, ready| PodState {
        namespace: "shop".into(),
        workload: w.into(),
        ready,
    };
    let board = Board::default();
    board.post(reading(
        SignalKind::HealthCheck,
        "quote",
        Verdict::Firing,
        None,
        0,
    ));
    board.post(reading(
        SignalKind::HealthCheck,
        "probe-only",
        Verdict::Healthy,
        None,
        0,
    ));
    board.post(reading(
        SignalKind::ConversionRate,
        "web",
        Verdict::Firing,
        Some(0.1),
        0,
    ));
    let pods = [
        pod("quote", true),
        pod("quote", true),
        pod("web", true),
        pod("web", false),
        pod("users", true),
        pod("gone", false),
    ];
    let svc = services(&pods, &board.snapshot());
    let by: BTreeMap<&str, &ServiceHealth> = svc.iter().map(|s| (s.workload.as_str(), s)).collect();
    assert_eq!(by.len(), 5);
    assert_eq!(
        by["quote"].status, "Down",
        "all pods ready, but its health check fails"
    );
    assert_eq!((by["quote"].ready_pods, by["quote"].pods), (2, 2));
    assert_eq!(by["quote"].checks[0].verdict, "Firing");
    assert_eq!(
        by["web"].status, "Degraded",
        "a conversion drop is not a health check"
    );
    assert!(by["web"].checks.is_empty());
    assert_eq!(by["users"].status, "Healthy");
    assert_eq!(by["gone"].status, "Down");
    assert_eq!(by["probe-only"].status, "Healthy");
    assert_eq!(by["probe-only"].pods, 0);
}

fn remembered(
    name: &str,
    fingerprint: &str,
    signal: &str,
    keywords: &[&str],
    best: Option<&str>,
) -> IncidentMemory {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sre.space/v1alpha1",
        "kind": "IncidentMemory",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": {
            "fingerprint": fingerprint,
            "target": { "kind": "Deployment", "name": name.split('-').next().unwrap_or(name) },
            "signal": signal,
            "keywords": keywords,
            "occurrences": [{ "incident": name, "detectedAt": iso(0), "category": "OutOfMemory",
                              "actions": ["RaiseMemoryLimit"], "outcome": "Effective",
                              "timeToMitigateSeconds": 42 }],
            "actions": [{ "type": "RaiseMemoryLimit", "effective": 1, "ineffective": 0 }]
        },
        "status": { "totalOccurrences": 3, "bestAction": best }
    }))
    .expect("a valid IncidentMemory")
}

#[test]
fn memory_shows_this_problems_history_and_the_most_similar_others() {
    let inc = incident("Resolved");
    let memories = [
        remembered(
            "quote-oomkilled",
            "0123456789abcdef",
            "OOMKilled",
            &["oomkilled", "64mi", "java"],
            Some("RaiseMemoryLimit"),
        ),
        remembered(
            "cart-oomkilled",
            "1111",
            "OOMKilled",
            &["oomkilled", "64mi", "java", "heap"],
            Some("RaiseMemoryLimit"),
        ),
        remembered("web-oomkilled", "2222", "OOMKilled", &["oomkilled"], None),
        remembered(
            "web-crashloopbackoff",
            "3333",
            "CrashLoopBackOff",
            &["args"],
            Some("Rollback"),
        ),
    ];
    let m = memory(&inc, &memories);
    let own = m.own.expect("own history");
    assert_eq!(own.total_occurrences, 3);
    assert_eq!(own.best_action, Some(ActionType::RaiseMemoryLimit));
    assert_eq!(own.occurrences[0].time_to_mitigate_seconds, Some(42));
    let names: Vec<&str> = m.similar.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["cart-oomkilled", "web-oomkilled"],
        "nothing shared, not similar"
    );
    assert!(
        (m.similar[0].score - 0.75).abs() < 1e-9,
        "{}",
        m.similar[0].score
    );
    assert_eq!(m.similar[0].shared, ["oomkilled", "64mi", "java"]);
}

#[test]
fn before_any_history_similar_means_the_same_signal() {
    let inc = incident("Verifying");
    let memories = [
        remembered("cart-oomkilled", "1111", "OOMKilled", &["heap"], None),
        remembered(
            "web-crashloopbackoff",
            "3333",
            "CrashLoopBackOff",
            &["args"],
            None,
        ),
    ];
    let m = memory(&inc, &memories);
    assert!(m.own.is_none());
    let names: Vec<&str> = m.similar.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cart-oomkilled"]);
}
