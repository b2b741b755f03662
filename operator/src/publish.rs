//! Kubernetes events, the record a person reads in `kubectl describe`.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::FIELD_MANAGER;

/// Publishes events as `sre-space`, redacting their notes.
#[derive(Clone)]
pub struct Publisher {
    recorder: Recorder,
}

impl Publisher {
    /// Events reported by this operator replica (`instance`, its pod name).
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: FIELD_MANAGER.into(),
                    instance: Some(instance),
                },
            ),
        }
    }

    /// Publishes an event; failing to is logged, never fatal.
    pub async fn publish(&self, event: &Event, on: &ObjectReference) {
        // Notes quote signals and diagnoses: redacted as they leave.
        let event = Event {
            type_: event.type_,
            reason: event.reason.clone(),
            note: event.note.as_deref().map(crate::redact::string),
            action: event.action.clone(),
            secondary: event.secondary.clone(),
        };
        if let Err(e) = self.recorder.publish(&event, on).await {
            warn!(error = %e, reason = %event.reason, "could not publish event");
        }
    }

    /// Publishes an event whose action is its reason.
    pub async fn note(&self, on: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        self.publish(&event, on).await;
    }
}
