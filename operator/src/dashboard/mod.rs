//! The SRE dashboard, served by the operator on `SRE_SPACE_DASHBOARD_ADDR`
//! (unset: no dashboard). It shows what the operator itself knows, live: the
//! incidents in its store, the signals it measures (the conversion rate
//! against its minimum, health checks), the workloads' ready pods, and for
//! one incident its timeline, diagnosis, links and memory. It reads only the
//! operator's state and the Kubernetes API, and it is read-only: no request
//! changes anything.
//!
//! The page is one HTML document with its script and style inline (so it
//! needs nothing from outside, and one token-checked request loads all of
//! it); it receives a JSON [`view::Snapshot`] on `/events` (server-sent
//! events) each time the snapshot changes, and a heartbeat in between.

pub mod api;
pub(crate) mod auth;
mod docs;
pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use base64::Engine;
use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::crd::{Incident, IncidentMemory};
use crate::{Error, Result};

/// How often a connected page's snapshot is recomputed to see whether it
/// changed: the delay between a change and the page showing it.
const TICK: Duration = Duration::from_millis(500);
/// A sign of life when nothing changed for this long, so the page can tell
/// a quiet operator from a lost connection.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Open event streams at most: each recomputes its snapshot every tick, so
/// their number bounds the dashboard's cost to the operator.
const MAX_STREAMS: usize = 32;
/// Where trace ids link to when `SRE_SPACE_JAEGER_UI` is not set.
const DEFAULT_JAEGER_UI: &str = "http://127.0.0.1:16686";

const HTML: &str = include_str!("assets/index.html");
const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The dashboard's settings.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    pub addr: SocketAddr,
    /// Every request must carry it when set.
    pub token: Option<String>,
    /// The Jaeger UI's base URL; trace ids link to `<base>/trace/<id>`.
    pub jaeger_ui: String,
    /// The knowledge base's search blends in these embeddings; None: BM25
    /// alone.
    pub embeddings: Option<crate::llm::embeddings::EmbeddingsConfig>,
}

/// The read-only dashboard.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Dashboard")]
pub struct DashboardOptions {
    /// Serve the dashboard on this address (for example 127.0.0.1:3001);
    /// unset or empty: no dashboard. Off loopback a token is required.
    #[arg(long, env = "SRE_SPACE_DASHBOARD_ADDR", value_name = "ADDR")]
    pub dashboard_addr: Option<String>,
    /// The bearer token every dashboard request must carry.
    #[arg(
        long,
        env = "SRE_SPACE_DASHBOARD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub dashboard_token: Option<String>,
    /// The Jaeger UI trace ids link to (`<url>/trace/<id>`).
    #[arg(
        long,
        env = "SRE_SPACE_JAEGER_UI",
        value_name = "URL",
        default_value = DEFAULT_JAEGER_UI,
    )]
    pub jaeger_ui: String,
    /// The OpenAI-compatible embeddings model the knowledge base's search
    /// (`/api/v1/search`) blends with BM25, from the language model's
    /// endpoint and key (`SRE_SPACE_LLM_BASE_URL`, `SRE_SPACE_LLM_API_KEY`);
    /// unset: BM25 alone.
    #[arg(long, env = "SRE_SPACE_EMBEDDINGS_MODEL", value_name = "MODEL")]
    pub embeddings_model: Option<String>,
}

impl DashboardConfig {
    /// The dashboard of the options; None when no address is set. A
    /// non-loopback address without a token is refused. The knowledge base's
    /// embeddings use the language model's endpoint (`llm`).
    pub fn from_options(
        o: &DashboardOptions,
        llm: &crate::llm::LlmOptions,
    ) -> Result<Option<Self>> {
        let addr = match &o.dashboard_addr {
            Some(a) if !a.trim().is_empty() => a,
            _ => return Ok(None),
        };
        let token = o.dashboard_token.clone();
        let addr = auth::check_listen(addr.trim(), token.as_deref()).map_err(Error::Config)?;
        let jaeger = match o.jaeger_ui.trim() {
            "" => DEFAULT_JAEGER_UI,
            _ => o.jaeger_ui.as_str(),
        };
        let jaeger_ui = view::safe_url(jaeger).ok_or_else(|| {
            Error::Config(format!(
                "SRE_SPACE_JAEGER_UI={jaeger:?} is not an http(s) URL (for example {DEFAULT_JAEGER_UI})"
            ))
        })?;
        Ok(Some(Self {
            addr,
            token: token.map(|t| t.trim().to_string()),
            jaeger_ui: jaeger_ui.trim_end_matches('/').to_string(),
            embeddings: crate::llm::embeddings::EmbeddingsConfig::from_options(
                o.embeddings_model.as_deref(),
                llm,
            )?,
        }))
    }
}

/// What the dashboard reads: the operator's stores and board, and the API
/// for memories (read only).
#[derive(Clone)]
pub struct Stores {
    pub client: kube::Client,
    pub incidents: kube::runtime::reflector::Store<Incident>,
    pub policies: kube::runtime::reflector::Store<crate::crd::RemediationPolicy>,
    pub workloads: crate::workload::Workloads,
    pub board: crate::scout::measured::Board,
}

struct Dashboard {
    stores: Stores,
    streams: Arc<std::sync::atomic::AtomicUsize>,
    config: DashboardConfig,
    /// The knowledge base's search, with its embeddings cache.
    knowledge: crate::memory::knowledge::Knowledge,
    page: String,
    /// The page's Content-Security-Policy: only its own inline script and
    /// style (by hash) run, and it connects only back to this server.
    csp: String,
}

/// The page with its style and script inline, and the policy that allows
/// exactly those two.
fn assemble() -> (String, String) {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    let page = HTML.replacen("/*CSS*/", CSS, 1).replacen("/*JS*/", JS, 1);
    // The hashes cover the exact text between the tags, which the
    // template leaves as the two placeholders alone.
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        hash(JS),
        hash(CSS)
    );
    (page, csp)
}

/// Starts the dashboard server; returns once it listens.
pub async fn serve(config: DashboardConfig, stores: Stores) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| Error::Config(format!("SRE_SPACE_DASHBOARD_ADDR={}: {e}", config.addr)))?;
    let addr = listener.local_addr().unwrap_or(config.addr);
    let (page, csp) = assemble();
    let token = config.token.is_some();
    let embedder: Option<Arc<dyn crate::llm::embeddings::Embedder>> = match &config.embeddings {
        Some(c) => {
            info!(model = %c.model, "the knowledge base's search blends in embeddings");
            Some(Arc::new(crate::llm::embeddings::OpenAiEmbeddings::new(c)?))
        }
        None => None,
    };
    let state = Arc::new(Dashboard {
        stores,
        streams: Arc::default(),
        config,
        knowledge: crate::memory::knowledge::Knowledge::new(embedder),
        page,
        csp,
    });
    let app = router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the dashboard server stopped");
        }
    });
    info!(%addr, token, "dashboard listening");
    Ok(())
}

/// Every route the server answers; the OpenAPI document lists each (a test
/// in `api` checks it).
fn routes() -> Vec<(&'static str, MethodRouter<Arc<Dashboard>>)> {
    let mut routes = vec![
        ("/", get(page)),
        ("/incidents/{namespace}/{name}", get(page)),
        ("/api/snapshot", get(snapshot)),
        ("/api/incidents/{namespace}/{name}/memory", get(memory)),
        ("/runbooks/{namespace}/{config_map}/{key}", get(runbook)),
        ("/events", get(events)),
    ];
    routes.extend(api::routes());
    routes
}

fn router(state: Arc<Dashboard>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, route)| r.route(path, route))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

#[derive(Deserialize, Default)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

/// Read-only, and behind the token when there is one.
async fn guard(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the dashboard is read-only\n",
        )
            .into_response();
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = Query::<TokenQuery>::try_from_uri(req.uri())
        .ok()
        .and_then(|q| q.0.token);
    if !auth::authorized(d.config.token.as_deref(), bearer, query.as_deref()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!(
                "a token is needed: send Authorization: Bearer <token>, or open the page with \
                 ?{}=<token>\n",
                auth::QUERY_PARAMETER
            ),
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn page(State(d): State<Arc<Dashboard>>) -> Response {
    let mut res = axum::response::Html(d.page.clone()).into_response();
    if let Ok(csp) = HeaderValue::from_str(&d.csp) {
        res.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    res.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[derive(Deserialize, Default)]
struct SnapshotQuery {
    /// `namespace/name` of the incident the page shows.
    #[serde(default)]
    incident: Option<String>,
}

fn selected(q: &SnapshotQuery) -> Option<(String, String)> {
    let (ns, name) = q.incident.as_deref()?.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// The snapshot from the operator's stores and board.
fn build(d: &Dashboard, incident: Option<&(String, String)>) -> view::Snapshot {
    let ctx = &d.stores;
    let incidents = ctx.incidents.state();
    let board = ctx.board.snapshot();
    let policies = ctx.policies.state();
    let pods: Vec<view::PodState> = ctx
        .workloads
        .pods
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ns = p.namespace()?;
            crate::workload::covering_policy(policies.iter().map(|p| p.as_ref()), &ns, p.labels())?;
            let workload = ctx.workloads.cached_owner_of(p)?;
            Some(view::PodState {
                namespace: ns,
                workload: workload.name,
                ready: view::pod_ready(p),
            })
        })
        .collect();
    view::Snapshot {
        incidents: view::rows(incidents.iter().map(|i| i.as_ref())),
        conversion: view::conversion(&board),
        services: view::services(&pods, &board),
        incident: incident.and_then(|(ns, name)| {
            ctx.incidents
                .get(&ObjectRef::<Incident>::new(name).within(ns))
                .map(|i| view::detail(&i, &d.config.jaeger_ui))
        }),
    }
}

async fn snapshot(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<SnapshotQuery>,
) -> axum::Json<view::Snapshot> {
    axum::Json(build(&d, selected(&q).as_ref()))
}

/// The memory of an incident's fingerprint and similar problems, read from
/// the API (the operator keeps no store of memories).
async fn memory(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    // Only incidents the operator follows: the dashboard lists no other
    // namespace's memories.
    let Some(inc) = d
        .stores
        .incidents
        .get(&ObjectRef::<Incident>::new(&name).within(&namespace))
    else {
        return (StatusCode::NOT_FOUND, "no such incident\n").into_response();
    };
    let api: Api<IncidentMemory> = Api::namespaced(d.stores.client.clone(), &namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => axum::Json(view::memory(&inc, &list.items)).into_response(),
        Err(e) => {
            warn!(error = %e, %namespace, "dashboard: listing IncidentMemories failed");
            (
                StatusCode::BAD_GATEWAY,
                format!("the Kubernetes API did not list the IncidentMemories: {e}\n"),
            )
                .into_response()
        }
    }
}

/// A runbook as plain text: only a runbook key (`workload.<name>.md`,
/// `category.<Category>.md`) of a ConfigMap that a policy of the namespace
/// names in `spec.runbooks`, so the dashboard serves no other ConfigMap.
/// Inert: `text/plain`, no sniffing, a policy that runs nothing.
async fn runbook(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, config_map, key)): Path<(String, String, String)>,
) -> Response {
    let named = d.stores.policies.state().iter().any(|p| {
        p.namespace().as_deref() == Some(namespace.as_str())
            && p.spec
                .runbooks
                .as_ref()
                .is_some_and(|r| r.config_map == config_map)
    });
    if !named || !crate::brain::runbook::is_runbook_key(&key) {
        return (StatusCode::NOT_FOUND, "no such runbook\n").into_response();
    }
    match crate::brain::runbook::text(&d.stores.client, &namespace, &config_map, &key).await {
        Ok(Some((mut text, cut))) => {
            if cut {
                text.push_str(&format!(
                    "\n\n[cut: only the first {} KiB of this runbook are shown]\n",
                    crate::brain::runbook::MAX_RUNBOOK_BYTES / 1024
                ));
            }
            (
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; sandbox",
                    ),
                ],
                text,
            )
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such runbook\n").into_response(),
        Err(e) => {
            warn!(error = %e, %namespace, %config_map, "dashboard: reading a runbook failed");
            (
                StatusCode::BAD_GATEWAY,
                format!("the Kubernetes API did not return the runbook: {e}\n"),
            )
                .into_response()
        }
    }
}

/// Counts an open event stream while it lives.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl StreamSlot {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Subscription {
    _slot: StreamSlot,
    d: Arc<Dashboard>,
    incident: Option<(String, String)>,
    /// What the last snapshot was built from, and the snapshot.
    last_inputs: Option<u64>,
    last: Option<String>,
    last_sent: Instant,
}

/// A digest of everything a snapshot is built from: the versions of the
/// stored objects and the board's latest readings. Far cheaper than building
/// and serialising the snapshot, so an idle page costs the operator little.
/// Order-independent (a sum of per-item hashes): a store's iteration order
/// is not part of its state.
fn inputs(ctx: &Stores) -> u64 {
    fn digest(x: impl std::hash::Hash) -> u64 {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        x.hash(&mut h);
        h.finish()
    }
    fn versions<K: kube::Resource>(items: &[Arc<K>]) -> u64 {
        items
            .iter()
            .map(|o| {
                let m = o.meta();
                digest((&m.namespace, &m.name, &m.resource_version))
            })
            .fold(0, u64::wrapping_add)
    }
    let board = ctx
        .board
        .snapshot()
        .iter()
        .map(|e| digest((&e.reading.subject, e.reading.at, e.history.len())))
        .fold(0, u64::wrapping_add);
    digest((
        versions(&ctx.incidents.state()),
        versions(&ctx.workloads.pods.state()),
        versions(&ctx.policies.state()),
        versions(&ctx.workloads.replicasets.state()),
        board,
    ))
}

/// A snapshot whenever it changes, a heartbeat when nothing did for a while.
async fn events(State(d): State<Arc<Dashboard>>, Query(q): Query<SnapshotQuery>) -> Response {
    let Some(slot) = StreamSlot::take(&d.streams) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            format!("{MAX_STREAMS} dashboards are open already\n"),
        )
            .into_response();
    };
    stream(Subscription {
        _slot: slot,
        d,
        incident: selected(&q),
        last_inputs: None,
        last: None,
        last_sent: Instant::now(),
    })
    .into_response()
}

fn stream(sub: Subscription) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>> {
    Sse::new(futures::stream::unfold(sub, |mut sub| async move {
        loop {
            let now = inputs(&sub.d.stores);
            if sub.last_inputs != Some(now) {
                sub.last_inputs = Some(now);
                match serde_json::to_string(&build(&sub.d, sub.incident.as_ref())) {
                    Ok(json) if sub.last.as_ref() != Some(&json) => {
                        sub.last = Some(json.clone());
                        sub.last_sent = Instant::now();
                        let event = Event::default().event("snapshot").data(json);
                        return Some((Ok(event), sub));
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "dashboard: the snapshot did not serialise"),
                }
            }
            if sub.last_sent.elapsed() >= HEARTBEAT {
                sub.last_sent = Instant::now();
                let event = Event::default()
                    .event("heartbeat")
                    .data(Timestamp::now().to_string());
                return Some((Ok(event), sub));
            }
            tokio::time::sleep(TICK).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_bounded_and_a_closed_one_frees_its_slot() {
        let count = Arc::default();
        let slots: Vec<StreamSlot> = (0..MAX_STREAMS)
            .map(|_| StreamSlot::take(&count).expect("a free slot"))
            .collect();
        assert!(StreamSlot::take(&count).is_none(), "one too many");
        drop(slots);
        assert!(StreamSlot::take(&count).is_some());
    }

    #[test]
    fn the_page_carries_its_script_and_style_and_the_policy_allows_exactly_them() {
        let (page, csp) = assemble();
        assert!(page.contains(JS) && page.contains(CSS));
        assert!(!page.contains("/*JS*/") && !page.contains("/*CSS*/"));
        let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
        assert!(
            csp.contains(&format!("script-src 'sha256-{}'", hash(JS))),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("style-src 'sha256-{}'", hash(CSS))),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        for outside in ["src=\"http", "href=\"http", "@import", "url(http", "url(//"] {
            assert!(
                !page.contains(outside),
                "the page loads nothing from outside: {outside}"
            );
        }
    }
}
