use super::*;
use crate::crd::Comparison;
use crate::prometheus::FakePrometheus;
use crate::scout::measured::Board;

const QUERY: &str = "sum by (namespace, deployment) (rate(http_errors_total[1m]))";

fn settings(for_seconds: i64) -> MetricTrigger {
    MetricTrigger {
        query: QUERY.into(),
        comparison: Comparison::GreaterThan,
        threshold: 0.5,
        for_seconds,
        interval_seconds: 30,
        namespace_label: "namespace".into(),
        workload_label: Some("deployment".into()),
        category: None,
        detector: None,
    }
}

fn watched(settings: MetricTrigger, fixed: Option<&str>) -> Watched {
    Watched {
        key: TriggerKey {
            namespace: "shop".into(),
            policy: "errors".into(),
            workload: fixed.map(str::to_string),
            query: settings.query.clone(),
        },
        settings,
        policy_uid: "uid-1".into(),
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("time")
}

fn covers_web(name: &str) -> bool {
    name == "web"
}

/// Evaluates the trigger at `t` seconds and posts its readings to the
/// board, as the loop does.
async fn round(
    p: &FakePrometheus,
    tracker: &mut Tracker,
    board: &Board,
    w: &Watched,
    t: i64,
) -> (Vec<Reading>, Availability) {
    let (readings, availability) = evaluate(Some(p), tracker, w, &covers_web, at(t)).await;
    for r in &readings {
        board.post(r.clone());
    }
    (readings, availability)
}

fn web(value: f64) -> (&'static [(&'static str, &'static str)], f64) {
    (&[("namespace", "shop"), ("deployment", "web")][..], value)
}

#[tokio::test]
async fn a_series_across_the_threshold_fires_only_once_it_lasted_for_seconds() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(settings(60), None);
    p.answer(QUERY, [web(0.9)]);

    let (readings, availability) = round(&p, &mut tracker, &board, &w, 0).await;
    assert_eq!(availability, Availability::Answered { left_out: 0 });
    assert_eq!(readings.len(), 1);
    assert_eq!(
        readings[0].verdict,
        Verdict::Unknown,
        "pending, not trouble"
    );
    assert!(
        readings[0].summary.contains("pending"),
        "{}",
        readings[0].summary
    );
    round(&p, &mut tracker, &board, &w, 30).await;
    assert_eq!(board.firing("shop", "web", SignalKind::Metric), None);

    let (readings, _) = round(&p, &mut tracker, &board, &w, 60).await;
    let signal = board
        .firing("shop", "web", SignalKind::Metric)
        .expect("fires after forSeconds");
    assert_eq!(readings[0].value, Some(0.9));
    assert_eq!(readings[0].threshold, Some(0.5));
    for cited in [
        "Deployment/web",
        "value 0.9 > 0.5 for 60 s",
        QUERY,
        "http://prometheus.test:9090/graph?g0.expr=sum+by+%28namespace",
    ] {
        assert!(
            signal.message.contains(cited),
            "{cited} in {}",
            signal.message
        );
    }
    assert_eq!(
        p.asked().last().map(|(q, t)| (q.as_str(), *t)),
        Some((QUERY, at(60)))
    );
}

#[tokio::test]
async fn a_series_back_within_the_threshold_clears_the_signal_and_restarts_the_wait() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(settings(0), None);
    p.answer(QUERY, [web(0.9)]);
    round(&p, &mut tracker, &board, &w, 0).await;
    assert!(
        board.firing("shop", "web", SignalKind::Metric).is_some(),
        "forSeconds 0: at once"
    );

    p.answer(QUERY, [web(0.1)]);
    let (readings, _) = round(&p, &mut tracker, &board, &w, 30).await;
    assert_eq!(readings[0].verdict, Verdict::Healthy);
    assert!(board.healthy("shop", "web", SignalKind::Metric));

    // The series is gone from the result (a `> 0.5` filter, a scaled-down
    // Deployment): nothing is across, as Prometheus's own rules see it.
    p.answer(QUERY, []);
    let (readings, _) = round(&p, &mut tracker, &board, &w, 60).await;
    assert_eq!(readings[0].verdict, Verdict::Healthy);
    assert!(
        readings[0].summary.contains("no series"),
        "{}",
        readings[0].summary
    );
}

#[tokio::test]
async fn another_namespaces_series_never_opens_an_incident_here() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    p.answer(
        QUERY,
        [(
            &[("namespace", "payments"), ("deployment", "web")][..],
            99.0,
        )],
    );
    let w = watched(settings(0), None);
    let (readings, _) = round(&p, &mut tracker, &board, &w, 0).await;
    assert_eq!(readings, vec![], "payments' web is not shop's web");

    // A fixed workload is judged on its own namespace's series only.
    let mut fixed = settings(0);
    fixed.workload_label = None;
    let w = watched(fixed, Some("web"));
    let (readings, _) = round(&p, &mut tracker, &board, &w, 0).await;
    assert_eq!(readings[0].verdict, Verdict::Healthy);
    assert_eq!(board.firing("shop", "web", SignalKind::Metric), None);
}

#[test]
fn a_series_naming_a_deployment_the_policy_does_not_cover_is_not_judged() {
    let s = settings(0);
    let w = watched(s.clone(), None);
    let samples = [
        Sample {
            labels: [("namespace", "shop"), ("deployment", "db")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            value: 9.0,
        },
        Sample {
            labels: [("namespace", "shop")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            value: 9.0,
        },
    ];
    let sorted = sort(&w.key, &s, &samples, &covers_web);
    assert!(sorted.workloads.is_empty());
    assert_eq!(sorted.uncovered, 2, "an uncovered name and a missing label");
}

#[tokio::test]
async fn prometheus_away_a_refused_query_or_nan_is_unknown_and_never_clears_an_open_incident() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(settings(0), None);
    p.answer(QUERY, [web(0.9)]);
    round(&p, &mut tracker, &board, &w, 0).await;
    let first = board
        .firing("shop", "web", SignalKind::Metric)
        .expect("fires");

    p.set_unreachable(true);
    let (readings, availability) = round(&p, &mut tracker, &board, &w, 30).await;
    assert_eq!(readings[0].verdict, Verdict::Unknown);
    let (status, reason, message) = availability.condition();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, "PrometheusUnavailable")
    );
    assert!(message.contains("connection refused"), "{message}");
    assert!(
        !board.healthy("shop", "web", SignalKind::Metric),
        "not known to be clear"
    );

    p.set_unreachable(false);
    p.refuse(QUERY, "bad_data", "parse error");
    let (readings, availability) = round(&p, &mut tracker, &board, &w, 60).await;
    assert_eq!(readings[0].verdict, Verdict::Unknown);
    assert_eq!(availability.condition().1, "QueryFailed");
    assert!(availability.condition().2.contains("bad_data"));

    p.answer(QUERY, [web(f64::NAN)]);
    let (readings, availability) = round(&p, &mut tracker, &board, &w, 90).await;
    assert_eq!(readings[0].verdict, Verdict::Unknown);
    assert_eq!(availability.condition().1, "NotANumber");
    assert!(!board.healthy("shop", "web", SignalKind::Metric));

    p.answer(QUERY, [web(0.9)]);
    round(&p, &mut tracker, &board, &w, 120).await;
    let again = board
        .firing("shop", "web", SignalKind::Metric)
        .expect("fires");
    assert_eq!(again.key, first.key, "the same episode: nothing cleared it");
}

#[tokio::test]
async fn without_prometheus_the_trigger_is_unknown_and_the_condition_says_it_is_not_configured() {
    let mut tracker = Tracker::default();
    let mut s = settings(0);
    s.workload_label = None;
    let w = watched(s, Some("web"));
    let (readings, availability) = evaluate(None, &mut tracker, &w, &covers_web, at(0)).await;
    assert_eq!(readings[0].verdict, Verdict::Unknown);
    let (status, reason, message) = availability.condition();
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, "PrometheusNotConfigured")
    );
    assert!(message.contains("SRE_SPACE_PROMETHEUS_URL"), "{message}");
}

#[test]
fn only_a_bounded_number_of_series_per_query_is_judged() {
    let s = settings(0);
    let w = watched(s.clone(), None);
    let samples: Vec<Sample> = (0..MAX_METRIC_SERIES + 50)
        .map(|_| Sample {
            labels: [("namespace", "shop"), ("deployment", "web")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            value: 0.1,
        })
        .collect();
    let sorted = sort(&w.key, &s, &samples, &covers_web);
    assert_eq!(sorted.left_out, 50);
    let (status, reason, message) = Availability::Answered { left_out: 50 }.condition();
    assert_eq!((status, reason), (ConditionStatus::True, "SeriesLeftOut"));
    assert!(message.contains("50 series"), "{message}");
}

#[tokio::test]
async fn two_triggers_on_one_workload_fire_when_either_does() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let errors = watched(settings(0), None);
    let mut latency = settings(0);
    latency.query = "histogram_quantile(0.95, latency)".into();
    latency.threshold = 1.0;
    let latency = watched(latency, None);
    p.answer(QUERY, [web(0.9)]);
    p.answer("histogram_quantile(0.95, latency)", [web(0.2)]);
    round(&p, &mut tracker, &board, &errors, 0).await;
    round(&p, &mut tracker, &board, &latency, 5).await;
    assert!(
        board.firing("shop", "web", SignalKind::Metric).is_some(),
        "the healthy latency does not hide the errors"
    );
}

#[test]
fn comparisons_hold_as_promql_writes_them_and_never_for_nan() {
    assert!(Comparison::GreaterThan.holds(2.0, 1.0));
    assert!(!Comparison::GreaterThan.holds(1.0, 1.0));
    assert!(Comparison::GreaterOrEqual.holds(1.0, 1.0));
    assert!(Comparison::LessThan.holds(0.5, 1.0));
    assert!(Comparison::LessOrEqual.holds(1.0, 1.0));
    assert!(Comparison::GreaterThan.holds(f64::INFINITY, 1.0));
    for c in [
        Comparison::GreaterThan,
        Comparison::GreaterOrEqual,
        Comparison::LessThan,
        Comparison::LessOrEqual,
    ] {
        assert!(!c.holds(f64::NAN, 1.0), "{c:?}");
    }
}

#[test]
fn evaluations_are_spread_over_a_tenth_of_the_interval() {
    let s = settings(0);
    for seed in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
        let d = next_delay(&s, seed);
        assert!(
            d >= Duration::from_secs(30) && d <= Duration::from_secs(33),
            "{d:?}"
        );
    }
    let mut old = settings(0);
    old.interval_seconds = 0;
    assert!(
        next_delay(&old, 1) >= Duration::from_secs(5),
        "an older CRD's 0"
    );
}

/// An order-rate trigger: a floor of 0.05 a second held for five minutes,
/// with or without the sequential detector.
fn order_rate(detector: Option<crate::crd::Detector>) -> MetricTrigger {
    MetricTrigger {
        query: "sum by (namespace, deployment) (rate(orders_total[30s]))".into(),
        comparison: Comparison::LessThan,
        threshold: 0.05,
        for_seconds: 300,
        detector,
        ..settings(0)
    }
}

fn sequential() -> crate::crd::Detector {
    crate::crd::Detector {
        kind: crate::crd::DetectorType::Sequential,
        ..crate::crd::Detector::default()
    }
}

/// Evaluates `w` every 30 s from step `from` for `steps` steps at `rate`
/// orders a second; returns the verdicts.
async fn orders(
    p: &FakePrometheus,
    tracker: &mut Tracker,
    board: &Board,
    w: &Watched,
    from: i64,
    steps: i64,
    rate: f64,
) -> Vec<Reading> {
    p.answer(&w.settings.query, [web(rate)]);
    let mut out = Vec::new();
    for i in from..from + steps {
        let (mut readings, _) = round(p, tracker, board, w, i * 30).await;
        out.append(&mut readings);
    }
    out
}

#[tokio::test]
async fn a_sequential_metric_trigger_fires_on_a_halved_rate_at_its_next_evaluation() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(order_rate(Some(sequential())), None);
    // An hour at 4 orders a second: learned, never firing.
    let learned = orders(&p, &mut tracker, &board, &w, 0, 120, 4.0).await;
    assert!(learned.iter().all(|r| r.verdict == Verdict::Healthy));
    let last = learned.last().expect("judged");
    assert!(
        last.summary
            .contains("sequential detector (50% drop): the rate: no drop"),
        "{}",
        last.summary
    );
    // Halved: far above the floor, yet a drop, at the next evaluation.
    let readings = orders(&p, &mut tracker, &board, &w, 120, 1, 2.0).await;
    assert_eq!(
        readings[0].verdict,
        Verdict::Firing,
        "{}",
        readings[0].summary
    );
    let signal = board
        .firing("shop", "web", SignalKind::Metric)
        .expect("the drop fires");
    for cited in ["Deployment/web", ": a drop; 60 observed", "orders_total"] {
        assert!(
            signal.message.contains(cited),
            "{cited} in {}",
            signal.message
        );
    }
    // Back to 4 a second: the alarm clears within a few evaluations.
    let back = orders(&p, &mut tracker, &board, &w, 121, 4, 4.0).await;
    assert_eq!(
        back.last().map(|r| r.verdict),
        Some(Verdict::Healthy),
        "{back:?}"
    );
}

#[tokio::test]
async fn without_the_detector_a_halved_rate_above_the_floor_is_healthy() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(order_rate(None), None);
    orders(&p, &mut tracker, &board, &w, 0, 120, 4.0).await;
    let readings = orders(&p, &mut tracker, &board, &w, 120, 10, 2.0).await;
    assert!(readings.iter().all(|r| r.verdict == Verdict::Healthy));
    // The floor still fires, after its forSeconds, with or without it.
    let readings = orders(&p, &mut tracker, &board, &w, 130, 11, 0.0).await;
    assert_eq!(readings.last().map(|r| r.verdict), Some(Verdict::Firing));
}

#[tokio::test]
async fn a_sequential_metric_trigger_learns_before_it_judges_and_relearns_when_edited() {
    let (p, board, mut tracker) = (
        FakePrometheus::default(),
        Board::default(),
        Tracker::default(),
    );
    let w = watched(order_rate(Some(sequential())), None);
    // A stop before the baseline is learned is not judged by the detector
    // (the floor alone would need five minutes).
    orders(&p, &mut tracker, &board, &w, 0, 2, 4.0).await;
    let readings = orders(&p, &mut tracker, &board, &w, 2, 1, 0.0).await;
    assert_ne!(
        readings[0].verdict,
        Verdict::Firing,
        "{}",
        readings[0].summary
    );
    assert!(
        readings[0].summary.contains("not judged yet"),
        "{}",
        readings[0].summary
    );
    // Learned, then the policy asks for fewer false alarms: a new detector,
    // learning again.
    orders(&p, &mut tracker, &board, &w, 3, 120, 4.0).await;
    let stricter = watched(
        order_rate(Some(crate::crd::Detector {
            false_alarms_per_day: 0.1,
            ..sequential()
        })),
        None,
    );
    let readings = orders(&p, &mut tracker, &board, &stricter, 123, 1, 4.0).await;
    assert!(
        readings[0].summary.contains("not judged yet"),
        "{}",
        readings[0].summary
    );
}
