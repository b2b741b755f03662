//! A load generator for the demo business: customers arrive at random
//! (a Poisson process at the given rate), ask the frontend for a quote, and
//! a share of them buy it after a moment's thought. Open loop: a slow
//! service does not slow the arrivals, as with real customers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The frontend's base URL.
    pub frontend: String,
    /// Customers per second (the average).
    pub rate: f64,
    /// The share of quoted customers who buy, 0 to 1.
    pub buy_ratio: f64,
    pub duration: Duration,
    /// Distinct customers (`u-0001` ...).
    pub users: u32,
}

/// At most this many customers in flight; arrivals beyond it are counted
/// as shed instead of piling up without bound.
const MAX_IN_FLIGHT: usize = 1024;
const PRODUCTS: [&str; 3] = ["car", "home", "travel"];

impl Plan {
    /// Checks the numbers a person typed.
    pub fn check(&self) -> Result<(), String> {
        if !(self.frontend.starts_with("http://") || self.frontend.starts_with("https://")) {
            return Err(format!(
                "--frontend must be an http(s) URL, got {:?}",
                self.frontend
            ));
        }
        if !(self.rate > 0.0 && self.rate <= 10_000.0) {
            return Err(format!(
                "--rate must be above 0 and at most 10000, got {}",
                self.rate
            ));
        }
        if !(0.0..=1.0).contains(&self.buy_ratio) {
            return Err(format!(
                "--buy-ratio must be between 0 and 1, got {}",
                self.buy_ratio
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if self.users == 0 {
            return Err("--users must be positive".into());
        }
        Ok(())
    }
}

/// Parses `60s`, `2m`, `500ms`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 2m, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// Counts over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub quotes_ok: u64,
    pub quotes_failed: u64,
    pub purchases_ok: u64,
    pub purchases_failed: u64,
    /// Arrivals dropped because too many customers were in flight.
    pub shed: u64,
    /// Request latencies in milliseconds.
    pub latencies_ms: Vec<u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.quotes_ok += other.quotes_ok;
        self.quotes_failed += other.quotes_failed;
        self.purchases_ok += other.purchases_ok;
        self.purchases_failed += other.purchases_failed;
        self.shed += other.shed;
        self.latencies_ms.extend_from_slice(&other.latencies_ms);
    }

    pub fn requests(&self) -> u64 {
        self.quotes_ok + self.quotes_failed + self.purchases_ok + self.purchases_failed
    }

    /// The latency at quantile `q` (0 to 1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let mut v = self.latencies_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v.get(i).copied()
    }

    /// One line for a person watching.
    pub fn line(&self, label: &str) -> String {
        let ms = |q| self.quantile_ms(q).map_or("-".into(), |v| v.to_string());
        format!(
            "{label}  quotes {} ok {} failed  purchases {} ok {} failed  p50 {} ms  p95 {} ms{}",
            self.quotes_ok,
            self.quotes_failed,
            self.purchases_ok,
            self.purchases_failed,
            ms(0.5),
            ms(0.95),
            if self.shed > 0 {
                format!("  shed {}", self.shed)
            } else {
                String::new()
            }
        )
    }
}

/// The wait until the next arrival of a Poisson process at `rate` per
/// second (exponentially distributed), from a uniform draw `u` in (0, 1].
pub fn inter_arrival(rate: f64, u: f64) -> Duration {
    Duration::from_secs_f64(-u.max(f64::MIN_POSITIVE).ln() / rate)
}

/// Runs the plan; `every_second` gets each second's counts as they close.
/// Answers the totals.
pub async fn run(plan: &Plan, mut every_second: impl FnMut(u64, &Tally)) -> Result<Tally, String> {
    plan.check()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let current = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut total = Tally::default();
    let start = Instant::now();
    let end = start + plan.duration;
    let mut next_arrival = start;
    let mut next_second = start + Duration::from_secs(1);
    let mut second = 0;
    let frontend = plan.frontend.trim_end_matches('/').to_owned();
    loop {
        let now = Instant::now();
        if now >= next_second {
            second += 1;
            let closed = take(&current);
            every_second(second, &closed);
            total.add(&closed);
            next_second += Duration::from_secs(1);
            if next_second > end + Duration::from_secs(1) {
                break;
            }
            continue;
        }
        if now >= next_arrival && now < end {
            match in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let customer = Customer {
                        http: http.clone(),
                        frontend: frontend.clone(),
                        user: format!("u-{:04}", fastrand::u32(1..=plan.users)),
                        product: PRODUCTS[fastrand::usize(..PRODUCTS.len())],
                        buys: fastrand::f64() < plan.buy_ratio,
                        tally: current.clone(),
                    };
                    tokio::spawn(async move {
                        customer.visit().await;
                        drop(permit);
                    });
                }
                Err(_) => lock(&current).shed += 1,
            }
            next_arrival += inter_arrival(plan.rate, 1.0 - fastrand::f64());
            continue;
        }
        let wake = if now < end {
            next_arrival.min(next_second)
        } else {
            next_second
        };
        tokio::time::sleep_until(wake.into()).await;
    }
    // Customers still in flight finish (bounded by the client's timeout).
    let _ = tokio::time::timeout(
        Duration::from_secs(12),
        in_flight.acquire_many(MAX_IN_FLIGHT as u32),
    )
    .await;
    total.add(&take(&current));
    Ok(total)
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn take(t: &Mutex<Tally>) -> Tally {
    std::mem::take(&mut *lock(t))
}

struct Customer {
    http: reqwest::Client,
    frontend: String,
    user: String,
    product: &'static str,
    buys: bool,
    tally: Arc<Mutex<Tally>>,
}

impl Customer {
    async fn visit(self) {
        let quote = self
            .post(
                "/api/quote",
                json!({ "user_id": self.user, "product": self.product }),
            )
            .await;
        let quote = match quote {
            Some(q) => {
                lock(&self.tally).quotes_ok += 1;
                q
            }
            None => {
                lock(&self.tally).quotes_failed += 1;
                return;
            }
        };
        if !self.buys {
            return;
        }
        // People read the price before they buy.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1500))).await;
        let bought = self
            .post(
                "/api/purchase",
                json!({
                    "quote_id": quote["quote_id"],
                    "user_id": quote["user_id"],
                    "premium_cents": quote["premium_cents"],
                }),
            )
            .await;
        let mut t = lock(&self.tally);
        if bought.is_some() {
            t.purchases_ok += 1;
        } else {
            t.purchases_failed += 1;
        }
    }

    /// A POST; the answer when it is a success.
    async fn post(&self, path: &str, body: Value) -> Option<Value> {
        let started = Instant::now();
        let answer = self
            .http
            .post(format!("{}{path}", self.frontend))
            .json(&body)
            .send()
            .await;
        lock(&self.tally)
            .latencies_ms
            .push(started.elapsed().as_millis() as u64);
        let response = answer.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("soon")
                .expect_err("no number")
                .contains("not a duration")
        );
        assert!(
            parse_duration("5d")
                .expect_err("unit")
                .contains("unknown unit")
        );
    }

    #[test]
    fn bad_plans_are_refused_with_the_flag_named() {
        let good = Plan {
            frontend: "http://127.0.0.1:18080".into(),
            rate: 10.0,
            buy_ratio: 0.3,
            duration: Duration::from_secs(1),
            users: 100,
        };
        assert_eq!(good.check(), Ok(()));
        for (plan, flag) in [
            (
                Plan {
                    rate: 0.0,
                    ..good.clone()
                },
                "--rate",
            ),
            (
                Plan {
                    buy_ratio: 1.5,
                    ..good.clone()
                },
                "--buy-ratio",
            ),
            (
                Plan {
                    frontend: "localhost:1".into(),
                    ..good.clone()
                },
                "--frontend",
            ),
            (
                Plan {
                    duration: Duration::ZERO,
                    ..good.clone()
                },
                "--duration",
            ),
        ] {
            assert!(plan.check().expect_err(flag).contains(flag));
        }
    }

    #[test]
    fn arrivals_average_the_rate() {
        // The mean of exponential waits at 20/s is 50 ms.
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| inter_arrival(20.0, 1.0 - fastrand::f64()).as_secs_f64())
            .sum();
        let mean = total / f64::from(n);
        assert!((0.045..0.055).contains(&mean), "mean wait {mean}");
    }

    #[test]
    fn quantiles_come_from_the_sorted_latencies() {
        let t = Tally {
            latencies_ms: vec![30, 10, 20, 40, 1000],
            ..Tally::default()
        };
        assert_eq!(t.quantile_ms(0.5), Some(30));
        assert_eq!(t.quantile_ms(1.0), Some(1000));
        assert_eq!(Tally::default().quantile_ms(0.5), None);
    }

    /// A frontend on loopback that quotes everyone and sells to everyone:
    /// the generator's counts match what the frontend saw.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_generator_drives_quotes_and_purchases_through_the_frontend() {
        use axum::Json;
        use axum::routing::post;
        use std::sync::atomic::{AtomicU64, Ordering};
        let quotes = Arc::new(AtomicU64::new(0));
        let purchases = Arc::new(AtomicU64::new(0));
        let (q, p) = (quotes.clone(), purchases.clone());
        let app = axum::Router::new()
            .route(
                "/api/quote",
                post(move |Json(b): Json<Value>| async move {
                    q.fetch_add(1, Ordering::Relaxed);
                    (
                        axum::http::StatusCode::CREATED,
                        Json(json!({"quote_id": "q-1", "user_id": b["user_id"], "premium_cents": 100})),
                    )
                }),
            )
            .route(
                "/api/purchase",
                post(move |Json(b): Json<Value>| async move {
                    p.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(b["quote_id"], "q-1");
                    Json(json!({"policy_id": "pol-1"}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let plan = Plan {
            frontend: format!("http://{addr}"),
            rate: 50.0,
            buy_ratio: 1.0,
            duration: Duration::from_secs(2),
            users: 10,
        };
        let mut seconds = 0;
        let total = run(&plan, |_, _| seconds += 1).await.expect("run");
        assert!(seconds >= 2, "one line a second: {seconds}");
        assert_eq!(total.quotes_ok, quotes.load(Ordering::Relaxed));
        assert_eq!(total.purchases_ok, purchases.load(Ordering::Relaxed));
        assert_eq!(
            total.purchases_ok, total.quotes_ok,
            "everyone buys at ratio 1"
        );
        assert!(
            (50..=160).contains(&total.quotes_ok),
            "about 100 customers in 2 s at 50/s: {total:?}"
        );
        assert_eq!(total.quotes_failed + total.purchases_failed, 0);
    }
}
