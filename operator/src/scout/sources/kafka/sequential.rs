//! The sequential detector's state per business trigger that selects it
//! (`detector.type: Sequential`): one detector per subject (policy,
//! trigger kind, workload), fed each confirmed second once, in order.
//! Triggers without it are judged by their fixed window, as before.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;

use super::Judged;
use super::business::{Counts, judged_end};
use crate::crd::SignalKind;
use crate::scout::detect::{self, Evidence, Sequential, Settings, State};
use crate::scout::measured::{Reading, Subject, Verdict};

/// A second not yet confirmed is waited for this long after it would be
/// judged; past that it is skipped (the topic was not followed then, or its
/// seconds were pruned) rather than hold the detector back.
const WAIT_SECONDS: i64 = 5;

struct Tracked {
    settings: Settings,
    detector: Sequential,
    /// The next second to feed.
    next: i64,
    last: Option<Evidence>,
}

/// The detectors of the sequential triggers.
#[derive(Default)]
pub struct Detectors {
    by_subject: HashMap<Subject, Tracked>,
}

/// What a sequential trigger reads: the counted topic, and for a ratio the
/// topic of starts.
struct Signal<'a> {
    counted: &'a str,
    per: Option<&'a str>,
    what: String,
}

fn signal(j: &Judged) -> Option<(Signal<'_>, Settings)> {
    match (&j.trigger.conversion, &j.trigger.event_rate, j.subject.kind) {
        (Some(c), _, SignalKind::ConversionRate) => {
            let d = detect::sequential(c.detector.as_ref())?;
            Some((
                Signal {
                    counted: &c.numerator_topic,
                    per: Some(&c.denominator_topic),
                    what: format!("{} per {}", c.numerator_topic, c.denominator_topic),
                },
                detect::conversion_settings(c, d),
            ))
        }
        (_, Some(r), SignalKind::EventRateDrop) => {
            let d = detect::sequential(r.detector.as_ref())?;
            Some((
                Signal {
                    counted: &r.topic,
                    per: None,
                    what: format!("{} rate", r.topic),
                },
                detect::event_rate_settings(r, d),
            ))
        }
        _ => None,
    }
}

impl Detectors {
    /// Judges every trigger at `now`: the sequential ones from their
    /// detectors (fed the seconds confirmed since the last call), the
    /// others by their fixed window. Forgets the detectors of triggers that
    /// are gone.
    pub fn judge(&mut self, judged: &[Judged], counts: &Counts, now: Timestamp) -> Vec<Reading> {
        self.by_subject.retain(|s, _| {
            judged
                .iter()
                .any(|j| &j.subject == s && signal(j).is_some())
        });
        let mut out = Vec::with_capacity(judged.len());
        for j in judged {
            match signal(j) {
                Some((sig, settings)) => out.push(self.judge_one(j, &sig, settings, counts, now)),
                None => out.extend(super::judge(std::slice::from_ref(j), counts, now)),
            }
        }
        out
    }

    fn judge_one(
        &mut self,
        j: &Judged,
        sig: &Signal<'_>,
        settings: Settings,
        counts: &Counts,
        now: Timestamp,
    ) -> Reading {
        let end = judged_end(
            counts,
            [Some(sig.counted), sig.per].into_iter().flatten(),
            now,
        );
        let tracked = self
            .by_subject
            .entry(j.subject.clone())
            .or_insert_with(|| Tracked {
                settings,
                detector: Sequential::new(settings),
                next: end,
                last: None,
            });
        if tracked.settings != settings {
            // The policy changed how it judges: start again.
            *tracked = Tracked {
                settings,
                detector: Sequential::new(settings),
                next: end,
                last: None,
            };
        }
        // After a jump of the clock, the seconds before the kept span are
        // gone anyway.
        tracked.next = tracked
            .next
            .max(end.saturating_sub(crate::limits::MAX_WINDOW_SECONDS));
        let mut unmeasurable = None;
        while tracked.next < end {
            let s = tracked.next;
            let counted = counts.window(sig.counted, s, s + 1);
            let per = sig.per.map(|t| counts.window(t, s, s + 1));
            let seen = [Some(counted), per];
            if seen.iter().flatten().any(|w| w.incomplete > 0) {
                unmeasurable = Some(format!(
                    "not measurable: the Kafka consumer was disconnected or lagging at second {s}"
                ));
                tracked.next += 1;
                continue;
            }
            if !seen.iter().flatten().all(|w| w.whole()) {
                if s >= end - WAIT_SECONDS {
                    unmeasurable = Some(format!(
                        "not measurable yet: second {s} was not consumed (the source started or the topic was added since, or the consumer has not confirmed it)"
                    ));
                    break;
                }
                tracked.next += 1;
                continue;
            }
            let exposure = per.map_or(1.0, |w| w.events as f64);
            tracked.last = Some(tracked.detector.observe(s, counted.events, exposure));
            tracked.next += 1;
        }
        let reading = |verdict, summary| Reading {
            subject: j.subject.clone(),
            verdict,
            summary,
            value: None,
            threshold: None,
            at: now,
        };
        if let Some(why) = unmeasurable {
            return reading(Verdict::Unknown, why);
        }
        let Some(e) = tracked.last else {
            return reading(
                Verdict::Unknown,
                format!(
                    "not measurable yet: no second of {} judged so far",
                    sig.counted
                ),
            );
        };
        let verdict = match e.state {
            State::Learning => Verdict::Unknown,
            State::Healthy => Verdict::Healthy,
            State::Firing => Verdict::Firing,
        };
        Reading {
            // Charted: the evidence of a drop against the threshold it
            // fires at.
            value: (e.state != State::Learning).then_some(e.statistic),
            threshold: (e.state != State::Learning).then_some(e.threshold),
            ..reading(verdict, detect::summary(&sig.what, &e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::crd::{ConversionTrigger, Detector, DetectorType, Trigger};

    const QUOTES: &str = "quote_requested";
    const PURCHASES: &str = "policy_purchased";

    fn judged(detector: Option<Detector>) -> Vec<Judged> {
        let mut t = Trigger::of(SignalKind::ConversionRate);
        t.workload = Some("policy-service".into());
        t.conversion = Some(ConversionTrigger {
            numerator_topic: PURCHASES.into(),
            denominator_topic: QUOTES.into(),
            min_ratio: 0.1,
            min_events: 20,
            window_seconds: 10,
            detector,
        });
        vec![Judged {
            subject: Subject {
                namespace: "shop".into(),
                policy: "business".into(),
                kind: SignalKind::ConversionRate,
                workload: "policy-service".into(),
                workload_kind: crate::crd::WorkloadKind::Deployment,
            },
            trigger: t,
        }]
    }

    fn sequential() -> Option<Detector> {
        Some(Detector {
            kind: DetectorType::Sequential,
            ..Detector::default()
        })
    }

    fn followed(from: i64) -> Counts {
        let mut c = Counts::default();
        c.follow(
            &BTreeMap::from([(QUOTES.to_string(), 30), (PURCHASES.to_string(), 30)]),
            from,
        );
        c
    }

    /// One second of traffic, confirmed by the probe at its end:
    /// `quotes` quotes of which `purchases` are bought.
    fn second(c: &mut Counts, s: i64, quotes: u32, purchases: u32) {
        for i in 0..quotes {
            let ms = s * 1000 + i64::from(i) * 1000 / i64::from(quotes);
            c.add(QUOTES, Some(ms), ms + 5);
            if i < purchases {
                c.add(PURCHASES, Some(ms + 1), ms + 6);
            }
        }
        for t in [QUOTES, PURCHASES] {
            c.confirm(t, (s + 1) * 1000);
        }
        c.prune(s + 1);
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("a time")
    }

    /// Twenty quotes and four purchases a second (a varying pattern, so
    /// the baseline sees some noise), from 0 to `until`.
    fn steady(c: &mut Counts, d: &mut Detectors, j: &[Judged], until: i64) -> Vec<Reading> {
        let mut out = Vec::new();
        for s in 0..until {
            second(c, s, 20, [3, 5, 4, 4, 2, 6][(s % 6) as usize]);
            out.extend(d.judge(j, c, at(s + 1)));
        }
        out
    }

    #[test]
    fn a_sequential_conversion_trigger_fires_seconds_after_purchases_stop_and_says_why() {
        let j = judged(sequential());
        let (mut c, mut d) = (followed(0), Detectors::default());
        let before = steady(&mut c, &mut d, &j, 900);
        assert_eq!(before[0].verdict, Verdict::Unknown, "{}", before[0].summary);
        let last = before.last().expect("judged");
        assert_eq!(last.verdict, Verdict::Healthy, "{}", last.summary);
        assert!(before.iter().all(|r| r.verdict != Verdict::Firing));
        let mut fired = None;
        for s in 900..930 {
            second(&mut c, s, 20, 0);
            let r = d.judge(&j, &c, at(s + 1)).remove(0);
            if r.verdict == Verdict::Firing {
                fired = Some((s + 1 - 900, r));
                break;
            }
        }
        let (after, r) = fired.expect("fires");
        // A few seconds of evidence, plus the settling time.
        assert!(
            after <= 4 + super::super::business::MAX_WATERMARK_LAG_SECONDS,
            "{after} s: {}",
            r.summary
        );
        assert!(
            r.summary.starts_with(
                "sequential detector (90% drop): policy_purchased per quote_requested: a drop; 0 observed against"
            ),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("evidence since second 900"),
            "{}",
            r.summary
        );
        assert!(r.value >= r.threshold, "{r:?}");
    }

    #[test]
    fn without_a_sequential_detector_the_fixed_window_judges_exactly_as_before() {
        let (fixed, selected) = (judged(None), judged(Some(Detector::default())));
        let (mut c, mut d) = (followed(0), Detectors::default());
        for s in 0..120 {
            second(&mut c, s, 20, if s < 100 { 4 } else { 0 });
            let now = at(s + 1);
            let old = super::super::judge(&fixed, &c, now);
            assert_eq!(d.judge(&fixed, &c, now), old);
            assert_eq!(d.judge(&selected, &c, now), old);
        }
    }

    #[test]
    fn seconds_the_consumer_missed_read_unknown_and_are_never_taken_for_a_drop() {
        let j = judged(sequential());
        let (mut c, mut d) = (followed(0), Detectors::default());
        steady(&mut c, &mut d, &j, 900);
        // The broker is away for ten seconds: nothing is counted, and the
        // probe cannot vouch for those seconds.
        let mut unknown = 0;
        for s in 900..910 {
            for t in [QUOTES, PURCHASES] {
                c.mark_incomplete(t, s * 1000 + 500);
            }
            let r = d.judge(&j, &c, at(s + 1)).remove(0);
            assert_ne!(r.verdict, Verdict::Firing, "{}", r.summary);
            // The watermark passes a missed second at once: the gap is
            // reported while it lasts.
            if r.verdict == Verdict::Unknown {
                assert!(
                    r.summary.contains("disconnected or lagging"),
                    "{}",
                    r.summary
                );
                unknown += 1;
            }
        }
        for s in 910..960 {
            second(&mut c, s, 20, [3, 5, 4, 4, 2, 6][(s % 6) as usize]);
            let r = d.judge(&j, &c, at(s + 1)).remove(0);
            assert_ne!(r.verdict, Verdict::Firing, "at {s}: {}", r.summary);
            if r.verdict == Verdict::Unknown {
                assert!(
                    r.summary.contains("disconnected or lagging"),
                    "{}",
                    r.summary
                );
                unknown += 1;
            }
        }
        assert!(unknown > 0, "the gap is reported");
        let r = d.judge(&j, &c, at(960)).remove(0);
        assert_eq!(r.verdict, Verdict::Healthy, "{}", r.summary);
    }
}
