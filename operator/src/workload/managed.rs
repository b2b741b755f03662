//! Whether a GitOps controller (Argo CD or Flux) manages a workload, and so
//! would revert a patch to it. Read from what the controllers leave on the
//! objects they apply: their tracking annotations and labels, and their
//! field managers in `metadata.managedFields`, which name the fields each
//! controller applies. A tracked workload is managed as a whole even where
//! its managed fields show another writer owning a field: that is exactly
//! what drift looks like (a `kubectl set image` takes the image over), and
//! the controller's next sync reverts it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::Api;
use serde_json::Value;

use crate::crd::{WorkloadKind, WorkloadRef};

/// The annotation Argo CD's annotation tracking writes
/// (`application.resourceTrackingMethod: annotation` or `annotation+label`).
pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Flux's kustomize-controller labels what it applies with its
/// Kustomization's name and namespace.
pub const FLUX_KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const FLUX_KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Flux's helm-controller labels what it installs with its HelmRelease's.
pub const FLUX_HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const FLUX_HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";

/// The field managers of the GitOps controllers, and whose each is.
const GITOPS_MANAGERS: [(&str, GitOpsController); 4] = [
    ("argocd-controller", GitOpsController::ArgoCd),
    ("argocd-application-controller", GitOpsController::ArgoCd),
    ("kustomize-controller", GitOpsController::Flux),
    ("helm-controller", GitOpsController::Flux),
];

/// The GitOps controllers the operator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitOpsController {
    ArgoCd,
    Flux,
}

impl GitOpsController {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ArgoCd => "Argo CD",
            Self::Flux => "Flux",
        }
    }
}

impl std::fmt::Display for GitOpsController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who manages a workload, and what says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Managed {
    pub controller: GitOpsController,
    /// The label, annotation or field manager that shows it, for people.
    pub evidence: String,
}

/// The part of a workload an action changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The pod template as a whole (a rollout restart's annotation).
    Template,
    /// `spec.replicas`.
    Replicas,
    /// The image of a container of the pod template.
    Image(String),
    /// `resources.limits.memory` of a container of the pod template.
    MemoryLimit(String),
}

impl Field {
    /// The `fieldsV1` path of the field, with `None` for the container's
    /// key (`k:{"name":...}`).
    fn path(&self) -> Vec<Option<&str>> {
        let template = [Some("f:spec"), Some("f:template")];
        let container = |rest: &[&'static str]| {
            let mut p = template.to_vec();
            p.extend([Some("f:spec"), Some("f:containers"), None]);
            p.extend(rest.iter().map(|s| Some(*s)));
            p
        };
        match self {
            Self::Template => template.to_vec(),
            Self::Replicas => vec![Some("f:spec"), Some("f:replicas")],
            Self::Image(_) => container(&["f:image"]),
            Self::MemoryLimit(_) => container(&["f:resources", "f:limits", "f:memory"]),
        }
    }

    fn container(&self) -> Option<&str> {
        match self {
            Self::Image(c) | Self::MemoryLimit(c) => Some(c),
            _ => None,
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Template => f.write_str("spec.template"),
            Self::Replicas => f.write_str("spec.replicas"),
            Self::Image(c) => write!(f, "the image of container {c}"),
            Self::MemoryLimit(c) => write!(f, "resources.limits.memory of container {c}"),
        }
    }
}

/// How Argo CD is configured to track what it applies.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "GitOps")]
pub struct DetectionOptions {
    /// The label Argo CD tracks its resources by, when its
    /// `application.resourceTrackingMethod` is `label` or `annotation+label`
    /// (its `application.instanceLabelKey`, by default
    /// `app.kubernetes.io/instance`). Unset: Argo CD is recognised by its
    /// tracking annotation and field managers only, because Helm sets
    /// `app.kubernetes.io/instance` on everything it installs.
    #[arg(long, env = "SRE_SPACE_ARGOCD_INSTANCE_LABEL", value_name = "LABEL")]
    pub argocd_instance_label: Option<String>,
}

/// The fields of a managed-fields entry, as a tree.
fn owns(fields: &Value, path: &[Option<&str>], container: Option<&str>) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let Some(map) = fields.as_object() else {
        return false;
    };
    match first {
        Some(key) => map.get(*key).is_some_and(|v| owns(v, rest, container)),
        // A list item keyed by its name: `k:{"name":"app"}`.
        None => map.iter().any(|(k, v)| {
            k.strip_prefix("k:")
                .and_then(|json| serde_json::from_str::<Value>(json).ok())
                .is_some_and(|key| key.get("name").and_then(Value::as_str) == container)
                && owns(v, rest, container)
        }),
    }
}

fn gitops_manager(entry: &ManagedFieldsEntry) -> Option<(&str, GitOpsController)> {
    let name = entry.manager.as_deref()?;
    GITOPS_MANAGERS
        .iter()
        .find(|(m, _)| *m == name)
        .map(|(m, c)| (*m, *c))
}

/// What the tracking labels and annotations say.
fn tracked(meta: &ObjectMeta, options: &DetectionOptions) -> Option<Managed> {
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some(id) = annotations.get(ARGOCD_TRACKING_ID) {
        return Some(Managed {
            controller: GitOpsController::ArgoCd,
            evidence: format!("annotation {ARGOCD_TRACKING_ID}={id}"),
        });
    }
    if let Some(key) = options
        .argocd_instance_label
        .as_deref()
        .filter(|k| !k.is_empty())
        && let Some(app) = labels.get(key)
    {
        return Some(Managed {
            controller: GitOpsController::ArgoCd,
            evidence: format!("label {key}={app} (Argo CD's label tracking)"),
        });
    }
    for (name, namespace, kind) in [
        (
            FLUX_KUSTOMIZE_NAME,
            FLUX_KUSTOMIZE_NAMESPACE,
            "Kustomization",
        ),
        (FLUX_HELM_NAME, FLUX_HELM_NAMESPACE, "HelmRelease"),
    ] {
        if let (Some(n), Some(ns)) = (labels.get(name), labels.get(namespace)) {
            return Some(Managed {
                controller: GitOpsController::Flux,
                evidence: format!("labels {name}={n}, {namespace}={ns} (Flux {kind} {ns}/{n})"),
            });
        }
    }
    None
}

/// Whether a GitOps controller manages `field` of the object with this
/// metadata, and what says so; None when a change to it is not reverted.
///
/// A GitOps field manager that owns the field says so directly, with or
/// without tracking labels. Otherwise a tracking label or annotation says
/// the controller applies the object, and so the field.
pub fn managed_by(meta: &ObjectMeta, field: &Field, options: &DetectionOptions) -> Option<Managed> {
    let entries: Vec<(&str, GitOpsController, &ManagedFieldsEntry)> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|e| gitops_manager(e).map(|(m, c)| (m, c, e)))
        .collect();
    let path = field.path();
    if let Some((manager, controller, entry)) = entries.iter().find(|(_, _, e)| {
        e.fields_v1
            .as_ref()
            .is_some_and(|f| owns(&f.0, &path, field.container()))
    }) {
        let how = entry.operation.as_deref().unwrap_or("?");
        return Some(Managed {
            controller: *controller,
            evidence: format!("field manager {manager} ({how}) owns {field}"),
        });
    }
    tracked(meta, options)
}

/// The metadata of the workload an action changes, or None when it is gone
/// (or is a kind no GitOps check applies to).
pub async fn workload_meta(
    client: &kube::Client,
    namespace: &str,
    target: &WorkloadRef,
) -> crate::Result<Option<ObjectMeta>> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::Pod;
    let (c, ns, name) = (client.clone(), namespace, target.name.as_str());
    Ok(match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
        WorkloadKind::Job => Api::<Job>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
        WorkloadKind::CronJob => Api::<CronJob>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
        WorkloadKind::Pod => Api::<Pod>::namespaced(c, ns)
            .get_opt(name)
            .await?
            .map(|o| o.metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    fn no_label_tracking() -> DetectionOptions {
        DetectionOptions::default()
    }

    /// The managed fields Argo CD's server-side apply leaves on a
    /// Deployment whose manifest sets replicas, the image and the limit.
    fn argo_fields(manager: &str, with_replicas: bool) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "f:template": { "f:spec": { "f:containers": { "k:{\"name\":\"app\"}": {
                ".": {}, "f:name": {}, "f:image": {},
                "f:resources": { "f:limits": { "f:memory": {} } } } } } }
        });
        if with_replicas {
            spec["f:replicas"] = serde_json::json!({});
        }
        serde_json::json!([
            { "manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
              "fieldsType": "FieldsV1", "fieldsV1": { "f:status": { "f:replicas": {} } } },
            { "manager": manager, "operation": "Apply", "fieldsType": "FieldsV1",
              "fieldsV1": { "f:spec": spec } }
        ])
    }

    #[test]
    fn argo_cds_tracking_annotation_marks_every_field_managed() {
        let m = meta(serde_json::json!({ "name": "web", "annotations": {
            "argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web" } }));
        for field in [
            Field::Replicas,
            Field::Template,
            Field::Image("app".into()),
            Field::MemoryLimit("app".into()),
        ] {
            let managed = managed_by(&m, &field, &no_label_tracking()).expect("managed");
            assert_eq!(managed.controller, GitOpsController::ArgoCd);
            assert_eq!(
                managed.evidence,
                "annotation argocd.argoproj.io/tracking-id=shop:apps/Deployment:shop/web"
            );
        }
    }

    #[test]
    fn the_instance_label_means_argo_cd_only_when_label_tracking_is_configured() {
        // What `helm install` leaves on everything it installs.
        let helm = meta(serde_json::json!({ "name": "web", "labels": {
            "app.kubernetes.io/instance": "shop", "app.kubernetes.io/managed-by": "Helm" },
            "annotations": { "meta.helm.sh/release-name": "shop" } }));
        assert_eq!(
            managed_by(&helm, &Field::Replicas, &no_label_tracking()),
            None
        );
        let label_tracking = DetectionOptions {
            argocd_instance_label: Some("app.kubernetes.io/instance".into()),
        };
        let managed = managed_by(&helm, &Field::Replicas, &label_tracking).expect("managed");
        assert_eq!(managed.controller, GitOpsController::ArgoCd);
        assert!(
            managed
                .evidence
                .contains("label app.kubernetes.io/instance=shop"),
            "{}",
            managed.evidence
        );
    }

    #[test]
    fn fluxs_kustomization_and_helmrelease_labels_mark_it_managed_by_flux() {
        let kustomized = meta(serde_json::json!({ "name": "web", "labels": {
            "kustomize.toolkit.fluxcd.io/name": "apps",
            "kustomize.toolkit.fluxcd.io/namespace": "flux-system" } }));
        let managed = managed_by(&kustomized, &Field::Replicas, &no_label_tracking()).unwrap();
        assert_eq!(managed.controller, GitOpsController::Flux);
        assert!(
            managed
                .evidence
                .contains("Flux Kustomization flux-system/apps"),
            "{}",
            managed.evidence
        );
        let released = meta(serde_json::json!({ "name": "web", "labels": {
            "helm.toolkit.fluxcd.io/name": "web",
            "helm.toolkit.fluxcd.io/namespace": "shop" } }));
        let managed = managed_by(&released, &Field::Image("app".into()), &no_label_tracking())
            .expect("managed");
        assert!(
            managed.evidence.contains("Flux HelmRelease shop/web"),
            "{}",
            managed.evidence
        );
        // Half of the pair is not Flux's tracking.
        let half = meta(serde_json::json!({ "name": "web", "labels": {
            "kustomize.toolkit.fluxcd.io/name": "apps" } }));
        assert_eq!(
            managed_by(&half, &Field::Replicas, &no_label_tracking()),
            None
        );
    }

    #[test]
    fn a_gitops_field_manager_that_owns_the_field_marks_it_managed_without_labels() {
        for (manager, controller) in [
            ("argocd-controller", GitOpsController::ArgoCd),
            ("argocd-application-controller", GitOpsController::ArgoCd),
            ("kustomize-controller", GitOpsController::Flux),
            ("helm-controller", GitOpsController::Flux),
        ] {
            let m = meta(serde_json::json!({ "name": "web",
                "managedFields": argo_fields(manager, true) }));
            let replicas = managed_by(&m, &Field::Replicas, &no_label_tracking()).unwrap();
            assert_eq!(replicas.controller, controller);
            assert_eq!(
                replicas.evidence,
                format!("field manager {manager} (Apply) owns spec.replicas")
            );
            let memory =
                managed_by(&m, &Field::MemoryLimit("app".into()), &no_label_tracking()).unwrap();
            assert!(
                memory
                    .evidence
                    .contains("owns resources.limits.memory of container app")
            );
            // Another container of the template is not in the manifest.
            assert_eq!(
                managed_by(&m, &Field::Image("sidecar".into()), &no_label_tracking()),
                None
            );
        }
    }

    #[test]
    fn a_tracked_workload_stays_managed_where_another_writer_took_a_field_over() {
        // Someone scaled it by hand: the replicas are no longer Argo CD's
        // field, and its next sync puts Git's count back all the same.
        let m = meta(serde_json::json!({ "name": "web",
            "annotations": { "argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web" },
            "managedFields": argo_fields("argocd-controller", false) }));
        let managed = managed_by(&m, &Field::Replicas, &no_label_tracking()).expect("managed");
        assert!(
            managed
                .evidence
                .starts_with("annotation argocd.argoproj.io/tracking-id"),
            "{}",
            managed.evidence
        );
        // Without any tracking, a field the controller does not own is not
        // its to revert.
        let untracked = meta(serde_json::json!({ "name": "web",
            "managedFields": argo_fields("argocd-controller", false) }));
        assert_eq!(
            managed_by(&untracked, &Field::Replicas, &no_label_tracking()),
            None
        );
    }

    #[test]
    fn a_workload_applied_by_kubectl_or_helm_is_not_managed() {
        let m = meta(serde_json::json!({ "name": "web",
            "labels": { "app": "web", "app.kubernetes.io/managed-by": "Helm" },
            "managedFields": argo_fields("kubectl-client-side-apply", true) }));
        for field in [
            Field::Replicas,
            Field::Template,
            Field::Image("app".into()),
            Field::MemoryLimit("app".into()),
        ] {
            assert_eq!(managed_by(&m, &field, &no_label_tracking()), None);
        }
        let helm = meta(serde_json::json!({ "name": "web",
            "managedFields": argo_fields("helm", true) }));
        assert_eq!(
            managed_by(&helm, &Field::Replicas, &no_label_tracking()),
            None
        );
    }
}
