//! Pods that wait for storage: a PersistentVolumeClaim that does not exist
//! or is not bound. Says which claim and why it is unbound: no
//! StorageClass and no default one, a StorageClass that does not exist, no
//! PersistentVolume that matches, or an access mode the provisioner does
//! not offer. A person changes the claim, the class or the volumes.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::evidence::is_default_class;
use super::{Case, Cite, checked, first_match, group, hypothesis};
use crate::brain::gather::claim_names;
use crate::crd::{ActionType, Category, Hypothesis};

/// Phrases of the scheduler's message that blame storage.
const SCHEDULER_SAYS: &[&str] = &[
    "unbound immediate PersistentVolumeClaims",
    "unbound PersistentVolumeClaims",
    "didn't find available persistent volumes to bind",
    "persistentvolumeclaim \"",
];

/// The scheduler's words: the pod's PodScheduled condition, its
/// FailedScheduling events (newest first) and the signal.
fn scheduler_messages<'a>(c: &'a Case) -> Vec<&'a str> {
    let mut out: Vec<&str> = c
        .facts
        .pod
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|k| k.type_ == "PodScheduled")
        .filter_map(|k| k.message.as_deref())
        .collect();
    out.extend(
        c.facts
            .events
            .iter()
            .rev()
            .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .filter_map(|e| e.message.as_deref()),
    );
    out.extend(c.facts.observation.as_ref().map(|o| o.message.as_str()));
    out
}

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let said = scheduler_messages(c);
    let blames_storage = said
        .iter()
        .any(|m| SCHEDULER_SAYS.iter().any(|p| m.contains(p)));
    // A claim waiting for its first consumer is Pending because the pod is
    // not scheduled, not the other way round: only the scheduler's word
    // makes storage the cause.
    if !blames_storage {
        return vec![];
    }
    let names = c.facts.pod.as_ref().map(claim_names).unwrap_or_default();
    let missing_named = first_match(
        r#"persistentvolumeclaim "([^"]+)" not found"#,
        said.iter().copied(),
    )
    .map(|m| group(&m, 1));
    let mut found = Vec::new();
    if let Some(name) = &missing_named {
        found.push(missing(c, name));
    }
    for name in &names {
        if Some(name) == missing_named.as_ref() {
            continue;
        }
        match c
            .facts
            .claims
            .iter()
            .find(|k| k.metadata.name.as_deref() == Some(name))
        {
            Some(claim) => found.extend(unbound(c, claim)),
            // Claims were read for this pod: one that is not there is missing.
            None if !c.facts.claims.is_empty() || c.facts.storage_classes.is_some() => {
                found.push(missing(c, name))
            }
            None => {}
        }
    }
    if found.is_empty() {
        found.push((
            format!(
                "the pods of {} wait for a PersistentVolumeClaim that is not bound (the scheduler: {:?})",
                c.owner(),
                said.first().copied().unwrap_or_default()
            ),
            0.6,
            "the pod's claims are Pending".to_string(),
            "every claim the pod references is Bound".to_string(),
        ));
    }
    found
        .into_iter()
        .map(|(statement, confidence, confirm, refute)| {
            checked(
                hypothesis(
                    Category::StorageUnavailable,
                    statement,
                    confidence,
                    c.cite_with_events(&[Cite::Signal, Cite::Storage]),
                    Some(ActionType::Escalate),
                ),
                confirm,
                refute,
            )
        })
        .collect()
}

type Finding = (String, f64, String, String);

/// Where the pod spec references the claim: " at spec.template.spec.volumes[0]",
/// or nothing when the spec is not known.
fn referenced_at(c: &Case, name: &str) -> String {
    c.spec()
        .and_then(|s| {
            s.volumes.iter().flatten().position(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|p| p.claim_name == name)
            })
        })
        .map(|i| format!(" at {}.volumes[{i}]", c.spec_path()))
        .unwrap_or_default()
}

/// A claim the pod references that does not exist.
fn missing(c: &Case, name: &str) -> Finding {
    let ns = c.ns();
    let at = referenced_at(c, name);
    (
        format!(
            "PersistentVolumeClaim `{name}` does not exist in `{ns}`; it is referenced{at} of {}: create it, or remove the reference",
            c.owner()
        ),
        0.9,
        format!("`kubectl get pvc {name} -n {ns}` answers NotFound"),
        format!("PersistentVolumeClaim `{name}` exists in `{ns}`"),
    )
}

/// Why a claim is not bound, when it is not.
fn unbound(c: &Case, claim: &PersistentVolumeClaim) -> Option<Finding> {
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Bound") {
        return None;
    }
    let name = claim.metadata.name.clone().unwrap_or_default();
    let spec = claim.spec.as_ref();
    let class = spec.and_then(|s| s.storage_class_name.as_deref());
    let modes: Vec<String> = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let size = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "no size".into());
    let events: Vec<&str> = c
        .facts
        .claim_events
        .iter()
        .rev()
        .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
        .filter_map(|e| e.message.as_deref())
        .collect();
    let classes = c.facts.storage_classes.as_ref();
    let class_names: Vec<&str> = classes
        .into_iter()
        .flatten()
        .filter_map(|k| k.metadata.name.as_deref())
        .collect();
    let listed = if class_names.is_empty() {
        "the cluster has none".to_string()
    } else {
        format!("the cluster has {}", class_names.join(", "))
    };
    // The claim, and the workload whose pods wait for it.
    let claim_ref = format!(
        "PersistentVolumeClaim `{name}` (referenced{} of {})",
        referenced_at(c, &name),
        c.owner()
    );
    let class_missing = first_match(
        r#"storageclass\.storage\.k8s\.io "([^"]+)" not found"#,
        events.iter().copied(),
    )
    .map(|m| group(&m, 1))
    .or_else(|| {
        let named = class.filter(|n| !n.is_empty())?;
        (classes.is_some() && !class_names.contains(&named)).then(|| named.to_string())
    });
    if let Some(missing) = class_missing {
        return Some((
            format!(
                "StorageClass `{missing}` does not exist; {claim_ref} names it at spec.storageClassName, so nothing provisions its volume: name an existing class ({listed}), or create it"
            ),
            0.9,
            format!("`kubectl get storageclass {missing}` answers NotFound"),
            format!("StorageClass `{missing}` exists"),
        ));
    }
    let rare_mode = modes
        .iter()
        .find(|m| m.as_str() != "ReadWriteOnce")
        .cloned();
    let says_mode = events
        .iter()
        .any(|m| m.to_ascii_lowercase().contains("access mode"));
    if let (Some(mode), true) = (&rare_mode, says_mode) {
        let by = class
            .and_then(|n| {
                classes?
                    .iter()
                    .find(|k| k.metadata.name.as_deref() == Some(n))
            })
            .map(|k| {
                format!(
                    "StorageClass `{}` (provisioner {})",
                    k.metadata.name.as_deref().unwrap_or(""),
                    k.provisioner
                )
            })
            .unwrap_or_else(|| "its provisioner".into());
        return Some((
            format!(
                "{claim_ref} asks for access mode {mode} at spec.accessModes, which {by} does not provide: ask for ReadWriteOnce, or use a class that offers {mode}"
            ),
            0.85,
            format!("the provisioner's ProvisioningFailed event names the access mode {mode}"),
            format!("a claim of the same class with access mode {mode} binds"),
        ));
    }
    let no_default = classes.is_some_and(|k| !k.iter().any(is_default_class));
    if class.is_none() && no_default {
        return Some((
            format!(
                "{claim_ref} names no StorageClass (spec.storageClassName is unset) and the cluster has no default StorageClass, so nothing provisions its volume: set spec.storageClassName ({listed}), or mark a class default"
            ),
            0.85,
            "no StorageClass has the is-default-class annotation".to_string(),
            "a default StorageClass exists and the claim is still Pending".to_string(),
        ));
    }
    let no_volume = events
        .iter()
        .any(|m| m.contains("no persistent volumes available for this claim"));
    if no_volume || class == Some("") {
        return Some((
            format!(
                "no PersistentVolume matches {claim_ref} (requests {size}, access modes {}, storageClassName {:?}), and no StorageClass provisions one: create a matching PersistentVolume, or name a StorageClass that provisions",
                if modes.is_empty() {
                    "none".to_string()
                } else {
                    modes.join(", ")
                },
                class.unwrap_or("")
            ),
            0.8,
            "no Available PersistentVolume has this size, access mode and class".to_string(),
            "an Available PersistentVolume matches the claim".to_string(),
        ));
    }
    let newest = events.first().map(|m| format!(": {m}")).unwrap_or_default();
    Some((
        format!(
            "{claim_ref} is {} (StorageClass {}){newest}",
            phase.unwrap_or("not bound"),
            class.unwrap_or("(default)")
        ),
        0.7,
        "the claim stays Pending".to_string(),
        "the claim binds and the pod is still not scheduled".to_string(),
    ))
}
