//! Alertmanager's webhook payload, version 4, and what of it the receiver
//! keeps: each alert checked against the bounds of `crate::limits` before
//! anything holds it.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::limits::{
    MAX_ALERT_ANNOTATION_BYTES, MAX_ALERT_LABEL_NAME_BYTES, MAX_ALERT_LABEL_VALUE_BYTES,
    MAX_ALERT_LABELS, MAX_ALERTS_PER_PAYLOAD,
};

/// The only payload version Alertmanager has sent since 0.x and the one
/// this receiver reads.
pub const VERSION: &str = "4";

/// The label every Prometheus alert carries its rule's name in.
pub const ALERTNAME: &str = "alertname";

/// A webhook notification: one group of alerts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out (its `max_alerts`).
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` when any alert of the group fires, else `resolved`.
    pub status: Status,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WireAlert>,
}

/// An alert's state.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// One alert as Alertmanager sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAlert {
    pub status: Status,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// An alert the receiver accepted: bounded, its times parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub status: Status,
    /// Its `alertname` label.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Values cut to `MAX_ALERT_ANNOTATION_BYTES`.
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<Timestamp>,
    /// When Alertmanager considers it over, if it says: a firing alert
    /// not sent again by then has expired.
    pub ends_at: Option<Timestamp>,
    pub generator_url: String,
}

/// Parses and checks a payload; the error is the message a 400 carries.
pub fn parse(body: &[u8]) -> Result<Vec<Alert>, String> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager payload: {e}"))?;
    if payload.version != VERSION {
        return Err(format!(
            "payload version {:?} is not supported; Alertmanager's webhook version {VERSION} is",
            cut(&payload.version, 16)
        ));
    }
    if payload.alerts.len() > MAX_ALERTS_PER_PAYLOAD {
        return Err(format!(
            "{} alerts in one payload, more than {MAX_ALERTS_PER_PAYLOAD}: set max_alerts on the receiver",
            payload.alerts.len()
        ));
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| check(a).map_err(|e| format!("alerts[{i}]: {e}")))
        .collect()
}

fn check(a: WireAlert) -> Result<Alert, String> {
    if a.labels.len() > MAX_ALERT_LABELS || a.annotations.len() > MAX_ALERT_LABELS {
        return Err(format!(
            "more than {MAX_ALERT_LABELS} labels or annotations"
        ));
    }
    for (k, v) in &a.labels {
        if k.len() > MAX_ALERT_LABEL_NAME_BYTES || v.len() > MAX_ALERT_LABEL_VALUE_BYTES {
            return Err(format!(
                "label {:?} is longer than {MAX_ALERT_LABEL_NAME_BYTES} bytes or its value than {MAX_ALERT_LABEL_VALUE_BYTES}",
                cut(k, 64)
            ));
        }
    }
    if a.annotations
        .keys()
        .any(|k| k.len() > MAX_ALERT_LABEL_NAME_BYTES)
    {
        return Err(format!(
            "an annotation's name is longer than {MAX_ALERT_LABEL_NAME_BYTES} bytes"
        ));
    }
    if a.generator_url.len() > MAX_ALERT_LABEL_VALUE_BYTES {
        return Err(format!(
            "generatorURL is longer than {MAX_ALERT_LABEL_VALUE_BYTES} bytes"
        ));
    }
    let name = a
        .labels
        .get(ALERTNAME)
        .filter(|n| !n.is_empty())
        .cloned()
        .ok_or_else(|| format!("no {ALERTNAME} label"))?;
    let annotations = a
        .annotations
        .into_iter()
        .map(|(k, v)| {
            let v = cut(&v, MAX_ALERT_ANNOTATION_BYTES).to_string();
            (k, v)
        })
        .collect();
    Ok(Alert {
        status: a.status,
        name,
        labels: a.labels,
        annotations,
        starts_at: time(a.starts_at.as_deref(), "startsAt")?,
        ends_at: time(a.ends_at.as_deref(), "endsAt")?,
        generator_url: a.generator_url,
    })
}

/// A time of the payload; Go's zero time (`0001-01-01T00:00:00Z`, what
/// Alertmanager sends for "not set") is none.
fn time(value: Option<&str>, field: &str) -> Result<Option<Timestamp>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let t: Timestamp = value
        .parse()
        .map_err(|_| format!("{field} {:?} is not an RFC 3339 time", cut(value, 40)))?;
    Ok((t.as_second() > 0).then_some(t))
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A notification as Alertmanager 0.28 sends it (the schema of its
    /// webhook documentation), for a demo service's error rate.
    pub(crate) fn firing_payload() -> String {
        r#"{
  "version": "4",
  "groupKey": "{}/{severity=\"page\"}:{alertname=\"HighErrorRate\"}",
  "truncatedAlerts": 0,
  "status": "firing",
  "receiver": "sre-space",
  "groupLabels": {"alertname": "HighErrorRate"},
  "commonLabels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "policy-service", "severity": "page"},
  "commonAnnotations": {"summary": "policy-service fails 30% of requests"},
  "externalURL": "http://alertmanager.monitoring:9093",
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "policy-service", "pod": "policy-service-7d4b9c-abcde", "severity": "page"},
      "annotations": {"summary": "policy-service fails 30% of requests", "runbook_url": "https://runbooks.example/high-error-rate"},
      "startsAt": "2026-12-03T07:30:00.123Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://prometheus.monitoring:9090/graph?g0.expr=job%3Arequest_errors%3Aratio5m+%3E+0.1",
      "fingerprint": "a1b2c3d4e5f60718"
    },
    {
      "status": "firing",
      "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "policy-service", "pod": "policy-service-7d4b9c-fghij", "severity": "page"},
      "annotations": {"summary": "policy-service fails 30% of requests"},
      "startsAt": "2026-12-03T07:30:30Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://prometheus.monitoring:9090/graph?g0.expr=job%3Arequest_errors%3Aratio5m+%3E+0.1",
      "fingerprint": "b1b2c3d4e5f60718"
    }
  ]
}"#
        .to_string()
    }

    #[test]
    fn a_version_4_notification_gives_each_alert_with_its_name_times_and_source() {
        let alerts = parse(firing_payload().as_bytes()).expect("parses");
        assert_eq!(alerts.len(), 2);
        let a = &alerts[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.name, "HighErrorRate");
        assert_eq!(a.labels["pod"], "policy-service-7d4b9c-abcde");
        assert_eq!(
            a.annotations["summary"],
            "policy-service fails 30% of requests"
        );
        assert_eq!(
            a.starts_at.map(|t| t.to_string()).as_deref(),
            Some("2026-12-03T07:30:00.123Z")
        );
        assert_eq!(a.ends_at, None, "Go's zero time is no end");
        assert!(
            a.generator_url
                .starts_with("http://prometheus.monitoring:9090/graph")
        );
    }

    #[test]
    fn another_version_or_not_json_is_refused_with_a_reason() {
        let v3 = firing_payload().replace(r#""version": "4""#, r#""version": "3""#);
        let e = parse(v3.as_bytes()).expect_err("refused");
        assert!(e.contains("version \"3\" is not supported"), "{e}");
        let e = parse(b"<html>").expect_err("refused");
        assert!(e.starts_with("not an Alertmanager payload"), "{e}");
    }

    #[test]
    fn an_alert_beyond_the_bounds_or_without_a_name_is_refused() {
        let long = firing_payload().replace(
            "\"severity\": \"page\"}",
            &format!("\"severity\": \"{}\"}}", "x".repeat(2000)),
        );
        let e = parse(long.as_bytes()).expect_err("refused");
        assert!(e.starts_with("alerts[0]: label \"severity\""), "{e}");
        let nameless = firing_payload().replace(
            "\"alertname\": \"HighErrorRate\", \"namespace\"",
            "\"namespace\"",
        );
        let e = parse(nameless.as_bytes()).expect_err("refused");
        assert!(e.contains("no alertname label"), "{e}");
    }

    #[test]
    fn a_long_annotation_is_cut_not_refused() {
        let long = firing_payload().replace(
            "\"runbook_url\": \"https://runbooks.example/high-error-rate\"",
            &format!("\"description\": \"{}\"", "é".repeat(3000)),
        );
        let alerts = parse(long.as_bytes()).expect("parses");
        let d = &alerts[0].annotations["description"];
        assert!(d.len() <= MAX_ALERT_ANNOTATION_BYTES && d.len() > 2000);
    }
}
