//! The Scout's readers over captured objects, for the evaluation: what it
//! would see in an object as `kubectl get -o json` prints it.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{Signal, read_pod};
use crate::crd::Trigger;

/// The signals the Scout would read from one object under `triggers` at
/// `now`. An object of a kind the Scout does not read, or one that does not
/// parse as its kind, gives none.
pub fn detect(object: &Value, triggers: &[Trigger], now: Timestamp) -> Vec<Signal> {
    match object.get("kind").and_then(Value::as_str) {
        Some("Pod") => serde_json::from_value::<Pod>(object.clone())
            .map(|p| read_pod(&p, triggers, now).signals)
            .unwrap_or_default(),
        _ => vec![],
    }
}
