//! The sequential change detector for business triggers and Metric
//! triggers, as a policy configures it. The statistics live in the `sre-space-detect` crate
//! (pure, no I/O, no clock); this module turns a trigger's `detector`
//! into the detector's settings, and one second's evidence into the words
//! a reading's summary carries.
//!
//! Hook for the Kafka source: keep one [`Sequential`] per (policy, trigger,
//! workload), built with [`conversion_settings`] or [`event_rate_settings`]
//! when [`sequential`] says the trigger selects it, feed it each confirmed
//! second (`observe(second, purchases, quotes as f64)` for a ratio,
//! `observe(second, events, 1.0)` for a rate), and summarise with
//! [`summary`]. The Metric source keeps one per (trigger, workload), built
//! with [`metric_settings`], and feeds it each evaluation as one step of
//! the trigger's interval.

pub use sre_space_detect::{Evidence, Measure, Sequential, Settings, State, Threshold};

use crate::crd::{ConversionTrigger, Detector, DetectorType, EventRateTrigger, MetricTrigger};

/// The detector a trigger selects, when it selects the sequential one.
pub fn sequential(detector: Option<&Detector>) -> Option<&Detector> {
    detector.filter(|d| d.kind == DetectorType::Sequential)
}

fn settings(d: &Detector, min_drop_fraction: f64, min_baseline_events: i64) -> Settings {
    Settings {
        measure: Measure::Rate,
        min_drop_fraction: d.min_drop_fraction.unwrap_or(min_drop_fraction),
        false_alarms_per_day: d.false_alarms_per_day,
        half_life_seconds: d
            .half_life_seconds
            .clamp(10, crate::limits::MAX_BASELINE_SECONDS) as f64,
        min_baseline_events: min_baseline_events.max(1) as f64,
        step_seconds: 1.0,
        threshold: Threshold::Calibrated,
    }
}

/// The events a Metric trigger's baseline must hold before it is judged.
pub const METRIC_MIN_BASELINE_EVENTS: i64 = 20;

/// A Metric trigger's detector settings: each evaluation is one step of
/// `intervalSeconds`, its value a per-second rate; a drop of half unless
/// the policy says otherwise.
pub fn metric_settings(t: &MetricTrigger, d: &Detector) -> Settings {
    Settings {
        step_seconds: t
            .interval_seconds
            .clamp(5, crate::limits::MAX_WINDOW_SECONDS) as f64,
        ..settings(d, 0.5, METRIC_MIN_BASELINE_EVENTS)
    }
}

/// A ConversionRate trigger's detector settings: completions per start
/// (binomial given the starts), a drop of half the conversion unless the
/// policy says otherwise, and no judgement until the baseline holds
/// `minEvents` completions.
pub fn conversion_settings(t: &ConversionTrigger, d: &Detector) -> Settings {
    Settings {
        measure: Measure::Ratio,
        ..settings(d, 0.5, t.min_events)
    }
}

/// An EventRateDrop trigger's detector settings: the drop that takes the
/// rate below `minFraction` of its baseline unless the policy says
/// otherwise, and no judgement until the baseline holds
/// `minBaselineEvents` events.
pub fn event_rate_settings(t: &EventRateTrigger, d: &Detector) -> Settings {
    let drop = if t.min_fraction.is_finite() {
        1.0 - t.min_fraction
    } else {
        0.5
    };
    settings(d, drop, t.min_baseline_events)
}

/// One second's evidence in words, for a reading's summary: which rule
/// judged, the baseline, what was observed, the CUSUM against its
/// threshold and, when there is evidence, the second it began.
pub fn summary(what: &str, e: &Evidence) -> String {
    let rule = format!(
        "sequential detector ({:.0}% drop): {what}",
        e.drop_fraction * 100.0
    );
    match e.state {
        State::Learning => format!(
            "{rule}: not judged yet, the baseline holds {:.0} events",
            e.baseline_events
        ),
        State::Healthy | State::Firing => {
            let verdict = if e.state == State::Firing {
                "a drop"
            } else {
                "no drop"
            };
            let since = e
                .change_second
                .map(|s| format!(", evidence since second {s}"))
                .unwrap_or_default();
            // Counts more variable than the model weigh less: say so, so
            // that a slow alarm on a batching producer explains itself.
            let spread = if e.dispersion > 1.0 {
                format!(
                    ", counts {:.1}x as variable as independent arrivals",
                    e.dispersion
                )
            } else {
                String::new()
            };
            format!(
                "{rule}: {verdict}; {} observed against {:.2} expected (baseline {:.3}), CUSUM {:.1} of threshold {:.1}{spread}{since}",
                e.observed, e.expected, e.baseline, e.statistic, e.threshold
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> EventRateTrigger {
        EventRateTrigger {
            topic: "quote_requested".into(),
            min_fraction: 0.3,
            window_seconds: 30,
            baseline_seconds: 300,
            min_baseline_events: 50,
            detector: None,
        }
    }

    #[test]
    fn a_trigger_without_a_detector_keeps_its_fixed_window() {
        assert!(sequential(None).is_none());
        assert!(sequential(Some(&Detector::default())).is_none());
        let d = Detector {
            kind: DetectorType::Sequential,
            ..Detector::default()
        };
        assert!(sequential(Some(&d)).is_some());
    }

    #[test]
    fn the_drop_size_defaults_from_the_trigger_and_the_policy_can_override_it() {
        let d = Detector {
            kind: DetectorType::Sequential,
            ..Detector::default()
        };
        let s = event_rate_settings(&trigger(), &d);
        assert!((s.min_drop_fraction - 0.7).abs() < 1e-12);
        assert_eq!(s.min_baseline_events, 50.0);
        assert_eq!(s.half_life_seconds, 300.0);
        let d = Detector {
            min_drop_fraction: Some(0.25),
            false_alarms_per_day: 10.0,
            ..d
        };
        let s = event_rate_settings(&trigger(), &d);
        assert_eq!((s.min_drop_fraction, s.false_alarms_per_day), (0.25, 10.0));
    }

    #[test]
    fn the_summary_names_the_rule_and_its_evidence() {
        let mut det = Sequential::new(event_rate_settings(
            &trigger(),
            &Detector {
                kind: DetectorType::Sequential,
                min_drop_fraction: Some(0.5),
                ..Detector::default()
            },
        ));
        let mut last = None;
        for s in 0..600 {
            last = Some(det.observe(s, 4, 1.0));
        }
        let e = last.expect("fed");
        assert_eq!(
            summary("quote_requested rate", &e),
            "sequential detector (50% drop): quote_requested rate: no drop; 4 observed against 4.00 expected (baseline 4.000), CUSUM 0.0 of threshold 10.2"
        );
        let fired = (600..700)
            .map(|s| det.observe(s, 0, 1.0))
            .find(|e| e.state == State::Firing)
            .expect("a stop fires");
        let text = summary("quote_requested rate", &fired);
        assert!(text.contains(": a drop; 0 observed"), "{text}");
        assert!(text.contains("evidence since second 600"), "{text}");
        assert!(!text.contains("as variable"), "{text}");
    }

    #[test]
    fn the_summary_says_when_the_counts_vary_more_than_independent_arrivals() {
        let mut det = Sequential::new(event_rate_settings(
            &trigger(),
            &Detector {
                kind: DetectorType::Sequential,
                ..Detector::default()
            },
        ));
        // 4 a second on average, sent 8 at a time every other second:
        // four times the variance of independent arrivals.
        let mut last = None;
        for s in 0..1200 {
            last = Some(det.observe(s, if s % 2 == 0 { 8 } else { 0 }, 1.0));
        }
        let e = last.expect("fed");
        assert_eq!(e.state, State::Healthy);
        let text = summary("quote_requested rate", &e);
        assert!(
            text.contains("counts 3.") && text.contains("x as variable as independent arrivals"),
            "{text}"
        );
    }
}
