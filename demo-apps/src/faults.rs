//! Fault switches: what `sre-chaos` flips at run time (`POST`/`DELETE
//! /chaos/{fault}`, with the bearer token of `CHAOS_TOKEN`), and the faults
//! a configuration ships (`PAYMENT_MODE=broken`, `LATENCY_MS`), which only a
//! new rollout removes, as in a real bad release.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault a service can be switched into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Leak memory at a steady rate until the container's limit kills it.
    Oom,
    /// Purchases fail at the payment step (policy-service only).
    Conversion,
    /// The service's main operation takes longer.
    Latency,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oom" => Ok(Self::Oom),
            "conversion" => Ok(Self::Conversion),
            "latency" => Ok(Self::Latency),
            other => Err(format!(
                "unknown fault {other:?} (expected oom, conversion or latency)"
            )),
        }
    }
}

/// Why a switch request is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `CHAOS_TOKEN` configured: a service in production keeps its
    /// switches off entirely.
    #[error("fault switches are disabled (CHAOS_TOKEN is not set)")]
    Disabled,
    #[error("missing or malformed Authorization header (expected: Bearer <token>)")]
    Missing,
    #[error("wrong chaos token")]
    Wrong,
}

/// Checks an `Authorization` header value against the configured token.
pub fn authorize(token: Option<&str>, header: Option<&str>) -> Result<(), Denied> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Denied::Disabled)?;
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Denied::Missing)?;
    if constant_time_eq(token.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The optional body of `POST /chaos/{fault}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `oom`: how fast to leak (default 16).
    pub mib_per_second: Option<u64>,
    /// `latency`: the added delay (default 500).
    pub millis: Option<u64>,
}

pub const DEFAULT_LEAK_MIB_PER_SECOND: u64 = 16;
pub const DEFAULT_LATENCY_MILLIS: u64 = 500;
/// Upper bounds that keep a typo from making a switch useless.
const MAX_LEAK_MIB_PER_SECOND: u64 = 1024;
const MAX_LATENCY_MILLIS: u64 = 60_000;

/// The current state of one service's faults.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct State {
    pub conversion: bool,
    /// From the configuration (`PAYMENT_MODE=broken`); not switchable.
    pub payment_broken: bool,
    pub latency_millis: u64,
    /// From the configuration (`LATENCY_MS`); not switchable.
    pub configured_latency_millis: u64,
    pub oom_mib_per_second: u64,
    pub leaked_mib: u64,
}

/// One service's switches. Cheap to clone.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

struct FaultsInner {
    offered: Vec<Fault>,
    payment_broken: bool,
    configured_latency: u64,
    conversion: AtomicBool,
    latency: AtomicU64,
    leak_rate: AtomicU64,
    leaked: Mutex<Vec<Vec<u8>>>,
    leaked_mib: AtomicU64,
    leaker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Faults {
    pub fn new(offered: &[Fault], payment_broken: bool, configured_latency_millis: u64) -> Self {
        Self {
            inner: Arc::new(FaultsInner {
                offered: offered.to_vec(),
                payment_broken,
                configured_latency: configured_latency_millis,
                conversion: AtomicBool::new(false),
                latency: AtomicU64::new(0),
                leak_rate: AtomicU64::new(0),
                leaked: Mutex::new(Vec::new()),
                leaked_mib: AtomicU64::new(0),
                leaker: Mutex::new(None),
            }),
        }
    }

    pub fn offers(&self, fault: Fault) -> bool {
        self.inner.offered.contains(&fault)
    }

    /// Whether payments fail, switched or configured.
    pub fn payment_failing(&self) -> bool {
        self.inner.payment_broken || self.inner.conversion.load(Ordering::Relaxed)
    }

    /// The delay the main operation gets now.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(
            self.inner.configured_latency + self.inner.latency.load(Ordering::Relaxed),
        )
    }

    pub fn state(&self) -> State {
        State {
            conversion: self.inner.conversion.load(Ordering::Relaxed),
            payment_broken: self.inner.payment_broken,
            latency_millis: self.inner.latency.load(Ordering::Relaxed),
            configured_latency_millis: self.inner.configured_latency,
            oom_mib_per_second: self.inner.leak_rate.load(Ordering::Relaxed),
            leaked_mib: self.inner.leaked_mib.load(Ordering::Relaxed),
        }
    }

    /// Turns `fault` on. Checks the settings before changing anything.
    pub fn enable(&self, fault: Fault, settings: &Settings) -> Result<(), String> {
        if !self.offers(fault) {
            return Err(format!("this service has no {fault:?} fault").to_lowercase());
        }
        match fault {
            Fault::Conversion => self.inner.conversion.store(true, Ordering::Relaxed),
            Fault::Latency => {
                let ms = settings.millis.unwrap_or(DEFAULT_LATENCY_MILLIS);
                if ms == 0 || ms > MAX_LATENCY_MILLIS {
                    return Err(format!(
                        "millis must be 1 to {MAX_LATENCY_MILLIS}, got {ms}"
                    ));
                }
                self.inner.latency.store(ms, Ordering::Relaxed);
            }
            Fault::Oom => {
                let rate = settings
                    .mib_per_second
                    .unwrap_or(DEFAULT_LEAK_MIB_PER_SECOND);
                if rate == 0 || rate > MAX_LEAK_MIB_PER_SECOND {
                    return Err(format!(
                        "mib_per_second must be 1 to {MAX_LEAK_MIB_PER_SECOND}, got {rate}"
                    ));
                }
                self.inner.leak_rate.store(rate, Ordering::Relaxed);
                let mut leaker = self.inner.leaker.lock().map_err(|e| e.to_string())?;
                if leaker.is_none() {
                    let inner = self.inner.clone();
                    *leaker = Some(tokio::spawn(leak(inner)));
                }
            }
        }
        tracing::warn!(?fault, ?settings, "fault switched on");
        Ok(())
    }

    /// Turns `fault` off (memory leaked so far is given back).
    pub fn disable(&self, fault: Fault) -> Result<(), String> {
        if !self.offers(fault) {
            return Err(format!("this service has no {fault:?} fault").to_lowercase());
        }
        match fault {
            Fault::Conversion => self.inner.conversion.store(false, Ordering::Relaxed),
            Fault::Latency => self.inner.latency.store(0, Ordering::Relaxed),
            Fault::Oom => {
                self.inner.leak_rate.store(0, Ordering::Relaxed);
                if let Some(task) = self.inner.leaker.lock().map_err(|e| e.to_string())?.take() {
                    task.abort();
                }
                self.inner.leaked.lock().map_err(|e| e.to_string())?.clear();
                self.inner.leaked_mib.store(0, Ordering::Relaxed);
            }
        }
        tracing::info!(?fault, "fault switched off");
        Ok(())
    }
}

/// Allocates the leak rate every second and writes every byte, so the
/// memory is resident and charged to the container's cgroup.
async fn leak(inner: Arc<FaultsInner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rate = inner.leak_rate.load(Ordering::Relaxed);
        let Ok(mut leaked) = inner.leaked.lock() else {
            return;
        };
        for _ in 0..rate {
            leaked.push(vec![0x5a; 1 << 20]);
        }
        let total = inner.leaked_mib.fetch_add(rate, Ordering::Relaxed) + rate;
        tracing::warn!(leaked_mib = total, "leaking memory (oom fault)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_need_the_configured_bearer_token() {
        assert_eq!(authorize(Some("s3cret"), Some("Bearer s3cret")), Ok(()));
        assert_eq!(
            authorize(Some("s3cret"), Some("Bearer guess")),
            Err(Denied::Wrong)
        );
        assert_eq!(
            authorize(Some("s3cret"), Some("Bearer s3cre")),
            Err(Denied::Wrong)
        );
        assert_eq!(authorize(Some("s3cret"), None), Err(Denied::Missing));
        assert_eq!(
            authorize(Some("s3cret"), Some("Basic s3cret")),
            Err(Denied::Missing)
        );
        assert_eq!(
            authorize(Some("s3cret"), Some("Bearer ")),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn without_a_token_configured_the_switches_are_off_for_everyone() {
        assert_eq!(
            authorize(None, Some("Bearer anything")),
            Err(Denied::Disabled)
        );
        assert_eq!(authorize(Some(""), Some("Bearer ")), Err(Denied::Disabled));
    }

    #[test]
    fn unknown_fault_names_are_refused_by_name() {
        assert_eq!("conversion".parse(), Ok(Fault::Conversion));
        let err = "slow".parse::<Fault>().expect_err("unknown");
        assert!(err.contains("\"slow\"") && err.contains("latency"), "{err}");
    }

    #[tokio::test]
    async fn conversion_fails_payments_until_switched_off() {
        let f = Faults::new(&[Fault::Conversion, Fault::Latency], false, 0);
        assert!(!f.payment_failing());
        f.enable(Fault::Conversion, &Settings::default())
            .expect("on");
        assert!(f.payment_failing());
        f.disable(Fault::Conversion).expect("off");
        assert!(!f.payment_failing());
    }

    #[tokio::test]
    async fn a_configured_payment_fault_survives_the_switch() {
        let f = Faults::new(&[Fault::Conversion], true, 0);
        f.disable(Fault::Conversion).expect("off");
        assert!(f.payment_failing(), "only a new rollout removes it");
    }

    #[tokio::test]
    async fn latency_adds_to_the_configured_delay_and_is_bounded() {
        let f = Faults::new(&[Fault::Latency], false, 100);
        assert_eq!(f.delay(), Duration::from_millis(100));
        f.enable(
            Fault::Latency,
            &Settings {
                millis: Some(250),
                ..Settings::default()
            },
        )
        .expect("on");
        assert_eq!(f.delay(), Duration::from_millis(350));
        let err = f
            .enable(
                Fault::Latency,
                &Settings {
                    millis: Some(600_000),
                    ..Settings::default()
                },
            )
            .expect_err("too long");
        assert!(err.contains("millis"), "{err}");
        f.disable(Fault::Latency).expect("off");
        assert_eq!(f.delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_fault_the_service_does_not_offer_is_refused() {
        let f = Faults::new(&[Fault::Oom, Fault::Latency], false, 0);
        let err = f
            .enable(Fault::Conversion, &Settings::default())
            .expect_err("not offered");
        assert!(err.contains("conversion"), "{err}");
        assert!(!f.payment_failing());
    }

    #[tokio::test]
    async fn the_oom_fault_leaks_resident_memory_until_switched_off() {
        let f = Faults::new(&[Fault::Oom], false, 0);
        f.enable(
            Fault::Oom,
            &Settings {
                mib_per_second: Some(2),
                ..Settings::default()
            },
        )
        .expect("on");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let leaked = f.state().leaked_mib;
        assert!(leaked >= 2, "leaked {leaked} MiB");
        f.disable(Fault::Oom).expect("off");
        assert_eq!(f.state().leaked_mib, 0);
        assert_eq!(f.state().oom_mib_per_second, 0);
    }
}
