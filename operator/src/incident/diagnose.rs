//! The diagnosis of an incident: the Brain's rules on the evidence, and the
//! language model's proposal when one is configured.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::update::IncidentUpdate;
use crate::Result;
use crate::brain::{self, advisor};
use crate::conditions::{DIAGNOSED, MODEL_CONSULTED, RUNBOOK, TRACE_EVIDENCE};
use crate::crd::{ConditionStatus, Diagnosis, Phase};

impl IncidentUpdate {
    /// Diagnoses the incident; what it returns publishes the `Diagnosed`
    /// event.
    pub(super) async fn diagnose(
        &mut self,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let ns = self.ns();
        // The memory is read beside the evidence, not before it: the plan
        // that follows in this reconcile uses it too.
        let (recall, facts) = tokio::join!(
            self.read_recall(),
            brain::gather(
                &self.ctx.client,
                &self.incident,
                None,
                self.ctx.traces.as_deref(),
                self.ctx.events.as_ref(),
                self.now,
            )
        );
        let (recall, mut facts) = (recall?, facts?);
        facts.memory = recall.memory.clone();
        facts.similar = recall.similar.clone();
        self.recalled = Some(recall);
        if let Some(f) = &facts.traces {
            match &f.unavailable {
                None => self.condition(
                    TRACE_EVIDENCE,
                    ConditionStatus::True,
                    "TracesRead",
                    format!(
                        "{} traces of {} in the incident window, {} in the baseline",
                        f.window_traces, f.service, f.baseline_traces
                    ),
                ),
                Some(why) => self.condition(
                    TRACE_EVIDENCE,
                    ConditionStatus::False,
                    "NoTraceEvidence",
                    format!("no trace evidence was available: {why}"),
                ),
            }
        }
        let mut d = brain::diagnose(&facts, self.now);
        self.cite_runbook(&mut d).await;
        if let Some((model, config)) = &self.ctx.model {
            let name = self.incident.name_any();
            let signal = self.incident.spec.signal.as_str();
            let kind = self.incident.spec.target.kind.as_str();
            let tokens = &self.ctx.tokens;
            let key = crate::llm::IncidentKey::new(&ns, &name);
            let outcome = advisor::consult(
                model.as_ref(),
                config,
                tokens,
                &key,
                signal,
                kind,
                &d,
                self.ctx.clock.as_ref(),
            )
            .await;
            let reason = match &outcome {
                Ok(_) => "Answered",
                Err(f) => f.reason(),
            };
            let labels = crate::telemetry::CallLabels {
                system: "llm".into(),
                result: reason.into(),
            };
            self.ctx.metrics.outside_calls.get_or_create(&labels).inc();
            match outcome {
                Ok((merged, spent)) => {
                    let lead = if merged.category == d.category {
                        "agrees with the rules"
                    } else {
                        "leads with its own hypothesis"
                    };
                    self.condition(
                        MODEL_CONSULTED,
                        ConditionStatus::True,
                        "Answered",
                        format!("the model ({spent} tokens) {lead}"),
                    );
                    d = merged;
                }
                Err(failure) => {
                    warn!(incident = %name, %failure, "the model's answer is not used; the rules' diagnosis stands");
                    self.condition(
                        MODEL_CONSULTED,
                        ConditionStatus::False,
                        failure.reason(),
                        format!("{failure}; the rules' diagnosis stands"),
                    );
                }
            }
        }
        let note = format!(
            "{:?} ({:.0}%): {}{}",
            d.category,
            d.confidence * 100.0,
            d.root_cause,
            d.proposed_action
                .map(|a| format!("; proposed action {}", a.as_str()))
                .unwrap_or_default()
        );
        self.condition(
            DIAGNOSED,
            ConditionStatus::True,
            &format!("{:?}", d.category),
            d.root_cause.clone(),
        );
        self.status().diagnosis = Some(d);
        self.status().phase = Phase::Diagnosing;
        info!(incident = %self.incident.name_any(), %note, "diagnosed");
        // Published while the plan reads the workload, not before it: the
        // remedy does not wait for the event's answer, and the event is
        // still sent first (before the plan's first read).
        let publisher = self.ctx.publisher.clone();
        let about = self.incident.object_ref(&());
        Ok(async move {
            publisher
                .note(&about, EventType::Normal, "Diagnosed", note)
                .await
        })
    }

    /// Cites the policy's runbook for this workload or the diagnosis's
    /// category, before the model reads the evidence; says in the `Runbook`
    /// condition what was found. A missing ConfigMap or key fails nothing.
    async fn cite_runbook(&mut self, d: &mut Diagnosis) {
        let Some(source) = self.policy().and_then(|p| p.spec.runbooks.clone()) else {
            return;
        };
        let lookup = brain::runbook::find(
            &self.ctx.client,
            &self.ns(),
            &source.config_map,
            &self.incident.spec.target,
            d.category,
        )
        .await;
        if let brain::runbook::Lookup::Found(r) = &lookup {
            brain::runbook::cite(d, r, self.now);
        }
        let (found, reason, message) = lookup.condition();
        let status = if found {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.condition(RUNBOOK, status, reason, message);
    }
}
