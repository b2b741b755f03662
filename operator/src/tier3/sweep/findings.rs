//! The pure core of the sweep: which problems (fingerprints) in the
//! history are architectural, by which rule, and what their history says:
//! occurrences, the actions taken and how long each held, the MTTR, and the
//! class of fix the evidence points at, if any.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{ActionType, Category, IncidentMemory, Outcome, SignalKind, WorkloadRef};

/// The rules' thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Recurring: at least this many occurrences within the window.
    pub recurrences: i64,
    /// The window every rule looks at, in seconds, ending now.
    pub window_seconds: i64,
    /// ShortHold: a mitigation that held less than this, in seconds, before
    /// the problem returned.
    pub min_held_seconds: i64,
    /// SameFix: one action applied more than this many times.
    pub max_same_fix: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            recurrences: 3,
            window_seconds: 168 * 3600,
            min_held_seconds: 3600,
            max_same_fix: 3,
        }
    }
}

/// Why a problem is architectural.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// It came back at least N times within the window.
    Recurring,
    /// A mitigation held less than the threshold before it returned.
    ShortHold,
    /// The same fix was applied more than M times.
    SameFix,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recurring => "Recurring",
            Self::ShortHold => "ShortHold",
            Self::SameFix => "SameFix",
        }
    }
}

/// The class of architectural fix the history points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixClass {
    /// Out of memory again and again; more memory and restarts do not hold.
    MemoryLeak,
    /// A slow or failing dependency, or latency without load: calls need a
    /// timeout and a circuit breaker.
    CircuitBreakerOrTimeout,
    /// Error bursts that return soon after each recovery: retries without
    /// backoff pile up on the recovering service.
    RetryStorm,
    /// Latency that scaling out relieves for a while: load a cache would
    /// absorb.
    Cache,
}

impl FixClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemoryLeak => "MemoryLeak",
            Self::CircuitBreakerOrTimeout => "CircuitBreakerOrTimeout",
            Self::RetryStorm => "RetryStorm",
            Self::Cache => "Cache",
        }
    }

    /// What to look for, in a sentence.
    pub fn advice(self) -> &'static str {
        match self {
            Self::MemoryLeak => {
                "a memory leak: memory grows until the limit; raising the limit or restarting only resets the clock. Profile the heap and bound caches, buffers and queues."
            }
            Self::CircuitBreakerOrTimeout => {
                "a missing circuit breaker or timeout: calls to a slow or failing dependency hang or fail through. Give each outbound call a deadline and a circuit breaker with a fallback."
            }
            Self::RetryStorm => {
                "a retry storm: errors come back in bursts soon after each recovery. Retry with exponential backoff and jitter, cap the retries, and shed load while recovering."
            }
            Self::Cache => {
                "a missing cache: latency follows load and scaling out only helps for a while. Cache what is read often, or move the expensive work off the request path."
            }
        }
    }
}

/// One occurrence as the brief shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Occurrence {
    pub incident: String,
    pub detected_at: Timestamp,
    pub category: Option<Category>,
    pub actions: Vec<ActionType>,
    pub outcome: Option<Outcome>,
    /// Detection to mitigation, in seconds, when it was mitigated.
    pub time_to_mitigate_seconds: Option<i64>,
    /// From this occurrence's mitigation to the next detection, in
    /// seconds; None when it was not mitigated or did not return.
    pub held_seconds: Option<i64>,
}

/// How one action fared in the window.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionHistory {
    pub action: ActionType,
    /// Occurrences it was applied in.
    pub applied: i64,
    /// How long the mitigations it was part of held before the problem
    /// returned, in seconds, oldest first.
    pub held_seconds: Vec<i64>,
}

/// An architectural problem: one fingerprint, the rules it met, and its
/// history within the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub namespace: String,
    /// The IncidentMemory's name.
    pub memory: String,
    pub fingerprint: String,
    pub target: WorkloadRef,
    pub signal: SignalKind,
    /// The category most occurrences were diagnosed as (the latest's on a
    /// tie).
    pub category: Option<Category>,
    /// The rules met, each with the sentence that says why.
    pub rules: Vec<(Rule, String)>,
    /// The occurrences within the window, oldest first.
    pub history: Vec<Occurrence>,
    pub actions: Vec<ActionHistory>,
    /// The mean time to mitigate over the mitigated occurrences, seconds.
    pub mttr_seconds: Option<i64>,
    /// The class of fix suggested, with why; None when nothing fits.
    pub fix_class: Option<(FixClass, String)>,
    /// The latest occurrence's Incident.
    pub latest_incident: String,
}

impl Finding {
    /// The rules as the status lists them: `Recurring,ShortHold`.
    pub fn rule_names(&self) -> String {
        self.rules
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A line that changes when the finding does (its rules, occurrences or
    /// class), not when only the clock moves.
    pub fn summary(&self) -> String {
        format!(
            "{} occurrence(s); rules: {}; class: {}",
            self.history.len(),
            self.rule_names(),
            self.fix_class
                .as_ref()
                .map(|(c, _)| c.as_str())
                .unwrap_or("none")
        )
    }
}

/// The architectural problems among `memories` at `now`, ordered by
/// namespace and memory name.
pub fn findings(memories: &[IncidentMemory], t: &Thresholds, now: Timestamp) -> Vec<Finding> {
    let mut out: Vec<Finding> = memories.iter().filter_map(|m| finding(m, t, now)).collect();
    out.sort_by(|a, b| (&a.namespace, &a.memory).cmp(&(&b.namespace, &b.memory)));
    out
}

fn finding(memory: &IncidentMemory, t: &Thresholds, now: Timestamp) -> Option<Finding> {
    let start = shift(now, t.window_seconds.saturating_neg());
    let mut all: Vec<_> = memory.spec.occurrences.iter().collect();
    all.sort_by_key(|o| o.detected_at.0);
    let history: Vec<Occurrence> = all
        .iter()
        .enumerate()
        .filter(|(_, o)| o.detected_at.0 >= start && o.detected_at.0 <= now)
        .map(|(i, o)| {
            let ttm = o
                .time_to_mitigate_seconds
                .filter(|_| o.outcome == Some(Outcome::Effective));
            let held = ttm.and_then(|ttm| {
                let next = all.get(i.saturating_add(1))?;
                let mitigated = shift(o.detected_at.0, ttm);
                Some(seconds_between(mitigated, next.detected_at.0))
            });
            Occurrence {
                incident: o.incident.clone(),
                detected_at: o.detected_at.0,
                category: o.category,
                actions: o.actions.clone(),
                outcome: o.outcome,
                time_to_mitigate_seconds: o.time_to_mitigate_seconds,
                held_seconds: held,
            }
        })
        .collect();
    let latest = history.last()?;
    let actions = action_history(&history);
    let window_hours = t.window_seconds / 3600;

    let mut rules = Vec::new();
    let count = history.len() as i64;
    if count >= t.recurrences {
        rules.push((
            Rule::Recurring,
            format!(
                "{count} occurrences within {window_hours} h (the threshold is {})",
                t.recurrences
            ),
        ));
    }
    let short: Vec<i64> = history
        .iter()
        .filter_map(|o| o.held_seconds)
        .filter(|h| *h < t.min_held_seconds)
        .collect();
    if let Some(shortest) = short.iter().min() {
        rules.push((
            Rule::ShortHold,
            format!(
                "{} mitigation(s) held less than {} before the problem returned (the shortest {})",
                short.len(),
                duration(t.min_held_seconds),
                duration(*shortest)
            ),
        ));
    }
    let repeated: Vec<String> = actions
        .iter()
        .filter(|a| a.applied > t.max_same_fix)
        .map(|a| format!("{} {} times", a.action.as_str(), a.applied))
        .collect();
    if !repeated.is_empty() {
        rules.push((
            Rule::SameFix,
            format!(
                "applied more than {} times within {window_hours} h: {}",
                t.max_same_fix,
                repeated.join(", ")
            ),
        ));
    }
    if rules.is_empty() {
        return None;
    }

    let mitigated: Vec<i64> = history
        .iter()
        .filter(|o| o.outcome == Some(Outcome::Effective))
        .filter_map(|o| o.time_to_mitigate_seconds)
        .collect();
    let mttr_seconds = (!mitigated.is_empty())
        .then(|| mitigated.iter().fold(0i64, |s, v| s.saturating_add(*v)) / mitigated.len() as i64);
    let category = main_category(&history);
    let fix_class = fix_class(
        category,
        memory.spec.signal,
        &history,
        &actions,
        !short.is_empty(),
    );
    Some(Finding {
        namespace: memory.metadata.namespace.clone().unwrap_or_default(),
        memory: memory.metadata.name.clone().unwrap_or_default(),
        fingerprint: memory.spec.fingerprint.clone(),
        target: memory.spec.target.clone(),
        signal: memory.spec.signal,
        category,
        latest_incident: latest.incident.clone(),
        rules,
        actions,
        mttr_seconds,
        fix_class,
        history,
    })
}

/// `t` moved by `secs` seconds (any length, unlike `limits::after`),
/// saturating at the ends of time.
pub fn shift(t: Timestamp, secs: i64) -> Timestamp {
    let d = k8s_openapi::jiff::SignedDuration::from_secs(secs);
    t.checked_add(d).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second().saturating_sub(from.as_second())
}

/// Each action applied in the window (Escalate is not a fix), in the order
/// first applied, with how long the mitigations it was part of held.
fn action_history(history: &[Occurrence]) -> Vec<ActionHistory> {
    let mut out: Vec<ActionHistory> = Vec::new();
    for o in history {
        let mut seen = Vec::new();
        for a in o.actions.iter().filter(|a| **a != ActionType::Escalate) {
            if seen.contains(a) {
                continue;
            }
            seen.push(*a);
            let i = match out.iter().position(|h| h.action == *a) {
                Some(i) => i,
                None => {
                    out.push(ActionHistory {
                        action: *a,
                        applied: 0,
                        held_seconds: vec![],
                    });
                    out.len() - 1
                }
            };
            out[i].applied = out[i].applied.saturating_add(1);
            if let Some(h) = o.held_seconds {
                out[i].held_seconds.push(h);
            }
        }
    }
    out
}

/// The category most occurrences share; the latest's on a tie.
fn main_category(history: &[Occurrence]) -> Option<Category> {
    let mut counts: BTreeMap<String, (usize, usize, Category)> = BTreeMap::new();
    for (i, o) in history.iter().enumerate() {
        if let Some(c) = o.category {
            let e = counts.entry(format!("{c:?}")).or_insert((0, i, c));
            e.0 += 1;
            e.1 = i;
        }
    }
    counts
        .into_values()
        .max_by_key(|(n, last, _)| (*n, *last))
        .map(|(_, _, c)| c)
}

/// The class of fix the category and the evidence point at; None when
/// nothing fits (the brief then says so rather than guess).
fn fix_class(
    category: Option<Category>,
    signal: SignalKind,
    history: &[Occurrence],
    actions: &[ActionHistory],
    short_holds: bool,
) -> Option<(FixClass, String)> {
    let applied = |a: ActionType| actions.iter().any(|h| h.action == a);
    let resets = [
        ActionType::RaiseMemoryLimit,
        ActionType::RestartPod,
        ActionType::RolloutRestart,
    ];
    let oom = category == Some(Category::OutOfMemory) || signal == SignalKind::OOMKilled;
    match category {
        _ if oom && resets.into_iter().any(applied) => Some((
            FixClass::MemoryLeak,
            format!(
                "out of memory {} times; {} did not hold",
                history.len(),
                resets
                    .into_iter()
                    .filter(|a| applied(*a))
                    .map(ActionType::as_str)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
        Some(Category::Dependency) => Some((
            FixClass::CircuitBreakerOrTimeout,
            "diagnosed as a slow or failing dependency".into(),
        )),
        Some(Category::Latency) if applied(ActionType::Scale) => Some((
            FixClass::Cache,
            "latency that scaling out relieved only for a while".into(),
        )),
        Some(Category::Latency) => Some((
            FixClass::CircuitBreakerOrTimeout,
            "latency that scaling did not address".into(),
        )),
        Some(Category::ErrorRate) if short_holds => Some((
            FixClass::RetryStorm,
            "error bursts that returned soon after each recovery".into(),
        )),
        _ => None,
    }
}

/// Seconds as people read them: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests;
