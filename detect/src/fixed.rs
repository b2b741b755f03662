//! The fixed-window rules the operator used before the sequential detector,
//! as rolling sums for the benchmark. They judge exactly what
//! `evaluate_conversion` and `evaluate_event_rate` in the operator's Kafka
//! source judge, over the same confirmed seconds (the settling delay is
//! added by the caller).

use std::collections::VecDeque;

use crate::{Rule, Verdict};

/// ConversionRate's fixed rule: over the last `window` seconds, numerator
/// events per denominator event below `min_ratio` fire; fewer than
/// `min_events` denominator events say nothing.
#[derive(Clone, Debug)]
pub struct FixedConversion {
    /// The lowest healthy ratio.
    pub min_ratio: f64,
    /// The fewest denominator events judged.
    pub min_events: u64,
    window: usize,
    seconds: VecDeque<(u64, u64)>,
    sums: (u64, u64),
}

impl FixedConversion {
    /// The rule over `window` seconds.
    pub fn new(min_ratio: f64, min_events: u64, window: usize) -> Self {
        Self {
            min_ratio,
            min_events,
            window: window.max(1),
            seconds: VecDeque::new(),
            sums: (0, 0),
        }
    }
}

impl Rule for FixedConversion {
    fn observe(&mut self, _second: i64, numerator: u64, denominator: u64) -> Verdict {
        self.seconds.push_back((numerator, denominator));
        self.sums.0 = self.sums.0.saturating_add(numerator);
        self.sums.1 = self.sums.1.saturating_add(denominator);
        if self.seconds.len() > self.window
            && let Some((n, d)) = self.seconds.pop_front()
        {
            self.sums.0 -= n;
            self.sums.1 -= d;
        }
        if self.seconds.len() < self.window || self.sums.1 < self.min_events.max(1) {
            return Verdict::Unknown;
        }
        if (self.sums.0 as f64 / self.sums.1 as f64) < self.min_ratio {
            Verdict::Firing
        } else {
            Verdict::Healthy
        }
    }
}

/// EventRateDrop's fixed rule: the rate over the last `window` seconds
/// below `min_fraction` of the rate over the `baseline` seconds before it
/// fires; a baseline of fewer than `min_baseline_events` says nothing.
#[derive(Clone, Debug)]
pub struct FixedEventRate {
    /// The lowest healthy fraction of the baseline.
    pub min_fraction: f64,
    /// The fewest baseline events judged.
    pub min_baseline_events: u64,
    window: usize,
    baseline: usize,
    seconds: VecDeque<u64>,
    recent: u64,
    base: u64,
}

impl FixedEventRate {
    /// The rule over `window` seconds against the `baseline` before.
    pub fn new(
        min_fraction: f64,
        min_baseline_events: u64,
        window: usize,
        baseline: usize,
    ) -> Self {
        Self {
            min_fraction,
            min_baseline_events,
            window: window.max(1),
            baseline: baseline.max(2),
            seconds: VecDeque::new(),
            recent: 0,
            base: 0,
        }
    }
}

impl Rule for FixedEventRate {
    fn observe(&mut self, _second: i64, numerator: u64, _denominator: u64) -> Verdict {
        self.seconds.push_back(numerator);
        self.recent = self.recent.saturating_add(numerator);
        if self.seconds.len() > self.window {
            // The second leaving the window joins the baseline.
            let joining = self.seconds[self.seconds.len() - 1 - self.window];
            self.recent -= joining;
            self.base = self.base.saturating_add(joining);
        }
        if self.seconds.len() > self.window + self.baseline
            && let Some(leaving) = self.seconds.pop_front()
        {
            self.base -= leaving;
        }
        if self.seconds.len() < self.window + self.baseline
            || self.base < self.min_baseline_events.max(1)
        {
            return Verdict::Unknown;
        }
        let rate = self.recent as f64 / self.window as f64;
        let baseline = self.base as f64 / self.baseline as f64;
        if rate < self.min_fraction * baseline {
            Verdict::Firing
        } else {
            Verdict::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_conversion_rule_fires_once_half_the_window_has_no_purchase() {
        // 10 quotes and 2 purchases a second: 0.2; the minimum is 0.1.
        let mut r = FixedConversion::new(0.1, 20, 10);
        for s in 0..20 {
            assert_ne!(r.observe(s, 2, 10), Verdict::Firing);
        }
        let fired = (20..40).find(|&s| r.observe(s, 0, 10) == Verdict::Firing);
        // Ratio 0.1 with five empty seconds of ten is not below; six is.
        assert_eq!(fired, Some(25));
    }

    #[test]
    fn the_fixed_rate_rule_compares_the_window_with_the_seconds_before_it() {
        let mut r = FixedEventRate::new(0.5, 50, 10, 100);
        for s in 0..110 {
            let v = r.observe(s, 4, 0);
            assert_eq!(
                v,
                if s < 109 {
                    Verdict::Unknown
                } else {
                    Verdict::Healthy
                }
            );
        }
        let fired = (110..140).find(|&s| r.observe(s, 0, 0) == Verdict::Firing);
        assert_eq!(fired, Some(115));
    }
}
