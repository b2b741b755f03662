//! Where a changing action goes: a patch to the workload, or, when Argo CD
//! or Flux manages the field it changes, a pull request against the file
//! the policy names, since a patch would be reverted at the controller's
//! next sync. `route` is pure; the caller reads the workload first.
//!
//! | action | not managed | managed, file names the value | managed, no file or key |
//! |---|---|---|---|
//! | RestartPod (eviction) | evict | evict | evict |
//! | RolloutRestart | patch | not taken, ladder goes on | not taken, ladder goes on |
//! | RaiseMemoryLimit | patch (pull request when the policy names a file) | pull request | escalate `ManagedByGitOps` |
//! | Scale | patch | pull request (`replicasKey` / manifest `spec.replicas`) | escalate `ManagedByGitOps` |
//! | Rollback | patch | pull request (`imageKey` / the container's `image`) | escalate `ManagedByGitOps` |
//!
//! A rollout restart writes an annotation into the pod template: for a
//! GitOps controller that is drift (Argo CD shows the application
//! OutOfSync and self-heal removes it, rolling the pods once more), and no
//! file holds it, so it is not taken. Evicting a pod changes no spec and is
//! always fine.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::crd::{ActionType, GitOpsTarget, WorkloadRef};
use crate::workload::managed::{Field, Managed};
use crate::workload::replicasets_of;

/// Where in the GitOps file the value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A dotted key of a values file (`web.replicas`).
    Key(String),
    /// `resources.limits.memory` of the named container of a manifest.
    ContainerMemory(String),
    /// `image` of the named container of a manifest.
    ContainerImage(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k) => f.write_str(k),
            Self::ContainerMemory(c) => write!(f, "{c}: resources.limits.memory"),
            Self::ContainerImage(c) => write!(f, "{c}: image"),
        }
    }
}

/// What the Fixer does with a changing action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Change the workload through the API, as always.
    Patch,
    /// Propose the change in the policy's GitOps file. `why` is set when a
    /// GitOps controller's ownership chose it (rather than the policy).
    PullRequest { at: Location, why: Option<String> },
    /// A GitOps controller manages the field and the policy names no file
    /// (or no key) for it: the action is not taken and people are told.
    Escalate(String),
    /// A change that no file holds, to a managed workload: not taken; the
    /// ladder goes on.
    NotTaken(String),
}

/// The field an action changes, for the ownership check; None for actions
/// that change no spec.
pub fn field_of(action: ActionType, container: Option<&str>) -> Option<Field> {
    let container = container.unwrap_or_default().to_string();
    match action {
        ActionType::RestartPod | ActionType::Escalate => None,
        ActionType::RolloutRestart => Some(Field::Template),
        ActionType::Scale => Some(Field::Replicas),
        ActionType::Rollback => Some(Field::Image(container)),
        ActionType::RaiseMemoryLimit => Some(Field::MemoryLimit(container)),
    }
}

/// Where the file holds the value an action changes, if it does.
pub fn location(action: ActionType, gitops: &GitOpsTarget) -> Option<Location> {
    let container = gitops.container.clone();
    match action {
        ActionType::RaiseMemoryLimit => gitops
            .values_key
            .clone()
            .map(Location::Key)
            .or(container.map(Location::ContainerMemory)),
        ActionType::Scale => gitops
            .replicas_key
            .clone()
            .map(Location::Key)
            .or(container.map(|_| Location::Key("spec.replicas".into()))),
        ActionType::Rollback => gitops
            .image_key
            .clone()
            .map(Location::Key)
            .or(container.map(Location::ContainerImage)),
        _ => None,
    }
}

/// What the policy must name for the action's pull request.
fn needed(action: ActionType) -> &'static str {
    match action {
        ActionType::Scale => {
            "spec.github.gitops with replicasKey (a values file) or container (a manifest)"
        }
        ActionType::Rollback => {
            "spec.github.gitops with imageKey (a values file) or container (a manifest)"
        }
        _ => "spec.github.gitops with valuesKey (a values file) or container (a manifest)",
    }
}

/// Routes `action` on `target`, given who manages the field it changes and
/// the policy's GitOps file.
pub fn route(
    action: ActionType,
    target: &WorkloadRef,
    managed: Option<&Managed>,
    gitops: Option<&GitOpsTarget>,
) -> Route {
    let at = gitops.and_then(|g| location(action, g));
    let Some(m) = managed else {
        // Not managed: only the memory raise goes to Git, where the policy
        // says the limit lives.
        return match (action, at) {
            (ActionType::RaiseMemoryLimit, Some(at)) => Route::PullRequest { at, why: None },
            _ => Route::Patch,
        };
    };
    let reverted = format!(
        "{target} is managed by {} ({}): a {} patch would be reverted at its next sync",
        m.controller,
        m.evidence,
        action.as_str()
    );
    match (action, at) {
        (ActionType::RestartPod | ActionType::Escalate, _) => Route::Patch,
        (ActionType::RolloutRestart, _) => Route::NotTaken(format!(
            "{reverted}; a rollout restart's pod-template annotation is drift that no file holds, \
             so it is not taken (RestartPod evicts pods without changing the spec)"
        )),
        (_, Some(at)) => Route::PullRequest {
            why: Some(format!(
                "{reverted}, so the change is proposed in Git instead"
            )),
            at,
        },
        (_, None) => Route::Escalate(format!(
            "{reverted}, and the policy names no file for it: set {} to have SRE-Space propose \
             the change as a pull request",
            needed(action)
        )),
    }
}

/// A rollback as a change of image: the container whose image differs
/// between the Deployment's current and previous ReplicaSet (else the
/// first), its current image and the previous one. None when there is no
/// previous revision.
pub async fn rollback_image(
    client: &Client,
    namespace: &str,
    target: &WorkloadRef,
) -> crate::Result<Option<(String, String, String)>> {
    let all = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let owned = replicasets_of(&target.name, all.items);
    let [current, previous, ..] = owned.as_slice() else {
        return Ok(None);
    };
    Ok(image_change(current, previous))
}

fn containers(rs: &ReplicaSet) -> Vec<(String, String)> {
    rs.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// The container whose image a rollback from `current` to `previous`
/// changes: (name, from, to).
pub fn image_change(
    current: &ReplicaSet,
    previous: &ReplicaSet,
) -> Option<(String, String, String)> {
    let (now, before) = (containers(current), containers(previous));
    let changed = now
        .iter()
        .find(|(n, i)| before.iter().any(|(m, j)| m == n && j != i))
        .or(now.first())?;
    let to = before
        .iter()
        .find(|(m, _)| *m == changed.0)
        .map(|(_, j)| j.clone())?;
    Some((changed.0.clone(), changed.1.clone(), to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;
    use crate::workload::managed::GitOpsController;

    fn web() -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        }
    }

    fn argo() -> Managed {
        Managed {
            controller: GitOpsController::ArgoCd,
            evidence: "annotation argocd.argoproj.io/tracking-id=shop:apps/Deployment:shop/web"
                .into(),
        }
    }

    fn values_file(replicas: Option<&str>, image: Option<&str>) -> GitOpsTarget {
        GitOpsTarget {
            path: "apps/shop/values.yaml".into(),
            base_branch: "main".into(),
            values_key: Some("web.resources.limits.memory".into()),
            container: None,
            replicas_key: replicas.map(Into::into),
            image_key: image.map(Into::into),
        }
    }

    #[test]
    fn a_managed_workloads_changes_become_pull_requests_on_the_keys_the_policy_names() {
        let file = values_file(Some("web.replicas"), Some("web.image"));
        for (action, key) in [
            (ActionType::Scale, "web.replicas"),
            (ActionType::Rollback, "web.image"),
            (ActionType::RaiseMemoryLimit, "web.resources.limits.memory"),
        ] {
            let Route::PullRequest { at, why } = route(action, &web(), Some(&argo()), Some(&file))
            else {
                panic!("{action:?}: a pull request");
            };
            assert_eq!(at, Location::Key(key.into()));
            let why = why.expect("says why");
            assert!(
                why.starts_with("Deployment/web is managed by Argo CD (annotation argocd.argoproj.io/tracking-id="),
                "{why}"
            );
            assert!(why.contains("would be reverted"), "{why}");
        }
    }

    #[test]
    fn a_manifest_names_replicas_and_image_through_its_container() {
        let manifest = GitOpsTarget {
            values_key: None,
            container: Some("app".into()),
            ..values_file(None, None)
        };
        assert_eq!(
            location(ActionType::Scale, &manifest),
            Some(Location::Key("spec.replicas".into()))
        );
        assert_eq!(
            location(ActionType::Rollback, &manifest),
            Some(Location::ContainerImage("app".into()))
        );
        assert_eq!(
            location(ActionType::RaiseMemoryLimit, &manifest),
            Some(Location::ContainerMemory("app".into()))
        );
    }

    #[test]
    fn a_managed_workload_without_a_file_for_the_change_escalates() {
        let Route::Escalate(why) = route(ActionType::Scale, &web(), Some(&argo()), None) else {
            panic!("escalates");
        };
        assert!(why.contains("managed by Argo CD"), "{why}");
        assert!(why.contains("replicasKey"), "says what to configure: {why}");
        // A file for the memory limit only: a rollback has nowhere to go.
        let Route::Escalate(why) = route(
            ActionType::Rollback,
            &web(),
            Some(&argo()),
            Some(&values_file(None, None)),
        ) else {
            panic!("escalates");
        };
        assert!(why.contains("imageKey"), "{why}");
    }

    #[test]
    fn an_unmanaged_workload_is_patched_as_before() {
        let file = values_file(Some("web.replicas"), Some("web.image"));
        for action in [
            ActionType::Scale,
            ActionType::Rollback,
            ActionType::RolloutRestart,
            ActionType::RestartPod,
        ] {
            assert_eq!(route(action, &web(), None, Some(&file)), Route::Patch);
            assert_eq!(route(action, &web(), None, None), Route::Patch);
        }
        assert_eq!(
            route(ActionType::RaiseMemoryLimit, &web(), None, None),
            Route::Patch
        );
        // The memory raise keeps going to Git where the policy says so.
        assert_eq!(
            route(ActionType::RaiseMemoryLimit, &web(), None, Some(&file)),
            Route::PullRequest {
                at: Location::Key("web.resources.limits.memory".into()),
                why: None
            }
        );
    }

    #[test]
    fn a_managed_workloads_pods_are_evicted_but_never_rollout_restarted() {
        assert_eq!(
            route(ActionType::RestartPod, &web(), Some(&argo()), None),
            Route::Patch
        );
        let Route::NotTaken(why) = route(ActionType::RolloutRestart, &web(), Some(&argo()), None)
        else {
            panic!("not taken");
        };
        assert!(why.contains("drift"), "{why}");
    }

    fn rs(name: &str, revision: &str, images: &[(&str, &str)]) -> ReplicaSet {
        let containers: Vec<_> = images
            .iter()
            .map(|(n, i)| serde_json::json!({ "name": n, "image": i }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "annotations": { "deployment.kubernetes.io/revision": revision } },
            "spec": { "selector": {}, "template": { "spec": { "containers": containers } } }
        }))
        .unwrap()
    }

    #[test]
    fn a_rollback_puts_back_the_image_that_changed() {
        let now = rs("web-2", "2", &[("sidecar", "proxy:1"), ("app", "web:2")]);
        let before = rs("web-1", "1", &[("sidecar", "proxy:1"), ("app", "web:1")]);
        assert_eq!(
            image_change(&now, &before),
            Some(("app".into(), "web:2".into(), "web:1".into()))
        );
    }
}
