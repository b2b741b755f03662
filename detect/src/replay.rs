//! Replays simulated days through several rules side by side and tallies,
//! for each, its false alarms and how soon it caught each injected drop.

use crate::traffic::{Rng, Traffic};
use crate::{Rule, Verdict};

/// Alarms of one rule closer together than this are one episode: the
/// operator updates the open Incident rather than open a second one.
pub const EPISODE_GAP_SECONDS: i64 = 300;

/// After an injected drop ends, alarms raised within this many seconds are
/// still the drop's (a window still holding its seconds), not false.
pub const AFTER_DROP_SECONDS: i64 = 120;

/// One rule under test and what it did.
pub struct Contender {
    /// The row's name in the table.
    pub name: String,
    rule: Box<dyn Rule>,
    last_firing: Option<i64>,
    caught: bool,
    /// Alarms raised outside any injected drop.
    pub false_alarms: u64,
    /// Per drop size (index into `Traffic::drops`): the delays of the drops
    /// caught, in seconds from the fault to the alarm.
    pub delays: Vec<Vec<f64>>,
    /// Per drop size: drops not caught while they lasted.
    pub missed: Vec<u64>,
}

impl Contender {
    /// A row for `rule`.
    pub fn new(name: impl Into<String>, rule: Box<dyn Rule>) -> Self {
        Self {
            name: name.into(),
            rule,
            last_firing: None,
            caught: false,
            false_alarms: 0,
            delays: Vec::new(),
            missed: Vec::new(),
        }
    }
}

/// The run's parameters, printed with its results so that it can be
/// repeated.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The seed of the traffic.
    pub seed: u64,
    /// How many days are simulated.
    pub days: u64,
    /// The traffic's shape.
    pub traffic: Traffic,
    /// Seconds between the end of a second and the rules' judging it (the
    /// operator waits 3 s today for late events).
    pub settle_seconds: i64,
}

/// Replays `run` through every contender. Each rule sees the same seconds.
pub fn replay(run: &Run, contenders: &mut [Contender]) {
    let mut rng = Rng::new(run.seed);
    let sizes = run.traffic.drops.len();
    for c in contenders.iter_mut() {
        c.delays = vec![Vec::new(); sizes];
        c.missed = vec![0; sizes];
    }
    for day in 0..run.days {
        let plan = run.traffic.plan_day(&mut rng, day);
        let size_index = (day % sizes as u64) as usize;
        for c in contenders.iter_mut() {
            c.caught = false;
        }
        let base = day as i64 * 86_400;
        for s in 0..86_400 {
            let (quotes, purchases) = run.traffic.second(&mut rng, &plan, s);
            let in_drop = (plan.drop.start..plan.drop.end + AFTER_DROP_SECONDS).contains(&s);
            for c in contenders.iter_mut() {
                let v = c.rule.observe(base + s, purchases, quotes);
                if v != Verdict::Firing {
                    continue;
                }
                let new_episode = c
                    .last_firing
                    .is_none_or(|l| base + s - l > EPISODE_GAP_SECONDS);
                c.last_firing = Some(base + s);
                if in_drop {
                    if !c.caught && s < plan.drop.end {
                        c.caught = true;
                        // The second's counts are judged `settle` seconds
                        // after it ends.
                        let delay = (s + 1 + run.settle_seconds - plan.drop.start) as f64;
                        c.delays[size_index].push(delay);
                    }
                } else if new_episode {
                    c.false_alarms += 1;
                }
            }
        }
        for c in contenders.iter_mut() {
            if !c.caught {
                c.missed[size_index] += 1;
            }
        }
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank; None when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedConversion;

    #[test]
    fn a_replay_is_the_same_for_the_same_seed() {
        let run = Run {
            seed: 42,
            days: 2,
            traffic: Traffic::default(),
            settle_seconds: 3,
        };
        let tally = || {
            let mut c = vec![Contender::new(
                "fixed",
                Box::new(FixedConversion::new(0.1, 20, 10)),
            )];
            replay(&run, &mut c);
            (c[0].false_alarms, c[0].delays.clone(), c[0].missed.clone())
        };
        assert_eq!(tally(), tally());
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 0.95), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
