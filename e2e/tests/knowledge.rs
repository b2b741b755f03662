//! The knowledge base's API against the real API server: the dashboard's
//! server runs in-process over reflectors of a test namespace, an OOM and a
//! crash-loop history are written the way the operator writes them, and a
//! client lists, reads and searches them, with and without the (fake)
//! embeddings model, and without the token.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use sre_space::crd::{
    Incident, IncidentSpec, RemediationPolicy, SignalKind, WorkloadKind, WorkloadRef,
};
use sre_space::dashboard::{DashboardConfig, Stores};
use sre_space::llm::embeddings::EmbeddingsConfig;
use sre_space_e2e::fake_openai::FakeOpenAi;
use sre_space_e2e::{TestNamespace, client, create_policy, install_crds, wait_until};

const TOKEN: &str = "kb-e2e-token";

/// A watch store of `K` in `ns`, filled by a reflector until the test ends.
async fn store<K>(client: &Client, ns: &str) -> Result<reflector::Store<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            Api::<K>::namespaced(client.clone(), ns),
            watcher::Config::default(),
        ),
    )
    .applied_objects()
    .for_each(|_| async {});
    tokio::spawn(stream);
    tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready())
        .await
        .context("the store did not fill within 30s")??;
    Ok(reader)
}

/// An Incident with a diagnosis and a post-mortem, as the operator leaves
/// one it resolved.
async fn resolved_incident(
    client: &Client,
    ns: &str,
    workload: &str,
    signal: SignalKind,
    category: &str,
    root_cause: &str,
    post_mortem: &str,
) -> Result<Incident> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    let name = format!("{workload}-{}", signal.as_str().to_lowercase());
    let inc = Incident::new(
        &name,
        IncidentSpec {
            fingerprint: format!("{ns}/Deployment/{workload}/{}", signal.as_str()),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: workload.into(),
            },
            signal,
            policy: "heal".into(),
            approval: None,
        },
    );
    api.create(&PostParams::default(), &inc).await?;
    let now = Timestamp::now();
    let detected = Time(now - SignedDuration::from_secs(600));
    let status = json!({ "status": {
        "phase": "Resolved",
        "occurrences": 1,
        "detectedAt": detected,
        "resolvedAt": Time(now),
        "diagnosis": {
            "analyzer": "rules",
            "category": category,
            "rootCause": root_cause,
            "confidence": 0.9,
            "diagnosedAt": detected,
            "evidence": [{ "id": "e1", "kind": "ContainerState", "source": format!("pod/{workload}-1/container/app"), "summary": root_cause }]
        },
        "postMortem": post_mortem
    }});
    Ok(api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?)
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut req = http.get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    Ok((res.status().as_u16(), res.text().await?))
}

async fn get_json(http: &reqwest::Client, base: &str, path: &str) -> Result<(u16, Value)> {
    let (status, body) = get(http, base, path, Some(TOKEN)).await?;
    let value = serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
    Ok((status, value))
}

fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[tokio::test]
async fn the_knowledge_base_lists_reads_and_searches_the_history() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "kb").await?;
    let result = scenario(&client, &ns.name).await;
    ns.cleanup().await?;
    result
}

async fn scenario(client: &Client, ns: &str) -> Result<()> {
    create_policy(client, ns, |p| p["metadata"]["name"] = "heal".into()).await?;
    // The history, written by the operator's own memory code from the
    // incidents it resolved.
    let oom = resolved_incident(
        client,
        ns,
        "cart",
        SignalKind::OOMKilled,
        "OutOfMemory",
        "container app was OOMKilled: its memory limit 64Mi is below the working set",
        "Raised the memory limit to 96Mi; it held.",
    )
    .await?;
    let crash = resolved_incident(
        client,
        ns,
        "quote",
        SignalKind::CrashLoopBackOff,
        "CrashLoop",
        "the container exits at start: the config file /etc/quote/app.yaml is missing",
        "Rolled back to the previous ReplicaSet.",
    )
    .await?;
    for inc in [&oom, &crash] {
        sre_space::memory::remember(client, inc, Timestamp::now()).await?;
    }
    // The OOM incident is deleted: its history must still answer.
    Api::<Incident>::namespaced(client.clone(), ns)
        .delete("cart-oomkilled", &DeleteParams::default())
        .await?;

    let incidents = store::<Incident>(client, ns).await?;
    let policies = store::<RemediationPolicy>(client, ns).await?;
    let pods = store(client, ns).await?;
    let replicasets = store(client, ns).await?;
    wait_until(
        Duration::from_secs(20),
        "the incident store to drop the deleted incident",
        || {
            let incidents = incidents.clone();
            async move { Ok(incidents.state().len() == 1) }
        },
    )
    .await?;

    let (fake, fake_base) = FakeOpenAi::start().await;
    let addr = free_addr()?;
    let stores = Stores {
        client: client.clone(),
        incidents,
        policies,
        workloads: sre_space::workload::Workloads::new(client.clone(), pods, replicasets),
        board: Default::default(),
    };
    sre_space::dashboard::serve(
        DashboardConfig {
            addr,
            token: Some(TOKEN.into()),
            jaeger_ui: "http://127.0.0.1:16686".into(),
            embeddings: Some(EmbeddingsConfig {
                base_url: fake_base,
                model: "hashed-bag-of-words".into(),
                api_key: None,
                timeout: Duration::from_secs(5),
            }),
        },
        stores,
    )
    .await?;
    let base = format!("http://{addr}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // The token, as the dashboard asks for it.
    for path in [
        "/api/v1/memories",
        "/api/v1/search?q=oom",
        "/api/v1/openapi.json",
        "/docs",
    ] {
        let (status, _) = get(&http, &base, path, None).await?;
        ensure!(status == 401, "{path} without a token: {status}");
        let (status, _) = get(&http, &base, path, Some("wrong")).await?;
        ensure!(status == 401, "{path} with a wrong token: {status}");
    }

    // List and get.
    let (status, list) =
        get_json(&http, &base, &format!("/api/v1/memories?namespace={ns}")).await?;
    ensure!(status == 200, "list: {status} {list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    ensure!(
        names == ["cart-oomkilled", "quote-crashloopbackoff"],
        "{list}"
    );
    let (_, page) = get_json(
        &http,
        &base,
        &format!("/api/v1/memories?namespace={ns}&limit=1"),
    )
    .await?;
    let next = page["continue"].as_str().context("a second page")?;
    let (_, rest) = get_json(
        &http,
        &base,
        &format!("/api/v1/memories?namespace={ns}&limit=1&continue={next}"),
    )
    .await?;
    ensure!(
        rest["items"][0]["name"] == "quote-crashloopbackoff",
        "{rest}"
    );
    let (_, crashes) = get_json(
        &http,
        &base,
        "/api/v1/memories?signal=CrashLoopBackOff&category=CrashLoop",
    )
    .await?;
    ensure!(
        crashes["items"].as_array().map(Vec::len) == Some(1),
        "{crashes}"
    );
    let (status, memory) = get_json(
        &http,
        &base,
        &format!("/api/v1/memories/{ns}/cart-oomkilled"),
    )
    .await?;
    ensure!(status == 200, "{memory}");
    let summary = memory["occurrences"][0]["summary"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        summary.starts_with("OutOfMemory: container app was OOMKilled"),
        "{memory}"
    );

    // Incidents by fingerprint: the one still there.
    let fp = format!("{ns}/Deployment/quote/CrashLoopBackOff");
    let (_, by_fp) = get_json(&http, &base, &format!("/api/v1/incidents?fingerprint={fp}")).await?;
    ensure!(
        by_fp["items"][0]["name"] == "quote-crashloopbackoff",
        "{by_fp}"
    );
    ensure!(
        by_fp["items"][0]["rootCause"]
            .as_str()
            .is_some_and(|r| r.contains("config file")),
        "{by_fp}"
    );

    // Search, blended with the fake model's embeddings.
    let (status, answer) =
        get_json(&http, &base, "/api/v1/search?q=oomkilled+memory+limit").await?;
    ensure!(status == 200, "{answer}");
    ensure!(answer["ranking"] == "bm25+embeddings", "{answer}");
    ensure!(
        answer["results"][0]["name"] == "cart-oomkilled",
        "the deleted incident's history: {answer}"
    );
    ensure!(!fake.embedding_requests().is_empty(), "the model was asked");
    let (_, answer) = get_json(&http, &base, "/api/v1/search?q=missing+config+file").await?;
    ensure!(
        answer["results"][0]["fingerprint"] == fp.as_str(),
        "{answer}"
    );
    // The model failing: BM25 alone, and the answer says so.
    fake.fail_embeddings(Some(503));
    let (status, answer) =
        get_json(&http, &base, "/api/v1/search?q=oomkilled+memory+limit").await?;
    ensure!(status == 200, "{answer}");
    ensure!(answer["ranking"] == "bm25", "{answer}");
    ensure!(
        answer["note"].as_str().is_some_and(|n| n.contains("BM25")),
        "{answer}"
    );
    ensure!(answer["results"][0]["name"] == "cart-oomkilled", "{answer}");

    // Bad input says what to fix.
    for path in [
        "/api/v1/search?q=",
        "/api/v1/search?q=oom&limit=500",
        "/api/v1/memories?namespace=kube-system",
    ] {
        let (status, body) = get_json(&http, &base, path).await?;
        ensure!(
            status == 400 && body["error"].is_string(),
            "{path}: {status} {body}"
        );
    }

    // The OpenAPI document and its page.
    let (status, doc) = get_json(&http, &base, "/api/v1/openapi.json").await?;
    ensure!(
        status == 200 && doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/api/v1/memories",
        "/api/v1/memories/{namespace}/{name}",
        "/api/v1/incidents",
        "/api/v1/search",
        "/docs",
    ] {
        ensure!(
            doc["paths"][path]["get"].is_object(),
            "the document names {path}"
        );
    }
    let (status, page) = get(&http, &base, "/docs", Some(TOKEN)).await?;
    ensure!(
        status == 200 && page.contains("/api/v1/search") && page.contains("curl -H"),
        "{page}"
    );
    Ok(())
}
