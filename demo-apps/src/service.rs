//! What every service shares: its configuration from the environment, the
//! health, readiness, metrics and fault-switch endpoints, traced calls to its
//! peers, and the serving loop.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::events::Events;
use crate::faults::{Denied, Fault, Faults, Settings, authorize};
use crate::metrics::HttpMetrics;
use crate::telemetry::{Span, SpanKind, TRACEPARENT, TraceContext, Tracer};

/// Bad configuration: the process says which variable and stops.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A service's settings, read from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// The name in traces and logs (`OTEL_SERVICE_NAME`, else the binary's).
    pub service: String,
    pub bind: SocketAddr,
    pub kafka_bootstrap: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub chaos_token: Option<String>,
    /// `PAYMENT_MODE=broken`: the configuration fault of a bad release.
    pub payment_broken: bool,
    /// `LATENCY_MS`: a configured delay of the main operation.
    pub latency_millis: u64,
    pub quote_topic: String,
    pub purchase_topic: String,
    /// `USER_TOPIC`: where user-service publishes `eligibility_checked`.
    pub user_topic: String,
}

impl Config {
    /// Reads the settings through `var` (the process environment, or a map
    /// in tests).
    pub fn from_vars(
        binary: &str,
        default_port: u16,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let nonempty = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let port = match nonempty("PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| ConfigError(format!("PORT must be a port number, got {p:?}")))?,
            None => default_port,
        };
        let host = nonempty("BIND_ADDRESS").unwrap_or_else(|| "0.0.0.0".into());
        let bind = format!("{host}:{port}").parse().map_err(|_| {
            ConfigError(format!("BIND_ADDRESS must be an IP address, got {host:?}"))
        })?;
        let payment_broken = match nonempty("PAYMENT_MODE").as_deref() {
            None | Some("normal") => false,
            Some("broken") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "PAYMENT_MODE must be normal or broken, got {other:?}"
                )));
            }
        };
        let latency_millis = match nonempty("LATENCY_MS") {
            Some(v) => v.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "LATENCY_MS must be a number of milliseconds, got {v:?}"
                ))
            })?,
            None => 0,
        };
        let otlp_endpoint = nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if let Some(e) = &otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, got {e:?}"
            )));
        }
        Ok(Self {
            service: nonempty("OTEL_SERVICE_NAME").unwrap_or_else(|| binary.to_owned()),
            bind,
            kafka_bootstrap: nonempty("KAFKA_BOOTSTRAP"),
            otlp_endpoint,
            chaos_token: nonempty("CHAOS_TOKEN"),
            payment_broken,
            latency_millis,
            quote_topic: nonempty("QUOTE_TOPIC").unwrap_or_else(|| "quote_requested".into()),
            purchase_topic: nonempty("PURCHASE_TOPIC").unwrap_or_else(|| "policy_purchased".into()),
            user_topic: nonempty("USER_TOPIC").unwrap_or_else(|| "eligibility_checked".into()),
        })
    }

    pub fn from_env(binary: &str, default_port: u16) -> Result<Self, ConfigError> {
        Self::from_vars(binary, default_port, |k| std::env::var(k).ok())
    }

    /// The base URL of a peer (`USER_SERVICE_URL`, ...), required.
    pub fn peer(var: &str) -> Result<String, ConfigError> {
        peer_from(var, std::env::var(var).ok())
    }
}

fn peer_from(var: &str, value: Option<String>) -> Result<String, ConfigError> {
    let url = value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError(format!("{var} is required (e.g. http://127.0.0.1:18083)")))?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(ConfigError(format!(
            "{var} must be an http(s) URL, got {url:?}"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The state every handler gets.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub tracer: Tracer,
    pub events: Events,
    pub faults: Faults,
    pub http: reqwest::Client,
    /// The request counts and latencies served at `/metrics`.
    pub metrics: HttpMetrics,
    /// Whether `/readyz` waits for the Kafka broker.
    pub needs_kafka: bool,
}

/// What a service does with the Kafka broker of `KAFKA_BOOTSTRAP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kafka {
    /// Its business is an event (a quote, a purchase): not ready without
    /// the broker.
    Required,
    /// It publishes what happened when a broker is configured, and serves
    /// its callers whether or not the broker answers.
    Optional,
    /// It publishes nothing.
    Unused,
}

impl App {
    /// Builds the shared parts. Must run inside a Tokio runtime.
    pub fn new(config: Config, offered: &[Fault], kafka: Kafka) -> Result<Self, ConfigError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                ConfigError(format!(
                    "building the HTTP client: {e}{cause} (are the system's root certificates installed?)"
                ))
            })?;
        let tracer = match &config.otlp_endpoint {
            Some(endpoint) => Tracer::exporting(&config.service, endpoint, http.clone()),
            None => Tracer::disabled(&config.service),
        };
        let events = match (&config.kafka_bootstrap, kafka) {
            (Some(bootstrap), Kafka::Required | Kafka::Optional) => {
                Events::connect(bootstrap, &config.service)
                    .map_err(|e| ConfigError(format!("KAFKA_BOOTSTRAP {bootstrap:?}: {e}")))?
            }
            _ => Events::none(),
        };
        let faults = Faults::new(offered, config.payment_broken, config.latency_millis);
        Ok(Self {
            config,
            tracer,
            events,
            faults,
            http,
            metrics: HttpMetrics::new(),
            needs_kafka: kafka == Kafka::Required,
        })
    }

    /// The server span of an incoming request, continuing the caller's trace.
    pub fn server_span(&self, name: &str, headers: &HeaderMap) -> Span {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::from_traceparent);
        let mut span = self.tracer.span(name, SpanKind::Server, parent.as_ref());
        span.set("http.request.method", name.split(' ').next().unwrap_or(""));
        span
    }

    /// Calls a peer as a child span of `parent` named `operation`, passing
    /// the trace on. Any answer but a 2xx, or no answer, fails the span.
    pub async fn call(
        &self,
        parent: &Span,
        operation: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CallError> {
        let mut span = parent.child(operation, SpanKind::Client);
        span.set("http.request.method", method.as_str());
        span.set("url.full", url);
        let mut request = self
            .http
            .request(method, url)
            .header(TRACEPARENT, span.context().traceparent());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let message = format!("{url} unreachable: {e}");
                span.fail(&message);
                return Err(CallError::Unreachable(message));
            }
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        span.set("http.response.status_code", status.as_u16());
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        if !status.is_success() {
            span.fail(format!("{url} answered {status}"));
        }
        Ok((status, value))
    }

    /// The routes every service has.
    pub fn common_routes(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/chaos", get(chaos_state))
            .route("/chaos/{fault}", post(chaos_on).delete(chaos_off))
            .with_state(self.clone())
    }

    /// A service's whole router: its `routes`, the common ones and
    /// `/metrics`, with every request counted.
    pub fn router(&self, routes: Router) -> Router {
        self.metrics.instrument(routes.merge(self.common_routes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Unreachable(String),
}

/// An error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn readyz(State(app): State<App>) -> Response {
    if !app.needs_kafka || app.events.connected() {
        return (StatusCode::OK, "ready").into_response();
    }
    let why = if app.events.configured() {
        "the Kafka broker does not answer"
    } else {
        "no Kafka broker configured (KAFKA_BOOTSTRAP)"
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn chaos_state(State(app): State<App>) -> Response {
    Json(app.faults.state()).into_response()
}

fn check_switch(
    app: &App,
    headers: &HeaderMap,
    fault: &str,
) -> Result<Fault, (StatusCode, String)> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    authorize(app.config.chaos_token.as_deref(), header).map_err(|denied| {
        let status = match denied {
            Denied::Disabled => StatusCode::FORBIDDEN,
            Denied::Missing | Denied::Wrong => StatusCode::UNAUTHORIZED,
        };
        (status, denied.to_string())
    })?;
    let fault: Fault = fault
        .parse()
        .map_err(|e: String| (StatusCode::NOT_FOUND, e))?;
    if !app.faults.offers(fault) {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "{} has no {} fault",
                app.config.service,
                json!(fault).as_str().unwrap_or("")
            ),
        ));
    }
    Ok(fault)
}

async fn chaos_on(
    State(app): State<App>,
    Path(fault): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match check_switch(&app, &headers, &fault) {
        Ok(f) => f,
        Err((status, why)) => return error(status, why),
    };
    let settings: Settings = if body.iter().all(u8::is_ascii_whitespace) {
        Settings::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad settings: {e}")),
        }
    };
    match app.faults.enable(fault, &settings) {
        Ok(()) => Json(app.faults.state()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn chaos_off(
    State(app): State<App>,
    Path(fault): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fault = match check_switch(&app, &headers, &fault) {
        Ok(f) => f,
        Err((status, why)) => return error(status, why),
    };
    match app.faults.disable(fault) {
        Ok(()) => Json(app.faults.state()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Logs as JSON lines on stderr (`RUST_LOG`, default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves `routes` plus the common ones until SIGTERM or Ctrl-C, then sends
/// the spans still queued.
pub async fn serve(app: App, routes: Router) -> Result<(), std::io::Error> {
    let router = app.router(routes);
    let listener = tokio::net::TcpListener::bind(app.config.bind).await?;
    tracing::info!(
        service = %app.config.service,
        addr = %listener.local_addr()?,
        kafka = if app.needs_kafka {
            app.config.kafka_bootstrap.as_deref().unwrap_or("none")
        } else {
            "unused"
        },
        otlp = app.config.otlp_endpoint.as_deref().unwrap_or("none"),
        chaos = app.config.chaos_token.is_some(),
        payment_broken = app.config.payment_broken,
        "serving"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    app.tracer.flush().await;
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

/// The `main` of every binary: configuration errors exit 2 with the reason.
pub fn exit_on_error<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_vars("policy-service", 18082, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.service, "policy-service");
        assert_eq!(c.bind.port(), 18082);
        assert!(!c.payment_broken);
        assert_eq!(c.chaos_token, None);
        assert_eq!(c.purchase_topic, "policy_purchased");
        assert_eq!(c.user_topic, "eligibility_checked");
    }

    #[test]
    fn the_environment_sets_ports_topics_names_and_configured_faults() {
        let c = config(&[
            ("PORT", "28082"),
            ("BIND_ADDRESS", "127.0.0.1"),
            ("OTEL_SERVICE_NAME", "policy-service-e2e"),
            ("PAYMENT_MODE", "broken"),
            ("LATENCY_MS", "40"),
            ("PURCHASE_TOPIC", "t.purchases"),
            ("USER_TOPIC", "t.users"),
            ("CHAOS_TOKEN", "tok"),
        ])
        .expect("valid");
        assert_eq!(c.bind.to_string(), "127.0.0.1:28082");
        assert_eq!(c.service, "policy-service-e2e");
        assert!(c.payment_broken);
        assert_eq!(c.latency_millis, 40);
        assert_eq!(c.purchase_topic, "t.purchases");
        assert_eq!(c.user_topic, "t.users");
        assert_eq!(c.chaos_token.as_deref(), Some("tok"));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (vars, needle) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PAYMENT_MODE", "flaky")], "PAYMENT_MODE"),
            (vec![("LATENCY_MS", "1s")], "LATENCY_MS"),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (vec![("BIND_ADDRESS", "localhost")], "BIND_ADDRESS"),
        ] {
            let err = config(&vars).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = peer_from("USER_SERVICE_URL", None)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("USER_SERVICE_URL is required"), "{err}");
        let err = peer_from("USER_SERVICE_URL", Some("127.0.0.1:1".into()))
            .expect_err("no scheme")
            .to_string();
        assert!(err.contains("http"), "{err}");
        assert_eq!(
            peer_from("X", Some("http://a:1/".into())).expect("ok"),
            "http://a:1"
        );
    }
}
