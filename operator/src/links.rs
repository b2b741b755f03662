//! Links the operator writes into what it sends out (pull requests,
//! notifications) so that a reader finds the Incident: the `kubectl`
//! command always, the dashboard page when the dashboard's public address
//! is known.

use crate::{Error, Result};

/// Where people reach the dashboard.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Dashboard")]
pub struct LinkOptions {
    /// The dashboard's address as people reach it (for example
    /// https://sre-space.example.com, behind your ingress), for the links to
    /// an incident in pull requests and notifications; unset: no dashboard
    /// links. It is not where the operator listens (SRE_SPACE_DASHBOARD_ADDR).
    #[arg(long, env = "SRE_SPACE_DASHBOARD_PUBLIC_URL", value_name = "URL")]
    pub dashboard_public_url: Option<String>,
}

impl LinkOptions {
    /// The dashboard's public address, checked: http or https, or none.
    pub fn public_url(&self) -> Result<Option<String>> {
        match self.dashboard_public_url.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(url) => crate::dashboard::view::safe_url(url)
                .map(|u| Some(u.trim_end_matches('/').to_string()))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "SRE_SPACE_DASHBOARD_PUBLIC_URL={url:?} is not an http(s) URL (for example https://sre-space.example.com)"
                    ))
                }),
        }
    }
}

/// The dashboard page of an incident under the public address `base`.
pub fn incident_url(base: Option<&str>, namespace: &str, name: &str) -> Option<String> {
    let base = crate::dashboard::view::safe_url(base?)?;
    Some(format!(
        "{}/incidents/{namespace}/{name}",
        base.trim_end_matches('/')
    ))
}

/// The command that shows an incident.
pub fn kubectl_command(namespace: &str, name: &str) -> String {
    format!("kubectl -n {namespace} get incident {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_links_to_its_dashboard_page_only_under_an_http_address() {
        assert_eq!(
            incident_url(Some("https://sre.example.com/"), "shop", "web-oom"),
            Some("https://sre.example.com/incidents/shop/web-oom".into())
        );
        assert_eq!(incident_url(None, "shop", "web-oom"), None);
        assert_eq!(incident_url(Some("javascript:alert(1)"), "shop", "x"), None);
        let bad = LinkOptions {
            dashboard_public_url: Some("ftp://x".into()),
        };
        assert!(bad.public_url().is_err());
        let empty = LinkOptions {
            dashboard_public_url: Some(" ".into()),
        };
        assert_eq!(empty.public_url().unwrap(), None);
    }
}
