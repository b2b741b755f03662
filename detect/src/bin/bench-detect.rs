//! `make bench-detect`: replays seeded synthetic business traffic through
//! the fixed-window rules and the sequential detector side by side, and
//! prints false alarms a day, detection delays and missed drops.
//!
//! Usage: bench-detect [--days N] [--seed N] [--settle SECONDS]

use std::time::Instant;

use sre_space_detect::replay::{self, AFTER_DROP_SECONDS, Contender, EPISODE_GAP_SECONDS, Run};
use sre_space_detect::sequential::Ratio;
use sre_space_detect::traffic::Traffic;
use sre_space_detect::{FixedConversion, FixedEventRate, Sequential, Settings, Threshold};

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} wants a whole number")),
    }
}

fn settings(drop: f64, false_alarms_per_day: f64) -> Settings {
    Settings {
        min_drop_fraction: drop,
        false_alarms_per_day,
        ..Settings::default()
    }
}

/// The same detector with the Wald bound's threshold, for comparison.
fn bound(drop: f64, false_alarms_per_day: f64) -> Settings {
    Settings {
        threshold: Threshold::WaldBound,
        ..settings(drop, false_alarms_per_day)
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = Run {
        seed: arg(&args, "--seed", 2026)?,
        days: arg(&args, "--days", 1500)?.max(1),
        traffic: Traffic::default(),
        settle_seconds: arg(&args, "--settle", 2)?.min(60) as i64,
    };
    let t = run.traffic;
    let mut rows = vec![
        Contender::new(
            "ConversionRate FixedWindow (10 s, minRatio 0.1, minEvents 20)",
            Box::new(FixedConversion::new(t.conversion / 2.0, 20, 10)),
        ),
        Contender::new(
            "ConversionRate Sequential (minDropFraction 0.5, falseAlarmsPerDay 1)",
            Box::new(Ratio::new(settings(0.5, 1.0))),
        ),
        Contender::new(
            "ConversionRate Sequential, Wald bound (minDropFraction 0.5, falseAlarmsPerDay 1)",
            Box::new(Ratio::new(bound(0.5, 1.0))),
        ),
        Contender::new(
            "ConversionRate Sequential, Wald bound (minDropFraction 0.5, falseAlarmsPerDay 5)",
            Box::new(Ratio::new(bound(0.5, 5.0))),
        ),
        Contender::new(
            "ConversionRate Sequential (minDropFraction 0.25, falseAlarmsPerDay 1)",
            Box::new(Ratio::new(settings(0.25, 1.0))),
        ),
        Contender::new(
            "ConversionRate Sequential (minDropFraction 0.5, falseAlarmsPerDay 5)",
            Box::new(Ratio::new(settings(0.5, 5.0))),
        ),
        Contender::new(
            "EventRateDrop FixedWindow (10 s vs 300 s, minFraction 0.5)",
            Box::new(FixedEventRate::new(0.5, 50, 10, 300)),
        ),
        Contender::new(
            "EventRateDrop Sequential (minDropFraction 0.5, falseAlarmsPerDay 1)",
            Box::new(Sequential::new(settings(0.5, 1.0))),
        ),
        Contender::new(
            "EventRateDrop Sequential, Wald bound (minDropFraction 0.5, falseAlarmsPerDay 1)",
            Box::new(Sequential::new(bound(0.5, 1.0))),
        ),
    ];
    let started = Instant::now();
    replay::replay(&run, &mut rows);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);

    println!(
        "bench-detect: seed {} · {} simulated days · settle {} s",
        run.seed, run.days, run.settle_seconds
    );
    println!(
        "traffic: {:.0} quotes/s by day (09:00-21:00), {:.0}% at night (00:00-06:00), conversion {:.2} ({:.1} purchases/s by day); \
         {:.0} bursts/day of x{:.1}-{:.1} for {:.0}-{:.0} s; one drop a day at a random time in the busy hours, sizes {:?} in turn, {} s long",
        t.day_quotes_per_second,
        t.night_fraction * 100.0,
        t.conversion,
        t.day_quotes_per_second * t.conversion,
        t.bursts_per_day,
        t.burst_factor.0,
        t.burst_factor.1,
        t.burst_seconds.0,
        t.burst_seconds.1,
        t.drops,
        t.drop_seconds,
    );
    println!(
        "counting: an alarm within {} s of the rule's previous one is the same episode; alarms from a drop's start to {} s after its end are the drop's; \
         delay = fault to the end of the alarming second plus the settle",
        EPISODE_GAP_SECONDS, AFTER_DROP_SECONDS
    );
    let seconds = run.days as f64 * 86_400.0;
    println!(
        "throughput: {:.0} simulated days/min ({:.1} M rule-seconds/s, {} rules), {:.1} s wall",
        run.days as f64 / elapsed * 60.0,
        seconds * rows.len() as f64 / elapsed / 1e6,
        rows.len(),
        elapsed
    );
    println!();
    print!("| rule | false alarms/day |");
    for size in t.drops {
        let pct = size * 100.0;
        print!(" {pct:.0}% p50 | {pct:.0}% p95 | {pct:.0}% missed |");
    }
    println!();
    print!("|---|---:|");
    for _ in t.drops {
        print!("---:|---:|---:|");
    }
    println!();
    let mut summary = Vec::new();
    for row in &mut rows {
        let per_day = row.false_alarms as f64 / run.days as f64;
        print!("| {} | {per_day:.2} |", row.name);
        let mut p50s = Vec::new();
        for (i, _) in t.drops.iter().enumerate() {
            let caught = row.delays[i].len() as u64;
            let total = caught + row.missed[i];
            let p50 = replay::quantile(&mut row.delays[i], 0.5);
            let p95 = replay::quantile(&mut row.delays[i], 0.95);
            let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0} s"));
            let missed = if total == 0 {
                0.0
            } else {
                row.missed[i] as f64 / total as f64 * 100.0
            };
            print!(" {} | {} | {missed:.0}% |", show(p50), show(p95));
            p50s.push(p50);
        }
        println!();
        summary.push((row.name.clone(), per_day, p50s));
    }
    println!();
    println!(
        "goals (issue 21), per rule: full stop at 4/s p50 <= 5 s · 50% drop p50 <= 15 s · <= 1 false alarm/day"
    );
    for (name, per_day, p50s) in summary {
        let mark = |ok: bool| if ok { "met" } else { "not met" };
        let stop = p50s.first().copied().flatten();
        let half = p50s.get(1).copied().flatten();
        println!(
            "  {name}: full stop {} ({}), 50% {} ({}), false alarms {} ({per_day:.2}/day)",
            mark(stop.is_some_and(|v| v <= 5.0)),
            stop.map_or("-".into(), |v| format!("{v:.0} s")),
            mark(half.is_some_and(|v| v <= 15.0)),
            half.map_or("-".into(), |v| format!("{v:.0} s")),
            mark(per_day <= 1.0),
        );
    }
    Ok(())
}
