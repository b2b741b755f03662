//! One test's world on the local cluster: a namespace of its own (unique
//! name), the example policy, Deployments, and operators watching the
//! namespace; the namespace is deleted at the end, or when a failed test
//! drops its scenario.
//!
//! ```ignore
//! let s = Scenario::builder("e2e-oom")
//!     .policy(|v| fast(v, 5, 5))
//!     .deploy("quote", 2, "64Mi")
//!     .start()
//!     .await?;
//! let _operator = s.operator(&[]).await?;
//! // ... break something, wait for the incident ...
//! s.cleanup().await
//! ```
//!
//! The operator is the test's own value, not the scenario's: tests kill,
//! restart and read the logs of theirs, and many start it only after
//! set-up of their own (a bare pod, a Service, a budget).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use sre_space::crd::{Condition, ConditionStatus, Incident, Phase, RemediationPolicy};

use crate::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, unique,
    wait_incident, wait_ready, wait_until,
};

/// How long a scenario waits for pods, incidents and conditions unless a
/// test says otherwise.
pub const LONG: Duration = Duration::from_secs(90);

type PolicyEdit<'a> = Box<dyn FnOnce(&mut serde_json::Value) + 'a>;

/// What a scenario sets up before the test's own steps, in this order:
/// the namespace, the policy, then the Deployments (all created, then each
/// waited for until ready).
pub struct ScenarioBuilder<'a> {
    prefix: String,
    policy: Option<PolicyEdit<'a>>,
    deployments: Vec<(String, i32, String)>,
}

impl<'a> ScenarioBuilder<'a> {
    /// The example policy (examples/remediation-policy.yaml) with `edit`
    /// applied.
    pub fn policy(mut self, edit: impl FnOnce(&mut serde_json::Value) + 'a) -> Self {
        self.policy = Some(Box::new(edit));
        self
    }

    /// A Deployment of `replicas` simulated pods (see `crate::deployment`).
    pub fn deploy(mut self, name: &str, replicas: i32, memory_limit: &str) -> Self {
        self.deployments
            .push((name.into(), replicas, memory_limit.into()));
        self
    }

    /// One-pod Deployments with a 64Mi limit, one for each name.
    pub fn deploy_each(mut self, names: &[&str]) -> Self {
        for name in names {
            self = self.deploy(name, 1, "64Mi");
        }
        self
    }

    /// Creates all of it on the cluster and waits until the pods are ready.
    pub async fn start(self) -> Result<Scenario> {
        let client = client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, &self.prefix).await?;
        let s = Scenario {
            client,
            ns: Some(ns),
            id: unique(),
        };
        if let Some(edit) = self.policy {
            s.policy(edit).await?;
        }
        let deployments: Vec<(&str, i32, &str)> = self
            .deployments
            .iter()
            .map(|(n, r, m)| (n.as_str(), *r, m.as_str()))
            .collect();
        s.deploy_all(&deployments).await?;
        Ok(s)
    }
}

/// A test's namespace on the local cluster and what the test made in it.
pub struct Scenario {
    pub client: Client,
    /// `None` once `cleanup` deleted it.
    ns: Option<TestNamespace>,
    /// A suffix no other run uses, for names outside the namespace (Kafka
    /// topics, consumer groups).
    pub id: String,
}

impl Scenario {
    /// A scenario whose namespace is named `prefix` and a unique suffix.
    pub fn builder<'a>(prefix: &str) -> ScenarioBuilder<'a> {
        ScenarioBuilder {
            prefix: prefix.into(),
            policy: None,
            deployments: Vec::new(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.ns.as_ref().map(|ns| ns.name.as_str()).unwrap_or("")
    }

    /// Creates the example policy with `edit` applied.
    pub async fn policy(
        &self,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<RemediationPolicy> {
        create_policy(&self.client, self.name(), edit).await
    }

    /// Creates a Deployment of `replicas` pods and waits until they are ready.
    pub async fn deploy(&self, name: &str, replicas: i32, memory_limit: &str) -> Result<()> {
        self.deploy_all(&[(name, replicas, memory_limit)]).await
    }

    /// One-pod Deployments with a 64Mi limit, all created, then each waited
    /// for.
    pub async fn deploy_each(&self, names: &[&str]) -> Result<()> {
        let all: Vec<(&str, i32, &str)> = names.iter().map(|n| (*n, 1, "64Mi")).collect();
        self.deploy_all(&all).await
    }

    async fn deploy_all(&self, deployments: &[(&str, i32, &str)]) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.name());
        for (name, replicas, memory) in deployments {
            api.create(&PostParams::default(), &deployment(name, *replicas, memory))
                .await
                .with_context(|| format!("creating Deployment {name}"))?;
        }
        for (name, replicas, _) in deployments {
            wait_ready(&self.client, self.name(), name, *replicas as usize, LONG).await?;
        }
        Ok(())
    }

    /// Starts an operator watching this namespace, with `env` (see
    /// `Operator::start`), once it says it started.
    pub async fn operator(&self, env: &[(&str, &str)]) -> Result<Operator> {
        Operator::start(self.name(), env).await
    }

    /// The fault injector aimed at one of this namespace's Deployments.
    pub fn chaos(&self, deployment: &str) -> sre_chaos::Target {
        sre_chaos::Target {
            client: self.client.clone(),
            namespace: self.name().to_string(),
            deployment: deployment.into(),
            dry_run: false,
        }
    }

    pub async fn deployment(&self, name: &str) -> Result<Deployment> {
        Ok(
            Api::<Deployment>::namespaced(self.client.clone(), self.name())
                .get(name)
                .await?,
        )
    }

    /// The names of an app's pods that are not going away.
    pub async fn pod_names(&self, app: &str) -> Result<BTreeSet<String>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.name());
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?;
        Ok(list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect())
    }

    pub async fn incidents(&self) -> Result<Vec<Incident>> {
        Ok(
            Api::<Incident>::namespaced(self.client.clone(), self.name())
                .list(&ListParams::default())
                .await?
                .items,
        )
    }

    pub async fn incident_names(&self) -> Result<Vec<String>> {
        Ok(self
            .incidents()
            .await?
            .into_iter()
            .filter_map(|i| i.metadata.name)
            .collect())
    }

    /// Waits until the named incident is Resolved and returns it.
    pub async fn resolved(&self, incident: &str) -> Result<Incident> {
        wait_incident(&self.client, self.name(), incident, LONG, "Resolved", |i| {
            i.status.as_ref().map(|s| s.phase).unwrap_or_default() == Phase::Resolved
        })
        .await
    }

    /// Waits until the policy's condition `type_` has `status` and
    /// `reason`, and returns it; on timeout the error lists the policy's
    /// conditions.
    pub async fn policy_condition(
        &self,
        policy: &str,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        timeout: Duration,
    ) -> Result<Condition> {
        let api: Api<RemediationPolicy> = Api::namespaced(self.client.clone(), self.name());
        let current = || async {
            let p = api.get(policy).await?;
            anyhow::Ok(
                p.status
                    .unwrap_or_default()
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == type_),
            )
        };
        let waited = wait_until(
            timeout,
            &format!("{type_}={status:?} {reason} on policy {policy}"),
            || async {
                Ok(current()
                    .await?
                    .is_some_and(|c| c.status == status && c.reason == reason))
            },
        )
        .await;
        if let Err(e) = waited {
            let now = api.get(policy).await?.status.unwrap_or_default().conditions;
            return Err(e.context(format!("the policy's conditions are: {now:?}")));
        }
        current().await?.context("the condition went away")
    }

    /// Deletes the namespace (and with it all the test made there).
    pub async fn cleanup(mut self) -> Result<()> {
        match self.ns.take() {
            Some(ns) => ns.cleanup().await,
            None => Ok(()),
        }
    }
}

impl Drop for Scenario {
    /// A test that failed before `cleanup` leaves no namespace behind. Drop
    /// cannot wait on the client, so kubectl asks for the deletion and
    /// returns at once.
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            let deleted = crate::kubectl()
                .args(["delete", "namespace", &ns.name, "--wait=false"])
                .output();
            match deleted {
                Ok(out) if out.status.success() => {
                    eprintln!(
                        "deleted namespace {} of a test that did not finish",
                        ns.name
                    )
                }
                Ok(out) => eprintln!(
                    "namespace {} is left behind: {}",
                    ns.name,
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("namespace {} is left behind: {e}", ns.name),
            }
        }
    }
}
