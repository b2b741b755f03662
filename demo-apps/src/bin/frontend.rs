//! frontend: the page, `/api/quote` and `/api/purchase`; needs
//! `QUOTE_SERVICE_URL` and `POLICY_SERVICE_URL`.

use sre_space_demo::apps::frontend::{self, Frontend};
use sre_space_demo::service::{App, Config, Kafka, exit_on_error, init_logging, serve};

#[tokio::main]
async fn main() {
    init_logging();
    let config = exit_on_error(Config::from_env("frontend", frontend::DEFAULT_PORT));
    let quotes = exit_on_error(Config::peer("QUOTE_SERVICE_URL"));
    let policies = exit_on_error(Config::peer("POLICY_SERVICE_URL"));
    let app = exit_on_error(App::new(config, frontend::FAULTS, Kafka::Unused));
    let routes = frontend::routes(Frontend {
        app: app.clone(),
        quotes,
        policies,
    });
    exit_on_error(serve(app, routes).await);
}
