//! The harness's Prometheus and Alertmanager (`e2e/cluster/signals.sh`,
//! docs/prometheus.md), for the tests: register a scrape target or a rule
//! file for the length of a test, ask PromQL queries, read Alertmanager's
//! alerts, and point its webhook receiver at a test's own server.
//!
//! Addresses and folders come from what `signals.sh env` exports; without
//! them, from the harness's defaults, so one test can be run by hand while
//! `make signals-up` runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The Prometheus of the harness.
#[derive(Clone, Debug)]
pub struct Prometheus {
    url: String,
    targets_dir: PathBuf,
    rules_dir: PathBuf,
    http: reqwest::Client,
}

/// One series of a query's answer: its labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// The harness's state folder of the signal services (`SIGNALS_DIR` of
/// e2e/cluster/lib.sh).
fn signals_dir() -> PathBuf {
    match std::env::var("SRE_SPACE_SIGNALS_STATE") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::repo_dir().join(".local/signals"),
    }
}

fn var_or(var: &str, default: impl FnOnce() -> String) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => default(),
    }
}

/// A client for the loopback APIs. reqwest is built without a default
/// crypto provider (plain HTTP here), but will not build a client without one.
fn http_client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn port_or(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// A name safe as a file name: letters, digits, `-`, `_` and `.`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("{name:?} is not a file name (letters, digits, '-', '_', '.')");
    }
    Ok(())
}

/// Writes `text` to `path` whole: through a hidden temporary file, so that
/// Prometheus, which watches the folder, never reads half of it.
fn write_whole(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("a file in a folder")?;
    let file = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `POST path` to `url`'s host without an async runtime, for the guards'
/// `Drop`; returns the status code.
fn post_blocking(url: &str, path: &str) -> Result<u16> {
    let host = url
        .strip_prefix("http://")
        .context("an http:// URL")?
        .trim_end_matches('/');
    let addr: std::net::SocketAddr = host
        .parse()
        .with_context(|| format!("{host} is not an IP address and port"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer}"))
}

impl Prometheus {
    /// `SRE_SPACE_PROMETHEUS_URL`, `SRE_SPACE_PROMETHEUS_TARGETS_DIR` and
    /// `SRE_SPACE_PROMETHEUS_RULES_DIR`, or the harness's defaults.
    pub fn from_env() -> Result<Self> {
        let url = var_or("SRE_SPACE_PROMETHEUS_URL", || {
            format!("http://127.0.0.1:{}", port_or("PROMETHEUS_PORT", 19490))
        });
        let dir = signals_dir().join("prometheus");
        let targets_dir = PathBuf::from(var_or("SRE_SPACE_PROMETHEUS_TARGETS_DIR", || {
            dir.join("targets").to_string_lossy().into_owned()
        }));
        let rules_dir = PathBuf::from(var_or("SRE_SPACE_PROMETHEUS_RULES_DIR", || {
            dir.join("rules").to_string_lossy().into_owned()
        }));
        if !targets_dir.is_dir() {
            bail!(
                "{} does not exist: is the harness's Prometheus running? (`make signals-up`, or \
                 `make cluster-up`; METRICS=0 leaves it out)",
                targets_dir.display()
            );
        }
        let http = http_client()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            targets_dir,
            rules_dir,
            http,
        })
    }

    /// The base URL, `http://127.0.0.1:19490` in the harness.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Has Prometheus scrape `addr` (`host:port`, path `/metrics`) with
    /// `labels` on every series, until the guard is dropped. A label
    /// `__metrics_path__` sets another path, `job` another job name. `name`
    /// names the file: `sre-space-operator...` is the operator's job.
    pub fn register_target(
        &self,
        name: &str,
        addr: &str,
        labels: &[(&str, &str)],
    ) -> Result<TargetGuard> {
        check_name(name)?;
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let text = serde_json::to_string_pretty(&serde_json::json!([
            { "targets": [addr], "labels": labels }
        ]))?;
        let path = self.targets_dir.join(format!("{name}.json"));
        write_whole(&path, &text)?;
        Ok(TargetGuard { path })
    }

    /// Waits until the scrape of `addr` succeeds (`up == 1`); returns how
    /// long that took.
    pub async fn wait_for_target_up(&self, addr: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let query = format!("up{{instance=\"{addr}\"}}");
        loop {
            let samples = self.query(&query).await?;
            if samples.iter().any(|(_, v)| *v == 1.0) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                bail!(
                    "{addr} was not scraped successfully within {timeout:?} ({query} is {samples:?}); \
                     targets: {}",
                    self.targets_summary().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Each active target's address, health and last error, for messages.
    async fn targets_summary(&self) -> Result<String> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/targets?state=active", self.url))
            .send()
            .await?
            .json()
            .await?;
        let targets = body["data"]["activeTargets"].as_array().cloned();
        Ok(targets
            .unwrap_or_default()
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}",
                    t["labels"]["instance"].as_str().unwrap_or("?"),
                    t["health"].as_str().unwrap_or("?"),
                    t["lastError"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// An instant query: each series with its labels and value (a scalar
    /// answer is one series without labels).
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .with_context(|| format!("asking Prometheus at {}", self.url))?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() || body["status"] != "success" {
            bail!("query {promql:?} failed ({status}): {body}");
        }
        let number = |v: &Value| -> Result<f64> {
            v[1].as_str()
                .context("a sample value")?
                .parse::<f64>()
                .context("a number")
        };
        let data = &body["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|series| -> Result<Sample> {
                    let labels = series["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok((labels, number(&series["value"])?))
                })
                .collect(),
            Some("scalar") => Ok(vec![(BTreeMap::new(), number(&data["result"])?)]),
            other => bail!("query {promql:?}: unexpected result type {other:?}"),
        }
    }

    /// Adds a rule file (the groups format of a PrometheusRule's spec) and
    /// reloads Prometheus; the guard removes it and reloads again. A file
    /// Prometheus refuses is removed at once and its error returned.
    pub async fn write_rule_file(&self, name: &str, yaml: &str) -> Result<RuleGuard> {
        check_name(name)?;
        let path = self.rules_dir.join(format!("{name}.yml"));
        write_whole(&path, yaml)?;
        let guard = RuleGuard {
            path,
            url: self.url.clone(),
        };
        self.reload().await?;
        Ok(guard)
    }

    /// `POST /-/reload`: Prometheus reads its configuration and rule files
    /// again; fails with Prometheus's reason when it refuses them.
    pub async fn reload(&self) -> Result<()> {
        post_reload(&self.http, &self.url, "Prometheus").await
    }

    /// The alerting rules Prometheus has loaded, by name, with their state
    /// (`inactive`, `pending`, `firing`).
    pub async fn alerting_rules(&self) -> Result<BTreeMap<String, String>> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/rules?type=alert", self.url))
            .send()
            .await?
            .json()
            .await?;
        let mut rules = BTreeMap::new();
        for group in body["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if let (Some(name), Some(state)) = (rule["name"].as_str(), rule["state"].as_str()) {
                    rules.insert(name.to_owned(), state.to_owned());
                }
            }
        }
        Ok(rules)
    }
}

/// A registered scrape target; dropping it removes the file, and Prometheus
/// stops scraping within a second or two.
#[derive(Debug)]
pub struct TargetGuard {
    path: PathBuf,
}

impl Drop for TargetGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A rule file in Prometheus's rules folder; dropping it removes the file
/// and reloads Prometheus.
#[derive(Debug)]
pub struct RuleGuard {
    path: PathBuf,
    url: String,
}

impl Drop for RuleGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = post_blocking(&self.url, "/-/reload");
    }
}

/// The Alertmanager of the harness.
#[derive(Clone, Debug)]
pub struct Alertmanager {
    url: String,
    config: PathBuf,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl Alertmanager {
    /// `SRE_SPACE_ALERTMANAGER_URL`, `SRE_SPACE_ALERTMANAGER_CONFIG` and
    /// `SRE_SPACE_ALERTMANAGER_TOKEN_FILE`, or the harness's defaults.
    pub fn from_env() -> Result<Self> {
        let url = var_or("SRE_SPACE_ALERTMANAGER_URL", || {
            format!("http://127.0.0.1:{}", port_or("ALERTMANAGER_PORT", 19493))
        });
        let dir = signals_dir().join("alertmanager");
        let config = PathBuf::from(var_or("SRE_SPACE_ALERTMANAGER_CONFIG", || {
            dir.join("alertmanager.yml").to_string_lossy().into_owned()
        }));
        let token_file = PathBuf::from(var_or("SRE_SPACE_ALERTMANAGER_TOKEN_FILE", || {
            dir.join("token").to_string_lossy().into_owned()
        }));
        if !config.is_file() {
            bail!(
                "{} does not exist: is the harness's Alertmanager running? (`make signals-up`, \
                 or `make cluster-up`; METRICS=0 leaves it out)",
                config.display()
            );
        }
        let http = http_client()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            config,
            token_file,
            http,
        })
    }

    /// The base URL, `http://127.0.0.1:19493` in the harness.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The file with the bearer token Alertmanager sends its webhook
    /// receiver (what the operator's Secret holds).
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The bearer token itself.
    pub fn token(&self) -> Result<String> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading {}", self.token_file.display()))?;
        Ok(token.trim().to_owned())
    }

    /// The alerts Alertmanager holds and has not silenced or inhibited
    /// (`GET /api/v2/alerts`), as its API answers them.
    pub async fn active_alerts(&self) -> Result<Vec<Value>> {
        let response = self
            .http
            .get(format!("{}/api/v2/alerts", self.url))
            .query(&[
                ("active", "true"),
                ("silenced", "false"),
                ("inhibited", "false"),
            ])
            .send()
            .await
            .with_context(|| format!("asking Alertmanager at {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            bail!("Alertmanager answered {status}");
        }
        Ok(response.json().await?)
    }

    /// Points the default receiver's webhook at `url`, sending the token of
    /// `credentials_file` (the harness's token file when `None`), until the
    /// guard is dropped, which restores the configuration as it was. Holds
    /// a lock on the configuration meanwhile: another test that wants the
    /// receiver waits here. Alerts of other tests may reach `url` too;
    /// match on your own labels.
    pub async fn point_webhook_at(
        &self,
        url: &str,
        credentials_file: Option<&Path>,
    ) -> Result<WebhookGuard> {
        let lock_path = self.config.with_extension("yml.lock");
        let lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))?;
            file.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
            Ok(file)
        })
        .await??;
        let original = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let mut config: serde_yaml::Value = serde_yaml::from_str(&original)?;
        let webhook = config
            .get_mut("receivers")
            .and_then(|r| r.get_mut(0))
            .and_then(|r| r.get_mut("webhook_configs"))
            .and_then(|w| w.get_mut(0))
            .context("the configuration has no webhook receiver")?;
        webhook["url"] = url.into();
        let credentials = credentials_file.unwrap_or(&self.token_file);
        webhook["http_config"]["authorization"]["credentials_file"] =
            credentials.to_string_lossy().into_owned().into();
        let guard = WebhookGuard {
            config: self.config.clone(),
            original,
            url: self.url.clone(),
            _lock: lock,
        };
        write_whole(&self.config, &serde_yaml::to_string(&config)?)?;
        self.reload().await?;
        Ok(guard)
    }

    /// `POST /-/reload`; fails with Alertmanager's reason when it refuses
    /// the configuration.
    pub async fn reload(&self) -> Result<()> {
        post_reload(&self.http, &self.url, "Alertmanager").await
    }
}

/// The webhook pointed at a test's receiver; dropping it restores the
/// configuration, reloads Alertmanager and releases the lock.
#[derive(Debug)]
pub struct WebhookGuard {
    config: PathBuf,
    original: String,
    url: String,
    _lock: std::fs::File,
}

impl Drop for WebhookGuard {
    fn drop(&mut self) {
        let _ = write_whole(&self.config, &self.original);
        let _ = post_blocking(&self.url, "/-/reload");
    }
}

/// `POST {url}/-/reload`, the lifecycle endpoint Prometheus and Alertmanager
/// share; fails with the server's reason when it refuses its files.
async fn post_reload(http: &reqwest::Client, url: &str, server: &str) -> Result<()> {
    let response = http.post(format!("{url}/-/reload")).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{server} refused to reload ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_rule_names_cannot_leave_their_folder() {
        assert!(check_name("checkout-e2e_1.v2").is_ok());
        for bad in ["", "../prometheus", "a/b", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
