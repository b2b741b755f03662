//! Who may read the dashboard, and where it may listen.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

/// How a request may carry the token: the page sends it as a query
/// parameter because a browser's EventSource cannot set headers.
pub const QUERY_PARAMETER: &str = "token";

/// Checks the listen address against the token: the dashboard shows incident
/// details (evidence, diffs, post-mortems) that only the cluster's operators
/// should read, so it listens beyond the loopback interface only behind a
/// token.
pub fn check_listen(addr: &str, token: Option<&str>) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        format!(
            "SRE_SPACE_DASHBOARD_ADDR={addr:?} is not an IP address and port \
             (for example 127.0.0.1:3001)"
        )
    })?;
    if token.is_some_and(|t| t.trim().is_empty()) {
        return Err("SRE_SPACE_DASHBOARD_TOKEN is set but empty; set a token or unset it".into());
    }
    if !parsed.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "SRE_SPACE_DASHBOARD_ADDR={addr} is reachable from other hosts and \
             SRE_SPACE_DASHBOARD_TOKEN is not set: set a token, or listen on 127.0.0.1 \
             (and reach it with kubectl port-forward)"
        ));
    }
    Ok(parsed)
}

/// Whether a request may read the dashboard: always when no token is
/// configured; otherwise with `Authorization: Bearer <token>` or
/// `?token=<token>`.
pub fn authorized(
    expected: Option<&str>,
    authorization: Option<&str>,
    query_token: Option<&str>,
) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let bearer = authorization.and_then(|h| {
        let (scheme, value) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(value.trim())
    });
    [bearer, query_token]
        .into_iter()
        .flatten()
        .any(|given| same(given, expected))
}

/// Compares digests in constant time, so the time a refusal takes says
/// nothing about how much of the token was right.
fn same(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_every_request_is_let_in() {
        assert!(authorized(None, None, None));
        assert!(authorized(None, Some("Bearer whatever"), None));
    }

    #[test]
    fn with_a_token_a_request_needs_the_bearer_header_or_the_query_parameter() {
        let t = Some("s3cret");
        assert!(!authorized(t, None, None), "nothing given");
        assert!(authorized(t, Some("Bearer s3cret"), None));
        assert!(
            authorized(t, Some("bearer  s3cret "), None),
            "scheme is case-insensitive"
        );
        assert!(authorized(t, None, Some("s3cret")));
        assert!(
            !authorized(t, Some("Bearer s3cre"), None),
            "a prefix is not the token"
        );
        assert!(!authorized(t, Some("Bearer s3cretX"), None));
        assert!(!authorized(t, Some("Basic s3cret"), None), "only Bearer");
        assert!(!authorized(t, Some("s3cret"), None), "no scheme");
        assert!(!authorized(t, None, Some("")));
        assert!(
            authorized(t, Some("Bearer wrong"), Some("s3cret")),
            "either place may carry it"
        );
    }

    #[test]
    fn loopback_listens_without_a_token_anything_else_needs_one() {
        assert!(check_listen("127.0.0.1:3001", None).is_ok());
        assert!(check_listen("[::1]:3001", None).is_ok());
        let refused = check_listen("0.0.0.0:3001", None).expect_err("refused");
        assert!(refused.contains("SRE_SPACE_DASHBOARD_TOKEN"), "{refused}");
        assert!(check_listen("10.1.2.3:3001", None).is_err());
        assert!(check_listen("0.0.0.0:3001", Some("s3cret")).is_ok());
    }

    #[test]
    fn a_bad_address_or_an_empty_token_is_a_clear_error() {
        let bad = check_listen("localhost:3001", None).expect_err("not an IP");
        assert!(bad.contains("127.0.0.1:3001"), "{bad}");
        assert!(check_listen("127.0.0.1", None).is_err(), "no port");
        let empty = check_listen("127.0.0.1:3001", Some(" ")).expect_err("empty token");
        assert!(empty.contains("empty"), "{empty}");
    }
}
