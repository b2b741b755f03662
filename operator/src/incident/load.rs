//! What a decision reads besides the incident: its policy, its memory, the
//! budget the guardrails count, and what the workload shows since the last
//! step. Stores are read for all but the memory, which is one GET, and the
//! similar problems of the namespace, one LIST.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::update::IncidentUpdate;
use crate::Result;
use crate::crd::{ActionType, IncidentMemory, IncidentMemorySpec, RemediationPolicy};
use crate::fixer::{self, Budget};
use crate::memory::similar::{self, Recalled};
use crate::scout::Signal;

impl IncidentUpdate {
    /// The incident's policy, from the store.
    pub(super) fn policy(&self) -> Option<Arc<RemediationPolicy>> {
        self.ctx
            .policies
            .get(&ObjectRef::new(&self.incident.spec.policy).within(&self.ns()))
    }

    /// What worked and what did not on this problem before.
    pub(super) async fn memory(&self) -> Result<Option<IncidentMemorySpec>> {
        let name = self.incident.name_any();
        Ok(crate::memory::load(&self.ctx.client, &self.ns(), &name)
            .await?
            .map(|m| m.spec))
    }

    /// The same problem on other workloads of the incident's namespace: one
    /// LIST of that namespace's IncidentMemories (one page, bounded),
    /// compared by `memory::similar::recall`. A failed LIST recalls
    /// nothing: the ladder's own order stands.
    pub(super) async fn similar(&self, own: Option<&IncidentMemorySpec>) -> Vec<Recalled> {
        let ns = self.ns();
        let api: Api<IncidentMemory> = Api::namespaced(self.ctx.client.clone(), &ns);
        let lp = ListParams::default().limit(similar::MAX_CANDIDATES as u32);
        match api.list(&lp).await {
            Ok(list) => similar::recall(&self.incident, own, &list.items),
            Err(e) => {
                warn!(error = %e, namespace = %ns, "listing IncidentMemories failed; no similar problems are recalled");
                vec![]
            }
        }
    }

    /// What the guardrails count for this incident now.
    pub(super) fn budget(&self) -> Budget {
        let pods = self
            .ctx
            .workloads
            .pods_of(&self.ns(), &self.incident.spec.target);
        fixer::budget::measure(&fixer::budget::Inputs {
            incident: &self.incident,
            incidents: &self.ctx.incidents.state(),
            pods: &pods,
            ledger: &self.ctx.ledger,
            claims: &self.ctx.claims,
            config: &self.ctx.config,
            now: self.now,
        })
    }

    /// The signals of the incident's kind observed after `since`, judged on
    /// the pods `action` made.
    pub(super) fn signals_since(
        &self,
        policy: &RemediationPolicy,
        since: Timestamp,
        action: ActionType,
    ) -> Vec<Signal> {
        crate::scout::signals_since(
            &self.ctx.workloads,
            &self.ctx.board,
            &self.incident,
            &policy.spec.triggers,
            since,
            action,
            self.now,
        )
    }

    /// Whether a signal the operator measures itself reads healthy now;
    /// false for a pod signal.
    pub(super) fn measured_healthy(&self) -> bool {
        let kind = self.incident.spec.signal;
        !kind.is_pod_signal()
            && self
                .ctx
                .board
                .healthy(&self.ns(), &self.incident.spec.target.name, kind)
    }
}
