//! Failures of the node, not of the workload: the kubelet evicted the pod
//! because the node ran low on memory, disk or process ids, or the node
//! stopped being ready. The workload is not blamed, and nothing done to it
//! helps; the node needs a person (or the cluster's autoscaler).

use super::{Case, Cite, checked, first_match, group, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let pod = c.facts.pod.as_ref();
    let pod_name = pod
        .and_then(|p| p.metadata.name.clone())
        .or_else(|| c.facts.observation.as_ref().and_then(|o| o.pod.clone()))
        .unwrap_or_else(|| "the pod".into());
    let node = c
        .facts
        .node
        .as_ref()
        .map(|n| n.name.clone())
        .or_else(|| pod.and_then(|p| p.spec.as_ref()?.node_name.clone()));
    let node_ref = node
        .as_deref()
        .map(|n| format!("node `{n}`"))
        .unwrap_or_else(|| "its node".into());
    let owner = c.target;
    let evidence = c.cite_with_events(&[Cite::Signal, Cite::Node]);
    let status = pod.and_then(|p| p.status.as_ref());
    let mut texts: Vec<&str> = status
        .and_then(|s| s.message.as_deref())
        .into_iter()
        .collect();
    texts.extend(
        c.facts
            .events
            .iter()
            .rev()
            .filter(|e| e.reason.as_deref() == Some("Evicted"))
            .filter_map(|e| e.message.as_deref()),
    );
    texts.extend(c.facts.observation.as_ref().map(|o| o.message.as_str()));
    let statement = |what: String| {
        format!(
            "{what}; {node_ref}, not {owner}, is at fault: free or add capacity on the node, or drain it; the pod's controller replaces the pod elsewhere"
        )
    };
    if let Some(m) = first_match(
        r"The node was low on resource: ([A-Za-z-]+)",
        texts.iter().copied(),
    ) {
        let resource = group(&m, 1);
        return vec![checked(
            hypothesis(
                Category::NodeFailure,
                statement(format!(
                    "{node_ref} ran low on {resource} and the kubelet evicted pod `{pod_name}` of {owner}"
                )),
                0.9,
                evidence,
                Some(ActionType::Escalate),
            ),
            format!("{node_ref} reports {}", pressure_of(&resource)),
            format!("{node_ref} had {resource} to spare when the pod was evicted"),
        )];
    }
    // The node's own conditions: not ready, or under pressure.
    if let Some(n) = &c.facts.node {
        let ready = n.conditions.iter().find(|k| k.type_ == "Ready");
        if let Some(k) = ready.filter(|k| k.status != "True") {
            return vec![checked(
                hypothesis(
                    Category::NodeFailure,
                    statement(format!(
                        "{node_ref} is not ready (Ready={}, {}: {}), so pod `{pod_name}` of {owner} cannot run there",
                        k.status,
                        k.reason.as_deref().unwrap_or("no reason"),
                        k.message.as_deref().unwrap_or("")
                    )),
                    0.9,
                    evidence,
                    Some(ActionType::Escalate),
                ),
                format!("`kubectl get node {}` shows NotReady", n.name),
                format!("{node_ref} is Ready and the pod still fails"),
            )];
        }
        if let Some(k) = n
            .conditions
            .iter()
            .find(|k| k.type_.ends_with("Pressure") && k.status == "True")
        {
            return vec![checked(
                hypothesis(
                    Category::NodeFailure,
                    statement(format!(
                        "{node_ref} is under {} ({}), and pod `{pod_name}` of {owner} fails there",
                        k.type_,
                        k.message.as_deref().unwrap_or("")
                    )),
                    0.8,
                    evidence,
                    Some(ActionType::Escalate),
                ),
                format!("{node_ref} reports {}=True", k.type_),
                format!("{node_ref} reports no pressure"),
            )];
        }
    }
    let not_ready_event = c
        .facts
        .events
        .iter()
        .any(|e| e.reason.as_deref() == Some("NodeNotReady"));
    let taint_manager = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|k| {
            k.type_ == "DisruptionTarget" && k.reason.as_deref() == Some("DeletionByTaintManager")
        });
    if not_ready_event || taint_manager {
        return vec![checked(
            hypothesis(
                Category::NodeFailure,
                statement(format!(
                    "{node_ref} stopped being ready (NodeNotReady), so pod `{pod_name}` of {owner} cannot run there"
                )),
                0.85,
                evidence,
                Some(ActionType::Escalate),
            ),
            "the node's Ready condition is False or Unknown".into(),
            "the node is Ready and the pod still fails".into(),
        )];
    }
    // Only the signal: the Scout saw a node failure; say so, less sure.
    match c.facts.observation.as_ref() {
        Some(o) => vec![checked(
            hypothesis(
                Category::NodeFailure,
                statement(format!(
                    "{node_ref} failed pod `{pod_name}` of {owner} ({})",
                    o.message
                )),
                0.6,
                evidence,
                Some(ActionType::Escalate),
            ),
            "the node's conditions show pressure or NotReady".into(),
            "the node is Ready without pressure".into(),
        )],
        None => vec![],
    }
}

/// The node condition that goes with running low on a resource.
fn pressure_of(resource: &str) -> &'static str {
    match resource {
        "memory" => "MemoryPressure=True",
        "pids" => "PIDPressure=True",
        _ => "DiskPressure=True",
    }
}
