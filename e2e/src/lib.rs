//! Helpers shared by the end-to-end tests, which run against the local
//! cluster started by `e2e/cluster/cluster.sh up` (see `make test`).

#[cfg(feature = "real-node")]
pub mod demo;
pub mod fake_github;
pub mod fake_jules;
pub mod fake_notify;
pub mod fake_openai;
pub mod gate;
#[cfg(feature = "cluster")]
pub mod prometheus;
pub mod scenario;

pub use scenario::{Scenario, ScenarioBuilder};

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};

/// The field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "sre-space-e2e";

/// The repository's root folder.
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A client for the local cluster. Fails with instructions when KUBECONFIG
/// does not point at it, rather than testing whatever cluster is current.
pub async fn client() -> Result<Client> {
    let path = std::env::var("KUBECONFIG").context(
        "KUBECONFIG is not set: run the cluster tests with `make test`, or `make cluster-up` \
         then `eval \"$(e2e/cluster/cluster.sh env)\"`",
    )?;
    // The harness's own state folder: the clone's .local/cluster, or the one
    // SRE_SPACE_STATE moved it to (a second cluster on other ports).
    let local = path.contains(".local/cluster")
        || std::env::var("SRE_SPACE_STATE").is_ok_and(|s| !s.is_empty() && path.starts_with(&s));
    if !local && std::env::var("SRE_SPACE_E2E_ANY_CLUSTER").is_err() {
        bail!(
            "KUBECONFIG={path} is not the local test cluster; these tests create and delete \
             objects. Set SRE_SPACE_E2E_ANY_CLUSTER=1 to run them elsewhere on purpose."
        );
    }
    let config = Config::infer().await.context("reading KUBECONFIG")?;
    Ok(Client::try_from(config)?)
}

/// The kubectl built for the local cluster (not whatever is on PATH).
pub fn kubectl() -> Command {
    let bin = repo_dir().join(".local/bin/kubectl");
    Command::new(bin)
}

/// Runs kubectl and returns its standard output; fails with its standard
/// error when it exits non-zero.
pub fn kubectl_output(args: &[&str]) -> Result<String> {
    let out = kubectl().args(args).output().context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The helm built for the local cluster (not whatever is on PATH).
pub fn helm() -> Command {
    Command::new(repo_dir().join(".local/bin/helm"))
}

/// What a finished command printed, and whether it succeeded.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs helm and returns what it printed, whether or not it succeeded (the
/// tests check helm's refusals too).
pub fn helm_run(args: &[&str]) -> Result<Output> {
    let out = helm().args(args).output().context("running helm")?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    })
}

/// Runs helm and returns its standard output; fails with its standard error
/// when it exits non-zero.
pub fn helm_output(args: &[&str]) -> Result<String> {
    let out = helm_run(args)?;
    if !out.success {
        bail!("helm {} failed: {}", args.join(" "), out.stderr);
    }
    Ok(out.stdout)
}

/// Writes a kubeconfig that reaches the cluster of `$KUBECONFIG` (same
/// server, same CA) as ServiceAccount `namespace/name`, with a token from
/// `kubectl create token`, and returns its path: what a process running in a
/// pod with that ServiceAccount would be allowed to do, it can do, no more.
pub fn service_account_kubeconfig(namespace: &str, name: &str) -> Result<PathBuf> {
    let admin = std::env::var("KUBECONFIG").context("KUBECONFIG is not set")?;
    let config =
        kube::config::Kubeconfig::read_from(&admin).with_context(|| format!("reading {admin}"))?;
    let context = config
        .contexts
        .iter()
        .find(|c| Some(&c.name) == config.current_context.as_ref())
        .and_then(|c| c.context.as_ref())
        .with_context(|| format!("{admin} has no current context"))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("{admin} has no cluster {}", context.cluster))?;
    let token = kubectl_output(&["create", "token", name, "-n", namespace, "--duration=1h"])?;
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": cluster }],
        "users": [{ "name": user, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "local", "context": { "cluster": "local", "user": user } }],
        "current-context": "local",
    });
    let path = std::env::temp_dir().join(format!("sre-space-{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
    Ok(path)
}

/// Installs the checked-in CRDs by server-side apply, as a user's
/// `kubectl apply -f crds/` would, and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo_dir().join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established within 30s"))??;
    }
    Ok(())
}

/// A suffix no other run uses, valid in namespace, topic and group names.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{}", nanos & 0xffff_ffff_ffff, std::process::id())
}

/// A namespace of its own for one test, deleted by `cleanup`.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("{prefix}-{suffix:08x}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "sre.space/e2e": "true" } }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // Pods are refused until the service-account controller has made
        // the namespace's `default` account.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "default service account",
            || async { Ok(sa.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    pub async fn cleanup(self) -> Result<()> {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(what.to_string()));
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator binary the tests run: `SRE_SPACE_OPERATOR_BIN`, or the
/// debug build in the cargo target folder.
pub fn operator_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SRE_SPACE_OPERATOR_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_dir().join("target"));
    target.join("debug/sre-space")
}

/// The sre-chaos binary the tests run: `SRE_SPACE_CHAOS_BIN`, or the debug
/// build in the cargo target folder.
pub fn chaos_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SRE_SPACE_CHAOS_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_dir().join("target"));
    target.join("debug/sre-chaos")
}

/// The operator-side allow-list the test operators start with, unless a
/// test passes its own `SRE_SPACE_ALLOWLIST`: the test's namespace may use
/// the fake GitHub's `acme/...` repositories, and its health checks may
/// reach the servers the tests start on loopback. Without it every GitHub
/// call and every loopback probe of the existing tests would be refused,
/// which is the operator's default.
pub fn default_allowlist(namespace: &str) -> String {
    format!(
        "namespaces:\n- namespace: {namespace}\n  github:\n  - repository: acme/*\n    paths: [\"/\"]\n  healthCheckHosts: [127.0.0.0/8, \"::1\"]\n"
    )
}

/// Writes an allow-list file for an operator of `namespace` and returns its
/// path, to pass as `("SRE_SPACE_ALLOWLIST", path)` to `Operator::start`.
pub fn allowlist_file(namespace: &str, yaml: &str) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "sre-space-allowlist-{namespace}-{}.yaml",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What the operator logs as the last step of its start-up (`run`), once
/// its reflectors have synced and its controllers run.
const STARTED: &str = "sre-space operator started";
/// What a replica with a Lease logs while another leads.
const STANDING_BY: &str = "waiting to lead";
/// Start-up lists every watched kind first; on a busy two-core machine
/// that has taken tens of seconds.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A real operator process scoped to one namespace, killed when dropped.
pub struct Operator {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator for `namespace` with `env` and waits until it
    /// says it started (its reflectors synced, its controllers running); the
    /// allow-list is `default_allowlist` unless `env` names another. Fails,
    /// with the end of its log, when it exits or stays silent instead: a
    /// test that checks nothing happens must not pass with no operator.
    pub async fn start(namespace: &str, env: &[(&str, &str)]) -> Result<Self> {
        let mut operator = Self::spawn(namespace, env)?;
        operator.wait_for_log(STARTED, START_TIMEOUT).await?;
        Ok(operator)
    }

    /// Starts a replica with a Lease (`SRE_SPACE_LEASE_NAMESPACE` in `env`)
    /// and waits until it stands by for the Lease: a follower never says it
    /// started until it leads, so the test waits for the leader itself.
    pub async fn start_standby(namespace: &str, env: &[(&str, &str)]) -> Result<Self> {
        let mut operator = Self::spawn(namespace, env)?;
        operator.wait_for_log(STANDING_BY, START_TIMEOUT).await?;
        Ok(operator)
    }

    /// Starts the process and returns at once, without waiting for it to
    /// start: for the tests of a start-up the operator must refuse.
    pub fn spawn(namespace: &str, env: &[(&str, &str)]) -> Result<Self> {
        let bin = operator_bin();
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: run `cargo build -p sre-space-operator`",
            bin.display()
        );
        let log = std::env::temp_dir().join(format!(
            "sre-space-{namespace}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        ));
        let file = std::fs::File::create(&log)?;
        let allowlist = allowlist_file(namespace, &default_allowlist(namespace))?;
        let child = Command::new(bin)
            .env("SRE_SPACE_WATCH_NAMESPACE", namespace)
            .env("SRE_SPACE_ALLOWLIST", &allowlist)
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the operator")?;
        Ok(Self { child, log })
    }

    /// SIGKILL, as a node failure or an OOM kill of the operator would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as the kubelet sends when a rolling upgrade stops a pod.
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        Ok(())
    }

    /// Waits for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the operator did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, to put in an error, without the
    /// terminal colours the operator's log has.
    pub fn log_tail(&self, lines: usize) -> String {
        let out = without_colours(&self.output());
        let all: Vec<&str> = out.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the log holds `line`; fails when the process exits
    /// first or `timeout` passes, with the end of its log.
    async fn wait_for_log(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.output().contains(line) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the operator exited ({status}) before saying \"{line}\"; the end of its log ({}):\n{}",
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the operator did not say \"{line}\" within {timeout:?}; the end of its log ({}):\n{}",
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `text` without ANSI escape sequences (ESC, `[`, parameters, a letter).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Deployment of simulated pods labelled as the example policy expects.
pub fn deployment(
    name: &str,
    replicas: i32,
    memory_limit: &str,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "strategy": { "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": { "app": name, "sre.space/protected": "true" } },
                "spec": { "containers": [{
                    "name": "app",
                    "image": format!("registry.local/{name}:1"),
                    "args": ["--port=8080"],
                    "resources": { "limits": { "memory": memory_limit }, "requests": { "memory": "16Mi" } }
                }] }
            }
        }
    }))
    .expect("a valid Deployment")
}

/// The example policy with `edit` applied, created in `ns`.
pub async fn create_policy(
    client: &Client,
    ns: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<sre_space::crd::RemediationPolicy> {
    let text = std::fs::read_to_string(repo_dir().join("examples/remediation-policy.yaml"))?;
    let mut value: serde_json::Value = serde_yaml::from_str(&text)?;
    edit(&mut value);
    let policy: sre_space::crd::RemediationPolicy = serde_json::from_value(value)?;
    Ok(Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await?)
}

/// Waits until a Deployment has `n` running, ready pods of its newest
/// template and none going away.
pub async fn wait_ready(
    client: &Client,
    ns: &str,
    name: &str,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("app={name}"));
    let waited = wait_until(timeout, &format!("{n} ready pods of {name}"), || async {
        let list = pods.list(&lp).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| is_ready(p))
            .count();
        Ok(ready == n && list.items.len() == n)
    })
    .await;
    if let Err(e) = waited {
        // Say what the pods were doing, so a timeout can be understood.
        let seen = match pods.list(&lp).await {
            Ok(list) => list
                .items
                .iter()
                .map(|p| {
                    let status = p.status.clone().unwrap_or_default();
                    format!(
                        "{} node={} phase={} ready={} deleting={}",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .unwrap_or("-"),
                        status.phase.as_deref().unwrap_or("-"),
                        is_ready(p),
                        p.metadata.deletion_timestamp.is_some(),
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(list_error) => format!("(listing the pods failed: {list_error})"),
        };
        return Err(e.context(format!("pods of {name}: {seen}")));
    }
    Ok(())
}

fn is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The name the operator gives the incident of a Deployment's signal: the
/// operator's own function, so tests never spell the hash out.
pub fn incident_of(deployment: &str, signal: sre_space::crd::SignalKind) -> String {
    sre_space::workload::incident_name(
        &sre_space::crd::WorkloadRef {
            kind: sre_space::crd::WorkloadKind::Deployment,
            name: deployment.into(),
        },
        signal,
    )
}

/// Waits for an incident to satisfy `check` and returns it.
pub async fn wait_incident(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&sre_space::crd::Incident) -> bool,
) -> Result<sre_space::crd::Incident> {
    let api: Api<sre_space::crd::Incident> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let inc = api.get_opt(name).await?;
        if let Some(inc) = inc.as_ref().filter(|i| check(i)) {
            return Ok(inc.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            let status = inc
                .and_then(|i| i.status)
                .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
            bail!(
                "timed out after {timeout:?} waiting for {what}; incident {ns}/{name} is now: {}",
                status.unwrap_or_else(|| "absent".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// The real node (`make test NODE=real`, docs/real-node.md): a kubelet with
// containerd beside the kwok nodes, where containers really run, really
// exceed their memory and really fail their probes.

/// The test workload's image (e2e/build/workload), which `cluster.sh up`
/// imports into the real node's containerd; there is no registry to pull
/// from, so pods use it with `imagePullPolicy: Never`.
pub const WORKLOAD_IMAGE: &str = "sre.space/workload:e2e";

/// The real node's name from `SRE_SPACE_REAL_NODE`, which
/// `cluster.sh env` sets when the real node runs. An error, not a skip,
/// when it is missing: the real-node tests are compiled only when asked for.
pub fn real_node() -> Result<String> {
    match std::env::var("SRE_SPACE_REAL_NODE") {
        Ok(node) if !node.is_empty() => Ok(node),
        _ => bail!(
            "SRE_SPACE_REAL_NODE is not set, so the real node is not up and the real-node tests \
             cannot run: use `make test NODE=real`, or `make cluster-up NODE=real` then \
             `eval \"$(e2e/cluster/cluster.sh env)\"`"
        ),
    }
}

/// A pod spec for the real node running the workload with `args`: the
/// node's label as nodeSelector and a toleration of its taint, which no
/// other test pod has.
pub fn real_node_pod_spec(args: &[&str], memory_limit: Option<&str>) -> serde_json::Value {
    let mut container = serde_json::json!({
        "name": "app",
        "image": WORKLOAD_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
    });
    if let Some(limit) = memory_limit {
        container["resources"] = serde_json::json!({
            "limits": { "memory": limit },
            "requests": { "memory": limit }
        });
    }
    serde_json::json!({
        "nodeSelector": { "sre.space/node": "real" },
        "tolerations": [{
            "key": "sre.space/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"
        }],
        "terminationGracePeriodSeconds": 5,
        "containers": [container]
    })
}

/// The real-node OOM story's start: a policy that raises memory by at
/// least 64Mi (cooldown 5 s, verification 15 s), and Deployment `hungry`
/// on the real node, which needs 64 MiB under a 32Mi limit, so the kernel
/// kills it again and again until the limit is raised (to 96Mi).
pub async fn start_oom_story(client: &Client, ns: &str) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    create_policy(client, ns, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 15.into();
        v["spec"]["actions"][0]["memory"] =
            serde_json::json!({ "increasePercent": 50, "minIncrease": "64Mi", "max": "512Mi" });
    })
    .await?;
    let mut spec = real_node_pod_spec(&["alloc", "64"], Some("32Mi"));
    spec["containers"][0]["resources"]["requests"]["memory"] = "16Mi".into();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "hungry" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "hungry" } },
            "template": { "metadata": { "labels": { "app": "hungry", "sre.space/protected": "true" } }, "spec": spec }
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    Ok(())
}

/// A pod on the real node named `name`, running the workload with `args`.
pub fn real_node_pod(
    name: &str,
    args: &[&str],
    memory_limit: Option<&str>,
) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": real_node_pod_spec(args, memory_limit)
    }))
    .expect("a valid Pod")
}

/// Waits for a pod to satisfy `check` and returns it; on timeout, the error
/// shows the pod's status.
pub async fn wait_pod(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
) -> Result<k8s_openapi::api::core::v1::Pod> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pod = api.get_opt(name).await?;
        if let Some(pod) = pod.as_ref().filter(|p| check(p)) {
            return Ok(pod.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            let status = pod
                .and_then(|p| p.status)
                .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
            bail!(
                "timed out after {timeout:?} waiting for {what}; pod {ns}/{name} is now: {}",
                status.unwrap_or_else(|| "absent".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One plain HTTP/1.1 request over TCP, as a user's curl would send it;
/// returns the status code and the body.
pub async fn http_request(addr: &str, method: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer within 5s"))??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {response}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status code in: {head}"))?;
    Ok((code, body.to_string()))
}

/// Waits until an incident is Resolved and returns it.
pub async fn wait_resolved(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<sre_space::crd::Incident> {
    wait_incident(client, ns, name, timeout, "Resolved", |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == sre_space::crd::Phase::Resolved)
    })
    .await
}

/// A process's resident memory in KiB, from /proc (0 when unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Serves a test server's routes on a free loopback port until the test
/// ends; returns its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_operator_log_line_loses_its_colours_and_keeps_its_words() {
        let line = "\u{1b}[2m2026-12-02T05:01:43Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m sre-space operator started \u{1b}[3mnamespace\u{1b}[0m\u{1b}[2m=\u{1b}[0me2e-x";
        assert_eq!(
            super::without_colours(line),
            "2026-12-02T05:01:43Z  INFO sre-space operator started namespace=e2e-x"
        );
    }
}
