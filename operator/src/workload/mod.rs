//! Workloads: which one a pod belongs to, how a problem with it is named, and
//! which policy covers it.

mod lookup;
pub mod managed;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};

pub use lookup::Workloads;

use crate::crd::{
    LabelOperator, RemediationPolicy, SignalKind, WorkloadKind, WorkloadRef, WorkloadSelector,
};

/// Whether labels satisfy a selector. An empty selector matches nothing:
/// the API server refuses one, and this keeps a policy that slipped past from
/// covering a whole namespace.
pub fn selector_matches(selector: &WorkloadSelector, labels: &BTreeMap<String, String>) -> bool {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return false;
    }
    let labels_ok = selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().all(|r| {
        let value = labels.get(&r.key);
        match r.operator {
            LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
            LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    });
    labels_ok && expressions_ok
}

/// The policy that covers pods with these labels: among the namespace's
/// policies whose selector matches, the first by name, so the choice is
/// stable when several match.
pub fn covering_policy<'a>(
    policies: impl IntoIterator<Item = &'a RemediationPolicy>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a RemediationPolicy> {
    policies
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selector_matches(&p.spec.selector, labels))
        .min_by(|a, b| a.metadata.name.cmp(&b.metadata.name))
}

/// Stable identity of a problem: namespace, workload and signal kind.
pub fn fingerprint(namespace: &str, workload: &WorkloadRef, signal: SignalKind) -> String {
    let digest = Sha256::digest(format!("{namespace}/{workload}/{}", signal.as_str()));
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The longest Incident name: a DNS label. Events about an incident are
/// named `<incident>.<16 hex>` and GitOps branches `sre-space/<incident>-<id>`,
/// so the name must leave room for both.
pub const MAX_INCIDENT_NAME: usize = 63;

/// The Incident (and IncidentMemory) name for a problem: the workload's name,
/// its kind (unless a Deployment) and the signal, readable in `kubectl get
/// inc`, then a hash of kind, name and signal. The readable part may be cut
/// or lose characters a label cannot hold; the hash keeps two workloads from
/// ever sharing a name (a bare Pod `api` and a Deployment `api-pod`, or two
/// long names that differ only past the cut). A repeat of a problem finds
/// the same name.
pub fn incident_name(workload: &WorkloadRef, signal: SignalKind) -> String {
    let digest = Sha256::digest(format!(
        "{}/{}/{}",
        workload.kind.as_str(),
        workload.name,
        signal.as_str()
    ));
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let suffix = match workload.kind {
        WorkloadKind::Deployment => format!("-{}-{hash}", signal.as_str()),
        kind => format!("-{}-{}-{hash}", kind.as_str(), signal.as_str()),
    }
    .to_lowercase();
    // Object names may hold dots, a label may not.
    let readable: String = workload
        .name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_INCIDENT_NAME - suffix.len())
        .collect();
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        suffix.trim_start_matches('-').to_string()
    } else {
        format!("{readable}{suffix}")
    }
}

fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// The workload that owns a pod: Pod → ReplicaSet → Deployment, or a
/// StatefulSet, DaemonSet or Job directly; a pod without a controller is its
/// own workload. `replicaset` looks a ReplicaSet up by name in the pod's
/// namespace. Returns None for owners SRE-Space does not manage (a bare
/// ReplicaSet, a custom controller).
pub fn owner_of_pod<R: std::borrow::Borrow<ReplicaSet>>(
    pod: &Pod,
    replicaset: impl Fn(&str) -> Option<R>,
) -> Option<WorkloadRef> {
    let name = pod.metadata.name.clone()?;
    let Some(owner) = controller_of(pod.metadata.owner_references.as_ref()) else {
        return Some(WorkloadRef {
            kind: WorkloadKind::Pod,
            name,
        });
    };
    let kind = match owner.kind.as_str() {
        "ReplicaSet" => {
            let rs = replicaset(&owner.name)?;
            let deployment = controller_of(rs.borrow().metadata.owner_references.as_ref())?;
            return (deployment.kind == "Deployment").then(|| WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: deployment.name.clone(),
            });
        }
        "StatefulSet" => WorkloadKind::StatefulSet,
        "DaemonSet" => WorkloadKind::DaemonSet,
        "Job" => WorkloadKind::Job,
        _ => return None,
    };
    Some(WorkloadRef {
        kind,
        name: owner.name.clone(),
    })
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet.
pub fn revision(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")?
        .parse()
        .ok()
}

/// The ReplicaSets of a Deployment, newest revision first.
pub fn replicasets_of(
    deployment: &str,
    all: impl IntoIterator<Item = ReplicaSet>,
) -> Vec<ReplicaSet> {
    let mut owned: Vec<ReplicaSet> = all
        .into_iter()
        .filter(|rs| {
            controller_of(rs.metadata.owner_references.as_ref())
                .is_some_and(|o| o.kind == "Deployment" && o.name == deployment)
        })
        .collect();
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(rs).unwrap_or(0)));
    owned
}

/// The pod template of a workload, or None when the workload is gone.
pub async fn pod_template(
    client: &kube::Client,
    namespace: &str,
    target: &WorkloadRef,
) -> crate::Result<Option<k8s_openapi::api::core::v1::PodTemplateSpec>> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use kube::Api;
    let ns = namespace;
    let c = client.clone();
    Ok(match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .map(|d| d.spec.template),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .map(|d| d.spec.template),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .map(|d| d.spec.template),
        WorkloadKind::Job => Api::<Job>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .and_then(|d| d.spec.map(|s| s.template)),
        WorkloadKind::CronJob => Api::<CronJob>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .and_then(|c| c.spec.job_template.spec.map(|s| s.template)),
        WorkloadKind::Pod => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LabelRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_labels_and_expressions() {
        let selector = WorkloadSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![LabelRequirement {
                key: "tier".into(),
                operator: LabelOperator::NotIn,
                values: vec!["batch".into()],
            }],
        };
        assert!(selector_matches(&selector, &labels(&[("app", "web")])));
        assert!(selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "front")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "batch")])
        ));
        assert!(!selector_matches(&selector, &labels(&[("app", "api")])));
    }

    #[test]
    fn empty_selector_matches_nothing() {
        assert!(!selector_matches(
            &WorkloadSelector::default(),
            &labels(&[("app", "web")])
        ));
    }

    #[test]
    fn fingerprint_separates_workloads_and_signals_but_not_pods() {
        let web = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        };
        let api = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
        };
        let a = fingerprint("shop", &web, SignalKind::OOMKilled);
        assert_eq!(a, fingerprint("shop", &web, SignalKind::OOMKilled));
        assert_ne!(a, fingerprint("shop", &api, SignalKind::OOMKilled));
        assert_ne!(a, fingerprint("shop", &web, SignalKind::CrashLoopBackOff));
        assert_ne!(a, fingerprint("other", &web, SignalKind::OOMKilled));
        assert!(
            incident_name(&web, SignalKind::OOMKilled).starts_with("web-oomkilled-"),
            "{}",
            incident_name(&web, SignalKind::OOMKilled)
        );
        let sts = WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: "db".into(),
        };
        assert!(
            incident_name(&sts, SignalKind::CrashLoopBackOff)
                .starts_with("db-statefulset-crashloopbackoff-")
        );
    }

    /// A DNS label: what every Kubernetes object name (and label value)
    /// accepts.
    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn a_bare_pod_and_a_deployment_named_like_it_get_different_incidents() {
        let pod = WorkloadRef {
            kind: WorkloadKind::Pod,
            name: "api".into(),
        };
        let deployment = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "api-pod".into(),
        };
        let (a, b) = (
            incident_name(&pod, SignalKind::OOMKilled),
            incident_name(&deployment, SignalKind::OOMKilled),
        );
        assert_ne!(a, b);
        assert!(a.starts_with("api-pod-oomkilled-"), "{a}");
        assert!(b.starts_with("api-pod-oomkilled-"), "{b}");
        assert_eq!(
            a,
            incident_name(&pod, SignalKind::OOMKilled),
            "a repeat finds the same incident"
        );
    }

    #[test]
    fn long_names_that_differ_only_at_the_end_get_different_valid_incidents() {
        let long = |last: char| WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: format!("{}{last}", "a".repeat(299)),
        };
        let (a, b) = (
            incident_name(&long('x'), SignalKind::CrashLoopBackOff),
            incident_name(&long('y'), SignalKind::CrashLoopBackOff),
        );
        assert_ne!(a, b);
        assert!(is_dns_label(&a) && is_dns_label(&b), "{a} {b}");
        assert!(a.starts_with("aaaa"), "still readable: {a}");
    }

    #[test]
    fn incident_names_are_dns_labels_for_every_kind_signal_and_odd_name() {
        let kinds = [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
            WorkloadKind::Job,
            WorkloadKind::CronJob,
            WorkloadKind::Pod,
        ];
        let signals = SignalKind::ALL;
        let names = [
            "web",
            "a",
            "web.v2.example",
            "-.-",
            &"x".repeat(253),
            &format!("{}.{}", "a".repeat(60), "b".repeat(100)),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for kind in kinds {
            for signal in signals {
                for name in names {
                    let w = WorkloadRef {
                        kind,
                        name: name.to_string(),
                    };
                    let n = incident_name(&w, signal);
                    assert!(is_dns_label(&n), "{w} {signal:?}: {n:?}");
                    assert!(seen.insert(n.clone()), "{n} given twice");
                }
            }
        }
    }

    #[test]
    fn pod_of_a_replicaset_belongs_to_its_deployment() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-abc-1", "ownerReferences": [
                { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "1", "controller": true }
            ]}
        }))
        .unwrap();
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-abc", "ownerReferences": [
                { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "2", "controller": true }
            ]}
        }))
        .unwrap();
        let owner = owner_of_pod(&pod, |name| (name == "web-abc").then(|| rs.clone()));
        assert_eq!(
            owner,
            Some(WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "web".into()
            })
        );
        assert_eq!(
            owner_of_pod(&pod, |_| None::<ReplicaSet>),
            None,
            "unknown ReplicaSet: not guessed"
        );
    }
}
