//! The CUSUM threshold calibrated to the run length the policy states.
//!
//! The Wald bound `ARL₀ ≥ e^h` holds for any chart of log-likelihood
//! ratios, but it is loose: a chart crosses `h` with an overshoot, and it
//! takes `1/KL` seconds on average to climb a nat, so the true in-control
//! run length is several times `e^h`. This module computes the run length
//! of the chart the detector runs, for the counts the model assumes
//! (Poisson, or binomial given the starts), and picks the threshold whose
//! run length is the one stated, at the traffic level where it is
//! shortest. At every other level the chart is slower to raise a false
//! alarm, so the stated rate is an upper estimate under the model, as the
//! bound was, only a tight one.
//!
//! The run length comes from the Markov chain of the statistic on a grid
//! (Brook and Evans 1972): `N` points from 0 to `h`, each step's
//! log-likelihood ratio added and the result split between the two points
//! around it in proportion (which keeps the step's mean), a value at or
//! below 0 mapped to 0 and one at or above `h` absorbed. The mean time to
//! absorption from 0 solves `(I - Q)·L = 1`. It is checked against
//! simulated charts in the tests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// What counts a chart is fed, and so which log-likelihood ratio it adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Counts {
    /// Poisson counts of mean `lambda` judged in the Poisson form:
    /// `x·ln(1-d) + d·lambda`.
    Poisson { lambda: f64 },
    /// `x` of `n` starts completed, each with probability `p`, judged in
    /// the binomial form: `x·ln(1-d) + (n-x)·ln(1 + d·p/(1-p))`.
    Binomial { n: u64, p: f64 },
}

/// Points on the grid of the statistic: enough that the run length is
/// within a few percent of a simulation's, few enough that a solve takes
/// milliseconds.
const GRID: usize = 300;

/// The distribution of one step's log-likelihood ratio for a drop of
/// fraction `drop`: `(llr, probability)` pairs, covering all but about
/// 1e-12 of the mass.
fn steps(counts: Counts, drop: f64) -> Vec<(f64, f64)> {
    let per_event = (1.0 - drop).ln();
    match counts {
        Counts::Poisson { lambda } => {
            let top = (lambda + 12.0 * lambda.sqrt() + 20.0).ceil() as u64;
            let mut p = (-lambda).exp();
            let mut out = Vec::with_capacity(top as usize + 1);
            for x in 0..=top {
                if x > 0 {
                    p *= lambda / x as f64;
                }
                out.push((x as f64 * per_event + drop * lambda, p));
            }
            out
        }
        Counts::Binomial { n, p } => {
            let per_miss = (drop * p / (1.0 - p)).ln_1p();
            // The pmf built up from x = 0 by the ratio of successive terms,
            // in logs so that a large `n` does not underflow at the start.
            let (lp, lq) = (p.ln(), (1.0 - p).ln());
            let mut log_pmf = n as f64 * lq;
            let mut out = Vec::with_capacity(n as usize + 1);
            for x in 0..=n {
                if x > 0 {
                    log_pmf += ((n - x + 1) as f64 / x as f64).ln() + lp - lq;
                }
                let llr = x as f64 * per_event + (n - x) as f64 * per_miss;
                out.push((llr, log_pmf.exp()));
            }
            out
        }
    }
}

/// The mean number of steps before a CUSUM started at 0 reaches `h`, when
/// each step adds a log-likelihood ratio drawn from `counts`.
pub fn run_length(counts: Counts, drop: f64, h: f64) -> f64 {
    run_length_of(&steps(counts, drop), h)
}

fn run_length_of(steps: &[(f64, f64)], h: f64) -> f64 {
    run_length_with(steps, h, GRID)
}

fn run_length_with(steps: &[(f64, f64)], h: f64, n: usize) -> f64 {
    let width = h / n as f64;
    // Row j of `I - Q`, for the chart at j·width.
    let mut a = vec![0.0f64; n * n];
    for j in 0..n {
        let row = &mut a[j * n..(j + 1) * n];
        row[j] += 1.0;
        let at = j as f64 * width;
        for &(llr, prob) in steps {
            let to = at + llr;
            if to >= h {
                continue;
            }
            if to <= 0.0 {
                row[0] -= prob;
                continue;
            }
            // Split between the two points around `to`, in proportion, so
            // that the grid keeps the step's mean: rounding to the nearest
            // point would add up to half a point to every step.
            let at_grid = to / width;
            let k = at_grid.floor() as usize;
            let up = at_grid - k as f64;
            if k < n {
                row[k] -= prob * (1.0 - up);
            }
            if k + 1 < n {
                row[k + 1] -= prob * up;
            }
        }
    }
    let mut b = vec![1.0f64; n];
    solve(&mut a, &mut b, n);
    b[0]
}

/// Solves `a·x = b` in place (Gaussian elimination with partial pivoting);
/// `b` holds `x` afterwards. `I - Q` of a chain that is absorbed from every
/// state is non-singular.
fn solve(a: &mut [f64], b: &mut [f64], n: usize) {
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap_or(col);
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
            }
            b.swap(pivot, col);
        }
        let d = a[col * n + col];
        if d == 0.0 {
            continue;
        }
        for i in col + 1..n {
            let f = a[i * n + col] / d;
            if f == 0.0 {
                continue;
            }
            for k in col..n {
                a[i * n + k] -= f * a[col * n + k];
            }
            b[i] -= f * b[col];
        }
    }
    for col in (0..n).rev() {
        let mut s = b[col];
        for k in col + 1..n {
            s -= a[col * n + k] * b[k];
        }
        let d = a[col * n + col];
        b[col] = if d == 0.0 { f64::INFINITY } else { s / d };
    }
}

/// The traffic levels a chart is calibrated over: expected events a step
/// from 0.25 to 256, a factor of √2 apart. Below a quarter of an event a
/// step the chart is far slower to alarm on noise than at a few events (it
/// needs many empty steps in a row); above a few hundred its steps are
/// nearly Gaussian and, with larger steps, overshoot more.
fn levels() -> impl Iterator<Item = f64> {
    (0..=40).map(|i| 0.25 * 2f64.powf(i as f64 / 4.0))
}

/// The completion ratios a binomial chart is calibrated over (the form is
/// used below 0.3; the Poisson form is its limit as the ratio goes to 0).
const RATIOS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];

/// What a chart is calibrated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// Rates, judged in the Poisson form.
    Poisson,
    /// Ratios: judged in the binomial form below 0.3 and in the Poisson
    /// form above (where the binomial counts vary less than the Poisson
    /// ones the form assumes), so calibrated over both, as a ratio can
    /// cross from one to the other.
    Binomial,
}

fn cases(form: Form) -> Vec<Counts> {
    let mut out: Vec<Counts> = levels().map(|lambda| Counts::Poisson { lambda }).collect();
    if form == Form::Binomial {
        for p in RATIOS {
            for mean in levels() {
                let n = (mean / p).round() as u64;
                if (1..=2000).contains(&n) {
                    out.push(Counts::Binomial { n, p });
                }
            }
        }
    }
    out
}

/// A calibration remembered: the form, the drop's and the run length's bits.
type Key = (Form, u64, u64);

/// The threshold, in nats, at which a chart for a drop of `drop` has an
/// in-control run length of `steps` steps at the traffic level where it is
/// shortest. Never above the Wald bound's `ln steps` (which holds for any
/// counts) and never below a nat. Computed once per process for each
/// form, drop and run length (a fraction of a second), then remembered.
pub fn threshold_for_run_length(form: Form, drop: f64, steps: f64) -> f64 {
    let wald = steps.ln().max(1.0);
    let key = (form, drop.to_bits(), steps.to_bits());
    static MEMO: OnceLock<Mutex<HashMap<Key, f64>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(h) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return h;
    }
    let h = calibrate(form, drop, steps.ln(), wald);
    if let Ok(mut m) = memo.lock() {
        // A policy can state any rate and drop: the memory is bounded, and
        // forgets everything rather than grow with a policy's edits.
        if m.len() >= MEMO_ENTRIES {
            m.clear();
        }
        m.insert(key, h);
    }
    h
}

/// Calibrations remembered at most, per process.
const MEMO_ENTRIES: usize = 256;

/// `ln ARL₀ - h` on a grid of `grid` points: how many nats the run length
/// exceeds the Wald bound by. A run length too long to compute
/// (a level at which the chart practically never alarms) is infinite.
fn excess(case: &[(f64, f64)], h: f64, grid: usize) -> f64 {
    let l = run_length_with(case, h, grid);
    if l.is_finite() && l > 0.0 {
        l.ln() - h
    } else {
        f64::INFINITY
    }
}

fn calibrate(form: Form, drop: f64, target: f64, wald: f64) -> f64 {
    let mut cases: Vec<(f64, Vec<(f64, f64)>)> = cases(form)
        .into_iter()
        .map(|c| {
            let s = steps(c, drop);
            (excess(&s, wald, COARSE_GRID), s)
        })
        .collect();
    // The few levels where the chart alarms soonest decide; refine on
    // those with the fine grid. ln ARL₀ grows by about a nat per nat of
    // threshold, so each round steps down by the shortfall.
    cases.sort_by(|a, b| a.0.total_cmp(&b.0));
    cases.truncate(WORST);
    let mut h = wald;
    for _ in 0..3 {
        let shortest = cases
            .iter()
            .map(|(_, s)| excess(s, h, GRID) + h)
            .fold(f64::INFINITY, f64::min);
        if !shortest.is_finite() {
            break;
        }
        h = (h - (shortest - target)).clamp(1.0, wald);
    }
    h
}

/// The grid of the first pass over every level.
const COARSE_GRID: usize = 200;

/// How many of the levels where the first pass found the chart quickest
/// to alarm are refined.
const WORST: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Rng;

    /// The mean run length of `runs` simulated CUSUMs from 0 to `h`.
    fn simulated(counts: Counts, drop: f64, h: f64, runs: u32, seed: u64) -> f64 {
        let mut rng = Rng::new(seed);
        let per_event = (1.0 - drop).ln();
        let mut total = 0u64;
        for _ in 0..runs {
            let mut s = 0.0f64;
            let mut t = 0u64;
            while s < h {
                t += 1;
                let llr = match counts {
                    Counts::Poisson { lambda } => {
                        rng.poisson(lambda) as f64 * per_event + drop * lambda
                    }
                    Counts::Binomial { n, p } => {
                        let x = rng.binomial(n, p);
                        let per_miss = (drop * p / (1.0 - p)).ln_1p();
                        x as f64 * per_event + (n - x) as f64 * per_miss
                    }
                };
                s = (s + llr).max(0.0);
            }
            total += t;
        }
        total as f64 / runs as f64
    }

    #[test]
    fn the_chains_run_length_matches_simulated_charts() {
        // A low threshold, so that a few thousand runs are quick; the
        // standard error of their mean is about 1/√runs of it (2%).
        for (counts, drop) in [
            (Counts::Poisson { lambda: 4.0 }, 0.5),
            (Counts::Poisson { lambda: 0.5 }, 0.5),
            (Counts::Poisson { lambda: 2.83 }, 0.9),
            (Counts::Poisson { lambda: 40.0 }, 0.25),
            (Counts::Binomial { n: 20, p: 0.2 }, 0.5),
            (Counts::Binomial { n: 7, p: 0.3 }, 0.9),
        ] {
            let h = 6.0;
            let chain = run_length(counts, drop, h);
            let sim = simulated(counts, drop, h, 3000, 11);
            let off = chain / sim - 1.0;
            assert!(
                off.abs() < 0.08,
                "{counts:?}, drop {drop}: chain {chain:.0}, simulated {sim:.0}"
            );
            // And well above the Wald bound's e^h, which it refines.
            assert!(chain > 2.0 * h.exp(), "{counts:?}: {chain:.0}");
        }
    }

    #[test]
    fn the_calibrated_threshold_gives_the_stated_run_length_where_it_is_shortest() {
        let steps = 2.0 * 86_400.0;
        let h = threshold_for_run_length(Form::Poisson, 0.5, steps);
        // Below the Wald bound's, by the nat and a half its looseness is
        // worth for a halving.
        assert!(h < steps.ln() - 1.0 && h > steps.ln() - 2.0, "{h}");
        let shortest = levels()
            .map(|lambda| run_length(Counts::Poisson { lambda }, 0.5, h))
            .fold(f64::INFINITY, f64::min);
        assert!(
            (shortest / steps - 1.0).abs() < 0.1,
            "{shortest:.0} of {steps}"
        );
        // A stated run length the chain cannot beat by much keeps a nat.
        assert_eq!(threshold_for_run_length(Form::Poisson, 0.5, 2.0), 1.0);
    }

    #[test]
    fn a_ratio_below_a_third_is_calibrated_over_the_binomial_form_too() {
        let steps = 86_400.0;
        let poisson = threshold_for_run_length(Form::Poisson, 0.9, steps);
        let binomial = threshold_for_run_length(Form::Binomial, 0.9, steps);
        // The binomial form alarms sooner at some level, so it needs a
        // higher threshold, never a lower one.
        assert!(binomial >= poisson - 1e-9, "{binomial} against {poisson}");
        for (n, p) in [(20, 0.2), (60, 0.05), (10, 0.3)] {
            let l = run_length(Counts::Binomial { n, p }, 0.9, binomial);
            assert!(l > 0.9 * steps, "n {n}, p {p}: {l:.0}");
        }
    }
}
