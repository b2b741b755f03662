use std::collections::BTreeSet;

use axum::body::Body;
use http::Request;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::crd::{
    Category, IncidentMemorySpec, Mode, OccurrenceRecord, Outcome, SignalKind, WorkloadKind,
    WorkloadRef,
};
use crate::testing::api::FakeApi;
use crate::testing::{self, at};

const TOKEN: &str = "s3cret";

fn memory(
    ns: &str,
    name: &str,
    signal: SignalKind,
    category: Category,
    summary: &str,
) -> IncidentMemory {
    let mut m = IncidentMemory::new(
        name,
        IncidentMemorySpec {
            fingerprint: format!("{ns}/Deployment/{name}/{}", signal.as_str()),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: name.into(),
            },
            signal,
            occurrences: vec![OccurrenceRecord {
                incident: name.into(),
                detected_at: at(-3600),
                category: Some(category),
                actions: vec![],
                outcome: Some(Outcome::Effective),
                time_to_mitigate_seconds: Some(60),
                summary: Some(summary.into()),
            }],
            actions: vec![],
            keywords: vec![],
        },
    );
    m.metadata.namespace = Some(ns.into());
    m
}

/// The dashboard over a fake API holding `memories`, with the `shop`
/// policy and its OOM incident in the stores.
fn app(
    memories: &[IncidentMemory],
    embedder: Option<Arc<dyn crate::llm::embeddings::Embedder>>,
) -> axum::Router {
    let api = FakeApi::default();
    for m in memories {
        api.insert(m);
    }
    let client = api.client();
    let stores = super::super::Stores {
        client: client.clone(),
        incidents: testing::store(vec![testing::incident(crate::crd::Phase::Resolved, vec![])]),
        policies: testing::store(vec![testing::policy(Mode::Automatic)]),
        workloads: crate::workload::Workloads::new(
            client,
            testing::store(vec![]),
            testing::store(vec![]),
        ),
        board: Default::default(),
    };
    let (page, csp) = super::super::assemble();
    let state = Arc::new(Dashboard {
        stores,
        streams: Arc::default(),
        config: super::super::DashboardConfig {
            addr: "127.0.0.1:0".parse().expect("an address"),
            token: Some(TOKEN.into()),
            jaeger_ui: "http://127.0.0.1:16686".into(),
            embeddings: None,
        },
        knowledge: knowledge::Knowledge::new(embedder),
        page,
        csp,
    });
    super::super::router(state)
}

async fn get_with(app: &axum::Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 4 << 20)
        .await
        .expect("a body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get_json(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let (status, body) = get_with(app, uri, Some(TOKEN)).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn history() -> Vec<IncidentMemory> {
    vec![
        memory(
            "shop",
            "cart-oomkilled",
            SignalKind::OOMKilled,
            Category::OutOfMemory,
            "OutOfMemory: container app was OOMKilled at its memory limit of 64Mi",
        ),
        memory(
            "shop",
            "quote-crashloop",
            SignalKind::CrashLoopBackOff,
            Category::CrashLoop,
            "CrashLoop: the container exits at start: missing config file",
        ),
        memory(
            "shop",
            "user-crashloop",
            SignalKind::CrashLoopBackOff,
            Category::CrashLoop,
            "CrashLoop: the database password is wrong",
        ),
    ]
}

#[test]
fn the_openapi_document_lists_every_route_the_server_serves() {
    let doc = openapi();
    let documented: BTreeSet<String> = doc.paths.paths.keys().cloned().collect();
    let served: BTreeSet<String> = super::super::routes()
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(documented, served);
    let json: Value = serde_json::from_str(&DOCUMENT.json).expect("JSON");
    assert!(
        json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        json["openapi"]
    );
    assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    assert!(json["components"]["schemas"]["SearchAnswer"].is_object());
}

#[test]
fn the_docs_page_shows_each_route_with_a_curl_example_and_loads_nothing() {
    let (page, csp) = super::super::docs::render(&openapi());
    for (path, _) in super::super::routes() {
        assert!(
            page.contains(&format!("<span class=\"m\">GET</span>{path}")),
            "{path}"
        );
    }
    assert!(page.contains("curl -H &quot;Authorization: Bearer $SRE_SPACE_DASHBOARD_TOKEN&quot;"));
    assert!(
        page.contains("href=\"#schema-MemoryList\""),
        "responses link their schema"
    );
    assert!(!page.contains("<script"), "no script");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    assert!(
        !csp.contains("unsafe") && csp.contains("default-src 'none'"),
        "{csp}"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_everywhere() {
    let app = app(&history(), None);
    for (path, _) in super::super::routes() {
        let uri = path.replace("{namespace}", "shop").replace("{name}", "x");
        assert_eq!(
            get_with(&app, &uri, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            get_with(&app, &uri, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn memories_are_listed_filtered_and_paginated() {
    let app = app(&history(), None);
    let (status, page) = get_json(&app, "/api/v1/memories?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let names: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["cart-oomkilled", "quote-crashloop"]);
    let next = page["continue"].as_str().expect("a next page");
    let (_, rest) = get_json(&app, &format!("/api/v1/memories?limit=2&continue={next}")).await;
    assert_eq!(rest["items"][0]["name"], "user-crashloop");
    assert!(rest.get("continue").is_none(), "the last page: {rest}");

    let (_, crash) = get_json(&app, "/api/v1/memories?signal=CrashLoopBackOff").await;
    assert_eq!(crash["items"].as_array().map(Vec::len), Some(2), "{crash}");
    let (_, oom) = get_json(&app, "/api/v1/memories?namespace=shop&category=OutOfMemory").await;
    assert_eq!(oom["items"][0]["name"], "cart-oomkilled");
    assert_eq!(oom["items"][0]["categories"][0], "OutOfMemory");
}

#[tokio::test]
async fn bad_input_is_refused_with_what_to_fix() {
    let app = app(&history(), None);
    for (uri, says) in [
        ("/api/v1/memories?limit=0", "limit"),
        ("/api/v1/memories?limit=abc", "limit"),
        ("/api/v1/memories?namespace=elsewhere", "shop"),
        ("/api/v1/memories?signal=Sad", "signal"),
        ("/api/v1/memories?category=Sad", "category"),
        ("/api/v1/memories?continue=!!", "continue"),
        ("/api/v1/memories/elsewhere/x", "namespace"),
        ("/api/v1/incidents", "fingerprint"),
        ("/api/v1/search", "q is required"),
        ("/api/v1/search?q=+++", "q is required"),
        ("/api/v1/search?q=oom&limit=51", "limit"),
        ("/api/v1/search?q=oom&namespace=elsewhere", "namespace"),
    ] {
        let (status, body) = get_json(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{uri}: {error}");
    }
    let long = "a".repeat(MAX_QUERY_CHARS + 1);
    let (status, body) = get_json(&app, &format!("/api/v1/search?q={long}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("256")),
        "{body}"
    );
}

#[tokio::test]
async fn a_memory_is_read_whole_and_a_missing_one_is_not_found() {
    let app = app(&history(), None);
    let (status, m) = get_json(&app, "/api/v1/memories/shop/cart-oomkilled").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["signal"], "OOMKilled");
    assert!(
        m["occurrences"][0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("64Mi")),
        "{m}"
    );
    let (status, _) = get_json(&app, "/api/v1/memories/shop/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn incidents_are_found_by_fingerprint() {
    let app = app(&history(), None);
    let (status, list) = get_json(
        &app,
        "/api/v1/incidents?fingerprint=shop/Deployment/web/OOMKilled",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["name"], "web-oomkilled");
    assert_eq!(
        list["items"][0]["rootCause"],
        "the container ran out of memory"
    );
    let (_, none) = get_json(&app, "/api/v1/incidents?fingerprint=nothing").await;
    assert_eq!(none["items"], Value::Array(vec![]));
}

#[tokio::test]
async fn search_ranks_the_oom_history_first_and_says_how_it_ranked() {
    let app = app(&history(), None);
    let (status, answer) = get_json(&app, "/api/v1/search?q=oomkilled+memory+limit").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ranking"], "bm25");
    let first = &answer["results"][0];
    assert!(
        ["cart-oomkilled", "web-oomkilled"].contains(&first["name"].as_str().unwrap_or_default()),
        "{answer}"
    );
    assert!(
        answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["signal"] == "OOMKilled"),
        "no crash loop matches: {answer}"
    );
    let (_, crash) = get_json(&app, "/api/v1/search?q=missing+config+file").await;
    assert_eq!(crash["results"][0]["name"], "quote-crashloop", "{crash}");
    assert_eq!(
        crash["results"][0]["href"],
        "/api/v1/memories/shop/quote-crashloop"
    );
    let (_, nothing) = get_json(&app, "/api/v1/search?q=kafka+partition").await;
    assert_eq!(nothing["results"], Value::Array(vec![]));
}

#[tokio::test]
async fn search_with_embeddings_says_so_and_falls_back_when_they_fail() {
    let model = Arc::new(crate::llm::embeddings::HashedEmbeddings::default());
    let app = app(&history(), Some(model.clone()));
    let (_, answer) = get_json(&app, "/api/v1/search?q=database+password").await;
    assert_eq!(answer["ranking"], "bm25+embeddings", "{answer}");
    assert_eq!(answer["results"][0]["name"], "user-crashloop");
    model
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, answer) = get_json(&app, "/api/v1/search?q=database+password").await;
    assert_eq!(answer["ranking"], "bm25", "{answer}");
    assert!(
        answer["note"].as_str().is_some_and(|n| n.contains("BM25")),
        "{answer}"
    );
    assert_eq!(answer["results"][0]["name"], "user-crashloop");
}

#[tokio::test]
async fn a_secret_in_a_stored_summary_is_not_served() {
    let leaky = memory(
        "shop",
        "leaky",
        SignalKind::CrashLoopBackOff,
        Category::CrashLoop,
        "CrashLoop: connect failed with password=hunter2hunter2 to db",
    );
    let app = app(&[leaky], None);
    let (_, m) = get_json(&app, "/api/v1/memories/shop/leaky").await;
    assert!(!m.to_string().contains("hunter2"), "{m}");
    let (_, s) = get_json(&app, "/api/v1/search?q=connect+failed").await;
    assert!(!s.to_string().contains("hunter2"), "{s}");
    assert_eq!(s["results"][0]["name"], "leaky");
}

#[test]
fn the_list_parameters_are_documented_under_their_query_names() {
    let json: Value = serde_json::from_str(&DOCUMENT.json).expect("JSON");
    let params = json["paths"]["/api/v1/memories"]["get"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["namespace", "signal", "category", "limit", "continue"]
    );
    let limit = &params[3]["schema"];
    assert_eq!(limit["maximum"], 200, "{limit}");
}
