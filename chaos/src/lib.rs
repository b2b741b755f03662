//! Fault injection for a Deployment's pods, as the kubelet would report the
//! faults. On the local cluster the nodes are simulated by kwok, so a fault
//! is written into the pod's status (or, for a bad rollout, into the pod
//! template, where a kwok stage turns it into a crash loop). Every fault can
//! be reverted.

pub mod load;
pub mod switch;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

/// The annotation that tells kwok to leave a pod's status alone while a
/// fault is written into it.
const KWOK_CUSTOM_STATUS: &str = "kwok.x-k8s.io/status";
/// The pod-template annotation our kwok stage turns into a crash loop.
pub const SIMULATE: &str = "sre.space/simulate";
/// Where a bad rollout keeps the template it replaced, for `revert`.
pub const SAVED_TEMPLATE: &str = "sre.space/chaos-saved-template";
const FIELD_MANAGER: &str = "sre-chaos";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Target(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a fault did, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub changed: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.changed {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// A Deployment to break.
pub struct Target {
    pub client: Client,
    pub namespace: String,
    pub deployment: String,
    /// Say what would change; change nothing.
    pub dry_run: bool,
}

impl Target {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn deployment(&self) -> Result<Deployment> {
        self.deployments()
            .get_opt(&self.deployment)
            .await?
            .ok_or_else(|| {
                Error::Target(format!(
                    "deployment {}/{} does not exist",
                    self.namespace, self.deployment
                ))
            })
    }

    /// The Deployment's running pods, oldest first.
    /// The deployment's running pods, oldest first.
    pub async fn running_pods(&self) -> Result<Vec<Pod>> {
        let d = self.deployment().await?;
        let labels: Vec<String> = d
            .spec
            .selector
            .match_labels
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut pods: Vec<Pod> = self
            .pods()
            .list(&ListParams::default().labels(&labels.join(",")))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if pods.is_empty() {
            return Err(Error::Target(format!(
                "deployment {} has no running pods",
                self.deployment
            )));
        }
        Ok(pods)
    }

    /// Writes a status into a pod as its kubelet would, with kwok told to
    /// keep out while it happens.
    async fn write_pod_status(&self, pod: &str, status: serde_json::Value) -> Result<()> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let annotate = |v: serde_json::Value| serde_json::json!({ "metadata": { "annotations": { KWOK_CUSTOM_STATUS: v } } });
        self.pods()
            .patch(pod, &pp, &Patch::Merge(annotate("custom".into())))
            .await?;
        self.pods()
            .patch_status(
                pod,
                &pp,
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
        // Handing the pod back lets kwok finish its deletion later; its
        // stages do not touch a running pod's status.
        self.pods()
            .patch(pod, &pp, &Patch::Merge(annotate(serde_json::Value::Null)))
            .await?;
        Ok(())
    }

    fn container_statuses(
        pod: &Pod,
        f: impl Fn(usize, &str, &str, i32) -> serde_json::Value,
    ) -> serde_json::Value {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        statuses
            .iter()
            .enumerate()
            .map(|(i, cs)| f(i, &cs.name, &cs.image, cs.restart_count))
            .collect()
    }

    /// `oom`: the kernel OOM-kills the first container of the oldest pod and
    /// the kubelet restarts it.
    pub async fn oom(&self) -> Result<Report> {
        self.oom_pod(self.running_pods().await?.remove(0)).await
    }

    /// `oom` on a given pod of the deployment.
    pub async fn oom_pod(&self, pod: Pod) -> Result<Report> {
        let name = pod.name_any();
        let now = Timestamp::now().to_string();
        let statuses = Self::container_statuses(&pod, |i, c, image, restarts| {
            let mut s = serde_json::json!({
                "name": c, "image": image, "imageID": "", "ready": true, "started": true,
                "restartCount": restarts, "state": { "running": { "startedAt": now } }
            });
            if i == 0 {
                s["restartCount"] = (restarts + 1).into();
                s["lastState"] = serde_json::json!({ "terminated": {
                    "exitCode": 137, "reason": "OOMKilled", "startedAt": now, "finishedAt": now
                } });
            }
            s
        });
        let container = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let line = format!(
            "pod {}/{name}: container {container} OOMKilled (exit code 137) and restarted",
            self.namespace
        );
        if !self.dry_run {
            self.write_pod_status(&name, serde_json::json!({ "containerStatuses": statuses }))
                .await?;
        }
        Ok(Report {
            changed: vec![line],
        })
    }

    /// `crashloop`: the oldest pod's containers crash repeatedly and the
    /// kubelet backs off restarting them.
    pub async fn crashloop(&self, restarts: i32) -> Result<Report> {
        self.crashloop_pod(self.running_pods().await?.remove(0), restarts)
            .await
    }

    /// `crashloop` on a given pod of the deployment.
    pub async fn crashloop_pod(&self, pod: Pod, restarts: i32) -> Result<Report> {
        self.crashloop_pod_saying(pod, restarts, None).await
    }

    /// `crashloop` on a given pod, whose crashed containers leave
    /// `message` as their termination message (what a process writes to
    /// /dev/termination-log before it exits).
    pub async fn crashloop_pod_saying(
        &self,
        pod: Pod,
        restarts: i32,
        message: Option<&str>,
    ) -> Result<Report> {
        let name = pod.name_any();
        let now = Timestamp::now().to_string();
        let statuses = Self::container_statuses(&pod, |_, c, image, _| {
            let mut terminated = serde_json::json!({ "exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now });
            if let Some(m) = message {
                terminated["message"] = m.into();
            }
            serde_json::json!({
                "name": c, "image": image, "imageID": "", "ready": false, "started": false,
                "restartCount": restarts,
                "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off restarting failed container" } },
                "lastState": { "terminated": terminated }
            })
        });
        let conditions = serde_json::json!([
            { "type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now },
            { "type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now }
        ]);
        let line = format!(
            "pod {}/{name}: containers crash-looping with {restarts} restarts",
            self.namespace
        );
        if !self.dry_run {
            self.write_pod_status(
                &name,
                serde_json::json!({ "containerStatuses": statuses, "conditions": conditions }),
            )
            .await?;
        }
        Ok(Report {
            changed: vec![line],
        })
    }

    /// `bad-rollout`: a rollout that adds a bad argument to the first
    /// container; its pods crash-loop. The replaced template is saved for
    /// `revert`.
    pub async fn bad_rollout(&self) -> Result<Report> {
        let d = self.deployment().await?;
        let template = d.spec.template.clone();
        let container = template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .ok_or_else(|| Error::Target("the deployment has no containers".into()))?;
        let mut args = container.args.clone().unwrap_or_default();
        args.push("--config=/etc/app/missing.yaml".into());
        let line = format!(
            "deployment {}/{}: container {} args set to {args:?} (the new pods crash)",
            self.namespace, self.deployment, container.name
        );
        if self.dry_run {
            return Ok(Report {
                changed: vec![line],
            });
        }
        let mut annotations: BTreeMap<String, String> =
            d.metadata.annotations.clone().unwrap_or_default();
        if !annotations.contains_key(SAVED_TEMPLATE) {
            annotations.insert(SAVED_TEMPLATE.into(), serde_json::to_string(&template)?);
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": annotations },
            "spec": { "template": {
                "metadata": { "annotations": { SIMULATE: "crashloop" } },
                "spec": { "containers": [{ "name": container.name, "args": args }] }
            } }
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.deployments()
            .patch(&self.deployment, &pp, &Patch::Strategic(patch))
            .await?;
        Ok(Report {
            changed: vec![line],
        })
    }

    /// `revert`: puts back a template a bad rollout replaced, and gives every
    /// pod with an injected status a fresh start (by deleting it, so its
    /// controller replaces it).
    pub async fn revert(&self) -> Result<Report> {
        let d = self.deployment().await?;
        let mut changed = Vec::new();
        let saved = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SAVED_TEMPLATE))
            .cloned();
        if let Some(saved) = saved {
            changed.push(format!(
                "deployment {}/{}: template restored",
                self.namespace, self.deployment
            ));
            if !self.dry_run {
                let template: serde_json::Value = serde_json::from_str(&saved)?;
                let escaped = SAVED_TEMPLATE.replace('~', "~0").replace('/', "~1");
                let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                    { "op": "replace", "path": "/spec/template", "value": template },
                    { "op": "remove", "path": format!("/metadata/annotations/{escaped}") }
                ]))?;
                self.deployments()
                    .patch(
                        &self.deployment,
                        &PatchParams::default(),
                        &Patch::<()>::Json(patch),
                    )
                    .await?;
            }
        }
        for pod in self.running_pods().await.unwrap_or_default() {
            let faulty = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .any(|cs| {
                    let waiting = cs
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref());
                    let last = cs
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.reason.as_deref());
                    waiting == Some("CrashLoopBackOff") || last == Some("OOMKilled")
                });
            if faulty {
                changed.push(format!(
                    "pod {}/{}: deleted for a fresh start",
                    self.namespace,
                    pod.name_any()
                ));
                if !self.dry_run {
                    self.pods()
                        .delete(&pod.name_any(), &Default::default())
                        .await?;
                }
            }
        }
        if changed.is_empty() {
            changed.push(format!(
                "deployment {}/{}: nothing to revert",
                self.namespace, self.deployment
            ));
        }
        Ok(Report { changed })
    }
}
