//! The demo services' fault switches over HTTP: `POST /chaos/{fault}` turns
//! a fault on, `DELETE` turns it off, both with the service's chaos token.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{0} is not an http(s) URL")]
    BadUrl(String),
    #[error("{url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} refused ({status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
}

/// The request a switch makes, for `--dry-run` and for the call itself.
pub fn request(
    base_url: &str,
    fault: &str,
    on: bool,
) -> Result<(reqwest::Method, String), SwitchError> {
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(SwitchError::BadUrl(base_url.to_owned()));
    }
    let method = if on {
        reqwest::Method::POST
    } else {
        reqwest::Method::DELETE
    };
    Ok((
        method,
        format!("{}/chaos/{fault}", base_url.trim_end_matches('/')),
    ))
}

/// Flips `fault` on (with `settings` as the body) or off; answers the
/// service's fault state.
pub async fn flip(
    base_url: &str,
    fault: &str,
    token: &str,
    on: bool,
    settings: Option<&Value>,
) -> Result<Value, SwitchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (method, url) = request(base_url, fault, on)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| SwitchError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let mut req = http.request(method, &url).bearer_auth(token);
    if let Some(settings) = settings {
        req = req.json(settings);
    }
    let response = req
        .send()
        .await
        .map_err(|source| SwitchError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let reason = body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        return Err(SwitchError::Refused {
            url,
            status,
            reason,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_posts_and_off_deletes_the_fault_path() {
        let (m, u) = request("http://127.0.0.1:18082/", "conversion", true).expect("url");
        assert_eq!(
            (m, u.as_str()),
            (
                reqwest::Method::POST,
                "http://127.0.0.1:18082/chaos/conversion"
            )
        );
        let (m, _) = request("http://x", "latency", false).expect("url");
        assert_eq!(m, reqwest::Method::DELETE);
        assert!(matches!(
            request("127.0.0.1:18082", "conversion", true),
            Err(SwitchError::BadUrl(_))
        ));
    }
}
