//! The metric store: series scraped by Prometheus, read through its HTTP
//! API's instant query (`GET /api/v1/query`). The Metric triggers and the
//! Brain see only [`MetricStore`] and the plain [`Sample`]s it returns, so
//! the breach logic is tested against the in-crate [`FakePrometheus`] and
//! the real client is swapped for none when it is not configured.

mod client;
mod fake;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::jiff::Timestamp;

pub use client::{PrometheusClient, parse_answer};
pub use fake::FakePrometheus;

/// The environment variable with the HTTP API's base URL, e.g.
/// `http://prometheus.monitoring:9090`. Unset: Metric triggers are Unknown.
pub const URL_ENV: &str = "SRE_SPACE_PROMETHEUS_URL";
/// The environment variable with the base URL of the graph links the
/// evidence carries, for when people open Prometheus at another address
/// than the operator queries it. Unset: the query URL.
pub const LINK_URL_ENV: &str = "SRE_SPACE_PROMETHEUS_LINK_URL";

/// One series of an instant query's result at one instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// The series' labels; empty for a scalar result.
    pub labels: BTreeMap<String, String>,
    /// The value; NaN and ±Inf are kept as such, for the caller to judge.
    pub value: f64,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// Prometheus refused or failed the query (`status: error`).
    #[error("Prometheus refused the query ({error_type}): {message}")]
    Query { error_type: String, message: String },
    #[error("Prometheus's answer is not usable: {0}")]
    InvalidAnswer(String),
}

pub type QueryFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<Sample>, MetricError>> + Send + 'a>>;

/// Where metrics are read from.
pub trait MetricStore: Send + Sync {
    /// The result of the instant query `promql` evaluated at `at`: a vector
    /// (one sample per series) or a scalar (one sample without labels).
    fn query<'a>(&'a self, promql: &'a str, at: Timestamp) -> QueryFuture<'a>;

    /// A URL a person can open to see `promql` as a graph.
    fn graph_link(&self, promql: &str) -> String;
}

/// `{base}/graph?g0.expr=<promql>&g0.tab=0`: Prometheus's graph page with
/// the query filled in. A base that is not a URL gives the bare path.
pub fn graph_link(base: &str, promql: &str) -> String {
    let path = format!("{}/graph", base.trim_end_matches('/'));
    let mut url = match reqwest::Url::parse(&path) {
        Ok(u) => u,
        Err(_) => return format!("{path}?g0.expr={}&g0.tab=0", encode(promql)),
    };
    url.set_query(None);
    url.query_pairs_mut()
        .append_pair("g0.expr", promql)
        .append_pair("g0.tab", "0");
    url.to_string()
}

/// `form-urlencoded`, for a link whose base could not be parsed.
fn encode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("q", s)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("q=").to_string()))
        .unwrap_or_default()
}

/// Where the Metric triggers read metrics.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Metrics (Prometheus)")]
pub struct PrometheusOptions {
    /// Prometheus's HTTP API, e.g. `http://prometheus.monitoring:9090`;
    /// unset or empty: Metric triggers are Unknown, and their policies say
    /// so in the MetricsAvailable condition.
    #[arg(long, env = URL_ENV, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// The base of the graph links in the evidence, when people reach
    /// Prometheus at another address than the operator does; unset: the
    /// query URL.
    #[arg(long, env = LINK_URL_ENV, value_name = "URL")]
    pub prometheus_link_url: Option<String>,
}

/// The configured metric store, or None when no URL is set.
pub fn from_options(o: &PrometheusOptions) -> crate::Result<Option<PrometheusClient>> {
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match set(&o.prometheus_url) {
        Some(url) => PrometheusClient::new(&url, set(&o.prometheus_link_url).as_deref()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_link_carries_the_query_encoded_on_the_graph_page() {
        assert_eq!(
            graph_link(
                "http://prometheus.example:9090/",
                r#"sum by (deployment) (rate(http_errors_total{namespace="shop"}[1m])) > 0.5"#
            ),
            "http://prometheus.example:9090/graph?g0.expr=sum+by+%28deployment%29+%28rate%28http_errors_total%7Bnamespace%3D%22shop%22%7D%5B1m%5D%29%29+%3E+0.5&g0.tab=0"
        );
        assert_eq!(
            graph_link("https://example.org/prom", "up"),
            "https://example.org/prom/graph?g0.expr=up&g0.tab=0",
            "a path prefix is kept"
        );
    }

    #[test]
    fn unset_or_empty_urls_configure_no_store_and_a_link_url_is_separate() {
        let none = PrometheusOptions::default();
        assert!(from_options(&none).expect("fine").is_none());
        let empty = PrometheusOptions {
            prometheus_url: Some("  ".into()),
            prometheus_link_url: None,
        };
        assert!(from_options(&empty).expect("fine").is_none());
        let both = PrometheusOptions {
            prometheus_url: Some("http://127.0.0.1:19490".into()),
            prometheus_link_url: Some("https://prometheus.example.org".into()),
        };
        let c = from_options(&both).expect("fine").expect("configured");
        assert_eq!(
            c.graph_link("up"),
            "https://prometheus.example.org/graph?g0.expr=up&g0.tab=0"
        );
        let bad = PrometheusOptions {
            prometheus_url: Some("prometheus:9090".into()),
            prometheus_link_url: None,
        };
        assert!(from_options(&bad).is_err(), "no scheme");
    }
}
