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

/// What the operator remembers when it diagnoses and plans an incident.
#[derive(Clone, Debug, Default)]
pub(super) struct Recall {
    /// This problem's own history.
    pub memory: Option<IncidentMemorySpec>,
    /// The same problem fixed on other workloads.
    pub similar: Vec<Recalled>,
}

impl IncidentUpdate {
    /// The incident's policy, from the store.
    pub(super) fn policy(&self) -> Option<Arc<RemediationPolicy>> {
        self.ctx
            .policies
            .get(&ObjectRef::new(&self.incident.spec.policy).within(&self.ns()))
    }

    /// What was learned before, read once a reconcile: the diagnosis and
    /// the plan that follows it share it.
    pub(super) async fn recall(&mut self) -> Result<Recall> {
        if let Some(r) = &self.recalled {
            return Ok(r.clone());
        }
        let r = self.read_recall().await?;
        self.recalled = Some(r.clone());
        Ok(r)
    }

    /// This problem's memory, what worked and what did not (one GET), and
    /// the same problem on other workloads of the namespace (one LIST of its
    /// IncidentMemories, one page, bounded, compared by
    /// `memory::similar::recall`), side by side. A failed LIST recalls
    /// nothing: the ladder's own order stands.
    pub(super) async fn read_recall(&self) -> Result<Recall> {
        let ns = self.ns();
        let api: Api<IncidentMemory> = Api::namespaced(self.ctx.client.clone(), &ns);
        let lp = ListParams::default().limit(similar::MAX_CANDIDATES as u32);
        let name = self.incident.name_any();
        let (memory, list) = tokio::join!(
            crate::memory::load(&self.ctx.client, &ns, &name),
            api.list(&lp)
        );
        let memory = memory?.map(|m| m.spec);
        let similar = match list {
            Ok(list) => similar::recall(&self.incident, memory.as_ref(), &list.items),
            Err(e) => {
                warn!(error = %e, namespace = %ns, "listing IncidentMemories failed; no similar problems are recalled");
                vec![]
            }
        };
        Ok(Recall { memory, similar })
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
