//! The dashboard as a person sees it: the real operator serves it, a real
//! headless Chromium (driven through chromedriver) shows it, and a real OOM
//! kill appears in it and resolves while the page stays open, without a
//! reload.
#![cfg(feature = "cluster")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client as Browser, ClientBuilder};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sre_chaos::Target;
use sre_space::crd::SignalKind;
use sre_space_e2e::incident_of;
use sre_space_e2e::unique;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, http_request, install_crds,
    repo_dir, wait_ready, wait_until,
};

const LONG: Duration = Duration::from_secs(120);

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A chromedriver process on a free loopback port, killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
    /// The browser's profile, removed with the driver.
    profile: PathBuf,
}

impl ChromeDriver {
    async fn start() -> Result<Self> {
        let bin = std::env::var("SRE_SPACE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("sre-space-chromedriver-{port}.log"));
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {bin}: install Debian's chromium and chromium-driver (`make deps`)"
                )
            })?;
        let profile = std::env::temp_dir().join(format!("sre-space-chromium-{}", unique()));
        let driver = Self {
            child,
            port,
            profile,
        };
        // Its HTTP server keeps connections open, so a client that reads
        // to the end of the response would wait: reqwest reads by length.
        let status = format!("http://127.0.0.1:{port}/status");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        wait_until(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async { Ok(http.get(&status).send().await?.status().is_success()) },
        )
        .await
        .with_context(|| format!("chromedriver's log: {}", log.display()))?;
        Ok(driver)
    }

    async fn browser(&self) -> Result<Browser> {
        let profile = &self.profile;
        let mut options = json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1500", format!("--user-data-dir={}", profile.display()),
            ]
        });
        if let Ok(binary) = std::env::var("SRE_SPACE_CHROMIUM") {
            options["binary"] = binary.into();
        } else if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = "/usr/bin/chromium".into();
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // The browser's console, read back at the end.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            bail!("capabilities are an object");
        };
        // chromedriver listens on loopback HTTP: no TLS client is needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .context("opening a Chromium session")
    }

    /// What the page wrote to the browser's console at level SEVERE
    /// (script errors, failed loads, refused content), through
    /// chromedriver's log endpoint.
    async fn console_errors(&self, browser: &Browser) -> Result<Vec<String>> {
        let session = browser.session_id().await?.context("no session id")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let logs: Value = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/session/{session}/se/log",
                self.port
            ))
            .json(&json!({ "type": "browser" }))
            .send()
            .await?
            .json()
            .await?;
        let entries = logs["value"]
            .as_array()
            .with_context(|| format!("chromedriver's browser log: {logs}"))?;
        Ok(entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// What the overview shows of one incident and one service, and whether
/// the page is connected, read from the DOM.
async fn overview_state(browser: &Browser, incident: &str, service: &str) -> Result<Value> {
    Ok(browser
        .execute(
            r#"
            const row = document.querySelector(`tr[data-incident="${CSS.escape(arguments[0])}"]`);
            const svc = document.querySelector(`tr[data-service="${CSS.escape(arguments[1])}"]`);
            return {
              live: document.getElementById('live').dataset.state,
              phase: row ? row.querySelector('[data-field=phase]').textContent : null,
              service: svc ? Array.from(svc.cells).map((c) => c.textContent) : null,
              marker: window.loadMarker || null,
              errors: (window.dashboardErrors || ['the page script did not run']).slice(),
            };
            "#,
            vec![json!(incident), json!(service)],
        )
        .await?)
}

async fn page_errors(browser: &Browser) -> Result<Vec<String>> {
    let v = browser
        .execute(
            "return (window.dashboardErrors || ['the page script did not run']).slice();",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

fn screenshot(png: &[u8], name: &str) -> Result<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_dir().join("target"));
    std::fs::create_dir_all(&target)?;
    let path = target.join(name);
    std::fs::write(&path, png)?;
    // The README's picture, refreshed on request only.
    if std::env::var("SRE_SPACE_DASHBOARD_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(repo_dir().join("docs").join(name), png)?;
    }
    Ok(path)
}

/// Written straight to the terminal: a test's own output is hidden when it
/// passes, and a skipped part must never look like a passed one.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "\n{line}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_dashboard_on_the_network_is_refused_and_a_token_is_required() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-dash-auth").await?;

    let port = free_port()?;
    let mut open = Operator::spawn(
        &ns.name,
        &[("SRE_SPACE_DASHBOARD_ADDR", &format!("0.0.0.0:{port}"))],
    )?;
    let status = open.wait_exit(Duration::from_secs(20)).await?;
    ensure!(
        !status.success(),
        "a network-wide dashboard without a token must not start"
    );
    let out = open.output();
    ensure!(
        out.contains("SRE_SPACE_DASHBOARD_TOKEN is not set"),
        "the refusal says what to do: {out}"
    );

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let token = format!("t-{}", unique());
    let _operator = Operator::start(
        &ns.name,
        &[
            ("SRE_SPACE_DASHBOARD_ADDR", addr.as_str()),
            ("SRE_SPACE_DASHBOARD_TOKEN", token.as_str()),
        ],
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the dashboard to listen",
        || async { Ok(http_request(&addr, "GET", "/").await.is_ok()) },
    )
    .await?;
    for path in ["/", "/api/snapshot", "/events", "/?token=wrong"] {
        let (code, _) = http_request(&addr, "GET", path).await?;
        assert_eq!(code, 401, "GET {path} without the token");
    }
    let (code, body) = http_request(&addr, "GET", &format!("/api/snapshot?token={token}")).await?;
    assert_eq!(code, 200, "{body}");
    let snap: Value = serde_json::from_str(&body)?;
    assert!(snap["incidents"].is_array(), "{snap}");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, _) = http_request(&addr, method, &format!("/?token={token}")).await?;
        assert_eq!(code, 405, "{method} on a read-only dashboard");
    }
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_appears_on_the_open_dashboard_and_resolves_without_a_reload() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-dash").await?;
    let nsn = ns.name.clone();
    create_policy(&client, &nsn, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    })
    .await?;
    let topics = (
        format!("e2e-dash-buy-{}", unique()),
        format!("e2e-dash-quote-{}", unique()),
    );
    // The topics exist before the operator starts following them.
    let producer = producer()?;
    produce(&producer, &topics.0, 1).await?;
    produce(&producer, &topics.1, 1).await?;
    add_conversion_trigger(&client, &nsn, &topics).await?;
    Api::<Deployment>::namespaced(client.clone(), &nsn)
        .create(&PostParams::default(), &deployment("quote", 2, "64Mi"))
        .await?;
    wait_ready(&client, &nsn, "quote", 2, LONG).await?;

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let token = format!("t-{}", unique());
    let operator = Operator::start(
        &nsn,
        &[
            ("SRE_SPACE_DASHBOARD_ADDR", addr.as_str()),
            ("SRE_SPACE_DASHBOARD_TOKEN", token.as_str()),
        ],
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the dashboard to listen",
        || async { Ok(http_request(&addr, "GET", "/").await.is_ok()) },
    )
    .await
    .with_context(|| operator.output())?;

    let driver = ChromeDriver::start().await?;
    let browser = driver.browser().await?;
    let result = drive(&browser, &driver, &client, &nsn, &addr, &token, &topics).await;
    if result.is_err()
        && let Ok(png) = browser.screenshot().await
    {
        let _ = std::fs::write(repo_dir().join("target").join("dashboard-failed.png"), png);
    }
    let _ = browser.close().await;
    // The namespace goes either way: a failed run leaves its screenshot and
    // the operator's log, not its objects.
    let cleaned = ns.cleanup().await;
    result.with_context(|| format!("operator log: {}", operator.log.display()))?;
    cleaned
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    browser: &Browser,
    driver: &ChromeDriver,
    client: &kube::Client,
    ns: &str,
    addr: &str,
    token: &str,
    topics: &(String, String),
) -> Result<()> {
    let incident = format!("{ns}/{}", incident_of("quote", SignalKind::OOMKilled));
    let service = format!("{ns}/quote");
    browser
        .goto(&format!("http://{addr}/?token={token}"))
        .await?;

    // Connected, and the service shows its two ready pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = overview_state(browser, &incident, &service).await?;
        if s["live"] == "live" && s["service"][3] == "2/2" && s["service"][2] == "Healthy" {
            assert!(s["phase"].is_null(), "no incident before the fault: {s}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the overview never showed quote 2/2 Healthy: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A reload would lose this.
    browser
        .execute("window.loadMarker = 'kept';", vec![])
        .await?;

    let fault = Instant::now();
    Target {
        client: client.clone(),
        namespace: ns.to_string(),
        deployment: "quote".into(),
        dry_run: false,
    }
    .oom()
    .await?;

    let mut phases: Vec<String> = Vec::new();
    let deadline = Instant::now() + LONG;
    let mut appeared = None;
    loop {
        let s = overview_state(browser, &incident, &service).await?;
        ensure!(s["marker"] == "kept", "the page reloaded: {s}");
        if let Some(p) = s["phase"].as_str() {
            appeared.get_or_insert_with(|| fault.elapsed());
            if phases.last().map(String::as_str) != Some(p) {
                phases.push(p.to_string());
            }
            if p == "Resolved" {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the incident did not reach Resolved on the page; phases seen: {phases:?}; now {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loud(&format!(
        "dashboard: incident on the page {:.1} s after the fault, Resolved after {:.1} s; phases seen: {}",
        appeared.unwrap_or_default().as_secs_f64(),
        fault.elapsed().as_secs_f64(),
        phases.join(" → ")
    ));
    let png = browser.screenshot().await?;
    let shot = screenshot(&png, "dashboard.png")?;
    loud(&format!("dashboard: screenshot {}", shot.display()));

    // The incident page: reached by its link, with the whole story. Found
    // and followed in one script: the live table may re-render the row
    // between a WebDriver find and its click (a stale element).
    let followed = browser
        .execute(
            r#"
            const link = document.querySelector(`tr[data-incident="${CSS.escape(arguments[0])}"] a`);
            if (!link) { return false; }
            link.click();
            return true;
            "#,
            vec![json!(incident)],
        )
        .await?;
    ensure!(
        followed == json!(true),
        "the overview has no link to incident {incident}"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let page = loop {
        let page = browser
            .execute(
                r#"
                const text = (sel) => Array.from(document.querySelectorAll(sel)).map((n) => n.textContent);
                return {
                  path: location.pathname,
                  phase: text('section[data-incident] [data-field=phase]'),
                  timeline: text('ol.timeline li'),
                  actions: text('tr[data-action]'),
                  sections: text('section h2'),
                  postMortem: text('[data-field=postMortem]'),
                  memory: text('section').filter((t) => t.startsWith('Memory')),
                };
                "#,
                vec![],
            )
            .await?;
        let memory = page["memory"][0].as_str().unwrap_or_default();
        if memory.contains("1 occurrence(s)") && !page["postMortem"][0].is_null() {
            break page;
        }
        ensure!(
            Instant::now() < deadline,
            "the incident page never showed its memory and post-mortem: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        page["path"],
        format!(
            "/incidents/{ns}/{}",
            incident_of("quote", SignalKind::OOMKilled)
        )
    );
    assert_eq!(page["phase"][0], "Resolved");
    let timeline = page["timeline"].to_string();
    for step in [
        "Detected: OOMKilled",
        "RaiseMemoryLimit recorded",
        "RaiseMemoryLimit Succeeded, Effective",
        "Resolved",
    ] {
        assert!(
            timeline.contains(step),
            "timeline lacks {step:?}: {timeline}"
        );
    }
    let actions = page["actions"].to_string();
    assert!(
        actions.contains("RaiseMemoryLimit")
            && actions.contains("Succeeded")
            && actions.contains("64Mi → 96Mi"),
        "{actions}"
    );
    let sections = page["sections"].to_string();
    for s in ["Timeline", "Diagnosis", "Actions", "Post-mortem", "Memory"] {
        assert!(sections.contains(s), "no {s} section: {sections}");
    }
    assert!(
        page["postMortem"][0]
            .as_str()
            .is_some_and(|p| p.contains("Root cause"))
    );
    let png = browser.screenshot().await?;
    screenshot(&png, "dashboard-incident.png")?;

    conversion_chart(browser, addr, token, topics).await?;

    let errors = page_errors(browser).await?;
    assert!(errors.is_empty(), "errors the page recorded: {errors:?}");
    let console = driver.console_errors(browser).await?;
    assert!(console.is_empty(), "browser console errors: {console:?}");
    Ok(())
}

/// A ConversionRate trigger on the policy over two topics of this run.
async fn add_conversion_trigger(
    client: &kube::Client,
    ns: &str,
    (numerator, denominator): &(String, String),
) -> Result<()> {
    let api: Api<sre_space::crd::RemediationPolicy> = Api::namespaced(client.clone(), ns);
    let mut policy = api
        .list(&Default::default())
        .await?
        .items
        .pop()
        .context("the policy")?;
    policy.spec.triggers.push(serde_json::from_value(json!({
        "type": "ConversionRate",
        "workload": "quote",
        "conversion": {
            "numeratorTopic": numerator,
            "denominatorTopic": denominator,
            "minRatio": 0.2,
            "minEvents": 5,
            "windowSeconds": 10
        }
    }))?);
    policy.metadata.managed_fields = None;
    api.replace(
        &policy.metadata.name.clone().unwrap_or_default(),
        &PostParams::default(),
        &policy,
    )
    .await?;
    Ok(())
}

fn producer() -> Result<(rdkafka::producer::FutureProducer, String)> {
    let bootstrap =
        std::env::var("SRE_SPACE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let producer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating the producer")?;
    Ok((producer, bootstrap))
}

/// `n` business events on `topic` (the broker creates a topic on first use).
async fn produce(
    (producer, bootstrap): &(rdkafka::producer::FutureProducer, String),
    topic: &str,
    n: usize,
) -> Result<()> {
    for i in 0..n {
        let key = format!("{}-{i}", unique());
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(&key)
                    .payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {topic} at {bootstrap}"))?;
    }
    Ok(())
}

/// Business traffic on the trigger's topics (one purchase in two quotes)
/// until the overview's chart shows measured points.
async fn conversion_chart(
    browser: &Browser,
    addr: &str,
    token: &str,
    (numerator, denominator): &(String, String),
) -> Result<()> {
    let producer = producer()?;
    browser
        .goto(&format!("http://{addr}/?token={token}"))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent = 0u32;
    loop {
        // Two quotes, one purchase: a ratio of 0.5, above the minimum 0.2.
        produce(&producer, denominator, 2).await?;
        produce(&producer, numerator, 1).await?;
        sent += 1;
        let points = browser
            .execute(
                "const s = document.querySelector('svg[data-series]'); \
                 return s && s.querySelector('[data-role=threshold]') \
                   ? Number(s.getAttribute('data-points')) : 0;",
                vec![],
            )
            .await?;
        if points.as_u64().unwrap_or(0) >= 2 {
            loud(&format!(
                "dashboard: the conversion chart shows {points} points"
            ));
            screenshot(&browser.screenshot().await?, "dashboard-conversion.png")?;
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the conversion chart never showed measured points ({sent} rounds of events sent)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
