//! Helpers shared by the end-to-end tests, which run against the local
//! cluster started by `e2e/cluster/cluster.sh up` (see `make test`).

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
    if !path.contains(".local/cluster") && std::env::var("SRE_SPACE_E2E_ANY_CLUSTER").is_err() {
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
