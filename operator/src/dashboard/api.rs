//! The knowledge base's read-only REST API, under `/api/v1/`, served with
//! the dashboard and behind its token: the IncidentMemories (list and get),
//! the Incidents of a fingerprint, and a text search over root causes,
//! evidence and post-mortems. Its OpenAPI 3 document is generated from the
//! types below (`/api/v1/openapi.json`) and rendered at `/docs`.
//!
//! Everything served is text the operator already redacted where it was
//! gathered; it is redacted again here, and only fields the dashboard shows
//! are served.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use base64::Engine;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Required, ResponseBuilder, Type};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::Dashboard;
use crate::crd::{Category, Incident, IncidentMemory, SignalKind};
use crate::memory::knowledge;
use crate::memory::search::Document;
use crate::redact;

/// Memories one list answer holds at most, and by default.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;
/// Search results at most, and by default.
pub const MAX_RESULTS: u32 = 50;
pub const DEFAULT_RESULTS: u32 = 10;
/// The longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// The longest fingerprint accepted.
pub const MAX_FINGERPRINT_CHARS: usize = 253;
/// IncidentMemories read from one namespace at most.
const MAX_MEMORIES_PER_NAMESPACE: u32 = 1000;

/// The knowledge base's routes (the dashboard's own are in `super::routes`).
pub(super) fn routes() -> Vec<(&'static str, MethodRouter<Arc<Dashboard>>)> {
    vec![
        ("/api/v1/memories", get(list_memories)),
        ("/api/v1/memories/{namespace}/{name}", get(get_memory)),
        ("/api/v1/incidents", get(incidents_by_fingerprint)),
        ("/api/v1/search", get(search)),
        ("/api/v1/openapi.json", get(openapi_json)),
        ("/docs", get(docs_page)),
    ]
}

/// What a refused request gets: what to fix.
#[derive(Serialize, ToSchema)]
pub struct ApiError {
    /// What was wrong with the request, and how to fix it.
    pub error: String,
}

/// A refused request: its status and what to fix.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ApiError { error: self.1 })).into_response()
    }
}

fn invalid(error: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, error.into())
}

fn bad_request(error: impl Into<String>) -> Response {
    invalid(error).into_response()
}

fn query_error(e: QueryRejection) -> Response {
    bad_request(format!("the query string is not valid: {}", e.body_text()))
}

/// An enum's name as its JSON says it.
fn name_of<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.to_string()
}

/// The namespaces the operator follows: those of its policies and of its
/// incidents. The API reads no other.
fn known_namespaces(d: &Dashboard) -> BTreeSet<String> {
    let incidents = d.stores.incidents.state();
    let policies = d.stores.policies.state();
    incidents
        .iter()
        .filter_map(|i| i.metadata.namespace.clone())
        .chain(policies.iter().filter_map(|p| p.metadata.namespace.clone()))
        .collect()
}

/// The namespaces a request reads: the one it names, which must be known,
/// or all known ones.
fn namespaces(d: &Dashboard, asked: Option<&str>) -> Result<Vec<String>, Refusal> {
    let known = known_namespaces(d);
    match asked.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(known.into_iter().collect()),
        Some(ns) if known.contains(ns) => Ok(vec![ns.to_string()]),
        Some(ns) => {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            Err(invalid(format!(
                "namespace {:?} has no RemediationPolicy or Incident the operator follows; \
                 use one of: {}",
                redact::string(&ns.chars().take(63).collect::<String>()),
                if list.is_empty() {
                    "(none yet)".to_string()
                } else {
                    list.join(", ")
                }
            )))
        }
    }
}

/// The IncidentMemories of the namespaces, sorted by namespace and name.
async fn read_memories(
    d: &Dashboard,
    namespaces: &[String],
) -> Result<Vec<IncidentMemory>, Refusal> {
    let mut all = Vec::new();
    for ns in namespaces {
        let api: Api<IncidentMemory> = Api::namespaced(d.stores.client.clone(), ns);
        match api
            .list(&ListParams::default().limit(MAX_MEMORIES_PER_NAMESPACE))
            .await
        {
            Ok(list) => all.extend(list.items),
            Err(e) => {
                warn!(error = %e, namespace = %ns, "knowledge base: listing IncidentMemories failed");
                return Err(Refusal(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the Kubernetes API did not list the IncidentMemories of {ns}; retry later"
                    ),
                ));
            }
        }
    }
    all.sort_by_key(key);
    Ok(all)
}

fn key(m: &IncidentMemory) -> (String, String) {
    (
        m.metadata.namespace.clone().unwrap_or_default(),
        m.metadata.name.clone().unwrap_or_default(),
    )
}

/// A bounded number from the query, or what to fix.
fn bounded(value: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, Refusal> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(format!(
            "{name} must be a whole number from 1 to {max} (default {default})"
        ))),
    }
}

/// One IncidentMemory in a list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySummary {
    pub namespace: String,
    pub name: String,
    pub fingerprint: String,
    /// `Deployment/quote`.
    pub target: String,
    /// The signal kind (`OOMKilled`, `CrashLoopBackOff`, ...).
    pub signal: String,
    /// The categories its occurrences were diagnosed as.
    pub categories: Vec<String>,
    pub total_occurrences: i64,
    pub best_action: Option<String>,
    pub last_seen: Option<String>,
}

/// A page of IncidentMemories.
#[derive(Serialize, ToSchema)]
pub struct MemoryList {
    pub items: Vec<MemorySummary>,
    /// Pass it as `continue` for the next page; absent on the last page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One IncidentMemory: the history of one problem.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    #[serde(flatten)]
    pub summary: MemorySummary,
    /// Newest first.
    pub occurrences: Vec<Occurrence>,
    pub actions: Vec<Tally>,
    /// Terms drawn from the evidence.
    pub keywords: Vec<String>,
}

/// One past occurrence of a problem.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Occurrence {
    pub incident: String,
    pub detected_at: String,
    pub category: Option<String>,
    pub actions: Vec<String>,
    /// `Effective` or `Ineffective`.
    pub outcome: Option<String>,
    pub time_to_mitigate_seconds: Option<i64>,
    /// The diagnosis in a line: category and root cause.
    pub summary: Option<String>,
}

/// How one action fared on a problem.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    #[serde(rename = "type")]
    pub type_: String,
    pub effective: i32,
    pub ineffective: i32,
    pub last_tried: Option<String>,
}

fn categories(m: &IncidentMemory) -> Vec<Category> {
    let mut out: Vec<Category> = Vec::new();
    for c in m.spec.occurrences.iter().filter_map(|o| o.category) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn memory_summary(m: &IncidentMemory) -> MemorySummary {
    let status = m.status.clone().unwrap_or_default();
    MemorySummary {
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        name: m.metadata.name.clone().unwrap_or_default(),
        fingerprint: m.spec.fingerprint.clone(),
        target: m.spec.target.to_string(),
        signal: m.spec.signal.as_str().to_string(),
        categories: categories(m).iter().map(name_of).collect(),
        total_occurrences: status.total_occurrences,
        best_action: status.best_action.map(|a| a.as_str().to_string()),
        last_seen: status.last_seen.as_ref().map(time),
    }
}

fn memory(m: &IncidentMemory) -> Memory {
    Memory {
        summary: memory_summary(m),
        occurrences: m
            .spec
            .occurrences
            .iter()
            .rev()
            .map(|o| Occurrence {
                incident: o.incident.clone(),
                detected_at: time(&o.detected_at),
                category: o.category.as_ref().map(name_of),
                actions: o.actions.iter().map(|a| a.as_str().to_string()).collect(),
                outcome: o.outcome.as_ref().map(name_of),
                time_to_mitigate_seconds: o.time_to_mitigate_seconds,
                summary: o.summary.as_deref().map(redact::string),
            })
            .collect(),
        actions: m
            .spec
            .actions
            .iter()
            .map(|t| Tally {
                type_: t.type_.as_str().to_string(),
                effective: t.effective,
                ineffective: t.ineffective,
                last_tried: t.last_tried.as_ref().map(time),
            })
            .collect(),
        keywords: m.spec.keywords.iter().map(|k| redact::string(k)).collect(),
    }
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct MemoryQuery {
    /// Only this namespace's memories (one the operator follows).
    pub namespace: Option<String>,
    /// Only this signal kind (`OOMKilled`, `CrashLoopBackOff`, ...).
    pub signal: Option<String>,
    /// Only memories with an occurrence diagnosed as this category
    /// (`OutOfMemory`, `CrashLoop`, ...).
    pub category: Option<String>,
    /// At most this many memories, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `continue` of the previous page.
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    pub next: Option<String>,
}

fn enum_named<T: serde::de::DeserializeOwned>(v: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(v.trim().to_string())).ok()
}

fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ns}/{name}"))
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ns, name) = text.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// List IncidentMemories, filtered and paginated (sorted by namespace and
/// name).
#[utoipa::path(
    get,
    path = "/api/v1/memories",
    tag = "memories",
    params(MemoryQuery),
    responses(
        (status = 200, description = "A page of memories", body = MemoryList),
        (status = 400, description = "A filter, limit or continue token is not valid", body = ApiError),
        (status = 401, description = "No token, or a wrong one"),
        (status = 502, description = "The Kubernetes API did not answer", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn list_memories(
    State(d): State<Arc<Dashboard>>,
    q: Result<Query<MemoryQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    let limit = match bounded(q.limit.as_deref(), "limit", DEFAULT_PAGE, MAX_PAGE) {
        Ok(l) => l as usize,
        Err(r) => return r.into_response(),
    };
    let signal: Option<SignalKind> = match q.signal.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => match enum_named(s) {
            Some(k) => Some(k),
            None => {
                return bad_request(
                    "signal is not a signal kind: use one of OOMKilled, CrashLoopBackOff, \
                     ImagePullBackOff, Unschedulable, ... as `kubectl explain \
                     incidentmemory.spec.signal` lists them",
                );
            }
        },
    };
    let category: Option<Category> = match q.category.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => match enum_named(s) {
            Some(c) => Some(c),
            None => {
                return bad_request(
                    "category is not a diagnosis category: use one of OutOfMemory, CrashLoop, \
                     BadRollout, ... as `kubectl explain incident.status.diagnosis.category` \
                     lists them",
                );
            }
        },
    };
    let after = match q.next.as_deref().filter(|t| !t.trim().is_empty()) {
        None => None,
        Some(t) => match decode_continue(t) {
            Some(k) => Some(k),
            None => {
                return bad_request(
                    "continue is not a token this API gave; pass the `continue` of the \
                     previous page unchanged, or leave it out for the first page",
                );
            }
        },
    };
    let nss = match namespaces(&d, q.namespace.as_deref()) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let all = match read_memories(&d, &nss).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let mut matching = all
        .iter()
        .filter(|m| signal.is_none_or(|s| m.spec.signal == s))
        .filter(|m| category.is_none_or(|c| categories(m).contains(&c)))
        .filter(|m| after.as_ref().is_none_or(|a| &key(m) > a));
    let items: Vec<&IncidentMemory> = matching.by_ref().take(limit).collect();
    let next = match (matching.next(), items.last()) {
        (Some(_), Some(last)) => {
            let (ns, name) = key(last);
            Some(encode_continue(&ns, &name))
        }
        _ => None,
    };
    axum::Json(MemoryList {
        items: items.into_iter().map(memory_summary).collect(),
        next,
    })
    .into_response()
}

/// One IncidentMemory, with its occurrences and how each action fared.
#[utoipa::path(
    get,
    path = "/api/v1/memories/{namespace}/{name}",
    tag = "memories",
    params(
        ("namespace" = String, Path, description = "The memory's namespace (one the operator follows)"),
        ("name" = String, Path, description = "The memory's name (its incident's name)"),
    ),
    responses(
        (status = 200, description = "The memory", body = Memory),
        (status = 400, description = "The namespace is not one the operator follows", body = ApiError),
        (status = 401, description = "No token, or a wrong one"),
        (status = 404, description = "No such memory", body = ApiError),
        (status = 502, description = "The Kubernetes API did not answer", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn get_memory(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(r) = namespaces(&d, Some(&namespace)) {
        return r.into_response();
    }
    let api: Api<IncidentMemory> = Api::namespaced(d.stores.client.clone(), &namespace);
    match api.get_opt(&name).await {
        Ok(Some(m)) => axum::Json(memory(&m)).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(ApiError {
                error: format!(
                    "no IncidentMemory {:?} in {namespace}; list them at /api/v1/memories?namespace={namespace}",
                    name.chars().take(253).collect::<String>()
                ),
            }),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, %namespace, "knowledge base: reading an IncidentMemory failed");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(ApiError {
                    error: "the Kubernetes API did not answer; retry later".into(),
                }),
            )
                .into_response()
        }
    }
}

/// An Incident, as the dashboard lists it, with its root cause.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSummary {
    pub namespace: String,
    pub name: String,
    pub fingerprint: String,
    /// `Detected`, `Diagnosing`, ..., `Resolved`, `Escalated`, `Failed`.
    pub phase: String,
    pub target: String,
    pub signal: String,
    pub category: Option<String>,
    pub root_cause: Option<String>,
    pub detected_at: Option<String>,
    pub resolved_at: Option<String>,
    pub occurrences: i64,
    pub post_mortem: Option<String>,
    /// Whether it still needs the operator or a person.
    pub open: bool,
}

/// The Incidents of one fingerprint.
#[derive(Serialize, ToSchema)]
pub struct IncidentList {
    pub fingerprint: String,
    pub items: Vec<IncidentSummary>,
}

fn incident_summary(inc: &Incident) -> IncidentSummary {
    let row = super::view::row(inc);
    let status = inc.status.clone().unwrap_or_default();
    IncidentSummary {
        fingerprint: inc.spec.fingerprint.clone(),
        phase: name_of(&row.phase),
        target: row.target,
        signal: row.signal.as_str().to_string(),
        category: row.category.as_ref().map(name_of),
        root_cause: status
            .diagnosis
            .as_ref()
            .map(|d| redact::string(&d.root_cause)),
        detected_at: row.detected_at,
        resolved_at: status.resolved_at.as_ref().map(time),
        occurrences: row.occurrences,
        post_mortem: status.post_mortem.as_deref().map(redact::string),
        open: row.open,
        namespace: row.namespace,
        name: row.name,
    }
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct FingerprintQuery {
    /// The fingerprint (an Incident's `spec.fingerprint`).
    pub fingerprint: Option<String>,
}

/// The Incidents the operator follows with this fingerprint.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    params(FingerprintQuery),
    responses(
        (status = 200, description = "The incidents of the fingerprint (none is an empty list)", body = IncidentList),
        (status = 400, description = "No fingerprint, or one too long", body = ApiError),
        (status = 401, description = "No token, or a wrong one"),
    ),
    security(("bearer" = []))
)]
async fn incidents_by_fingerprint(
    State(d): State<Arc<Dashboard>>,
    q: Result<Query<FingerprintQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    let fingerprint = q.fingerprint.as_deref().map(str::trim).unwrap_or_default();
    if fingerprint.is_empty() {
        return bad_request(
            "fingerprint is required: /api/v1/incidents?fingerprint=<an Incident's spec.fingerprint>",
        );
    }
    if fingerprint.chars().count() > MAX_FINGERPRINT_CHARS {
        return bad_request(format!(
            "fingerprint is longer than {MAX_FINGERPRINT_CHARS} characters; no Incident has one that long"
        ));
    }
    let mut items: Vec<IncidentSummary> = d
        .stores
        .incidents
        .state()
        .iter()
        .filter(|i| i.spec.fingerprint == fingerprint)
        .map(|i| incident_summary(i))
        .collect();
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    axum::Json(IncidentList {
        fingerprint: fingerprint.to_string(),
        items,
    })
    .into_response()
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to look for in root causes, evidence and post-mortems; 1 to 256
    /// characters.
    pub q: Option<String>,
    /// At most this many results, 1 to 50 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 50)]
    pub limit: Option<String>,
    /// Only this namespace (one the operator follows).
    pub namespace: Option<String>,
}

/// One search result.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// `incident` (a current Incident) or `memory` (an IncidentMemory).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub fingerprint: String,
    pub target: String,
    pub signal: String,
    /// Higher is more similar; comparable within one answer only.
    pub score: f64,
    /// Where the best match is: `rootCause`, `hypothesis`, `evidence`,
    /// `postMortem`, `summary`, `keywords`.
    pub field: String,
    /// The matching text, cut around the first word that matched.
    pub snippet: String,
    /// Where to read the whole: its API address.
    pub href: String,
}

/// A ranked answer.
#[derive(Serialize, ToSchema)]
pub struct SearchAnswer {
    pub query: String,
    /// `bm25`, or `bm25+embeddings` when an embeddings model is configured
    /// and answered.
    pub ranking: String,
    /// Why the ranking is `bm25` although a model is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub results: Vec<SearchResult>,
}

/// What a search document is about.
struct Source {
    kind: &'static str,
    namespace: String,
    name: String,
    fingerprint: String,
    target: String,
    signal: String,
}

/// Search the history by text similarity, best match first.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "search",
    params(SearchQuery),
    responses(
        (status = 200, description = "The matches, best first (none is an empty list)", body = SearchAnswer),
        (status = 400, description = "q is empty or too long, limit is out of range, or the namespace is not one the operator follows", body = ApiError),
        (status = 401, description = "No token, or a wrong one"),
        (status = 502, description = "The Kubernetes API did not answer", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn search(
    State(d): State<Arc<Dashboard>>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    let query = q.q.as_deref().map(str::trim).unwrap_or_default();
    if query.is_empty() {
        return bad_request("q is required: /api/v1/search?q=oomkilled+memory+limit");
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return bad_request(format!(
            "q is longer than {MAX_QUERY_CHARS} characters; shorten it to the words that matter"
        ));
    }
    let limit = match bounded(q.limit.as_deref(), "limit", DEFAULT_RESULTS, MAX_RESULTS) {
        Ok(l) => l as usize,
        Err(r) => return r.into_response(),
    };
    let nss = match namespaces(&d, q.namespace.as_deref()) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let memories = match read_memories(&d, &nss).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let incidents = d.stores.incidents.state();
    let mut sources: Vec<Source> = Vec::new();
    let mut docs: Vec<Document> = Vec::new();
    for inc in incidents.iter() {
        let ns = inc.metadata.namespace.clone().unwrap_or_default();
        if !nss.contains(&ns) {
            continue;
        }
        sources.push(Source {
            kind: "incident",
            namespace: ns,
            name: inc.metadata.name.clone().unwrap_or_default(),
            fingerprint: inc.spec.fingerprint.clone(),
            target: inc.spec.target.to_string(),
            signal: inc.spec.signal.as_str().to_string(),
        });
        docs.push(knowledge::incident_document(inc));
    }
    for m in &memories {
        let (namespace, name) = key(m);
        sources.push(Source {
            kind: "memory",
            namespace,
            name,
            fingerprint: m.spec.fingerprint.clone(),
            target: m.spec.target.to_string(),
            signal: m.spec.signal.as_str().to_string(),
        });
        docs.push(knowledge::memory_document(m));
    }
    let answer = d.knowledge.search(&docs, query, limit).await;
    let results = answer
        .hits
        .into_iter()
        .filter_map(|h| {
            let s = sources.get(h.doc)?;
            let href = match s.kind {
                "memory" => format!("/api/v1/memories/{}/{}", s.namespace, s.name),
                _ => format!("/api/v1/incidents?fingerprint={}", s.fingerprint),
            };
            Some(SearchResult {
                kind: s.kind.to_string(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                fingerprint: s.fingerprint.clone(),
                target: s.target.clone(),
                signal: s.signal.clone(),
                score: (h.score * 1e4).round() / 1e4,
                field: h.field,
                snippet: redact::string(&h.snippet),
                href,
            })
        })
        .collect();
    axum::Json(SearchAnswer {
        query: query.to_string(),
        ranking: answer.ranking.as_str().to_string(),
        note: answer.note,
        results,
    })
    .into_response()
}

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "docs",
    responses(
        (status = 200, description = "The OpenAPI 3 document", content_type = "application/json"),
        (status = 401, description = "No token, or a wrong one"),
    ),
    security(("bearer" = []))
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.json.clone(),
    )
        .into_response()
}

/// The API's reference, a page rendered from the OpenAPI document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses(
        (status = 200, description = "The reference page", content_type = "text/html"),
        (status = 401, description = "No token, or a wrong one"),
    ),
    security(("bearer" = []))
)]
async fn docs_page() -> Response {
    let mut res = axum::response::Html(DOCUMENT.page.clone()).into_response();
    if let Ok(csp) = HeaderValue::from_str(&DOCUMENT.csp) {
        res.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    res.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SRE-Space knowledge base",
        description = "The read-only history of the incidents SRE-Space handled: IncidentMemories, \
                       Incidents by fingerprint, and a text search over root causes, evidence and \
                       post-mortems. Served with the dashboard, behind its token."
    ),
    paths(list_memories, get_memory, incidents_by_fingerprint, search, openapi_json, docs_page),
    components(schemas(
        ApiError, MemoryList, MemorySummary, Memory, Occurrence, Tally, IncidentList,
        IncidentSummary, SearchAnswer, SearchResult
    )),
    modifiers(&Extras),
    tags(
        (name = "memories", description = "The history of each problem (IncidentMemory)"),
        (name = "incidents", description = "Current Incidents"),
        (name = "search", description = "Text search over the history"),
        (name = "docs", description = "This document and its page"),
        (name = "dashboard", description = "The dashboard's page and its data"),
    )
)]
struct ApiDoc;

/// The bearer scheme, and the dashboard's own routes (their answers are
/// the page's internal data, documented by name only).
struct Extras;

impl Modify for Extras {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let path_param = |name: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let incident_query = ParameterBuilder::new()
            .name("incident")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some("`namespace/name` of the incident the page shows"))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        let token_query = ParameterBuilder::new()
            .name(super::auth::QUERY_PARAMETER)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "The token, for a browser that cannot send the Authorization header",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        let dashboard: [(&str, &str, &str, Vec<_>); 6] = [
            (
                "/",
                "The dashboard page",
                "text/html",
                vec![token_query.clone()],
            ),
            (
                "/incidents/{namespace}/{name}",
                "The dashboard page, showing one incident",
                "text/html",
                vec![path_param("namespace"), path_param("name"), token_query],
            ),
            (
                "/api/snapshot",
                "The dashboard's data: incidents, conversion rates, services",
                "application/json",
                vec![incident_query.clone()],
            ),
            (
                "/api/incidents/{namespace}/{name}/memory",
                "An incident's memory and similar problems, as the dashboard shows them",
                "application/json",
                vec![path_param("namespace"), path_param("name")],
            ),
            (
                "/runbooks/{namespace}/{config_map}/{key}",
                "A policy's runbook: one key of the ConfigMap its spec.runbooks names",
                "text/plain",
                vec![
                    path_param("namespace"),
                    path_param("config_map"),
                    path_param("key"),
                ],
            ),
            (
                "/events",
                "The dashboard's data as server-sent events, on every change",
                "text/event-stream",
                vec![incident_query],
            ),
        ];
        for (path, summary, content_type, params) in dashboard {
            let op = OperationBuilder::new()
                .tag("dashboard")
                .summary(Some(summary))
                .parameters(Some(params))
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description(summary)
                        .content(content_type, ContentBuilder::new().build())
                        .build(),
                )
                .response(
                    "401",
                    ResponseBuilder::new()
                        .description("No token, or a wrong one")
                        .build(),
                )
                .security(utoipa::openapi::security::SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                ))
                .build();
            doc.paths
                .add_path_operation(path, vec![HttpMethod::Get], op);
        }
    }
}

/// The OpenAPI document, as JSON and as a page, built once.
struct Rendered {
    json: String,
    page: String,
    csp: String,
}

static DOCUMENT: LazyLock<Rendered> = LazyLock::new(|| {
    let doc = openapi();
    let json = doc.to_pretty_json().unwrap_or_else(|e| {
        warn!(error = %e, "the OpenAPI document did not serialise");
        "{}".into()
    });
    let (page, csp) = super::docs::render(&doc);
    Rendered { json, page, csp }
});

/// The knowledge base's and the dashboard's OpenAPI 3 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

#[cfg(test)]
mod tests;
