//! Containers that really run, on the real node (a kubelet with containerd
//! and runc, beside the kwok nodes): the kernel enforces memory limits, the
//! kubelet probes and restarts, and pods talk over a real network.
//!
//! Compiled only with the `real-node` feature, which `e2e/run-tests.sh`
//! turns on when `cluster.sh env` says the real node runs
//! (`make test NODE=real`); without the node these tests fail rather than
//! pass.
#![cfg(feature = "real-node")]

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};
use sre_space::crd::SignalKind;
use sre_space_e2e::incident_of;
use sre_space_e2e::{
    TestNamespace, client, http_request, real_node, real_node_pod, wait_pod, wait_until,
};

/// Long enough for a container to start, be killed and be started again
/// on a 2-core machine running the whole cluster.
const LONG: Duration = Duration::from_secs(120);

struct RealNode {
    client: Client,
    ns: TestNamespace,
    node: String,
    pods: Api<Pod>,
}

impl RealNode {
    async fn new(prefix: &str) -> Result<Self> {
        let node = real_node()?;
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let pods = Api::namespaced(client.clone(), &ns.name);
        Ok(Self {
            client,
            ns,
            node,
            pods,
        })
    }

    async fn run(&self, pod: &Pod) -> Result<()> {
        self.pods.create(&PostParams::default(), pod).await?;
        Ok(())
    }

    async fn wait(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Result<Pod> {
        wait_pod(&self.client, &self.ns.name, name, LONG, what, check).await
    }

    async fn logs(&self, name: &str) -> Result<String> {
        Ok(self.pods.logs(name, &LogParams::default()).await?)
    }

    /// The events about one pod, as `kubectl describe pod` lists them.
    async fn events(&self, name: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let list = api
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await?;
        Ok(list.items)
    }

    /// The node's InternalIP: the host, as a pod sees it.
    async fn node_ip(&self) -> Result<String> {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await?;
        node.status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .context("the real node has no InternalIP")
    }
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
}

fn restarts(pod: &Pod) -> i32 {
    container(pod).map_or(0, |c| c.restart_count)
}

fn ready(pod: &Pod) -> bool {
    container(pod).is_some_and(|c| c.ready)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_ip(pod: &Pod) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("the pod has no IP")
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed_by_the_kernel_and_restarted() -> Result<()>
{
    let t = RealNode::new("e2e-real-oom").await?;
    // Twice its 32Mi limit: the kernel's OOM killer ends it part way.
    t.run(&real_node_pod("hog", &["alloc", "64"], Some("32Mi")))
        .await?;
    // Half its limit: the same program, which the limit leaves alone.
    t.run(&real_node_pod("modest", &["alloc", "16"], Some("32Mi")))
        .await?;

    let hog = t
        .wait("hog", "an OOM kill and a restart", |p| {
            restarts(p) >= 1
                && container(p)
                    .and_then(|c| c.last_state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
        })
        .await?;
    let spec = hog.spec.as_ref().context("spec")?;
    assert_eq!(
        spec.node_name.as_deref(),
        Some(t.node.as_str()),
        "ran on the real node"
    );
    let status = container(&hog).context("container status")?;
    let killed = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .context("last state")?;
    assert_eq!(killed.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(killed.exit_code, 137, "SIGKILL from the kernel: 128 + 9");
    assert!(
        status.restart_count >= 1,
        "the kubelet restarted it: {status:?}"
    );

    // The limit is the line, not the whole program: at half of it the
    // same workload holds its memory and never restarts.
    let modest = t
        .wait("modest", "16 MiB allocated and held", |p| {
            ready(p) && phase(p) == "Running"
        })
        .await?;
    wait_until(LONG, "the modest pod's log to show 16 MiB held", || async {
        Ok(t.logs("modest").await?.contains("allocated 16 MiB"))
    })
    .await?;
    let modest = t.pods.get("modest").await.unwrap_or(modest);
    assert_eq!(restarts(&modest), 0, "{:?}", container(&modest));
    t.ns.cleanup().await
}

#[tokio::test]
async fn a_failing_liveness_probe_gets_the_container_restarted() -> Result<()> {
    let t = RealNode::new("e2e-real-liveness").await?;
    let mut pod = real_node_pod("web", &["serve", "8080"], None);
    let probe = serde_json::from_value(serde_json::json!({
        "httpGet": { "path": "/healthz", "port": 8080 },
        "periodSeconds": 2,
        "failureThreshold": 2,
        "timeoutSeconds": 1
    }))?;
    pod.spec.as_mut().context("spec")?.containers[0].liveness_probe = Some(probe);
    t.run(&pod).await?;
    let pod = t
        .wait("web", "Ready", |p| ready(p) && restarts(p) == 0)
        .await?;
    let addr = format!("{}:8080", pod_ip(&pod)?);

    // From the host, over the pod network, as a user's curl would.
    let (code, body) = http_request(&addr, "GET", "/healthz").await?;
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, _) = http_request(&addr, "POST", "/fail").await?;
    assert_eq!(code, 200);
    let (code, _) = http_request(&addr, "GET", "/healthz").await?;
    assert_eq!(code, 500, "the workload now reports itself unhealthy");

    let pod = t
        .wait("web", "a restart after failed liveness probes", |p| {
            restarts(p) >= 1 && ready(p)
        })
        .await?;
    let previous = container(&pod)
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .context("the killed container's last state")?;
    assert_eq!(
        previous.exit_code, 143,
        "stopped by the kubelet's SIGTERM (128 + 15), not OOM-killed: {previous:?}"
    );
    let events = t.events("web").await?;
    let said = |reason: &str, text: &str| {
        events.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.contains(text))
        })
    };
    assert!(
        said("Unhealthy", "Liveness probe failed"),
        "events: {events:#?}"
    );
    assert!(
        said("Killing", "failed liveness probe"),
        "events: {events:#?}"
    );

    // The new container starts healthy.
    let addr = format!("{}:8080", pod_ip(&pod)?);
    let (code, _) = http_request(&addr, "GET", "/healthz").await?;
    assert_eq!(code, 200);
    t.ns.cleanup().await
}

#[tokio::test]
async fn pods_on_the_real_node_reach_each_other_and_the_host() -> Result<()> {
    let t = RealNode::new("e2e-real-net").await?;
    t.run(&real_node_pod("server", &["serve", "8080"], None))
        .await?;
    let server = t.wait("server", "Ready", ready).await?;
    let url = format!("http://{}:8080/", pod_ip(&server)?);

    let mut client = real_node_pod("client", &["get", &url], None);
    client.spec.as_mut().context("spec")?.restart_policy = Some("Never".into());
    t.run(&client).await?;
    let done = t
        .wait("client", "the client to finish", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await?;
    let log = t.logs("client").await?;
    assert_eq!(phase(&done), "Succeeded", "pod to pod: {log}");
    assert!(log.contains("hello from server"), "{log}");

    // A listener on the host, at the node's address.
    let node_ip = t.node_ip().await?;
    let listener = tokio::net::TcpListener::bind(format!("{node_ip}:0")).await?;
    let host_url = format!("http://{}/", listener.local_addr()?);
    let host = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, peer) = listener.accept().await?;
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await?;
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\nhello from host",
        )
        .await?;
        anyhow::Ok(peer)
    });
    let mut to_host = real_node_pod("to-host", &["get", &host_url], None);
    to_host.spec.as_mut().context("spec")?.restart_policy = Some("Never".into());
    t.run(&to_host).await?;
    let done = t
        .wait("to-host", "the pod to finish", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await?;
    let log = t.logs("to-host").await?;
    assert_eq!(phase(&done), "Succeeded", "pod to host: {log}");
    assert!(log.contains("hello from host"), "{log}");
    let peer = tokio::time::timeout(Duration::from_secs(5), host).await???;
    let to_host_ip = pod_ip(&done)?;
    assert_eq!(
        peer.ip().to_string(),
        to_host_ip,
        "the host saw the pod's own address"
    );
    t.ns.cleanup().await
}

/// The whole loop where the kernel really kills: a service that needs 64 MiB
/// runs with a 32Mi limit, is OOM-killed again and again, and SRE-Space
/// raises the limit (by at least 64Mi, per the policy) until the new pods
/// hold; the old pod's kills during the rollout do not count against the fix.
#[tokio::test]
async fn the_oom_story_runs_on_the_real_node_and_the_raised_limit_holds() -> Result<()> {
    use sre_space::crd::{ActionState, ActionType, Category};
    use sre_space_e2e::{Operator, install_crds, start_oom_story, wait_resolved};

    let rn = RealNode::new("e2e-real-oom").await?;
    install_crds(&rn.client).await?;
    start_oom_story(&rn.client, &rn.ns.name).await?;
    let _operator = Operator::start(&rn.ns.name, &[]).await?;

    let inc = wait_resolved(
        &rn.client,
        &rn.ns.name,
        &incident_of("hungry", SignalKind::OOMKilled),
        Duration::from_secs(240),
    )
    .await?;
    let status = inc.status.clone().unwrap_or_default();
    assert_eq!(
        status.diagnosis.as_ref().map(|d| d.category),
        Some(Category::OutOfMemory)
    );
    let action = status.actions.first().context("an action")?;
    assert_eq!(
        (action.type_, action.state),
        (ActionType::RaiseMemoryLimit, ActionState::Succeeded)
    );
    assert_eq!(
        (action.from.as_deref(), action.to.as_deref()),
        (Some("32Mi"), Some("96Mi"))
    );

    // The pod of the new revision holds its 64 MiB without being killed.
    let pods = rn
        .pods
        .list(&ListParams::default().labels("app=hungry"))
        .await?;
    let running: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(running.len(), 1);
    let limit = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].resources.clone())
        .and_then(|r| r.limits)
        .and_then(|l| l.get("memory").cloned());
    assert_eq!(limit.map(|q| q.0).as_deref(), Some("96Mi"));
    let cs = running[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    assert!(
        cs.iter().all(|c| c.restart_count == 0 && c.ready),
        "the new pod runs without restarts: {cs:?}"
    );
    rn.ns.cleanup().await
}
