//! user-service: `GET /users/{id}`, `GET /users/{id}/eligibility`.

use sre_space_demo::apps::user;
use sre_space_demo::service::{App, Config, Kafka, exit_on_error, init_logging, serve};

#[tokio::main]
async fn main() {
    init_logging();
    let config = exit_on_error(Config::from_env("user-service", user::DEFAULT_PORT));
    let app = exit_on_error(App::new(config, user::FAULTS, Kafka::Optional));
    exit_on_error(serve(app.clone(), user::routes(app)).await);
}
