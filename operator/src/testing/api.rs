//! A fake Kubernetes API server behind a real `kube::Client`, for the
//! reconcilers' in-process tests: it keeps objects by their URL, answers
//! gets, lists, creates, replaces, merge and JSON patches (of an object, its
//! status or a pod's resize) and evictions as
//! the API server does, and records every request, so a test asserts the
//! exact calls a reconcile made and their order. The cluster tests (e2e/)
//! run the same code against a real API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Seen {
    /// `METHOD path`, for asserting the order of calls.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
    version: u64,
    /// Answers that override the store: (method, path suffix) → status.
    refusals: Vec<(String, String, u16)>,
    /// Requests never answered: (method, path suffix).
    stalls: Vec<(String, String)>,
    /// Collections whose consistent lists are never answered (path suffix).
    lagging: Vec<String>,
}

/// The fake server. Cheap to clone; all clones share one store.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

fn collection_of<K: kube::Resource<DynamicType = ()>>(namespace: Option<&str>) -> String {
    K::url_path(&(), namespace)
}

impl FakeApi {
    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            // Kept, unanswered, for as long as the fake lives.
            let mut unanswered = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    body,
                };
                if me.stalled(&seen) {
                    if let Ok(mut s) = me.0.lock() {
                        s.seen.push(seen);
                    }
                    unanswered.push(respond);
                    continue;
                }
                let (code, answer) = me.answer(seen);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.to_string().into_bytes()))
                    .expect("a response");
                respond.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// Stores an object where the API server would keep it.
    pub fn insert<K>(&self, object: &K)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let ns = object.meta().namespace.as_deref();
        let name = object.meta().name.clone().unwrap_or_default();
        let path = format!("{}/{name}", collection_of::<K>(ns));
        let mut value = serde_json::to_value(object).expect("a serialisable object");
        let mut state = self.0.lock().expect("the fake's lock");
        state.version += 1;
        value["metadata"]["resourceVersion"] = json!(state.version.to_string());
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        state.objects.insert(path, value);
    }

    /// Stores an object as JSON at `path`, as it is, however it reads.
    pub fn insert_json(&self, path: &str, mut value: Value) {
        let mut state = self.0.lock().expect("the fake's lock");
        state.version += 1;
        value["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.objects.insert(path.to_string(), value);
    }

    /// The stored object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().ok()?.objects.get(path).cloned()
    }

    /// Answers `method` on paths ending in `suffix` with `code` from now on.
    pub fn refuse(&self, method: &str, suffix: &str, code: u16) {
        if let Ok(mut s) = self.0.lock() {
            s.refusals.push((method.into(), suffix.into(), code));
        }
    }

    /// Never answers `method` on paths ending in `suffix` from now on: a
    /// server, or a kubelet behind it, that does not answer.
    pub fn stall(&self, method: &str, suffix: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.stalls.push((method.into(), suffix.into()));
        }
    }

    /// Never answers a consistent list of collections ending in `suffix`
    /// from now on: an API server whose watch cache of that resource never
    /// catches up with etcd. A list served from the cache as it is
    /// (`resourceVersion=0`) is answered.
    pub fn lag_cache(&self, suffix: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.lagging.push(suffix.into());
        }
    }

    fn stalled(&self, seen: &Seen) -> bool {
        let from_cache = seen.query.split('&').any(|p| p == "resourceVersion=0");
        self.0.lock().is_ok_and(|s| {
            s.stalls
                .iter()
                .any(|(m, suffix)| *m == seen.method && seen.path.ends_with(suffix.as_str()))
                || (seen.method == "GET"
                    && !from_cache
                    && s.lagging
                        .iter()
                        .any(|suffix| seen.path.ends_with(suffix.as_str())))
        })
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().map(|s| s.seen.clone()).unwrap_or_default()
    }

    /// The requests that change something, events left out.
    pub fn writes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| {
                s.method != "GET" && !s.path.ends_with("/events") && !s.path.contains("/events/")
            })
            .collect()
    }

    /// The reasons of the events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/events"))
            .filter_map(|s| s.body["reason"].as_str().map(str::to_string))
            .collect()
    }

    fn answer(&self, seen: Seen) -> (u16, Value) {
        let mut state = self.0.lock().expect("the fake's lock");
        state.seen.push(seen.clone());
        if let Some((_, _, code)) = state
            .refusals
            .iter()
            .find(|(m, suffix, _)| *m == seen.method && seen.path.ends_with(suffix.as_str()))
        {
            return (*code, status(*code, "refused by the test"));
        }
        let path = seen.path.clone();
        match seen.method.as_str() {
            "GET" => match state.objects.get(&path) {
                Some(o) => (200, o.clone()),
                None if is_collection(&path) => {
                    let prefix = format!("{path}/");
                    let items: Vec<Value> = state
                        .objects
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                        .map(|(_, v)| v.clone())
                        .collect();
                    (200, json!({ "metadata": {}, "items": items }))
                }
                None => (404, status(404, "not found")),
            },
            "POST" if path.ends_with("/eviction") => {
                let pod = path.trim_end_matches("/eviction").to_string();
                let precondition = seen.body["deleteOptions"]["preconditions"]["uid"].clone();
                match state.objects.get(&pod) {
                    None => (404, status(404, "pod not found")),
                    Some(p) if !precondition.is_null() && p["metadata"]["uid"] != precondition => {
                        (409, status(409, "the UID precondition failed"))
                    }
                    Some(_) => {
                        state.objects.remove(&pod);
                        (201, json!({ "kind": "Status", "status": "Success" }))
                    }
                }
            }
            "POST" => {
                let name = seen.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("generated");
                let at = format!("{path}/{name}");
                if state.objects.contains_key(&at) {
                    return (409, status(409, "already exists"));
                }
                let stored = state.store(at, seen.body.clone());
                (201, stored)
            }
            "PUT" => {
                let at = path.trim_end_matches("/status").to_string();
                let Some(current) = state.objects.get(&at) else {
                    return (404, status(404, "not found"));
                };
                let sent = &seen.body["metadata"]["resourceVersion"];
                if !sent.is_null() && *sent != current["metadata"]["resourceVersion"] {
                    return (409, status(409, "the object has been modified"));
                }
                let stored = state.store(at, seen.body.clone());
                (200, stored)
            }
            "PATCH" => {
                // A status or resize patch changes the object itself.
                let at = path
                    .trim_end_matches("/status")
                    .trim_end_matches("/resize")
                    .to_string();
                let Some(mut current) = state.objects.get(&at).cloned() else {
                    return (404, status(404, "not found"));
                };
                let applied = match serde_json::from_value::<json_patch::Patch>(seen.body.clone()) {
                    Ok(p) => json_patch::patch(&mut current, &p).map_err(|e| e.to_string()),
                    Err(_) => {
                        json_patch::merge(&mut current, &seen.body);
                        Ok(())
                    }
                };
                match applied {
                    Ok(()) => {
                        let stored = state.store(at, current);
                        (200, stored)
                    }
                    Err(why) => (422, status(422, &why)),
                }
            }
            "DELETE" => match state.objects.remove(&path) {
                Some(o) => (200, o),
                None => (404, status(404, "not found")),
            },
            _ => (405, status(405, "method not allowed")),
        }
    }
}

impl State {
    fn store(&mut self, at: String, mut value: Value) -> Value {
        self.version += 1;
        value["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(at, value.clone());
        value
    }
}

/// A list is asked of a plural, which in a URL follows `namespaces/NS` or
/// the API version: an odd number of segments after the group prefix.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let after_version = match segments.first() {
        Some(&"api") => &segments[2.min(segments.len())..],
        _ => &segments[3.min(segments.len())..],
    };
    after_version.len() % 2 == 1
}

fn status(code: u16, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": match code { 404 => "NotFound", 409 => "Conflict", 429 => "TooManyRequests", _ => "Invalid" },
        "code": code,
    })
}
