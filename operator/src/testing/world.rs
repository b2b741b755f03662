//! The objects of one workload, `web` in namespace `shop`: a Deployment,
//! its ReplicaSet and two ready pods, the first of which was OOMKilled.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// The Deployment `web`, its pods labelled `app: web`.
pub fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "shop", "uid": "uid-deploy-web", "generation": 1 },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "web:1",
                    "resources": { "limits": { "memory": "64Mi" } } }] }
            }
        }
    }))
    .expect("a Deployment")
}

/// The Deployment's current ReplicaSet.
pub fn replicaset() -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-abc", "namespace": "shop", "uid": "uid-rs-web-abc",
            "labels": { "app": "web", "pod-template-hash": "abc" },
            "annotations": { "deployment.kubernetes.io/revision": "1" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "uid-deploy-web", "controller": true }]
        },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "web:1" }] } }
        }
    }))
    .expect("a ReplicaSet")
}

/// A ready pod of the ReplicaSet; `oom` makes its last termination an
/// OOMKill.
pub fn pod(name: &str, oom: bool) -> Pod {
    let last = if oom {
        json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled",
            "finishedAt": "2026-11-26T09:55:00Z" } })
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "labels": { "app": "web", "pod-template-hash": "abc" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                "uid": "uid-rs-web-abc", "controller": true }]
        },
        "spec": { "containers": [{ "name": "app", "image": "web:1" }] },
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }],
            "containerStatuses": [{ "name": "app", "ready": true, "restartCount": if oom { 1 } else { 0 },
                "image": "web:1", "imageID": "", "lastState": last,
                "state": { "running": { "startedAt": "2026-11-26T09:55:05Z" } } }]
        }
    }))
    .expect("a Pod")
}
