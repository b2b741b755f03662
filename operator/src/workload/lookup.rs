//! The workloads as the operator's stores see them: which one a pod belongs
//! to and which pods a workload has.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::Result;
use crate::crd::WorkloadRef;

/// Pods and ReplicaSets from the watch stores, with the API behind them for
/// what a store has not seen yet.
#[derive(Clone)]
pub struct Workloads {
    client: Client,
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
}

impl Workloads {
    pub fn new(client: Client, pods: Store<Pod>, replicasets: Store<ReplicaSet>) -> Self {
        Self {
            client,
            pods,
            replicasets,
        }
    }

    /// The workload a pod belongs to, from the ReplicaSet store (or the API
    /// when the store has not seen the ReplicaSet yet).
    pub async fn owner_of(&self, pod: &Pod) -> Result<Option<WorkloadRef>> {
        let ns = pod.namespace().unwrap_or_default();
        let rs_name = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
            .map(|o| o.name.clone());
        let rs = match rs_name {
            Some(name) => match self.replicasets.get(&ObjectRef::new(&name).within(&ns)) {
                Some(rs) => Some((*rs).clone()),
                None => {
                    Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
                        .get_opt(&name)
                        .await?
                }
            },
            None => None,
        };
        Ok(super::owner_of_pod(pod, |_| rs.clone()))
    }

    /// The workload a pod belongs to, from the stores only (for the hot
    /// paths that look at many pods).
    pub fn cached_owner_of(&self, pod: &Pod) -> Option<WorkloadRef> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        super::owner_of_pod(pod, |name| {
            self.replicasets.get(&ObjectRef::new(name).within(ns))
        })
    }

    /// The pods of a workload in the store. Incidents being verified ask
    /// this every few seconds, so it copies no ReplicaSet and no pod.
    pub fn pods_of(&self, ns: &str, workload: &WorkloadRef) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| self.cached_owner_of(p).as_ref() == Some(workload))
            .collect()
    }

    /// The ReplicaSets of one namespace in the store.
    pub fn replicasets_in(&self, ns: &str) -> Vec<ReplicaSet> {
        self.replicasets
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .map(|r| (**r).clone())
            .collect()
    }
}
