//! When the sweep runs: a cron expression read in an IANA time zone, and
//! the catch-up rule for a run the operator missed while it was down (as a
//! CronJob's `startingDeadlineSeconds`). Pure functions of the times passed
//! in.

use std::str::FromStr;

use croner::Cron;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

/// A cron expression in a time zone: `0 5 * * *` in `Europe/Berlin` fires
/// at 05:00 Berlin time, whatever the offset that day.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
    expression: String,
    zone_name: String,
}

/// Where the time zone database is read from unless `TZDIR` says
/// otherwise (the operator's image has it there).
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Looks at most this far ahead (or back) for a fire time: an expression
/// such as `0 0 30 2 *` never fires.
const SEARCH_YEARS: i16 = 5;

impl Schedule {
    /// Parses a five-field cron expression (minute hour day-of-month month
    /// day-of-week; names such as `MON` and `JAN`, ranges, lists and steps)
    /// and an IANA time zone name (`UTC`, `Europe/Berlin`).
    pub fn parse(expression: &str, zone: &str) -> Result<Self, String> {
        let expression = expression.trim();
        if expression.split_whitespace().count() != 5 {
            return Err(format!(
                "{expression:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let cron = Cron::from_str(expression)
            .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))?;
        let zone_name = zone.trim();
        let tz = time_zone(zone_name)?;
        let schedule = Self {
            cron,
            zone: tz,
            expression: expression.to_string(),
            zone_name: zone_name.to_string(),
        };
        if schedule.next_fire(Timestamp::now()).is_none() {
            return Err(format!(
                "{expression:?} never fires in the next {SEARCH_YEARS} years"
            ));
        }
        Ok(schedule)
    }

    /// The expression, as configured.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name, as configured.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first fire time strictly after `after`; None when the expression
    /// does not fire within the search horizon.
    pub fn next_fire(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(self.zone.clone());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let horizon = start.year().saturating_add(SEARCH_YEARS);
        (next.year() <= horizon).then(|| next.timestamp())
    }

    /// The latest fire time at or before `now`.
    pub fn previous_fire(&self, now: Timestamp) -> Option<Timestamp> {
        let start = now.to_zoned(self.zone.clone());
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        let horizon = start.year().saturating_sub(SEARCH_YEARS);
        (previous.year() >= horizon).then(|| previous.timestamp())
    }

    /// The scheduled time that came due after the last run (`last`, the
    /// scheduled time it ran for) and is not later than `now`: the latest
    /// such one when several did. None when none did, or when nothing ever
    /// ran (a new installation waits for its first fire time).
    pub fn latest_due(&self, last: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
        let last = last?;
        self.previous_fire(now).filter(|due| *due > last)
    }

    /// The run to make now for a schedule missed while the operator was
    /// down: the latest scheduled time since `last`, if `now` is at most
    /// `deadline_seconds` after it. A run older than the deadline is
    /// skipped (see `latest_due` to record it as missed).
    pub fn catch_up(
        &self,
        last: Option<Timestamp>,
        now: Timestamp,
        deadline_seconds: i64,
    ) -> Option<Timestamp> {
        let due = self.latest_due(last, now)?;
        let late = now.duration_since(due).as_secs();
        (late <= deadline_seconds).then_some(due)
    }
}

/// An IANA time zone, read from the time zone database. The name must be
/// a plain relative path of the database (`Area/City`); `UTC` needs none.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name.eq_ignore_ascii_case("UTC") || name == "Etc/UTC" {
        return Ok(TimeZone::UTC);
    }
    let plain = name
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && c.chars().all(zone_char));
    if !plain {
        return Err(format!("{name:?} is not an IANA time zone name"));
    }
    let dir = std::env::var("TZDIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| ZONEINFO.to_string());
    let path = std::path::Path::new(&dir).join(name);
    let data = std::fs::read(&path).map_err(|e| {
        format!(
            "{name:?} is not a time zone of the database at {dir} ({e}); use an IANA name such as Europe/Berlin"
        )
    })?;
    TimeZone::tzif(name, &data).map_err(|e| format!("{name:?}: {e}"))
}

fn zone_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn five_oclock_daily_fires_at_five_local_time_across_a_dst_change() {
        let s = Schedule::parse("0 5 * * *", "Europe/Berlin").expect("valid");
        // Summer time ends on 2026-10-25 (03:00 CEST becomes 02:00 CET).
        assert_eq!(
            s.next_fire(at("2026-10-24T03:00:00Z")),
            Some(at("2026-10-25T04:00:00Z")),
            "05:00 CET is 04:00 UTC, the day the clocks go back"
        );
        assert_eq!(
            s.next_fire(at("2026-10-23T03:00:00Z")),
            Some(at("2026-10-24T03:00:00Z")),
            "05:00 CEST is 03:00 UTC, the day before"
        );
        // Summer time starts on 2026-03-29.
        assert_eq!(
            s.next_fire(at("2026-03-28T04:00:00Z")),
            Some(at("2026-03-29T03:00:00Z"))
        );
    }

    #[test]
    fn a_fire_time_inside_the_spring_gap_runs_right_after_it_once() {
        // 02:30 does not exist in Berlin on 2026-03-29.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let next = s
            .next_fire(at("2026-03-28T12:00:00Z"))
            .expect("a fire time");
        assert_eq!(next, at("2026-03-29T01:00:00Z"), "03:00 CEST");
        let after = s.next_fire(next).expect("a fire time");
        assert_eq!(after, at("2026-03-30T00:30:00Z"), "02:30 CEST the next day");
    }

    #[test]
    fn utc_is_the_default_zone_and_needs_no_database() {
        let s = Schedule::parse("0 5 * * *", "UTC").expect("valid");
        assert_eq!(
            s.next_fire(at("2026-12-03T05:00:00Z")),
            Some(at("2026-12-04T05:00:00Z")),
            "strictly after"
        );
        assert_eq!(
            s.previous_fire(at("2026-12-03T05:00:00Z")),
            Some(at("2026-12-03T05:00:00Z")),
            "at or before"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for (expr, zone, says) in [
            ("0 5 * *", "UTC", "five fields"),
            ("61 5 * * *", "UTC", "not a cron expression"),
            ("0 5 * * *", "Mars/Olympus", "not a time zone"),
            ("0 5 * * *", "../etc/passwd", "not an IANA time zone name"),
            ("0 5 * * *", "/etc/localtime", "not an IANA time zone name"),
            ("0 0 31 2 *", "UTC", "never fires"),
        ] {
            let err = Schedule::parse(expr, zone).expect_err(expr);
            assert!(err.contains(says), "{expr} {zone}: {err}");
        }
    }

    #[test]
    fn a_missed_run_is_caught_up_only_within_the_deadline() {
        let s = Schedule::parse("0 5 * * *", "UTC").expect("valid");
        let yesterday = Some(at("2026-12-02T05:00:00Z"));
        assert_eq!(
            s.catch_up(yesterday, at("2026-12-03T05:20:00Z"), 3600),
            Some(at("2026-12-03T05:00:00Z")),
            "20 minutes late, deadline 1 h: run for today's 05:00"
        );
        assert_eq!(
            s.catch_up(yesterday, at("2026-12-03T06:00:00Z"), 3600),
            Some(at("2026-12-03T05:00:00Z")),
            "exactly at the deadline still runs"
        );
        assert_eq!(
            s.catch_up(yesterday, at("2026-12-03T07:00:00Z"), 3600),
            None,
            "two hours late: skipped"
        );
        assert_eq!(
            s.latest_due(yesterday, at("2026-12-03T07:00:00Z")),
            Some(at("2026-12-03T05:00:00Z")),
            "and recorded as missed"
        );
        assert_eq!(
            s.catch_up(
                Some(at("2026-12-03T05:00:00Z")),
                at("2026-12-03T05:20:00Z"),
                3600
            ),
            None,
            "today's run happened"
        );
        assert_eq!(
            s.catch_up(None, at("2026-12-03T05:20:00Z"), 3600),
            None,
            "a new installation waits for its first fire time"
        );
        assert_eq!(
            s.catch_up(
                Some(at("2026-11-20T05:00:00Z")),
                at("2026-12-03T05:10:00Z"),
                3600
            ),
            Some(at("2026-12-03T05:00:00Z")),
            "several missed: one run, for the latest"
        );
    }
}
