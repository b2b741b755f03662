//! Logs, and traces of each reconcile. Logs go to stderr as text or JSON
//! (`SRE_SPACE_LOG_FORMAT`), filtered by `RUST_LOG`; when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (for example
//! `http://otel-collector:4318`, OTLP over HTTP), every reconcile is also
//! exported as a span to that endpoint, named by `OTEL_SERVICE_NAME`
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

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Lines for a person.
    #[default]
    Text,
}

/// Logs and reconcile traces, for every command.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LoggingOptions {
    /// How log lines are written (the chart: json).
    #[arg(
        long,
        env = "SRE_SPACE_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true,
    )]
    pub log_format: LogFormat,
    /// Which log lines are written, as tracing's `EnvFilter` directives; an
    /// invalid filter falls back to the default.
    #[arg(
        long,
        env = "RUST_LOG",
        value_name = "FILTER",
        default_value = DEFAULT_FILTER,
        global = true,
    )]
    pub rust_log: String,
    /// Export every reconcile as a span to this OTLP/HTTP endpoint (for
    /// example `http://otel-collector:4318`); unset or empty: no export.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL",
        global = true
    )]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// The service name the exported spans carry.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        value_name = "NAME",
        default_value = "sre-space",
        global = true
    )]
    pub otel_service_name: String,
}

const DEFAULT_FILTER: &str = "info,kube=warn";

/// Installs the global subscriber.
pub fn init(o: &LoggingOptions) -> Result<Guard, String> {
    let filter = EnvFilter::try_new(&o.rust_log).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match o.log_format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let provider = match o.otel_exporter_otlp_endpoint.as_deref() {
        Some(endpoint) if !endpoint.is_empty() => Some(provider(endpoint, &o.otel_service_name)?),
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

fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
