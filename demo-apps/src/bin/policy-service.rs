//! policy-service: `POST /policies`; needs `USER_SERVICE_URL` and
//! `KAFKA_BOOTSTRAP`.

use sre_space_demo::apps::policy::{self, Policies};
use sre_space_demo::service::{App, Config, Kafka, exit_on_error, init_logging, serve};

#[tokio::main]
async fn main() {
    init_logging();
    let config = exit_on_error(Config::from_env("policy-service", policy::DEFAULT_PORT));
    let users = exit_on_error(Config::peer("USER_SERVICE_URL"));
    let app = exit_on_error(App::new(config, policy::FAULTS, Kafka::Required));
    exit_on_error(serve(app.clone(), policy::routes(Policies { app, users })).await);
}
