//! policy-service: turns a quote into a policy. Checks the user may buy
//! (user-service), charges the premium, publishes `policy_purchased`.

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;

use crate::faults::{Fault, Faults};
use crate::model::{Eligibility, Policy, PolicyPurchased, PurchaseRequest, check_id, new_id, now};
use crate::service::{App, error};
use crate::telemetry::{Span, SpanKind};

pub const FAULTS: &[Fault] = &[Fault::Oom, Fault::Latency, Fault::Conversion];
pub const DEFAULT_PORT: u16 = 18082;

#[derive(Clone)]
pub struct Policies {
    pub app: App,
    /// user-service's base URL.
    pub users: String,
}

pub fn routes(state: Policies) -> Router {
    Router::new()
        .route("/policies", post(purchase))
        .with_state(state)
}

/// The payment step: declined when the conversion fault is on or the
/// configuration says the payment provider is broken.
pub fn charge_payment(
    faults: &Faults,
    parent: &Span,
    request: &PurchaseRequest,
) -> Result<(), String> {
    let mut span = parent.child("charge_payment", SpanKind::Internal);
    span.set("payment.amount_cents", request.premium_cents);
    span.set("quote.id", request.quote_id.as_str());
    if faults.payment_failing() {
        let msg = "payment provider declined the charge".to_owned();
        span.fail(&msg);
        return Err(msg);
    }
    Ok(())
}

async fn purchase(
    State(s): State<Policies>,
    headers: HeaderMap,
    body: Result<Json<PurchaseRequest>, JsonRejection>,
) -> Response {
    let mut span = s.app.server_span("POST /policies", &headers);
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => {
            span.fail(e.body_text());
            return error(StatusCode::BAD_REQUEST, e.body_text());
        }
    };
    for (what, id) in [
        ("user_id", &request.user_id),
        ("quote_id", &request.quote_id),
    ] {
        if let Err(e) = check_id(what, id) {
            span.fail(&e);
            return error(StatusCode::BAD_REQUEST, e);
        }
    }
    if request.premium_cents == 0 {
        span.fail("premium_cents must be positive");
        return error(StatusCode::BAD_REQUEST, "premium_cents must be positive");
    }
    span.set("user.id", request.user_id.as_str());
    span.set("quote.id", request.quote_id.as_str());
    tokio::time::sleep(s.app.faults.delay()).await;

    let url = format!("{}/users/{}/eligibility", s.users, request.user_id);
    let eligible: Eligibility = match s
        .app
        .call(&span, "check_eligibility", reqwest::Method::GET, &url, None)
        .await
    {
        Ok((status, body)) if status.is_success() => match serde_json::from_value(body) {
            Ok(e) => e,
            Err(e) => {
                let msg = format!("user-service answered an unreadable eligibility: {e}");
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
    if !eligible.eligible {
        // A refusal, not a failure: the span stays OK.
        span.set("purchase.refused", eligible.reason.as_str());
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("user may not buy: {}", eligible.reason),
        );
    }

    if let Err(e) = charge_payment(&s.app.faults, &span, &request) {
        span.fail(&e);
        return error(StatusCode::BAD_GATEWAY, e);
    }

    let policy = Policy {
        policy_id: new_id("pol"),
        quote_id: request.quote_id.clone(),
        user_id: request.user_id.clone(),
        premium_cents: request.premium_cents,
        purchased_at: now(),
    };
    span.set("policy.id", policy.policy_id.as_str());
    let topic = &s.app.config.purchase_topic;
    let mut publish = span.child(&format!("{topic} publish"), SpanKind::Producer);
    publish.set("messaging.system", "kafka");
    publish.set("messaging.destination.name", topic.as_str());
    let event = PolicyPurchased::of(&policy);
    if let Err(e) = s
        .app
        .events
        .publish(topic, &policy.policy_id, &event, &publish.context())
        .await
    {
        // The charge went through, so the policy stands; the lost event is
        // on the trace and in the log.
        publish.fail(e.to_string());
        tracing::warn!(error = %e, policy = %policy.policy_id, "policy_purchased not published");
    }
    drop(publish);
    (StatusCode::CREATED, Json(policy)).into_response()
}
