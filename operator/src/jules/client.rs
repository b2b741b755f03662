//! Jules's REST API over HTTP (v1alpha): JSON, the key in the
//! `X-Goog-Api-Key` header, errors as Google APIs send them
//! (`{"error": {"code", "message", "status"}}`).

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    ActivityPage, JulesApi, JulesError, JulesFuture, NewSession, Session, SessionPage, SourcePage,
};

/// One call waits at most this long.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Answers larger than this are refused rather than buffered.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Items asked for per page.
const PAGE_SIZE: &str = "100";

/// Where the API key comes from.
#[derive(Clone, Debug)]
pub enum Key {
    /// A file (a mounted Secret), read at each request so a rotated key
    /// counts at once.
    File(PathBuf),
    /// The key itself (tests).
    Fixed(String),
}

impl Key {
    fn read(&self) -> Result<String, JulesError> {
        let key = match self {
            Self::Fixed(k) => k.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| JulesError::Key(format!("{}: {e}", path.display())))?,
        };
        let key = key.trim().to_string();
        if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(JulesError::Key("empty, or not one line".into()));
        }
        Ok(key)
    }
}

/// A client of Jules's API.
#[derive(Clone, Debug)]
pub struct JulesClient {
    http: reqwest::Client,
    base: reqwest::Url,
    key: Key,
}

impl JulesClient {
    /// A client of the API at `base`, e.g. `https://jules.googleapis.com/v1alpha`.
    pub fn new(base: &str, key: Key) -> crate::Result<Self> {
        let invalid =
            |why: String| crate::Error::Config(format!("{}={base:?}: {why}", super::URL_ENV));
        let url = reqwest::Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("use an http or https URL".into()));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: url,
            key,
        })
    }

    /// The URL of `path` (segments already encoded) with `query`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        let full = format!("{}/{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&full);
        url.set_query(None);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<serde_json::Value>,
    ) -> Result<T, JulesError> {
        let key = self.key.read()?;
        let unavailable = |e: reqwest::Error| JulesError::Unavailable(without_url(e));
        let mut request = self
            .http
            .request(method, url)
            .header("X-Goog-Api-Key", key)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if bytes.len().saturating_add(chunk.len()) > MAX_BYTES {
                return Err(JulesError::InvalidAnswer(format!(
                    "the answer is larger than {MAX_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| JulesError::InvalidAnswer(e.to_string()));
        }
        let code = status.as_u16();
        let message = error_message(&bytes);
        Err(match code {
            429 => JulesError::RateLimited(Duration::from_secs(
                retry_after.unwrap_or(60).clamp(1, 3600),
            )),
            500.. => JulesError::Unavailable(format!("{code}: {message}")),
            _ => JulesError::Refused(format!("{code}: {message}")),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, JulesError> {
        self.call(reqwest::Method::GET, self.url(path, query), None)
            .await
    }
}

/// The error's text without the URL (which could carry a query).
fn without_url(e: reqwest::Error) -> String {
    crate::redact::string(&e.without_url().to_string())
}

/// Google's error message, or the start of the body.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    crate::redact::string(&super::clip(message.trim(), 300))
}

/// A session id as one path segment: letters, digits, `-` and `_` only.
fn session_segment(id: &str) -> Result<&str, JulesError> {
    let id = id.strip_prefix("sessions/").unwrap_or(id);
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(JulesError::Refused(format!("{id:?} is not a session id")));
    }
    Ok(id)
}

fn page(token: Option<&str>) -> Vec<(&'static str, &str)> {
    let mut q = vec![("pageSize", PAGE_SIZE)];
    if let Some(t) = token {
        q.push(("pageToken", t));
    }
    q
}

impl JulesApi for JulesClient {
    fn sources<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SourcePage> {
        Box::pin(async move { self.get("sources", &page(page_token)).await })
    }

    fn sessions<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SessionPage> {
        Box::pin(async move { self.get("sessions", &page(page_token)).await })
    }

    fn create_session<'a>(&'a self, new: &'a NewSession) -> JulesFuture<'a, Session> {
        Box::pin(async move {
            self.call(
                reqwest::Method::POST,
                self.url("sessions", &[]),
                Some(new.body()),
            )
            .await
        })
    }

    fn session<'a>(&'a self, id: &'a str) -> JulesFuture<'a, Session> {
        Box::pin(async move {
            let id = session_segment(id)?;
            self.get(&format!("sessions/{id}"), &[]).await
        })
    }

    fn activities<'a>(
        &'a self,
        id: &'a str,
        page_token: Option<&'a str>,
    ) -> JulesFuture<'a, ActivityPage> {
        Box::pin(async move {
            let id = session_segment(id)?;
            self.get(&format!("sessions/{id}/activities"), &page(page_token))
                .await
        })
    }
}
