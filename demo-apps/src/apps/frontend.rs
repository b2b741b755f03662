//! frontend: the page customers use, and the two calls behind its buttons,
//! which it forwards to quote-service and policy-service.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::faults::Fault;
use crate::service::{App, error};

pub const FAULTS: &[Fault] = &[Fault::Oom, Fault::Latency];
pub const DEFAULT_PORT: u16 = 18080;

#[derive(Clone)]
pub struct Frontend {
    pub app: App,
    pub quotes: String,
    pub policies: String,
}

pub fn routes(state: Frontend) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/quote", post(quote))
        .route("/api/purchase", post(purchase))
        .with_state(state)
}

async fn quote(State(s): State<Frontend>, headers: HeaderMap, body: Json<Value>) -> Response {
    let url = format!("{}/quotes", s.quotes);
    forward(
        &s.app,
        "POST /api/quote",
        "request_quote",
        &url,
        &headers,
        body.0,
    )
    .await
}

async fn purchase(State(s): State<Frontend>, headers: HeaderMap, body: Json<Value>) -> Response {
    let url = format!("{}/policies", s.policies);
    forward(
        &s.app,
        "POST /api/purchase",
        "purchase_policy",
        &url,
        &headers,
        body.0,
    )
    .await
}

/// Passes the customer's request on and the answer back: a refusal (4xx)
/// as it is, a failure behind it as 502.
async fn forward(
    app: &App,
    name: &str,
    operation: &str,
    url: &str,
    headers: &HeaderMap,
    body: Value,
) -> Response {
    let mut span = app.server_span(name, headers);
    tokio::time::sleep(app.faults.delay()).await;
    match app
        .call(&span, operation, reqwest::Method::POST, url, Some(&body))
        .await
    {
        Ok((status, answer)) if status.is_success() || status.is_client_error() => {
            span.set("http.response.status_code", status.as_u16());
            if status.is_client_error() {
                span.set("request.refused", true);
            }
            (status, Json(answer)).into_response()
        }
        Ok((status, answer)) => {
            let why = answer["error"].as_str().unwrap_or("no reason given");
            let msg = format!("{operation} failed ({status}): {why}");
            span.fail(&msg);
            error(StatusCode::BAD_GATEWAY, msg)
        }
        Err(e) => {
            span.fail(e.to_string());
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>SRE-Space Insurance</title>
<style>body{font-family:sans-serif;max-width:32rem;margin:3rem auto}
button{margin:.3rem 0}pre{background:#f4f4f4;padding:.6rem;white-space:pre-wrap}</style></head>
<body>
<h1>SRE-Space Insurance</h1>
<p><label>Customer <input id="user" value="u-0001"></label>
<label>Product <select id="product"><option>car</option><option>home</option><option>travel</option></select></label></p>
<button id="quote">Get a quote</button> <button id="buy" disabled>Buy this policy</button>
<pre id="out">No quote yet.</pre>
<script>
let last = null;
const out = document.getElementById('out');
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)});
  return [r.status, await r.json().catch(() => ({}))];
}
document.getElementById('quote').onclick = async () => {
  const [status, q] = await post('/api/quote', {user_id: document.getElementById('user').value, product: document.getElementById('product').value});
  last = status === 201 ? q : null;
  document.getElementById('buy').disabled = !last;
  out.textContent = last ? `Quote ${q.quote_id}: ${(q.premium_cents / 100).toFixed(2)} ${q.currency} a year` : `Error ${status}: ${q.error}`;
};
document.getElementById('buy').onclick = async () => {
  const [status, p] = await post('/api/purchase', {quote_id: last.quote_id, user_id: last.user_id, premium_cents: last.premium_cents});
  out.textContent = status === 201 ? `Policy ${p.policy_id} bought.` : `Purchase failed (${status}): ${p.error}`;
};
</script>
</body>
</html>
"#;
