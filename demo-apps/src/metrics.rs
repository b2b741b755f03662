//! The request metrics every service serves at `/metrics`, for Prometheus
//! to scrape: `http_requests_total` and `http_request_duration_seconds`, by
//! route, method and status. Errors are the requests with a 5xx status.
//!
//! The route is the matched route's template (`/quotes/{id}`), never the raw
//! path, and a request no route matched counts as `unmatched`, so a client
//! cannot grow the label set. Probes and scrapes are not counted: they are
//! not the business's traffic, and a failing readiness probe would otherwise
//! read as a service error rate.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The paths that are not counted.
const NOT_COUNTED: &[&str] = &["/metrics", "/healthz", "/readyz"];

/// The labels of both request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

/// A service's request metrics and the registry that encodes them.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        // 5 ms to about 10 s.
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by route, method and status",
            Unit::Seconds,
            duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let labels = RequestLabels {
            route: route.to_owned(),
            method: method_label(method).to_owned(),
            status: status.as_u16().to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// `router` with `/metrics` added and every request counted.
    pub fn instrument(&self, router: Router) -> Router {
        router
            .route("/metrics", get(serve_metrics).with_state(self.clone()))
            .layer(middleware::from_fn_with_state(self.clone(), count))
    }
}

/// The standard methods by name, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn count(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if route.as_deref().is_some_and(|r| NOT_COUNTED.contains(&r)) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        route.as_deref().unwrap_or("unmatched"),
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn serve_metrics(State(metrics): State<HttpMetrics>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_under_its_route_method_and_status() {
        let metrics = HttpMetrics::new();
        metrics.observe("/quotes", &Method::POST, StatusCode::BAD_GATEWAY, 0.012);
        metrics.observe("/quotes", &Method::POST, StatusCode::BAD_GATEWAY, 0.020);
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(r#"http_requests_total{route="/quotes",method="POST",status="502"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{route="/quotes",method="POST",status="502"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unusual_method_does_not_become_a_label_value() {
        let method = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(method_label(&method), "other");
    }
}
