//! Business signals from event counts: how many events each Kafka topic
//! carried in each second, whether the consumer saw all of that second, and
//! the judgements of ConversionRate and EventRateDrop triggers over them.
//!
//! Pure: the Kafka consumer (`crate::kafka`) feeds [`Counts`], the source
//! loop (`super`, the Kafka source) asks for a [`Reading`] every second.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::jiff::Timestamp;

use crate::crd::{ConversionTrigger, EventRateTrigger};
use crate::scout::measured::{Reading, Subject, Verdict};

/// Every window ends at the topics' watermark: the first second the lag
/// probe has not vouched for yet on every partition of every topic the
/// trigger reads (`Counts::watermark`). A probe vouches for the log as it
/// was at the previous probe, so the watermark trails now by one to two
/// seconds. When it trails further (the consumer
/// stopped confirming: a lost broker, a lag), the window is not held back
/// more than this: it ends this many seconds before now, and the seconds
/// not vouched for make the reading Unknown, never a dip.
pub const MAX_WATERMARK_LAG_SECONDS: i64 = 3;

/// What is known of one second of one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Not yet known to be complete: the lag probe has not vouched for it.
    Unconfirmed,
    /// Every event created in it that reached the broker by the next probe
    /// was counted.
    Complete,
    /// The consumer was disconnected or lagging during it: its count may
    /// miss events.
    Incomplete,
}

/// The per-second counts of one topic, oldest first, from the second the
/// topic was first followed (or the oldest one kept).
#[derive(Clone, Debug)]
struct Series {
    /// The second (Unix time) of `slots[0]`.
    first: i64,
    slots: VecDeque<(u32, Seen)>,
    /// How many seconds back from now are kept.
    keep: i64,
}

impl Series {
    fn last(&self) -> i64 {
        self.first + self.slots.len() as i64 - 1
    }

    /// Adds empty, unconfirmed seconds up to `second`. A jump further
    /// than the kept span (the clock moved, the process was stopped) starts
    /// over rather than fill the gap.
    fn extend_to(&mut self, second: i64) {
        if second - self.last() > self.keep {
            self.slots.clear();
            self.first = second - self.keep + 1;
        }
        while self.last() < second {
            self.slots.push_back((0, Seen::Unconfirmed));
        }
    }

    /// What is known of `second`, if it is kept.
    fn seen(&self, second: i64) -> Option<Seen> {
        let i = usize::try_from(second.checked_sub(self.first)?).ok()?;
        self.slots.get(i).map(|(_, seen)| *seen)
    }

    fn prune(&mut self, now: i64) {
        while self.first <= now - self.keep && self.slots.len() > 1 {
            self.slots.pop_front();
            self.first += 1;
        }
    }
}

/// What the consumer saw of one topic over a span of seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Events created in the span.
    pub events: u64,
    /// Seconds during which the consumer was disconnected or lagging.
    pub incomplete: i64,
    /// Seconds before the topic was followed, or not yet vouched for by
    /// the lag probe.
    pub unobserved: i64,
}

impl Window {
    /// Every second of the span was seen whole.
    pub fn whole(&self) -> bool {
        self.incomplete == 0 && self.unobserved == 0
    }
}

/// Per-topic event counts in per-second buckets. Each topic keeps only as
/// many seconds as the longest window (plus baseline) of the triggers that
/// name it, so memory is bounded by the policies, not by the traffic: at
/// most 8 bytes per second per topic.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    topics: BTreeMap<String, Series>,
}

impl Counts {
    /// Follows exactly the topics of `wanted`, each kept for its number of
    /// seconds. A newly named topic is counted from `now` on: its earlier
    /// seconds are unobserved.
    pub fn follow(&mut self, wanted: &BTreeMap<String, i64>, now: i64) {
        self.topics.retain(|t, _| wanted.contains_key(t));
        for (topic, keep) in wanted {
            let series = self.topics.entry(topic.clone()).or_insert_with(|| Series {
                first: now,
                slots: VecDeque::from([(0, Seen::Unconfirmed)]),
                keep: *keep,
            });
            series.keep = (*keep).max(1);
            series.prune(now);
        }
    }

    /// The topics followed now.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Counts one event of `topic` created at `created_ms` and received at
    /// `received_ms` (both Unix milliseconds). A creation time later than
    /// the receipt (a producer's clock ahead of ours) is taken as the
    /// receipt. An event for a second the probe has already vouched for
    /// complete (a producer's clock behind ours, a long batch) counts in
    /// the second of its receipt instead: a second once judged never
    /// changes, so no producer's clock can make a dip in it after the fact.
    /// Such an event was added to the log after the probe's time (else it
    /// would have been read before the probe vouched), so its receipt is in
    /// a second not vouched for yet. An event stamped before the topic was
    /// followed counts likewise at its receipt; one received before that is
    /// not counted.
    pub fn add(&mut self, topic: &str, created_ms: Option<i64>, received_ms: i64) {
        let Some(series) = self.topics.get_mut(topic) else {
            return;
        };
        let at = created_ms.unwrap_or(received_ms).min(received_ms);
        let mut second = at.div_euclid(1000);
        if second < series.first || series.seen(second) == Some(Seen::Complete) {
            second = received_ms.div_euclid(1000);
        }
        if second < series.first {
            return;
        }
        series.extend_to(second);
        if let Some(slot) = series.slots.get_mut((second - series.first) as usize) {
            slot.0 = slot.0.saturating_add(1);
        }
    }

    /// The consumer has read every event of `topic` that was in the log at
    /// `before_ms`: the seconds that ended by then are complete (unless
    /// already known to be incomplete).
    pub fn confirm(&mut self, topic: &str, before_ms: i64) {
        let Some(series) = self.topics.get_mut(topic) else {
            return;
        };
        let end = before_ms.div_euclid(1000); // seconds before this one ended
        series.extend_to(end - 1);
        let first = series.first;
        for (i, slot) in series.slots.iter_mut().enumerate() {
            if first + i as i64 >= end {
                break;
            }
            if slot.1 == Seen::Unconfirmed {
                slot.1 = Seen::Complete;
            }
        }
    }

    /// The first second of `topic` not yet settled: every earlier one is
    /// either vouched for by the probe or known to be incomplete. None when
    /// the topic is not followed.
    pub fn watermark(&self, topic: &str) -> Option<i64> {
        let series = self.topics.get(topic)?;
        let unsettled = series
            .slots
            .iter()
            .position(|(_, seen)| *seen == Seen::Unconfirmed)
            .unwrap_or(series.slots.len());
        Some(series.first + unsettled as i64)
    }

    /// The consumer could not vouch for `topic` at `at_ms` (disconnected, or
    /// behind): every second up to then that is not yet complete may miss
    /// events.
    pub fn mark_incomplete(&mut self, topic: &str, at_ms: i64) {
        let Some(series) = self.topics.get_mut(topic) else {
            return;
        };
        let through = at_ms.div_euclid(1000);
        series.extend_to(through);
        let first = series.first;
        for (i, slot) in series.slots.iter_mut().enumerate() {
            if first + i as i64 > through {
                break;
            }
            if slot.1 == Seen::Unconfirmed {
                slot.1 = Seen::Incomplete;
            }
        }
    }

    /// Drops the seconds no trigger needs any more.
    pub fn prune(&mut self, now: i64) {
        for series in self.topics.values_mut() {
            series.extend_to(now);
            series.prune(now);
        }
    }

    /// How many seconds are kept, over all topics (for tests and metrics).
    pub fn seconds_kept(&self) -> usize {
        self.topics.values().map(|s| s.slots.len()).sum()
    }

    /// What was seen of `topic` in the seconds `start..end`.
    pub fn window(&self, topic: &str, start: i64, end: i64) -> Window {
        let mut w = Window::default();
        let Some(series) = self.topics.get(topic) else {
            w.unobserved = (end - start).max(0);
            return w;
        };
        for second in start..end {
            if second < series.first || second > series.last() {
                w.unobserved += 1;
                continue;
            }
            let (events, seen) = series.slots[(second - series.first) as usize];
            w.events += u64::from(events);
            match seen {
                Seen::Complete => {}
                Seen::Incomplete => w.incomplete += 1,
                Seen::Unconfirmed => w.unobserved += 1,
            }
        }
        w
    }
}

/// How many seconds of a topic a ConversionRate trigger needs kept.
pub fn conversion_seconds(t: &ConversionTrigger) -> i64 {
    window(t.window_seconds) + MAX_WATERMARK_LAG_SECONDS + 1
}

/// How many seconds of a topic an EventRateDrop trigger needs kept.
pub fn event_rate_seconds(t: &EventRateTrigger) -> i64 {
    window(t.window_seconds) + baseline(t.baseline_seconds) + MAX_WATERMARK_LAG_SECONDS + 1
}

/// A window within the schema's bounds, which a CRD installed by an older
/// version may not have enforced: the arithmetic on it cannot overflow, and
/// the seconds kept and counted one by one stay bounded.
fn window(seconds: i64) -> i64 {
    seconds.clamp(1, crate::limits::MAX_WINDOW_SECONDS)
}

fn baseline(seconds: i64) -> i64 {
    seconds.clamp(2, crate::limits::MAX_BASELINE_SECONDS)
}

/// Why a window cannot be judged, if it cannot.
fn unmeasurable(seen: &[(&str, &Window)], seconds: i64) -> Option<String> {
    if let Some((topic, w)) = seen.iter().find(|(_, w)| w.incomplete > 0) {
        return Some(format!(
            "not measurable: the Kafka consumer was disconnected or lagging for {} of the {seconds} s judged on {topic}",
            w.incomplete
        ));
    }
    if let Some((topic, w)) = seen.iter().find(|(_, w)| !w.whole()) {
        return Some(format!(
            "not measurable yet: {} of the {seconds} s judged on {topic} were not consumed (the source started or the topic was added since, or the consumer has not confirmed them)",
            w.unobserved
        ));
    }
    None
}

fn reading(subject: Subject, verdict: Verdict, summary: String, at: Timestamp) -> Reading {
    Reading {
        subject,
        verdict,
        summary,
        value: None,
        threshold: None,
        at,
    }
}

/// Where the seconds judged at `now` end (exclusive): the lowest
/// watermark of `topics`, never past the current second and never more
/// than [`MAX_WATERMARK_LAG_SECONDS`] before it.
pub fn judged_end<'a>(
    counts: &Counts,
    topics: impl IntoIterator<Item = &'a str>,
    now: Timestamp,
) -> i64 {
    let now = now.as_second();
    let mark = topics
        .into_iter()
        .map(|t| counts.watermark(t).unwrap_or(i64::MIN))
        .min()
        .unwrap_or(now);
    mark.clamp(now - MAX_WATERMARK_LAG_SECONDS, now)
}

/// The seconds judged at `now`: `window` seconds ending at
/// [`judged_end`].
fn judged<'a>(
    counts: &Counts,
    topics: impl IntoIterator<Item = &'a str>,
    now: Timestamp,
    window: i64,
) -> (i64, i64) {
    let end = judged_end(counts, topics, now);
    (end - window, end)
}

/// Judges a ConversionRate trigger: numerator events per denominator event
/// over the window. Unknown when the consumer did not see the whole window
/// or the denominator had fewer than `minEvents` events.
pub fn evaluate_conversion(
    subject: Subject,
    t: &ConversionTrigger,
    counts: &Counts,
    now: Timestamp,
) -> Reading {
    let w = window(t.window_seconds);
    let topics = [t.numerator_topic.as_str(), t.denominator_topic.as_str()];
    let (start, end) = judged(counts, topics, now, w);
    let num = counts.window(&t.numerator_topic, start, end);
    let den = counts.window(&t.denominator_topic, start, end);
    if let Some(why) = unmeasurable(
        &[
            (t.denominator_topic.as_str(), &den),
            (t.numerator_topic.as_str(), &num),
        ],
        w,
    ) {
        return reading(subject, Verdict::Unknown, why, now);
    }
    if den.events < t.min_events.max(1) as u64 {
        let why = format!(
            "too few events: {} {} in {w} s, need {}",
            den.events, t.denominator_topic, t.min_events
        );
        return reading(subject, Verdict::Unknown, why, now);
    }
    let ratio = num.events as f64 / den.events as f64;
    let measured = format!(
        "conversion {ratio:.2} ({} {} / {} {} over {w} s)",
        num.events, t.numerator_topic, den.events, t.denominator_topic
    );
    let (verdict, summary) = if ratio < t.min_ratio {
        (
            Verdict::Firing,
            format!("{measured} is below the minimum {}", t.min_ratio),
        )
    } else {
        (
            Verdict::Healthy,
            format!("{measured} is at or above the minimum {}", t.min_ratio),
        )
    };
    Reading {
        value: Some(ratio),
        threshold: Some(t.min_ratio),
        ..reading(subject, verdict, summary, now)
    }
}

/// Judges an EventRateDrop trigger: the topic's rate over the window
/// against its rate over the baseline just before the window. The value
/// charted is the window's rate in events per second, and the threshold
/// the lowest healthy rate (`minFraction` of the baseline's). Unknown when
/// the consumer did not see both windows whole or the baseline had fewer
/// than `minBaselineEvents` events.
pub fn evaluate_event_rate(
    subject: Subject,
    t: &EventRateTrigger,
    counts: &Counts,
    now: Timestamp,
) -> Reading {
    let (w, b) = (window(t.window_seconds), baseline(t.baseline_seconds));
    let (start, end) = judged(counts, [t.topic.as_str()], now, w);
    let base_start = start - b;
    let recent = counts.window(&t.topic, start, end);
    let base = counts.window(&t.topic, base_start, start);
    let whole = Window {
        events: 0,
        incomplete: recent.incomplete + base.incomplete,
        unobserved: recent.unobserved + base.unobserved,
    };
    if let Some(why) = unmeasurable(&[(t.topic.as_str(), &whole)], w + b) {
        return reading(subject, Verdict::Unknown, why, now);
    }
    if base.events < t.min_baseline_events.max(1) as u64 {
        let why = format!(
            "too few baseline events: {} {} in {b} s, need {}",
            base.events, t.topic, t.min_baseline_events
        );
        return reading(subject, Verdict::Unknown, why, now);
    }
    let rate = recent.events as f64 / w as f64;
    let baseline = base.events as f64 / b as f64;
    let fraction = rate / baseline;
    let floor = t.min_fraction * baseline;
    let measured = format!(
        "{} rate {rate:.2}/s ({} events over {w} s) is {:.0}% of its baseline {baseline:.2}/s (over the {b} s before)",
        t.topic,
        recent.events,
        fraction * 100.0
    );
    let (verdict, summary) = if fraction < t.min_fraction {
        (
            Verdict::Firing,
            format!(
                "{measured}, below the minimum {:.0}%",
                t.min_fraction * 100.0
            ),
        )
    } else {
        (
            Verdict::Healthy,
            format!(
                "{measured}, at or above the minimum {:.0}%",
                t.min_fraction * 100.0
            ),
        )
    };
    Reading {
        value: Some(rate),
        threshold: Some(floor),
        ..reading(subject, verdict, summary, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SignalKind;

    const QUOTES: &str = "quote_requested";
    const PURCHASES: &str = "policy_purchased";

    fn subject(kind: SignalKind) -> Subject {
        Subject {
            namespace: "shop".into(),
            policy: "business".into(),
            kind,
            workload: "policy-service".into(),
            workload_kind: crate::crd::WorkloadKind::Deployment,
        }
    }

    fn conversion(min_events: i64, window: i64) -> ConversionTrigger {
        ConversionTrigger {
            numerator_topic: PURCHASES.into(),
            denominator_topic: QUOTES.into(),
            min_ratio: 0.2,
            min_events,
            window_seconds: window,
            detector: None,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("a time")
    }

    /// Counts following both topics from second `from`, every second up to
    /// `to` confirmed complete.
    fn followed(from: i64, keep: i64) -> Counts {
        let mut c = Counts::default();
        c.follow(
            &BTreeMap::from([(QUOTES.into(), keep), (PURCHASES.into(), keep)]),
            from,
        );
        c
    }

    fn confirm_all(c: &mut Counts, through_second: i64) {
        for t in [QUOTES, PURCHASES] {
            c.confirm(t, (through_second + 1) * 1000);
        }
    }

    fn events(c: &mut Counts, topic: &str, second: i64, n: u32) {
        for i in 0..n {
            let ms = second * 1000 + i64::from(i) * 7 % 1000;
            c.add(topic, Some(ms), ms + 50);
        }
    }

    #[test]
    fn ratio_counts_events_exactly_at_the_windows_first_and_last_seconds_and_none_outside() {
        let now = 1_000;
        let mut c = followed(900, 100);
        // The probe will vouch for every second before 999 (the last one
        // not yet): the window is the ten seconds before it.
        let (start, end) = (989, 999);
        // Just outside on both sides: must not count.
        events(&mut c, QUOTES, start - 1, 50);
        events(&mut c, PURCHASES, start - 1, 50);
        events(&mut c, QUOTES, end, 50);
        events(&mut c, PURCHASES, end, 50);
        // The first and the last second of the window.
        events(&mut c, QUOTES, start, 10);
        events(&mut c, QUOTES, end - 1, 15);
        events(&mut c, PURCHASES, start, 1);
        events(&mut c, PURCHASES, end - 1, 2);
        // An event in the last millisecond of the last second counts too.
        c.add(QUOTES, Some(end * 1000 - 1), end * 1000 + 20);
        confirm_all(&mut c, now - 2);
        assert_eq!(judged(&c, [QUOTES, PURCHASES], at(now), 10), (start, end));
        let r = evaluate_conversion(
            subject(SignalKind::ConversionRate),
            &conversion(20, 10),
            &c,
            at(now),
        );
        assert_eq!(r.verdict, Verdict::Firing, "{}", r.summary);
        assert_eq!(r.value, Some(3.0 / 26.0));
        assert_eq!(r.threshold, Some(0.2));
        assert_eq!(
            r.summary,
            "conversion 0.12 (3 policy_purchased / 26 quote_requested over 10 s) is below the minimum 0.2"
        );
    }

    #[test]
    fn buckets_roll_over_as_time_passes_and_memory_stays_bounded() {
        let keep = conversion_seconds(&conversion(20, 10));
        let mut c = followed(0, keep);
        let t = conversion(20, 10);
        // A steady 10 quotes and 3 purchases a second for an hour.
        for second in 0..3600 {
            events(&mut c, QUOTES, second, 10);
            events(&mut c, PURCHASES, second, 3);
            confirm_all(&mut c, second);
            c.prune(second);
            assert!(c.seconds_kept() <= 2 * keep as usize + 2);
            if second >= 20 {
                let r = evaluate_conversion(
                    subject(SignalKind::ConversionRate),
                    &t,
                    &c,
                    at(second + 1),
                );
                assert_eq!(r.verdict, Verdict::Healthy, "at {second}: {}", r.summary);
                assert_eq!(r.value, Some(0.3));
            }
        }
        // Purchases stop: the ratio falls as the old seconds leave the window.
        let mut fired_after = None;
        for second in 3600..3620 {
            events(&mut c, QUOTES, second, 10);
            confirm_all(&mut c, second);
            c.prune(second);
            let r =
                evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(second + 1));
            if r.verdict == Verdict::Firing && fired_after.is_none() {
                fired_after = Some(second + 1 - 3600);
            }
        }
        // 0.3 falls below 0.2 once four of the ten seconds judged have no
        // purchase: four seconds, with no wait beyond the watermark (here
        // each second is vouched for as it ends).
        assert_eq!(fired_after, Some(4));
    }

    #[test]
    fn fewer_denominator_events_than_the_minimum_are_unknown_with_the_count_in_words() {
        let mut c = followed(900, 100);
        for second in 900..1000 {
            events(&mut c, QUOTES, second, u32::from(second % 10 == 0));
        }
        confirm_all(&mut c, 1000);
        let r = evaluate_conversion(
            subject(SignalKind::ConversionRate),
            &conversion(20, 70),
            &c,
            at(1000),
        );
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(
            r.summary,
            "too few events: 7 quote_requested in 70 s, need 20"
        );
        assert_eq!(r.value, None, "nothing to chart");
    }

    #[test]
    fn an_unhealthy_consumer_inside_the_window_is_unknown_even_when_the_counts_look_like_a_drop() {
        let t = conversion(20, 10);
        let mut c = followed(900, 100);
        for second in 900..1000 {
            events(&mut c, QUOTES, second, 10);
            events(&mut c, PURCHASES, second, 3);
        }
        confirm_all(&mut c, 990);
        // The broker went away at 991.5: nothing more was read, and the
        // probes could vouch for nothing after 991.
        for ms in [991_500, 992_500, 993_500, 994_500, 995_500, 996_500] {
            for topic in [QUOTES, PURCHASES] {
                c.mark_incomplete(topic, ms);
            }
        }
        // Events that did arrive for those seconds (quotes only) are still
        // counted, but the seconds stay incomplete.
        for second in 991..997 {
            events(&mut c, QUOTES, second, 10);
        }
        let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(1000));
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.summary);
        assert!(
            r.summary
                .contains("disconnected or lagging for 6 of the 10 s"),
            "{}",
            r.summary
        );
        // Once the unhealthy seconds have left the window, it is judged again.
        for second in 1000..1013 {
            events(&mut c, QUOTES, second, 10);
            events(&mut c, PURCHASES, second, 3);
        }
        confirm_all(&mut c, 1013);
        let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(1013));
        assert_eq!(r.verdict, Verdict::Healthy, "{}", r.summary);
    }

    #[test]
    fn seconds_before_the_topic_was_followed_or_not_yet_confirmed_are_unknown() {
        let t = conversion(1, 10);
        let mut c = followed(995, 100);
        for second in 995..1010 {
            events(&mut c, QUOTES, second, 10);
        }
        confirm_all(&mut c, 1009);
        // The window 994..1004 starts a second before the topic was followed.
        let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(1004));
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.summary.contains("not measurable yet"), "{}", r.summary);
        // Followed long enough: zero purchases of 100 quotes fire.
        let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(1008));
        assert_eq!(r.verdict, Verdict::Firing, "{}", r.summary);
        // Seconds the probe has not vouched for yet are not judged.
        let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, at(1020));
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.summary);
    }

    #[test]
    fn a_jump_of_the_clock_keeps_memory_bounded_and_the_skipped_seconds_unobserved() {
        let mut c = followed(1_000, 20);
        confirm_all(&mut c, 1_010);
        c.prune(1_000_000_000);
        assert!(c.seconds_kept() <= 2 * 21, "{}", c.seconds_kept());
        let w = c.window(QUOTES, 999_999_990, 1_000_000_000);
        assert_eq!((w.events, w.unobserved), (0, 10));
    }

    #[test]
    fn late_events_land_in_their_own_second_unless_it_was_vouched_for_then_in_their_receipts() {
        let mut c = followed(900, 100);
        c.add(QUOTES, Some(950_200), 953_000);
        c.add(QUOTES, Some(990_000), 953_000);
        c.add(QUOTES, None, 954_999);
        // Stamped before the topic was followed: at its receipt; received
        // before that: dropped.
        c.add(QUOTES, Some(899_999), 953_000);
        c.add(QUOTES, Some(899_000), 899_500);
        assert_eq!(c.window(QUOTES, 950, 951).events, 1);
        assert_eq!(c.window(QUOTES, 953, 954).events, 2);
        assert_eq!(c.window(QUOTES, 954, 955).events, 1);
        // The probe vouches for every second before 956; an event stamped
        // 951 arrives at 957.2: 951 stays as it was judged.
        c.confirm(QUOTES, 956_000);
        c.add(QUOTES, Some(951_500), 957_200);
        assert_eq!(c.window(QUOTES, 951, 952).events, 0);
        assert_eq!(c.window(QUOTES, 957, 958).events, 1);
        assert_eq!(c.window(QUOTES, 0, 2000).events, 5);
    }

    /// Ten events a second from each of two producers, one of them with a
    /// clock `skew_ms` behind ours, reaching the consumer `transit_ms` after
    /// they were sent; probed every second like the Kafka source (a probe
    /// vouches for the log as it was at the previous probe) and judged
    /// every second. Returns, for each judged window, its quotes when
    /// judged, its quotes at the end, and how far its end trailed now.
    fn judged_under_skew(skew_ms: i64, transit_ms: i64) -> Vec<(u64, u64, i64)> {
        let t = conversion(1, 10);
        let mut c = followed(1_000, 200);
        let mut previous_probe = None;
        let mut judged = Vec::new();
        for ms in (1_000_000..1_120_000).step_by(50) {
            if ms % 100 == 0 {
                // One event from each producer every 100 ms, received
                // `transit_ms` later.
                for stamp in [ms, ms - skew_ms] {
                    for topic in [QUOTES, PURCHASES] {
                        c.add(topic, Some(stamp), ms + transit_ms);
                    }
                }
            }
            if ms % 1000 == 500 {
                if let Some(p) = previous_probe {
                    for topic in [QUOTES, PURCHASES] {
                        c.confirm(topic, p);
                    }
                }
                // The log's end now: events still in transit are not in it.
                previous_probe = Some(ms - transit_ms);
                let now = at(ms / 1000);
                let end = judged_end(&c, [QUOTES, PURCHASES], now);
                let r = evaluate_conversion(subject(SignalKind::ConversionRate), &t, &c, now);
                if r.verdict != Verdict::Unknown {
                    judged.push((end, c.window(QUOTES, end - 10, end).events, ms / 1000 - end));
                }
            }
        }
        judged
            .into_iter()
            .map(|(end, then, lag)| (then, c.window(QUOTES, end - 10, end).events, lag))
            .collect()
    }

    #[test]
    fn a_judged_second_never_changes_whatever_a_producers_clock_says() {
        for (skew_ms, transit_ms) in [
            (0, 20),
            (180, 20),
            (900, 20),
            (2_500, 20),
            (6_000, 20),
            (0, 700),
        ] {
            let windows = judged_under_skew(skew_ms, transit_ms);
            let case = format!("skew {skew_ms} ms, transit {transit_ms} ms");
            assert!(windows.len() > 100, "{case}: judged {}", windows.len());
            for (then, after, _) in &windows {
                assert_eq!(then, after, "{case}: a judged window changed later");
            }
            // A skewed producer's events move by at most its skew: steady
            // traffic (200 quotes in 10 s) stays within one second's worth
            // of one producer (10 events) of steady.
            let (low, high) = windows
                .iter()
                .fold((u64::MAX, 0), |(l, h), (n, _, _)| (l.min(*n), h.max(*n)));
            assert!(
                (190..=210).contains(&low) && (190..=210).contains(&high),
                "{case}: windows of {low} to {high} quotes"
            );
            let lag = windows.iter().map(|(_, _, l)| *l).max().unwrap_or(i64::MAX);
            assert!(lag <= 2, "{case}: the window trailed now by {lag} s");
        }
    }

    fn event_rate(min_baseline_events: i64) -> EventRateTrigger {
        EventRateTrigger {
            topic: QUOTES.into(),
            min_fraction: 0.5,
            window_seconds: 30,
            baseline_seconds: 300,
            min_baseline_events,
            detector: None,
        }
    }

    #[test]
    fn event_rate_drop_fires_against_enough_baseline_and_is_unknown_without_it() {
        let t = event_rate(50);
        let keep = event_rate_seconds(&t);
        let now = 2_000;
        // Every second before now is vouched for (below): the window is
        // the 30 s before now.
        let start = now - 30;
        let mut c = Counts::default();
        c.follow(&BTreeMap::from([(QUOTES.into(), keep)]), now - keep);
        // A baseline of 1 event a second, then a window at 0.2 a second.
        for second in start - 300..start {
            events(&mut c, QUOTES, second, 1);
        }
        for second in start..start + 30 {
            events(&mut c, QUOTES, second, u32::from(second % 5 == 0));
        }
        c.confirm(QUOTES, now * 1000);
        c.prune(now);
        let r = evaluate_event_rate(subject(SignalKind::EventRateDrop), &t, &c, at(now));
        assert_eq!(r.verdict, Verdict::Firing, "{}", r.summary);
        assert_eq!(r.value, Some(0.2));
        assert_eq!(r.threshold, Some(0.5));
        assert_eq!(
            r.summary,
            "quote_requested rate 0.20/s (6 events over 30 s) is 20% of its baseline 1.00/s (over the 300 s before), below the minimum 50%"
        );
        // The same baseline is too thin for a policy that needs 301 events.
        let r = evaluate_event_rate(
            subject(SignalKind::EventRateDrop),
            &event_rate(301),
            &c,
            at(now),
        );
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(
            r.summary,
            "too few baseline events: 300 quote_requested in 300 s, need 301"
        );
    }

    #[test]
    fn event_rate_is_healthy_at_its_usual_rate_and_unknown_when_the_consumer_missed_the_baseline() {
        let t = event_rate(50);
        let now = 2_000;
        let start = now - 30;
        let mut c = Counts::default();
        c.follow(
            &BTreeMap::from([(QUOTES.into(), event_rate_seconds(&t))]),
            1_600,
        );
        for second in 1_600..now {
            events(&mut c, QUOTES, second, 2);
            if second == start - 100 {
                // A lag probe failed during the baseline.
                c.mark_incomplete(QUOTES, second * 1000 + 500);
            }
            c.confirm(QUOTES, second * 1000);
        }
        c.confirm(QUOTES, now * 1000);
        let r = evaluate_event_rate(subject(SignalKind::EventRateDrop), &t, &c, at(now));
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.summary);
        assert!(
            r.summary.contains("disconnected or lagging"),
            "{}",
            r.summary
        );
        // Later the gap is out of the baseline.
        let later = now + 250;
        for second in now..later {
            events(&mut c, QUOTES, second, 2);
        }
        c.confirm(QUOTES, later * 1000);
        let r = evaluate_event_rate(subject(SignalKind::EventRateDrop), &t, &c, at(later));
        assert_eq!(r.verdict, Verdict::Healthy, "{}", r.summary);
        assert_eq!(r.value, Some(2.0));
        assert_eq!(r.threshold, Some(1.0));
    }
}
