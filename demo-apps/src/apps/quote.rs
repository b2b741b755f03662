//! quote-service: prices a product for a user (asking user-service who
//! they are) and publishes `quote_requested`.

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;

use crate::faults::Fault;
use crate::model::{
    Quote, QuoteRequest, QuoteRequested, User, check_id, new_id, now, premium_cents,
};
use crate::service::{App, error};
use crate::telemetry::SpanKind;

pub const FAULTS: &[Fault] = &[Fault::Oom, Fault::Latency];
pub const DEFAULT_PORT: u16 = 18081;

#[derive(Clone)]
pub struct Quotes {
    pub app: App,
    /// user-service's base URL.
    pub users: String,
}

pub fn routes(state: Quotes) -> Router {
    Router::new()
        .route("/quotes", post(create_quote))
        .with_state(state)
}

async fn create_quote(
    State(s): State<Quotes>,
    headers: HeaderMap,
    body: Result<Json<QuoteRequest>, JsonRejection>,
) -> Response {
    let mut span = s.app.server_span("POST /quotes", &headers);
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => {
            span.fail(e.body_text());
            return error(StatusCode::BAD_REQUEST, e.body_text());
        }
    };
    if let Err(e) = check_id("user_id", &request.user_id) {
        span.fail(&e);
        return error(StatusCode::BAD_REQUEST, e);
    }
    span.set("user.id", request.user_id.as_str());
    tokio::time::sleep(s.app.faults.delay()).await;

    let url = format!("{}/users/{}", s.users, request.user_id);
    let user: User = match s
        .app
        .call(&span, "get_user", reqwest::Method::GET, &url, None)
        .await
    {
        Ok((status, body)) if status.is_success() => match serde_json::from_value(body) {
            Ok(u) => u,
            Err(e) => {
                let msg = format!("user-service answered an unreadable user: {e}");
                span.fail(&msg);
                return error(StatusCode::BAD_GATEWAY, msg);
            }
        },
        Ok((status, body)) => {
            let msg = format!("user-service answered {status}: {body}");
            span.fail(&msg);
            return error(StatusCode::BAD_GATEWAY, msg);
        }
        Err(e) => {
            span.fail(e.to_string());
            return error(StatusCode::BAD_GATEWAY, e.to_string());
        }
    };

    let quote = Quote {
        quote_id: new_id("q"),
        user_id: user.user_id.clone(),
        product: request.product,
        premium_cents: premium_cents(&user, request.product),
        currency: "EUR".into(),
        created_at: now(),
    };
    span.set("quote.id", quote.quote_id.as_str());
    let topic = &s.app.config.quote_topic;
    let mut publish = span.child(&format!("{topic} publish"), SpanKind::Producer);
    publish.set("messaging.system", "kafka");
    publish.set("messaging.destination.name", topic.as_str());
    let event = QuoteRequested::of(&quote);
    if let Err(e) = s
        .app
        .events
        .publish(topic, &quote.quote_id, &event, &publish.context())
        .await
    {
        // The customer still gets a price; the business event is lost and
        // the trace says so.
        publish.fail(e.to_string());
        tracing::warn!(error = %e, quote = %quote.quote_id, "quote_requested not published");
    }
    drop(publish);
    (StatusCode::CREATED, Json(quote)).into_response()
}
