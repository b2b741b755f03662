//! What the traces say about an incident: per operation, how many spans
//! failed and how slow they were in the incident window and in a baseline
//! window before it; and the culprit, the operation where the failures start
//! (an error span none of whose children failed) or where the time goes (the
//! slowest span's own time), with the services a request passed through to
//! reach it. Pure: the traces are passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::traces::{Span, Trace};

/// At most this many operations are kept in the findings.
const MAX_OPERATIONS: usize = 20;
/// At most this many trace IDs are cited.
const MAX_CITED: usize = 5;
/// Without errors, a latency culprit is reported for a non-latency signal
/// only when its operation's p95 is at least this many times the baseline's.
const LATENCY_RISE: f64 = 2.0;

/// Which symptom the culprit is looked for by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Symptom {
    /// Spans with an error status.
    Errors,
    /// Spans slower than usual.
    Latency,
}

/// Spans of one operation in one window.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    pub spans: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl WindowStats {
    /// Statistics of the spans' error flags and durations.
    pub fn of<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Self {
        let mut durations = Vec::new();
        let mut errors = 0;
        for s in spans {
            durations.push(s.duration_us);
            errors += u64::from(s.error);
        }
        durations.sort_unstable();
        Self {
            spans: durations.len() as u64,
            errors,
            p50_ms: percentile_ms(&durations, 0.50),
            p95_ms: percentile_ms(&durations, 0.95),
        }
    }

    /// The share of spans with an error status; 0 without spans.
    pub fn error_ratio(&self) -> f64 {
        if self.spans == 0 {
            0.0
        } else {
            self.errors as f64 / self.spans as f64
        }
    }
}

/// The nearest-rank percentile of sorted microsecond durations, in
/// milliseconds.
fn percentile_ms(sorted_us: &[i64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

/// One operation of one service, in the incident window and the baseline.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperationStats {
    pub service: String,
    pub operation: String,
    pub window: WindowStats,
    /// None when the operation had no span in the baseline.
    pub baseline: Option<WindowStats>,
}

/// Where the trouble starts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Culprit {
    pub symptom: Symptom,
    pub service: String,
    pub operation: String,
    /// The operation's spans in the incident window.
    pub window: WindowStats,
    /// The operation's spans in the baseline, if it had any.
    pub baseline: Option<WindowStats>,
    /// In how many traces of the window the trouble started here.
    pub traces: usize,
    /// Latency: the 95th percentile of the span's own time (its duration
    /// less its children's), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_p95_ms: Option<f64>,
    /// The services a request passed through, from the entry to the
    /// culprit, e.g. `frontend → policy-service → user-service`.
    pub chain: Vec<String>,
    /// Traces that show it.
    pub trace_ids: Vec<String>,
}

/// What the Brain learnt from the traces.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceFindings {
    /// Why there is no trace evidence (no trace store configured, the store
    /// unreachable, no spans), when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The service the incident's workload is known by in the traces.
    pub service: String,
    /// Traces read for the incident window and for the baseline.
    pub window_traces: usize,
    pub baseline_traces: usize,
    /// The operations seen, the most failing first.
    pub operations: Vec<OperationStats>,
    pub culprit: Option<Culprit>,
}

impl TraceFindings {
    /// Findings that say why there are none.
    pub fn unavailable(service: &str, why: impl Into<String>) -> Self {
        Self {
            unavailable: Some(why.into()),
            service: service.to_string(),
            ..Self::default()
        }
    }

    /// Removes secrets from the text the traces carry: operation names are
    /// whatever the instrumented code put there (a URL with a token, say).
    pub fn redact(&mut self) {
        use crate::redact::in_place;
        if let Some(u) = &mut self.unavailable {
            in_place(u);
        }
        for o in &mut self.operations {
            in_place(&mut o.operation);
        }
        if let Some(c) = &mut self.culprit {
            in_place(&mut c.operation);
        }
    }

    /// The target service's own spans in the window, all operations
    /// together.
    pub fn target_stats(&self) -> Option<WindowStats> {
        let ops: Vec<&OperationStats> = self
            .operations
            .iter()
            .filter(|o| o.service == self.service)
            .collect();
        if ops.is_empty() {
            return None;
        }
        Some(WindowStats {
            spans: ops.iter().map(|o| o.window.spans).sum(),
            errors: ops.iter().map(|o| o.window.errors).sum(),
            p50_ms: ops.iter().map(|o| o.window.p50_ms).fold(0.0, f64::max),
            p95_ms: ops.iter().map(|o| o.window.p95_ms).fold(0.0, f64::max),
        })
    }
}

type OpKey = (String, String);

fn per_operation<'a>(
    traces: impl IntoIterator<Item = &'a Trace>,
) -> BTreeMap<OpKey, Vec<&'a Span>> {
    let mut ops: BTreeMap<OpKey, Vec<&Span>> = BTreeMap::new();
    for t in traces {
        for s in &t.spans {
            ops.entry((s.service.clone(), s.operation.clone()))
                .or_default()
                .push(s);
        }
    }
    ops
}

/// The spans of one trace, indexed for walking up and down.
struct Tree<'a> {
    by_id: HashMap<&'a str, &'a Span>,
    children: HashMap<&'a str, Vec<&'a Span>>,
}

impl<'a> Tree<'a> {
    fn new(trace: &'a Trace) -> Self {
        let by_id: HashMap<&str, &Span> = trace
            .spans
            .iter()
            .map(|s| (s.span_id.as_str(), s))
            .collect();
        let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
        for s in &trace.spans {
            if let Some(p) = s.parent_id.as_deref().filter(|p| by_id.contains_key(p)) {
                children.entry(p).or_default().push(s);
            }
        }
        Self { by_id, children }
    }

    fn children(&self, span: &Span) -> &[&'a Span] {
        self.children
            .get(span.span_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The services from the trace's entry down to `span`, each once per
    /// hop (consecutive spans of one service count once).
    fn chain(&self, span: &'a Span) -> Vec<String> {
        let mut services: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut current = Some(span);
        // A malformed trace may loop; each span is visited once.
        while let Some(s) = current {
            if !seen.insert(s.span_id.as_str()) {
                break;
            }
            if services.last() != Some(&s.service) {
                services.push(s.service.clone());
            }
            current = s
                .parent_id
                .as_deref()
                .and_then(|p| self.by_id.get(p).copied());
        }
        services.reverse();
        services
    }

    /// A span's own time: its duration less the time its children took.
    fn self_time_us(&self, span: &Span) -> i64 {
        let children: i64 = self.children(span).iter().map(|c| c.duration_us).sum();
        (span.duration_us - children).max(0)
    }
}

/// Spans of one operation where the trouble was found, across traces.
#[derive(Default)]
struct Tally {
    traces: usize,
    ids: Vec<String>,
    chains: BTreeMap<Vec<String>, usize>,
    self_times: Vec<i64>,
}

impl Tally {
    fn count(&mut self, trace: &Trace, chain: Vec<String>, self_time: i64) {
        self.traces += 1;
        if self.ids.len() < MAX_CITED && !self.ids.contains(&trace.trace_id) {
            self.ids.push(trace.trace_id.clone());
        }
        *self.chains.entry(chain).or_default() += 1;
        self.self_times.push(self_time);
    }

    /// The most common chain, the longest among equals.
    fn chain(&self) -> Vec<String> {
        self.chains
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(a.0.len().cmp(&b.0.len())))
            .map(|(c, _)| c.clone())
            .unwrap_or_default()
    }
}

/// Where the failures start: error spans none of whose children failed,
/// tallied per operation.
fn error_origins(traces: &[&Trace]) -> BTreeMap<OpKey, Tally> {
    let mut tallies: BTreeMap<OpKey, Tally> = BTreeMap::new();
    for trace in traces {
        let tree = Tree::new(trace);
        for s in trace.spans.iter().filter(|s| s.error) {
            if tree.children(s).iter().any(|c| c.error) {
                continue;
            }
            tallies
                .entry((s.service.clone(), s.operation.clone()))
                .or_default()
                .count(trace, tree.chain(s), tree.self_time_us(s));
        }
    }
    tallies
}

/// Where the time goes: in each trace, the span with the largest own time.
fn slowest_spans(traces: &[&Trace]) -> BTreeMap<OpKey, Tally> {
    let mut tallies: BTreeMap<OpKey, Tally> = BTreeMap::new();
    for trace in traces {
        let tree = Tree::new(trace);
        let slowest = trace
            .spans
            .iter()
            .map(|s| (tree.self_time_us(s), s))
            .max_by_key(|(t, _)| *t);
        if let Some((self_time, s)) = slowest {
            tallies
                .entry((s.service.clone(), s.operation.clone()))
                .or_default()
                .count(trace, tree.chain(s), self_time);
        }
    }
    tallies
}

/// The operation found most often, then with the most own time, then by
/// name (so the answer does not depend on map order).
fn leading(tallies: BTreeMap<OpKey, Tally>) -> Option<(OpKey, Tally)> {
    tallies.into_iter().max_by(|a, b| {
        let total = |t: &Tally| t.self_times.iter().sum::<i64>();
        a.1.traces
            .cmp(&b.1.traces)
            .then(a.1.chain().len().cmp(&b.1.chain().len()))
            .then(total(&a.1).cmp(&total(&b.1)))
            .then(b.0.cmp(&a.0))
    })
}

/// Compares the incident window's traces with the baseline's for `service`
/// and finds the culprit, by `symptom` first.
pub fn analyze(
    service: &str,
    window: &[Trace],
    baseline: &[Trace],
    symptom: Symptom,
) -> TraceFindings {
    let window_ops = per_operation(window);
    let baseline_ops = per_operation(baseline);
    if window_ops.is_empty() {
        return TraceFindings {
            window_traces: window.len(),
            baseline_traces: baseline.len(),
            ..TraceFindings::unavailable(
                service,
                format!("no spans of {service} in the incident window"),
            )
        };
    }
    let stats = |key: &OpKey| -> (WindowStats, Option<WindowStats>) {
        (
            window_ops
                .get(key)
                .map(|s| WindowStats::of(s.iter().copied()))
                .unwrap_or_default(),
            baseline_ops
                .get(key)
                .map(|s| WindowStats::of(s.iter().copied())),
        )
    };
    let mut operations: Vec<OperationStats> = window_ops
        .keys()
        .map(|key| {
            let (window, baseline) = stats(key);
            OperationStats {
                service: key.0.clone(),
                operation: key.1.clone(),
                window,
                baseline,
            }
        })
        .collect();
    operations.sort_by(|a, b| {
        b.window
            .errors
            .cmp(&a.window.errors)
            .then(b.window.spans.cmp(&a.window.spans))
    });
    operations.truncate(MAX_OPERATIONS);

    // Traces through the target say what its callers saw; the others (a
    // callee's own traffic) only fill in the statistics.
    let through: Vec<&Trace> = window
        .iter()
        .filter(|t| t.spans.iter().any(|s| s.service == service))
        .collect();
    let traces: Vec<&Trace> = if through.is_empty() {
        window.iter().collect()
    } else {
        through
    };
    let culprit_of = |symptom: Symptom, (key, tally): (OpKey, Tally)| {
        let (window, baseline) = stats(&key);
        let mut self_times = tally.self_times.clone();
        self_times.sort_unstable();
        Culprit {
            symptom,
            chain: tally.chain(),
            service: key.0,
            operation: key.1,
            window,
            baseline,
            traces: tally.traces,
            self_p95_ms: (symptom == Symptom::Latency).then(|| percentile_ms(&self_times, 0.95)),
            trace_ids: tally.ids,
        }
    };
    let by_errors = || leading(error_origins(&traces)).map(|l| culprit_of(Symptom::Errors, l));
    let by_latency = || leading(slowest_spans(&traces)).map(|l| culprit_of(Symptom::Latency, l));
    let culprit = match symptom {
        Symptom::Latency => by_latency(),
        Symptom::Errors => by_errors().or_else(|| {
            by_latency().filter(|c| {
                c.baseline
                    .as_ref()
                    .is_some_and(|b| b.p95_ms > 0.0 && c.window.p95_ms >= LATENCY_RISE * b.p95_ms)
            })
        }),
    };
    TraceFindings {
        unavailable: None,
        service: service.to_string(),
        window_traces: window.len(),
        baseline_traces: baseline.len(),
        operations,
        culprit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span: (id, parent, service, operation, duration ms, error).
    fn span(id: &str, parent: Option<&str>, service: &str, op: &str, ms: i64, error: bool) -> Span {
        Span {
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            service: service.into(),
            operation: op.into(),
            start_us: 1_000_000,
            duration_us: ms * 1000,
            error,
        }
    }

    /// frontend GET /quote → policy-service quote → user-service
    /// check_eligibility (→ a database call), failing at user-service when
    /// `fail`, the error propagating up to the entry.
    fn request(id: &str, fail: bool, user_ms: i64) -> Trace {
        Trace {
            trace_id: id.into(),
            spans: vec![
                span("a", None, "frontend", "GET /quote", user_ms + 20, fail),
                span(
                    "b",
                    Some("a"),
                    "policy-service",
                    "quote",
                    user_ms + 10,
                    fail,
                ),
                span(
                    "c",
                    Some("b"),
                    "policy-service",
                    "call user-service",
                    user_ms + 8,
                    fail,
                ),
                span(
                    "d",
                    Some("c"),
                    "user-service",
                    "check_eligibility",
                    user_ms,
                    fail,
                ),
                span("e", Some("d"), "user-service", "SELECT users", 1, false),
            ],
        }
    }

    fn traffic(prefix: &str, n: usize, failing: usize, user_ms: i64) -> Vec<Trace> {
        (0..n)
            .map(|i| request(&format!("{prefix}{i}"), i < failing, user_ms))
            .collect()
    }

    #[test]
    fn the_deepest_failing_span_two_hops_away_is_the_culprit_with_its_chain() {
        let window = traffic("w", 10, 6, 5);
        let baseline = traffic("b", 20, 1, 5);
        let f = analyze("policy-service", &window, &baseline, Symptom::Errors);
        let c = f.culprit.expect("a culprit");
        assert_eq!(
            (c.service.as_str(), c.operation.as_str()),
            ("user-service", "check_eligibility")
        );
        assert_eq!(c.symptom, Symptom::Errors);
        assert_eq!(c.chain, ["frontend", "policy-service", "user-service"]);
        assert_eq!((c.window.errors, c.window.spans), (6, 10));
        assert_eq!(c.traces, 6);
        let b = c.baseline.expect("baseline spans");
        assert!(
            (b.error_ratio() - 0.05).abs() < 1e-9,
            "1 of 20 in the baseline"
        );
        assert_eq!(
            c.trace_ids,
            ["w0", "w1", "w2", "w3", "w4"],
            "failing traces, bounded"
        );
        assert_eq!(f.operations[0].window.errors, 6, "the most failing first");
    }

    #[test]
    fn a_failure_in_the_target_itself_is_found_there() {
        let mut window = traffic("w", 4, 0, 5);
        for t in &mut window {
            for s in &mut t.spans {
                // policy-service fails after user-service answered fine.
                s.error = s.span_id == "a" || s.span_id == "b";
            }
        }
        let f = analyze("policy-service", &window, &[], Symptom::Errors);
        let c = f.culprit.expect("a culprit");
        assert_eq!(
            (c.service.as_str(), c.operation.as_str()),
            ("policy-service", "quote")
        );
        assert_eq!(c.chain, ["frontend", "policy-service"]);
        assert_eq!(c.baseline, None);
    }

    #[test]
    fn latency_culprit_is_the_span_with_the_most_own_time() {
        let window = traffic("w", 10, 0, 900);
        let baseline = traffic("b", 10, 0, 5);
        let f = analyze("policy-service", &window, &baseline, Symptom::Latency);
        let c = f.culprit.expect("a culprit");
        assert_eq!(c.symptom, Symptom::Latency);
        assert_eq!(
            (c.service.as_str(), c.operation.as_str()),
            ("user-service", "check_eligibility")
        );
        assert_eq!(
            c.self_p95_ms,
            Some(899.0),
            "900 ms less its 1 ms database call"
        );
        assert_eq!(c.window.p95_ms, 900.0);
        assert_eq!(c.baseline.expect("baseline").p95_ms, 5.0);
        assert_eq!(c.chain, ["frontend", "policy-service", "user-service"]);
    }

    #[test]
    fn without_errors_a_latency_rise_is_still_named_and_steady_latency_is_not() {
        let baseline = traffic("b", 10, 0, 5);
        let slow = analyze(
            "policy-service",
            &traffic("w", 10, 0, 900),
            &baseline,
            Symptom::Errors,
        );
        assert_eq!(slow.culprit.map(|c| c.symptom), Some(Symptom::Latency));
        let steady = analyze(
            "policy-service",
            &traffic("w", 10, 0, 5),
            &baseline,
            Symptom::Errors,
        );
        assert_eq!(
            steady.culprit, None,
            "nothing failed and nothing got slower"
        );
        assert_eq!(steady.unavailable, None);
        let stats = steady.target_stats().expect("the target's spans");
        assert_eq!((stats.spans, stats.errors), (20, 0));
    }

    #[test]
    fn no_spans_says_so_instead_of_naming_a_culprit() {
        let f = analyze(
            "policy-service",
            &[],
            &traffic("b", 3, 0, 5),
            Symptom::Errors,
        );
        assert_eq!(f.culprit, None);
        assert_eq!(f.baseline_traces, 3);
        assert!(
            f.unavailable
                .as_deref()
                .is_some_and(|u| u.contains("no spans of policy-service")),
            "{f:?}"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let spans: Vec<Span> = (1..=100)
            .map(|ms| span("x", None, "s", "op", ms, ms > 90))
            .collect();
        let s = WindowStats::of(&spans);
        assert_eq!((s.p50_ms, s.p95_ms), (50.0, 95.0));
        assert!((s.error_ratio() - 0.1).abs() < 1e-9);
        assert_eq!(WindowStats::default().error_ratio(), 0.0);
    }

    #[test]
    fn a_trace_whose_parents_loop_does_not_hang() {
        let t = Trace {
            trace_id: "loop".into(),
            spans: vec![
                span("a", Some("b"), "x", "one", 5, true),
                span("b", Some("a"), "y", "two", 5, false),
            ],
        };
        let f = analyze("x", &[t], &[], Symptom::Errors);
        assert_eq!(f.culprit.map(|c| c.operation), Some("one".into()));
    }
}
