//! `POST /webhooks/alertmanager`: Alertmanager's webhook, behind a bearer
//! token read from a file at each request (so a rotated Secret takes
//! effect without a restart). Off (404) without a token file.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::{debug, warn};

use super::Receiver;
use crate::limits::MAX_ALERT_PAYLOAD_BYTES;

/// Where Alertmanager posts.
pub const PATH: &str = "/webhooks/alertmanager";

/// The webhook's route, when a token file is configured; none otherwise,
/// so the path answers 404.
pub fn router(receiver: Arc<Receiver>) -> Router {
    if receiver.token_file.is_none() {
        return Router::new();
    }
    Router::new()
        .route(PATH, post(receive))
        .with_state(receiver)
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let Some(file) = &r.token_file else {
        return answer(StatusCode::NOT_FOUND, "the Alertmanager receiver is off");
    };
    let token = match tokio::fs::read_to_string(file).await {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        Ok(_) => {
            warn!(file = %file.display(), "the Alertmanager token file is empty; refusing every notification");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the receiver's token is not configured",
            );
        }
        Err(e) => {
            warn!(error = %e, file = %file.display(), "the Alertmanager token file is not readable");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the receiver's token is not readable",
            );
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !crate::dashboard::auth::authorized(Some(&token), authorization, None) {
        return answer(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_ALERT_PAYLOAD_BYTES) {
        return too_large();
    }
    let Ok(bytes) = to_bytes(body, MAX_ALERT_PAYLOAD_BYTES).await else {
        return too_large();
    };
    let Some(inbox) = r.inbox() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader; Alertmanager retries",
        );
    };
    let alerts = match super::payload::parse(&bytes) {
        Ok(alerts) => alerts,
        Err(why) => {
            debug!(%why, "Alertmanager notification refused");
            return answer(StatusCode::BAD_REQUEST, why);
        }
    };
    let n = alerts.len();
    inbox.receive(alerts, r.clock.now());
    answer(StatusCode::OK, format!("received {n} alert(s)"))
}

fn too_large() -> Response {
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "a notification is at most {MAX_ALERT_PAYLOAD_BYTES} bytes: set max_alerts on the receiver"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::clock::ManualClock;
    use crate::scout::sources::alerts::payload::tests::firing_payload;

    const TOKEN: &str = "s3cret-token";

    fn token_file(dir: &tempdir::Dir, token: &str) -> PathBuf {
        let path = dir.0.join("token");
        std::fs::write(&path, format!("{token}\n")).expect("write");
        path
    }

    mod tempdir {
        /// A folder of its own for one test, removed at the end.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(name: &str) -> Self {
                let p = std::env::temp_dir()
                    .join(format!("sre-space-alerts-{name}-{}", std::process::id()));
                std::fs::create_dir_all(&p).expect("dir");
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn receiver(file: Option<PathBuf>) -> Arc<Receiver> {
        let clock = ManualClock::at(crate::testing::now());
        Arc::new(Receiver::new(file, Arc::new(clock)))
    }

    async fn post(r: &Arc<Receiver>, auth: Option<&str>, body: String) -> (StatusCode, String) {
        let mut req = Request::post(PATH).header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = router(r.clone())
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("served");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[tokio::test]
    async fn without_a_token_file_the_receiver_is_off() {
        let r = receiver(None);
        r.lead();
        let (status, _) = post(&r, Some(&bearer(TOKEN)), firing_payload()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_missing_or_wrong_token_is_unauthorized() {
        let dir = tempdir::Dir::new("unauthorized");
        let r = receiver(Some(token_file(&dir, TOKEN)));
        r.lead();
        assert_eq!(
            post(&r, None, firing_payload()).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(&r, Some(&bearer("s3cret-tokem")), firing_payload())
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(&r, Some(&format!("Basic {TOKEN}")), firing_payload())
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn a_rotated_token_counts_from_the_next_request() {
        let dir = tempdir::Dir::new("rotated");
        let file = token_file(&dir, TOKEN);
        let r = receiver(Some(file.clone()));
        r.lead();
        assert_eq!(
            post(&r, Some(&bearer(TOKEN)), firing_payload()).await.0,
            StatusCode::OK
        );
        std::fs::write(&file, "the-new-one").expect("rotate");
        assert_eq!(
            post(&r, Some(&bearer(TOKEN)), firing_payload()).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(&r, Some(&bearer("the-new-one")), firing_payload())
                .await
                .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_body_over_a_mebibyte_is_too_large() {
        let dir = tempdir::Dir::new("large");
        let r = receiver(Some(token_file(&dir, TOKEN)));
        r.lead();
        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_ALERT_PAYLOAD_BYTES));
        let (status, message) = post(&r, Some(&bearer(TOKEN)), huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message.contains("max_alerts"), "{message}");
    }

    #[tokio::test]
    async fn a_bad_payload_is_a_bad_request_that_says_why() {
        let dir = tempdir::Dir::new("bad");
        let r = receiver(Some(token_file(&dir, TOKEN)));
        r.lead();
        let (status, message) = post(&r, Some(&bearer(TOKEN)), "{".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with("not an Alertmanager payload"),
            "{message}"
        );
        let v5 = firing_payload().replace(r#""version": "4""#, r#""version": "5""#);
        let (status, message) = post(&r, Some(&bearer(TOKEN)), v5).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message.contains("version \"5\" is not supported"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_standby_answers_unavailable_so_alertmanager_retries_the_leader() {
        let dir = tempdir::Dir::new("standby");
        let r = receiver(Some(token_file(&dir, TOKEN)));
        let (status, message) = post(&r, Some(&bearer(TOKEN)), firing_payload()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("not the leader"), "{message}");
    }

    #[tokio::test]
    async fn the_leader_holds_the_alerts_it_received() {
        let dir = tempdir::Dir::new("leader");
        let r = receiver(Some(token_file(&dir, TOKEN)));
        let inbox = r.lead();
        let (status, message) = post(&r, Some(&bearer(TOKEN)), firing_payload()).await;
        assert_eq!(
            (status, message.as_str()),
            (StatusCode::OK, "received 2 alert(s)")
        );
        assert_eq!(inbox.firing(r.clock.now()).len(), 2);
    }
}
