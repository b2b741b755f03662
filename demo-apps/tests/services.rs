//! The services together in one process, over real HTTP on loopback, with
//! an OTLP/HTTP receiver standing in for Jaeger (tests/demo_apps.rs in e2e/
//! runs them as pods against the real Jaeger and Kafka): the trace context
//! crosses every hop, and the fault switches answer only to their token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use sre_space_demo::apps::{frontend, policy, user};
use sre_space_demo::faults::Fault;
use sre_space_demo::service::{App, Config, Kafka};

type Received = Arc<Mutex<Vec<Value>>>;

async fn listen(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A collector that keeps every span it is sent.
async fn otlp_receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let r = received.clone();
    let router = Router::new().route(
        "/v1/traces",
        post(move |axum::Json(body): axum::Json<Value>| async move {
            let mut r = r.lock().expect("lock");
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"][0]["value"]["stringValue"].clone();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone();
                        r.push(span);
                    }
                }
            }
            "{}"
        }),
    );
    (listen(router).await, received)
}

fn app(service: &str, otlp: SocketAddr, token: Option<&str>, faults: &[Fault]) -> App {
    let mut vars = HashMap::from([(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("http://{otlp}"),
    )]);
    if let Some(t) = token {
        vars.insert("CHAOS_TOKEN".into(), t.into());
    }
    let config = Config::from_vars(service, 0, |k| vars.get(k).cloned()).expect("config");
    App::new(config, faults, Kafka::Unused).expect("app")
}

struct Shop {
    http: reqwest::Client,
    frontend: SocketAddr,
    policy: SocketAddr,
    user: SocketAddr,
    apps: Vec<App>,
    spans: Received,
}

async fn shop() -> Shop {
    let (otlp, spans) = otlp_receiver().await;
    let users = app("user-service", otlp, Some("tok"), user::FAULTS);
    let user_addr = listen(users.router(user::routes(users.clone()))).await;
    let policies = app("policy-service", otlp, Some("tok"), policy::FAULTS);
    let policy_addr = listen(policies.router(policy::routes(policy::Policies {
        app: policies.clone(),
        users: format!("http://{user_addr}"),
    })))
    .await;
    // No token: the frontend's switches stay disabled.
    let front = app("frontend", otlp, None, frontend::FAULTS);
    let frontend_addr = listen(front.router(frontend::routes(frontend::Frontend {
        app: front.clone(),
        quotes: "http://127.0.0.1:9".into(),
        policies: format!("http://{policy_addr}"),
    })))
    .await;
    Shop {
        http: reqwest::Client::new(),
        frontend: frontend_addr,
        policy: policy_addr,
        user: user_addr,
        apps: vec![users, policies, front],
        spans,
    }
}

impl Shop {
    async fn buy(&self, traceparent: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://{}/api/purchase", self.frontend))
            .header("traceparent", traceparent)
            .json(&json!({"quote_id": "q-1", "user_id": "u-0042", "premium_cents": 48000}))
            .send()
            .await
            .expect("frontend answers");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn switch(
        &self,
        addr: SocketAddr,
        method: reqwest::Method,
        fault: &str,
        auth: Option<&str>,
    ) -> u16 {
        let mut r = self
            .http
            .request(method, format!("http://{addr}/chaos/{fault}"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send().await.expect("answer").status().as_u16()
    }

    /// What a service's `/metrics` shows now, as Prometheus would scrape it.
    async fn metrics(&self, addr: SocketAddr) -> String {
        let r = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("metrics text")
    }

    /// The spans of one trace, once the services have sent them.
    async fn trace(&self, trace_id: &str) -> Vec<Value> {
        for a in &self.apps {
            a.tracer.flush().await;
        }
        let spans = self.spans.lock().expect("lock");
        spans
            .iter()
            .filter(|s| s["traceId"] == trace_id)
            .cloned()
            .collect()
    }
}

fn span<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service && s["name"] == name)
        .unwrap_or_else(|| panic!("no {service} span {name} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_from_the_callers_traceparent_to_user_service() {
    let shop = shop().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let (status, policy) = shop
        .buy(&format!("00-{trace_id}-b7ad6b7169203331-01"))
        .await;
    assert_eq!(status, 201, "{policy}");
    assert!(
        policy["policy_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("pol-"))
    );

    let spans = shop.trace(trace_id).await;
    let front = span(&spans, "frontend", "POST /api/purchase");
    assert_eq!(
        front["parentSpanId"], "b7ad6b7169203331",
        "continues the caller"
    );
    let call = span(&spans, "frontend", "purchase_policy");
    let server = span(&spans, "policy-service", "POST /policies");
    assert_eq!(server["parentSpanId"], call["spanId"]);
    let check = span(&spans, "policy-service", "check_eligibility");
    let users = span(&spans, "user-service", "GET /users/{id}/eligibility");
    assert_eq!(users["parentSpanId"], check["spanId"]);
    let charge = span(&spans, "policy-service", "charge_payment");
    assert_eq!(charge["parentSpanId"], server["spanId"]);
    assert!(charge.get("status").is_none(), "the charge went through");
    // No broker here: the event is lost, and the producer span says so.
    let publish = span(&spans, "policy-service", "policy_purchased publish");
    assert_eq!(publish["status"]["code"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversion_switch_needs_the_token_and_fails_purchases_at_payment() {
    let shop = shop().await;
    let (p, post, delete) = (shop.policy, reqwest::Method::POST, reqwest::Method::DELETE);
    assert_eq!(shop.switch(p, post.clone(), "conversion", None).await, 401);
    assert_eq!(
        shop.switch(p, post.clone(), "conversion", Some("Bearer nope"))
            .await,
        401
    );
    assert_eq!(
        shop.switch(p, post.clone(), "conversion", Some("tok"))
            .await,
        401
    );
    let (status, _) = shop
        .buy("00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .await;
    assert_eq!(status, 201, "refused switches changed nothing");

    assert_eq!(
        shop.switch(p, post.clone(), "conversion", Some("Bearer tok"))
            .await,
        200
    );
    let trace_id = "2af7651916cd43dd8448eb211c80319c";
    let (status, body) = shop
        .buy(&format!("00-{trace_id}-b7ad6b7169203331-01"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("payment")),
        "{body}"
    );
    let spans = shop.trace(trace_id).await;
    assert_eq!(
        span(&spans, "policy-service", "charge_payment")["status"]["code"],
        2
    );
    assert_eq!(
        span(&spans, "frontend", "POST /api/purchase")["status"]["code"],
        2
    );
    assert!(
        !spans
            .iter()
            .any(|s| s["name"] == "policy_purchased publish"),
        "no event for a failed purchase"
    );

    assert_eq!(
        shop.switch(p, delete, "conversion", Some("Bearer tok"))
            .await,
        200
    );
    let (status, _) = shop
        .buy("00-3af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_are_off_without_a_token_and_unknown_faults_are_named() {
    let shop = shop().await;
    let post = reqwest::Method::POST;
    // The frontend has no CHAOS_TOKEN: nobody may switch anything.
    assert_eq!(
        shop.switch(shop.frontend, post.clone(), "latency", Some("Bearer tok"))
            .await,
        403
    );
    assert_eq!(
        shop.switch(shop.user, post.clone(), "conversion", Some("Bearer tok"))
            .await,
        404
    );
    assert_eq!(
        shop.switch(shop.user, post.clone(), "slowness", Some("Bearer tok"))
            .await,
        404
    );

    // Latency on user-service slows the purchase behind it.
    let r = shop
        .http
        .post(format!("http://{}/chaos/latency", shop.user))
        .bearer_auth("tok")
        .json(&json!({"millis": 300}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    let started = std::time::Instant::now();
    let (status, _) = shop
        .buy("00-4af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .await;
    assert_eq!(status, 201);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

/// The value of the sample line that starts with `series` (name and labels),
/// or 0 when the service has not counted it.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_show_up_in_metrics_with_their_route_and_status() {
    let shop = shop().await;
    let ok = r#"http_requests_total{route="/api/purchase",method="POST",status="201"}"#;
    let failed = r#"http_requests_total{route="/api/purchase",method="POST",status="502"}"#;
    let (status, _) = shop
        .buy("00-4af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .await;
    assert_eq!(status, 201);
    let before = shop.metrics(shop.frontend).await;
    assert_eq!(sample(&before, ok), 1.0, "{before}");
    assert_eq!(sample(&before, failed), 0.0, "{before}");

    // A broken payment: the frontend answers 502, an error in its metrics.
    let post = reqwest::Method::POST;
    let on = shop
        .switch(shop.policy, post, "conversion", Some("Bearer tok"))
        .await;
    assert_eq!(on, 200);
    let (status, _) = shop
        .buy("00-5af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .await;
    assert_eq!(status, 502);
    let after = shop.metrics(shop.frontend).await;
    assert_eq!(sample(&after, ok), 1.0, "{after}");
    assert_eq!(sample(&after, failed), 1.0, "{after}");
    assert!(
        after.contains(r#"http_request_duration_seconds_count{route="/api/purchase",method="POST",status="502"} 1"#),
        "{after}"
    );
    // The route is the template, so one label value per route, whatever the id.
    let users = shop.metrics(shop.user).await;
    assert_eq!(
        sample(
            &users,
            r#"http_requests_total{route="/users/{id}/eligibility",method="GET",status="200"}"#
        ),
        2.0,
        "{users}"
    );
    // Probes and scrapes are not the business's traffic.
    assert!(!after.contains("/metrics\""), "{after}");
    assert!(!after.contains("/healthz"), "{after}");
}
