//! Logs, and traces of each reconcile. Logs go to stderr as text or JSON
//! (`SRE_SPACE_LOG_FORMAT`); when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (for
//! example `http://otel-collector:4318`, OTLP over HTTP), every reconcile is
//! also exported as a span to that endpoint, named by `OTEL_SERVICE_NAME`
//! (default `sre-space`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace exporter alive; flushes what is buffered when dropped.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber.
pub fn init() -> Result<Guard, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match std::env::var("SRE_SPACE_LOG_FORMAT").as_deref() {
        Ok("json") => fmt.json().boxed(),
        Ok("text") | Err(_) => fmt.boxed(),
        Ok(other) => return Err(format!("SRE_SPACE_LOG_FORMAT={other:?}: use json or text")),
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(provider(&endpoint)?),
        _ => None,
    };
    // Only the reconcile spans (and what they contain) are exported, not
    // every log line of the client libraries.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("sre-space"))
            .with_filter(EnvFilter::new("sre_space=info"))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Guard(provider))
}

fn provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "sre-space".to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
