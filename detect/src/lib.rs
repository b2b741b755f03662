//! Sequential change detection for business signals: per-second event
//! counts judged as a rate (events per second, EventRateDrop) or as a ratio
//! (completions per start, ConversionRate), and the replay benchmark that
//! compares the detector with the fixed-window rule it replaces.
//!
//! Pure and deterministic: no I/O and no clock. The caller feeds one
//! confirmed second at a time and reads back a judgement with its evidence.
//! The statistics are written up in `docs/detection.md`.
//!
//! A crate of its own, without dependencies, so that it can be built
//! optimised in the dev profile (the benchmark replays thousands of
//! simulated days a minute) without slowing the operator's build.

pub mod calibrate;
pub mod fixed;
pub mod replay;
pub mod sequential;
pub mod traffic;

pub use fixed::{FixedConversion, FixedEventRate};
pub use sequential::{
    Evidence, Measure, Sequential, Settings, State, Threshold, threshold_for, threshold_for_steps,
};

/// Seconds in a day: the unit of the false-alarm rate a policy states.
pub const DAY_SECONDS: f64 = 86_400.0;

/// A judgement of one second, common to every rule the benchmark compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too little data to judge.
    Unknown,
    /// No drop of the stated size.
    Healthy,
    /// A drop of at least the stated size.
    Firing,
}

/// A rule fed one second of counts at a time: `numerator` events (the
/// purchases, or the topic's events for a rate) and `denominator` events
/// (the quotes; ignored by rate rules).
pub trait Rule {
    /// Judges the signal after second `second` has been counted.
    fn observe(&mut self, second: i64, numerator: u64, denominator: u64) -> Verdict;
}
