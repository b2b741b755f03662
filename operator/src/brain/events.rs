//! The events the Brain's rules read, kept at hand rather than listed for
//! each incident: the warnings, and the kubelet's kills for a failed probe.
//!
//! A list of events by field selector makes the API server scan every event
//! of the namespace: tens of thousands at 10,000 pods, three lists an
//! incident. Under a burst of faults, while rollouts wrote events by the
//! thousand, each list took seconds and held the remedy back (`make
//! bench`). Two watches, filtered by the API server (`type=Warning`,
//! `reason=Killing`), cost it one look at each new event instead.
//!
//! What is left out is what no rule reads: the Normal events of a healthy
//! life (Scheduled, Pulled, Started) and the kills of pods being deleted.

use std::future::Future;

use futures::{FutureExt, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

/// Whether a rule reads the event: a warning, or a kill for a failed probe
/// (the kubelet's "Container web failed liveness probe, will be
/// restarted").
pub fn kept(e: &Event) -> bool {
    e.type_.as_deref() == Some("Warning")
        || (e.reason.as_deref() == Some("Killing")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains(" probe, will be restarted")))
}

/// The kept events of the watched namespaces.
#[derive(Clone)]
pub struct EventIndex {
    warnings: Store<Event>,
    kills: Store<Event>,
}

impl EventIndex {
    /// Watches `api`'s kept events; the future runs the watches until the
    /// operator stops (errors are logged and retried with backoff).
    pub fn watch(api: Api<Event>) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (warnings, w) = keep(api.clone(), "type=Warning");
        let (kills, k) = keep(api, "reason=Killing");
        (Self { warnings, kills }, future::join(w, k).map(|_| ()))
    }

    /// The kept events about `name` in `ns` (of `kind`, or of any kind),
    /// oldest first; None until both watches have listed, when the caller
    /// reads the API server instead.
    pub fn about(&self, ns: &str, kind: Option<&str>, name: &str) -> Option<Vec<Event>> {
        let listed = |s: &Store<Event>| s.wait_until_ready().now_or_never().is_some();
        if !(listed(&self.warnings) && listed(&self.kills)) {
            return None;
        }
        let mut found: Vec<Event> = self
            .warnings
            .state()
            .into_iter()
            .chain(self.kills.state())
            .filter(|e| {
                e.metadata.namespace.as_deref() == Some(ns)
                    && e.involved_object.name.as_deref() == Some(name)
                    && kind.is_none_or(|k| e.involved_object.kind.as_deref() == Some(k))
            })
            .map(|e| (*e).clone())
            .collect();
        found.sort_by_key(super::gather::event_time);
        Some(found)
    }

    /// An index of `events`, listed and kept as the watches would keep them.
    #[cfg(test)]
    pub fn of(events: Vec<Event>) -> Self {
        let (warnings, mut w) = reflector::store();
        let (kills, mut k) = reflector::store();
        for writer in [&mut w, &mut k] {
            writer.apply_watcher_event(&watcher::Event::Init);
        }
        for e in events.into_iter().filter(kept) {
            let writer = if e.type_.as_deref() == Some("Warning") {
                &mut w
            } else {
                &mut k
            };
            writer.apply_watcher_event(&watcher::Event::InitApply(e));
        }
        for writer in [&mut w, &mut k] {
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        Self { warnings, kills }
    }
}

/// A store of the events `selector` picks that a rule reads.
fn keep(api: Api<Event>, selector: &str) -> (Store<Event>, impl Future<Output = ()> + Send) {
    let (store, writer) = reflector::store();
    let picked = watcher(api, watcher::Config::default().fields(selector))
        .default_backoff()
        .modify(|e: &mut Event| e.metadata.managed_fields = None)
        .try_filter(|event| {
            future::ready(match event {
                watcher::Event::Apply(e) | watcher::Event::InitApply(e) => kept(e),
                _ => true,
            })
        });
    let selector = selector.to_string();
    let run = reflector::reflector(writer, picked).for_each(move |event| {
        if let Err(e) = event {
            warn!(error = %e, %selector, "the event watch failed; it retries with backoff, and diagnoses list events meanwhile");
        }
        future::ready(())
    });
    (store, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, type_: &str, reason: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "shop" },
            "involvedObject": { "kind": "Pod", "name": "web-1", "namespace": "shop" },
            "type": type_, "reason": reason, "message": message,
        }))
        .expect("an event")
    }

    /// A warning and a probe kill about pod web-1 of shop.
    fn backoff_and_probe_kill() -> [Event; 2] {
        [
            event(
                "a",
                "Warning",
                "BackOff",
                "Back-off restarting failed container web",
            ),
            event(
                "b",
                "Normal",
                "Killing",
                "Container web failed liveness probe, will be restarted",
            ),
        ]
    }

    #[test]
    fn warnings_and_probe_kills_are_kept_a_healthy_lifes_events_are_not() {
        let kept_names: Vec<String> = backoff_and_probe_kill()
            .into_iter()
            .chain([
                event("c", "Normal", "Killing", "Stopping container web"),
                event(
                    "d",
                    "Normal",
                    "Scheduled",
                    "Successfully assigned shop/web-1 to node-1",
                ),
                event(
                    "e",
                    "Warning",
                    "Unhealthy",
                    "Liveness probe failed: HTTP probe failed",
                ),
            ])
            .filter(kept)
            .filter_map(|e| e.metadata.name.clone())
            .collect();
        assert_eq!(kept_names, ["a", "b", "e"]);
    }

    #[test]
    fn an_index_answers_about_one_object_of_one_namespace_and_kind() {
        let mut other_ns = event("x", "Warning", "BackOff", "elsewhere");
        other_ns.metadata.namespace = Some("other".into());
        let mut other_kind = event("y", "Warning", "FailedCreate", "quota");
        other_kind.involved_object.kind = Some("ReplicaSet".into());
        let mut events = backoff_and_probe_kill().to_vec();
        events.extend([other_ns, other_kind]);
        let index = EventIndex::of(events);
        let names = |found: Option<Vec<Event>>| -> Vec<String> {
            let mut n: Vec<String> = found
                .expect("listed")
                .into_iter()
                .filter_map(|e| e.metadata.name)
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(index.about("shop", Some("Pod"), "web-1")), ["a", "b"]);
        assert_eq!(names(index.about("shop", None, "web-1")), ["a", "b", "y"]);
        assert_eq!(names(index.about("other", None, "web-1")), ["x"]);
    }

    #[tokio::test]
    async fn an_index_that_has_not_listed_yet_answers_nothing() {
        let client = crate::testing::api::FakeApi::default().client();
        let (index, _watches) = EventIndex::watch(Api::all(client));
        assert!(index.about("shop", None, "web-1").is_none());
    }
}
