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
    let client = kube::Client::try_default().await?;
    controller::run(client, config).await?;
    Ok(())
}
