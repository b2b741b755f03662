//! A generic webhook: each event POSTed as a CloudEvent 1.0 in structured
//! JSON mode. The event's `id` derives from the incident, the event and the
//! sink, so a retried delivery carries the same id and a receiver can drop
//! the repeat, as the CloudEvents spec intends.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Notice, Outgoing, Pacing, Sink, SinkError, http_client};
use crate::crd::NotifyEvent;

/// The `source` of every event.
pub const SOURCE: &str = "/apis/sre.space/v1alpha1/incidents";

/// The CloudEvent `type` of an event.
pub fn event_type(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Opened => "space.sre.incident.opened",
        NotifyEvent::Diagnosed => "space.sre.incident.diagnosed",
        NotifyEvent::ActionTaken => "space.sre.incident.action_taken",
        NotifyEvent::ApprovalNeeded => "space.sre.incident.approval_needed",
        NotifyEvent::Resolved => "space.sre.incident.resolved",
        NotifyEvent::Escalated => "space.sre.incident.escalated",
    }
}

/// The event's id: the same for the same announcement to the same sink.
pub fn event_id(m: &Outgoing, notice: &Notice) -> String {
    let mut h = Sha256::new();
    for part in [
        m.subject.path().as_str(),
        notice.key.as_str(),
        m.sink.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CloudEvent announcing `notice`.
pub fn cloud_event(m: &Outgoing, notice: &Notice) -> Value {
    let s = &m.subject;
    json!({
        "specversion": "1.0",
        "id": event_id(m, notice),
        "source": SOURCE,
        "type": event_type(notice.event),
        "subject": s.path(),
        "time": m.now.to_string(),
        "datacontenttype": "application/json",
        "data": {
            "namespace": s.namespace,
            "incident": s.name,
            "target": s.target,
            "signal": s.signal,
            "phase": s.phase,
            "event": notice.event,
            "key": notice.key,
            "text": notice.text,
            "link": s.link,
        },
    })
}

/// A CloudEvents receiver.
pub struct CloudEventsWebhook {
    url: String,
    headers: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl CloudEventsWebhook {
    pub fn new(url: &str, headers: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            url: url.to_string(),
            headers: headers.clone(),
            http: http_client()?,
        })
    }
}

impl Sink for CloudEventsWebhook {
    fn pacing(&self) -> Pacing {
        // One event per announcement, sent as it comes.
        Pacing {
            coalesce: Duration::ZERO,
            min_interval: Duration::ZERO,
            batches: false,
        }
    }

    fn send<'a>(
        &'a self,
        m: &'a Outgoing,
        _thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let mut last = None;
            for notice in &m.notices {
                let event = cloud_event(m, notice);
                let mut request = self.http.post(&self.url).header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                );
                for (k, v) in &self.headers {
                    request = request.header(k.as_str(), v.as_str());
                }
                let response = request
                    .body(event.to_string())
                    .send()
                    .await
                    .map_err(SinkError::unreachable)?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    return Err(SinkError::status(status.as_u16(), &text));
                }
                last = event["id"].as_str().map(str::to_string);
            }
            Ok(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;
    use crate::notify::Subject;

    #[test]
    fn a_cloud_event_has_every_required_attribute_and_a_stable_id() {
        let m = Outgoing {
            sink: "events".into(),
            subject: Subject {
                namespace: "shop".into(),
                name: "web-oomkilled".into(),
                target: "Deployment/web".into(),
                signal: "OOMKilled".into(),
                phase: Phase::Detected,
                link: None,
            },
            notices: vec![],
            history: vec![],
            now: crate::testing::now(),
        };
        let opened = Notice {
            key: "e1/Opened".into(),
            event: NotifyEvent::Opened,
            text: "opened".into(),
        };
        let e = cloud_event(&m, &opened);
        for attr in [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "data",
        ] {
            assert!(!e[attr].is_null(), "{attr} missing: {e}");
        }
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "space.sre.incident.opened");
        assert_eq!(e["subject"], "shop/web-oomkilled");
        assert_eq!(e["data"]["incident"], "web-oomkilled");
        assert_eq!(
            e["id"],
            cloud_event(&m, &opened)["id"],
            "a retry keeps its id"
        );
        let resolved = Notice {
            key: "e1/Resolved".into(),
            event: NotifyEvent::Resolved,
            text: "resolved".into(),
        };
        assert_ne!(e["id"], cloud_event(&m, &resolved)["id"]);
    }
}
