//! Prometheus's HTTP API, instant queries only (`GET /api/v1/query`). Its
//! answers are JSON envelopes: `status: success` with `data.resultType`
//! and `data.result`, or `status: error` with `errorType` and `error`
//! (sent with HTTP 400, 422 or 503). Sample values are strings, so NaN and
//! ±Inf arrive intact.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use super::{MetricError, MetricStore, QueryFuture, Sample};

/// One query waits at most this long: a trigger loop must not hang on a
/// slow Prometheus. Prometheus is asked to give up a little sooner.
const TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: &str = "8s";
/// Answers larger than this are refused rather than buffered.
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Series beyond this many in one answer are dropped; the Scout considers
/// far fewer (`crate::limits::MAX_METRIC_SERIES`).
const MAX_SERIES: usize = 10_000;

/// A client of a Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    http: reqwest::Client,
    base: reqwest::Url,
    /// The base of the graph links people open.
    link_base: String,
}

impl PrometheusClient {
    /// A client of the API at `base`, e.g. `http://127.0.0.1:9090`, whose
    /// graph links start with `link_base` (or else `base`).
    pub fn new(base: &str, link_base: Option<&str>) -> crate::Result<Self> {
        let invalid = |env: &str, url: &str, why: String| {
            crate::Error::Config(format!("{env}={url:?}: {why}"))
        };
        let url =
            reqwest::Url::parse(base).map_err(|e| invalid(super::URL_ENV, base, e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                super::URL_ENV,
                base,
                "use an http or https URL".into(),
            ));
        }
        if let Some(link) = link_base {
            let parsed = reqwest::Url::parse(link)
                .map_err(|e| invalid(super::LINK_URL_ENV, link, e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    super::LINK_URL_ENV,
                    link,
                    "use an http or https URL".into(),
                ));
            }
        }
        // The same TLS crypto provider as the Kubernetes client; installing
        // it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| {
                invalid(
                    super::URL_ENV,
                    base,
                    format!("building the HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            http,
            link_base: link_base.unwrap_or(base).to_string(),
            base: url,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The URL of an instant query at `at`.
    fn query_url(&self, promql: &str, at: Timestamp) -> reqwest::Url {
        let mut url = self.base.clone();
        let path = format!("{}/api/v1/query", self.base.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(None);
        let ms = at.as_millisecond();
        url.query_pairs_mut()
            .append_pair("query", promql)
            .append_pair(
                "time",
                &format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)),
            )
            .append_pair("timeout", QUERY_TIMEOUT);
        url
    }

    /// Where the answer came from, for errors: the base without any
    /// credentials it may carry.
    fn shown(&self) -> String {
        crate::redact::string(self.base.as_str())
    }

    async fn instant(&self, promql: &str, at: Timestamp) -> Result<Vec<Sample>, MetricError> {
        let unreachable = |e: reqwest::Error| MetricError::Unreachable {
            url: self.shown(),
            reason: e.to_string(),
        };
        let mut response = self
            .http
            .get(self.query_url(promql, at))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len().saturating_add(chunk.len()) > MAX_BYTES {
                return Err(MetricError::InvalidAnswer(format!(
                    "the answer is larger than {MAX_BYTES} bytes; aggregate the query to fewer series"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        match parse_answer(&body) {
            // An error answer says why, whatever its HTTP status.
            Err(e @ MetricError::Query { .. }) => Err(e),
            _ if !status.is_success() => Err(MetricError::Status {
                url: self.shown(),
                status: status.as_u16(),
            }),
            answer => answer,
        }
    }
}

impl MetricStore for PrometheusClient {
    fn query<'a>(&'a self, promql: &'a str, at: Timestamp) -> QueryFuture<'a> {
        Box::pin(self.instant(promql, at))
    }

    fn graph_link(&self, promql: &str) -> String {
        super::graph_link(&self.link_base, promql)
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`; absent for a native histogram's series.
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// A sample value as Prometheus writes it: a decimal, `NaN`, `+Inf` or
/// `-Inf`.
fn value_of(s: &str) -> Result<f64, MetricError> {
    s.parse::<f64>()
        .map_err(|_| MetricError::InvalidAnswer(format!("{s:?} is not a sample value")))
}

/// Reads an `/api/v1/query` answer: a vector's series (up to a bound), a
/// scalar as one sample without labels, an error answer as
/// [`MetricError::Query`].
pub fn parse_answer(body: &[u8]) -> Result<Vec<Sample>, MetricError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| MetricError::InvalidAnswer(format!("not a Prometheus API answer: {e}")))?;
    if answer.status != "success" {
        return Err(MetricError::Query {
            error_type: answer.error_type.unwrap_or_else(|| "unknown".into()),
            message: answer.error.unwrap_or_default(),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| MetricError::InvalidAnswer("a success without data".into()))?;
    let unusable = |e: serde_json::Error| {
        MetricError::InvalidAnswer(format!(
            "a {} result that does not read: {e}",
            data.result_type
        ))
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> =
                serde_json::from_value(data.result.clone()).map_err(unusable)?;
            series
                .into_iter()
                .filter_map(|s| Some((s.metric, s.value?)))
                .take(MAX_SERIES)
                .map(|(labels, (_, v))| {
                    Ok(Sample {
                        labels,
                        value: value_of(&v)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(unusable)?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value_of(&v)?,
            }])
        }
        other => Err(MetricError::InvalidAnswer(format!(
            "the query gives a {other}; a Metric trigger needs an instant vector (no range selector like [5m] outside a function)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes Prometheus 3 answers, trimmed.
    const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
      {"metric":{"deployment":"quote-service","namespace":"shop","job":"demo"},"value":[1795674991.576,"0.42"]},
      {"metric":{"deployment":"policy-service","namespace":"shop"},"value":[1795674991.576,"NaN"]},
      {"metric":{"deployment":"user-service","namespace":"shop"},"value":[1795674991.576,"+Inf"]},
      {"metric":{"deployment":"frontend","namespace":"shop"},"histogram":[1795674991.576,{"count":"3","sum":"1"}]}]}}"#;
    const SCALAR: &str =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1795674991.576,"-Inf"]}}"#;
    const BAD_DATA: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:6: parse error: unexpected \"}\""}"#;
    const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;

    #[test]
    fn a_vector_answer_becomes_one_sample_per_series_with_nan_and_inf_kept() {
        let samples = parse_answer(VECTOR.as_bytes()).expect("parses");
        assert_eq!(samples.len(), 3, "a histogram series has no value");
        assert_eq!(samples[0].labels["deployment"], "quote-service");
        assert_eq!(samples[0].labels["namespace"], "shop");
        assert_eq!(samples[0].value, 0.42);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::INFINITY);
    }

    #[test]
    fn a_scalar_answer_is_one_sample_without_labels() {
        let samples = parse_answer(SCALAR.as_bytes()).expect("parses");
        assert_eq!(samples.len(), 1);
        assert!(samples[0].labels.is_empty());
        assert_eq!(samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn an_error_answer_says_what_prometheus_refused() {
        let err = parse_answer(BAD_DATA.as_bytes()).expect_err("refused");
        assert!(matches!(&err, MetricError::Query { error_type, .. } if error_type == "bad_data"));
        assert!(err.to_string().contains("parse error"), "{err}");
    }

    #[test]
    fn a_range_vector_or_a_page_that_is_not_json_is_a_clear_error() {
        let err = parse_answer(MATRIX.as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("instant vector"), "{err}");
        let err = parse_answer(b"<html>502 Bad Gateway</html>").expect_err("refused");
        assert!(
            err.to_string().contains("not a Prometheus API answer"),
            "{err}"
        );
    }

    #[test]
    fn the_query_url_carries_the_query_the_instant_and_a_timeout() {
        let c = PrometheusClient::new("http://prometheus.example:9090/prom/", None).expect("valid");
        let at = Timestamp::from_millisecond(1_795_674_991_576).expect("time");
        assert_eq!(
            c.query_url("up{job=\"demo\"} == 0", at).as_str(),
            "http://prometheus.example:9090/prom/api/v1/query?query=up%7Bjob%3D%22demo%22%7D+%3D%3D+0&time=1795674991.576&timeout=8s"
        );
        assert_eq!(
            c.graph_link("up"),
            "http://prometheus.example:9090/prom/graph?g0.expr=up&g0.tab=0"
        );
        assert!(PrometheusClient::new("ftp://prometheus", None).is_err());
        assert!(PrometheusClient::new("http://p:9090", Some("not a url")).is_err());
    }

    /// The real client against a server on loopback that answers as
    /// Prometheus does for a refused query: HTTP 400 with the error
    /// envelope.
    #[tokio::test]
    async fn an_http_error_with_an_error_envelope_is_the_query_error_and_a_closed_port_is_unreachable()
     {
        use std::sync::{Arc, Mutex};
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = asked.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |uri: axum::http::Uri| {
                let log = log.clone();
                async move {
                    log.lock().expect("lock").push(uri.to_string());
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "application/json")],
                        BAD_DATA,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let c = PrometheusClient::new(&format!("http://{addr}"), None).expect("valid");
        let at = Timestamp::from_second(100).expect("time");
        let err = c.query("rate(x[1m]", at).await.expect_err("refused");
        assert!(matches!(err, MetricError::Query { .. }), "{err}");
        assert_eq!(
            asked.lock().expect("lock").as_slice(),
            ["/api/v1/query?query=rate%28x%5B1m%5D&time=100.000&timeout=8s"]
        );
        server.abort();
        let _ = server.await;
        // A new client: the first one may keep its connection open.
        let c = PrometheusClient::new(&format!("http://{addr}"), None).expect("valid");
        let err = c.query("up", at).await.expect_err("nobody listens");
        assert!(matches!(err, MetricError::Unreachable { .. }), "{err}");
    }
}
