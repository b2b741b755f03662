//! user-service: who a customer is, and whether they may buy; publishes
//! `eligibility_checked` when a Kafka broker is configured.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::faults::Fault;
use crate::model::{EligibilityChecked, check_id, eligibility, user};
use crate::service::{App, error};
use crate::telemetry::SpanKind;

pub const FAULTS: &[Fault] = &[Fault::Oom, Fault::Latency];
pub const DEFAULT_PORT: u16 = 18083;

pub fn routes(app: App) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/eligibility", get(get_eligibility))
        .with_state(app)
}

async fn get_user(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut span = app.server_span("GET /users/{id}", &headers);
    span.set("user.id", id.as_str());
    if let Err(e) = check_id("user id", &id) {
        span.fail(&e);
        return error(StatusCode::BAD_REQUEST, e);
    }
    tokio::time::sleep(app.faults.delay()).await;
    Json(user(&id)).into_response()
}

async fn get_eligibility(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut span = app.server_span("GET /users/{id}/eligibility", &headers);
    span.set("user.id", id.as_str());
    if let Err(e) = check_id("user id", &id) {
        span.fail(&e);
        return error(StatusCode::BAD_REQUEST, e);
    }
    tokio::time::sleep(app.faults.delay()).await;
    let answer = eligibility(&user(&id));
    span.set("user.eligible", answer.eligible);
    if app.events.configured() {
        let topic = &app.config.user_topic;
        let mut publish = span.child(&format!("{topic} publish"), SpanKind::Producer);
        publish.set("messaging.system", "kafka");
        publish.set("messaging.destination.name", topic.as_str());
        let event = EligibilityChecked::of(&answer);
        if let Err(e) = app
            .events
            .publish(topic, &answer.user_id, &event, &publish.context())
            .await
        {
            // The answer matters more to the caller than the record of it:
            // the purchase goes on, and the trace says the event was lost.
            publish.fail(e.to_string());
            tracing::warn!(error = %e, user = %answer.user_id, "eligibility_checked not published");
        }
    }
    Json(answer).into_response()
}
