//! Seeded synthetic business traffic: quotes and purchases per second, with
//! a daily cycle (busy days, quiet nights), flash-crowd bursts and injected
//! drops of the purchase rate. Deterministic for a seed.

/// A small, fast, seeded generator (xoshiro256**, seeded through
/// splitmix64). Not for secrets.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A Poisson variate of mean `mean`, by inversion (in pieces of mean
    /// at most 30, so that `e^-mean` never underflows).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 || mean.is_infinite() {
            return 0;
        }
        let mut left = mean;
        let mut total = 0u64;
        while left > 0.0 {
            let m = left.min(30.0);
            left -= m;
            let u = self.uniform();
            let mut p = (-m).exp();
            let mut cdf = p;
            let mut k = 0u64;
            while u > cdf && k < 1000 {
                k += 1;
                p *= m / k as f64;
                cdf += p;
            }
            total = total.saturating_add(k);
        }
        total
    }

    /// A binomial variate: how many of `n` trials of probability `p`
    /// succeed.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        let p = p.clamp(0.0, 1.0);
        (0..n).filter(|_| self.uniform() < p).count() as u64
    }
}

/// The shape of the simulated business.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// Quotes a second in the busy part of the day.
    pub day_quotes_per_second: f64,
    /// Quotes a second at night, as a fraction of the day's.
    pub night_fraction: f64,
    /// The share of quotes bought.
    pub conversion: f64,
    /// Flash crowds a day, on average.
    pub bursts_per_day: f64,
    /// A burst multiplies the quotes by a factor drawn in this range…
    pub burst_factor: (f64, f64),
    /// …for a duration drawn in this range, in seconds.
    pub burst_seconds: (f64, f64),
    /// The drop injected each day, one size per day in turn (fractions of
    /// the purchase rate: 1.0 is a full stop).
    pub drops: [f64; 3],
    /// How long an injected drop lasts, in seconds.
    pub drop_seconds: i64,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            day_quotes_per_second: 20.0,
            night_fraction: 0.1,
            conversion: 0.2,
            bursts_per_day: 8.0,
            burst_factor: (1.5, 4.0),
            burst_seconds: (10.0, 180.0),
            drops: [1.0, 0.5, 0.25],
            drop_seconds: 1800,
        }
    }
}

/// The busy hours, when drops are injected: 09:00 to 21:00.
pub const DAY_START: i64 = 9 * 3600;
/// The end of the busy hours.
pub const DAY_END: i64 = 21 * 3600;

impl Traffic {
    /// The quotes a second expected at `second` of the day, before bursts:
    /// quiet from midnight to 06:00, a ramp to the busy level by 09:00, busy
    /// until 21:00, a ramp down by midnight.
    pub fn daily_level(&self, second_of_day: i64) -> f64 {
        let (day, night) = (
            self.day_quotes_per_second,
            self.day_quotes_per_second * self.night_fraction,
        );
        let ramp = |from: f64, to: f64, t: f64| {
            let w = (1.0 - (std::f64::consts::PI * t).cos()) / 2.0;
            from + (to - from) * w
        };
        let s = second_of_day.rem_euclid(86_400);
        match s {
            s if s < 6 * 3600 => night,
            s if s < DAY_START => ramp(night, day, (s - 6 * 3600) as f64 / (3.0 * 3600.0)),
            s if s < DAY_END => day,
            s => ramp(day, night, (s - DAY_END) as f64 / (3.0 * 3600.0)),
        }
    }

    /// One simulated day: its injected drop and its bursts.
    pub fn plan_day(&self, rng: &mut Rng, day: u64) -> DayPlan {
        let size = self.drops[(day % self.drops.len() as u64) as usize];
        let latest = DAY_END - self.drop_seconds;
        let start = DAY_START + (rng.uniform() * (latest - DAY_START) as f64) as i64;
        let mut bursts = Vec::new();
        let n = rng.poisson(self.bursts_per_day);
        for _ in 0..n {
            let at = (rng.uniform() * 86_400.0) as i64;
            let len = rng.between(self.burst_seconds.0, self.burst_seconds.1) as i64;
            let factor = rng.between(self.burst_factor.0, self.burst_factor.1);
            bursts.push((at, at + len, factor));
        }
        DayPlan {
            drop: Drop {
                start,
                end: start + self.drop_seconds,
                size,
            },
            bursts,
        }
    }

    /// The quotes and purchases of `second` of a day planned as `plan`.
    pub fn second(&self, rng: &mut Rng, plan: &DayPlan, second_of_day: i64) -> (u64, u64) {
        let mut level = self.daily_level(second_of_day);
        for &(from, to, factor) in &plan.bursts {
            if (from..to).contains(&second_of_day) {
                level *= factor;
            }
        }
        let quotes = rng.poisson(level);
        let mut p = self.conversion;
        if (plan.drop.start..plan.drop.end).contains(&second_of_day) {
            p *= 1.0 - plan.drop.size;
        }
        // Thinning a Poisson stream: purchases are Poisson of mean
        // `level × p`, and binomial given the quotes.
        let purchases = if p > 0.0 { rng.binomial(quotes, p) } else { 0 };
        (quotes, purchases)
    }
}

/// A drop of the purchase rate injected into a simulated day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drop {
    /// Its first second, from midnight.
    pub start: i64,
    /// The second after its last.
    pub end: i64,
    /// The fraction of purchases lost.
    pub size: f64,
}

/// What happens on one simulated day.
#[derive(Clone, Debug, PartialEq)]
pub struct DayPlan {
    /// The injected drop.
    pub drop: Drop,
    /// Bursts: first second, second after the last, factor on quotes.
    pub bursts: Vec<(i64, i64, f64)>,
}
