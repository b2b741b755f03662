//! Reads the evidence the rules need from the cluster.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::{ContainerResources, Facts, Rollout, rollout::diff_templates};
use crate::Result;
use crate::crd::{Incident, IncidentMemorySpec, WorkloadKind};
use crate::workload::{pod_template, replicasets_of, revision};

const TEMPLATE_HASH: &str = "pod-template-hash";

/// Gathers the facts about an incident.
pub async fn gather(
    client: &Client,
    incident: &Incident,
    memory: Option<IncidentMemorySpec>,
) -> Result<Facts> {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let target = incident.spec.target.clone();
    let observation = incident.status.as_ref().and_then(|s| s.last_signal.clone());
    let pod_name = observation.as_ref().and_then(|o| o.pod.clone());

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = match &pod_name {
        Some(name) => pods.get_opt(name).await?,
        None => None,
    };
    let mut events = match &pod_name {
        Some(name) => {
            Api::<Event>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await?
                .items
        }
        None => vec![],
    };
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .or(e.first_timestamp.as_ref())
            .map(|t| t.0)
    });

    let template = pod_template(client, &ns, &target).await?;
    let resources = template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|spec| {
            spec.containers
                .iter()
                .map(|c| {
                    let get = |m: Option<&std::collections::BTreeMap<String, _>>| {
                        m.and_then(|m| m.get("memory")).map(
                            |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                                q.0.clone()
                            },
                        )
                    };
                    let r = c.resources.as_ref();
                    ContainerResources {
                        container: c.name.clone(),
                        memory_limit: get(r.and_then(|r| r.limits.as_ref())),
                        memory_request: get(r.and_then(|r| r.requests.as_ref())),
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    let mut owner_chain = Vec::new();
    if let Some(p) = &pod_name {
        owner_chain.push(format!("Pod/{p}"));
    }
    let mut rollout = None;
    if target.kind == WorkloadKind::Deployment {
        let all = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await?;
        let owned = replicasets_of(&target.name, all.items);
        let pod_hash = pod
            .as_ref()
            .and_then(|p| p.metadata.labels.as_ref()?.get(TEMPLATE_HASH).cloned());
        if let Some(rs) = owned.iter().find(|rs| {
            let hash = rs
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH));
            pod_hash.is_some() && hash == pod_hash.as_ref()
        }) {
            owner_chain.push(format!(
                "ReplicaSet/{}",
                rs.metadata.name.clone().unwrap_or_default()
            ));
        }
        if let [current, previous, ..] = owned.as_slice() {
            let hash_of = |rs: &ReplicaSet| {
                rs.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(TEMPLATE_HASH))
                    .cloned()
            };
            let templates = current
                .spec
                .template
                .clone()
                .zip(previous.spec.template.clone());
            if let Some((cur, prev)) = templates {
                rollout = Some(Rollout {
                    revision: revision(current).unwrap_or(0),
                    previous_revision: revision(previous).unwrap_or(0),
                    at: current.metadata.creation_timestamp.clone(),
                    changes: diff_templates(&prev, &cur),
                    failing_pod_is_new: pod_hash.is_some() && pod_hash == hash_of(current),
                });
            }
        }
        // The Deployment itself must still exist for the chain to end there.
        if Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt(&target.name)
            .await?
            .is_some()
        {
            owner_chain.push(target.to_string());
        }
    } else {
        owner_chain.push(target.to_string());
    }

    Ok(Facts {
        namespace: ns,
        target,
        signal: incident.spec.signal,
        observation,
        pod,
        events,
        owner_chain,
        rollout,
        resources,
        memory,
    })
}
