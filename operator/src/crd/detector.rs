//! How a business trigger (ConversionRate, EventRateDrop) judges its
//! per-second counts, and a Metric trigger its rate: the fixed window (or
//! threshold), or the sequential change detector of `sre-space-detect`
//! (docs/detection.md).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The rule a business trigger judges with.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DetectorType {
    /// The trigger's own window and threshold (`windowSeconds` with
    /// `minRatio`, or `minFraction` of the baseline window): simple to read,
    /// about ten false alarms a day on bursty traffic.
    #[default]
    FixedWindow,
    /// A CUSUM on the per-second counts against a baseline learned from the
    /// signal: alarms as soon as the evidence of a drop of at least
    /// `minDropFraction` crosses the threshold that `falseAlarmsPerDay`
    /// sets.
    Sequential,
}

/// How a business trigger judges. Without it, the trigger keeps its fixed
/// window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'Sequential' || !has(self.minDropFraction)").message("minDropFraction applies to the Sequential detector only"))]
pub struct Detector {
    /// `FixedWindow` (the default) or `Sequential`.
    #[serde(default, rename = "type")]
    pub kind: DetectorType,
    /// Sequential: the false alarms a day the threshold is calibrated to:
    /// what the detector's model (independent arrivals) predicts at the
    /// traffic level where it alarms on noise soonest, so steady traffic
    /// raises at most about this many. Bursty or batched arrivals can raise
    /// more: state less there. Fewer false alarms mean a higher threshold
    /// and slower detection. Defaults to 1.
    #[serde(default = "Detector::default_false_alarms_per_day")]
    #[schemars(range(min = 0.01, max = 1000.0))]
    pub false_alarms_per_day: f64,
    /// Sequential: the smallest drop worth an incident, as a fraction of the
    /// baseline (0.5: halved). Defaults to `1 - minFraction` for
    /// EventRateDrop and 0.5 for ConversionRate. A full stop is always
    /// watched for as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.05, max = 0.95))]
    pub min_drop_fraction: Option<f64>,
    /// Sequential: the baseline's memory; an event this old weighs half as
    /// much as a new one. Defaults to 300.
    #[serde(default = "Detector::default_half_life_seconds")]
    #[schemars(range(min = 10, max = crate::limits::MAX_BASELINE_SECONDS))]
    pub half_life_seconds: i64,
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            kind: DetectorType::default(),
            false_alarms_per_day: Self::default_false_alarms_per_day(),
            min_drop_fraction: None,
            half_life_seconds: Self::default_half_life_seconds(),
        }
    }
}

impl Detector {
    fn default_false_alarms_per_day() -> f64 {
        1.0
    }
    fn default_half_life_seconds() -> i64 {
        300
    }
}
