//! The SRE-Space operator: builds the context and runs the controllers.

use sre_space::controller::{self, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("SRE_SPACE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let config = Config::from_env()?;
    let mut kube_config = kube::Config::infer().await?;
    // The reconcile loop is the retry mechanism: it records what happened
    // and tries again with its own backoff. The client's built-in retry of
    // 429s would instead wait minutes on an eviction that a
    // PodDisruptionBudget refuses (also a 429), hiding why from the Incident.
    kube_config.default_retry = false;
    let client = kube::Client::try_from(kube_config)?;
    controller::run(client, config).await?;
    Ok(())
}
