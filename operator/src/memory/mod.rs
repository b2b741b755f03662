//! Memory: the history of each problem in an IncidentMemory, written when an
//! incident ends, and read by the Brain and the Fixer.

pub mod knowledge;
pub mod search;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::crd::{
    ActionRecord, ActionState, ActionTally, ActionType, Incident, IncidentMemory,
    IncidentMemorySpec, IncidentMemoryStatus, IncidentStatus, OccurrenceRecord, Outcome, Phase,
};
use crate::{FIELD_MANAGER, Result};

/// Occurrences kept per problem; older ones are dropped.
pub const MAX_OCCURRENCES: usize = 50;

pub mod similar;
const MAX_KEYWORDS: usize = 64;

/// Whether an action has only ever failed on this problem.
pub fn proved_ineffective(memory: Option<&IncidentMemorySpec>, action: ActionType) -> bool {
    memory
        .and_then(|m| m.actions.iter().find(|t| t.type_ == action))
        .is_some_and(|t| t.effective == 0 && t.ineffective > 0)
}

/// Whether an action has worked on this problem before.
pub fn proved_effective(memory: Option<&IncidentMemorySpec>, action: ActionType) -> bool {
    memory
        .and_then(|m| m.actions.iter().find(|t| t.type_ == action))
        .is_some_and(|t| t.effective > 0)
}

/// The memory with an ended incident's episode added, or None when that
/// episode is already recorded (so a replayed write changes nothing).
pub fn record(
    existing: Option<&IncidentMemory>,
    incident: &Incident,
    now: Timestamp,
) -> Option<(IncidentMemorySpec, IncidentMemoryStatus)> {
    let status = incident.status.clone().unwrap_or_default();
    let detected_at = status
        .detected_at
        .clone()
        .or(status.first_seen.clone())
        .unwrap_or(Time(now));
    let name = incident.metadata.name.clone().unwrap_or_default();
    let mut spec = existing
        .map(|m| m.spec.clone())
        .unwrap_or_else(|| IncidentMemorySpec {
            fingerprint: incident.spec.fingerprint.clone(),
            target: incident.spec.target.clone(),
            signal: incident.spec.signal,
            occurrences: vec![],
            actions: vec![],
            keywords: vec![],
        });
    if spec
        .occurrences
        .iter()
        .any(|o| o.incident == name && o.detected_at == detected_at)
    {
        return None;
    }
    let total = existing
        .and_then(|m| m.status.as_ref())
        .map(|s| s.total_occurrences)
        .unwrap_or(0)
        .saturating_add(1);

    let executed: Vec<_> = status
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a.state,
                ActionState::Succeeded | ActionState::Failed | ActionState::Blocked
            )
        })
        .collect();
    tally(&mut spec.actions, &executed);
    spec.occurrences
        .push(occurrence(name, detected_at, &status, &executed));
    keep_within_schema(&mut spec);
    add_keywords(&mut spec.keywords, incident, &status);

    let memory_status = summary(&spec, total, incident);
    Some((spec, memory_status))
}

/// Counts each executed action as having worked (its outcome was
/// Effective) or not.
fn tally(actions: &mut Vec<ActionTally>, executed: &[&ActionRecord]) {
    for a in executed {
        let i = match actions.iter().position(|t| t.type_ == a.type_) {
            Some(i) => i,
            None => {
                actions.push(ActionTally {
                    type_: a.type_,
                    effective: 0,
                    ineffective: 0,
                    last_tried: None,
                });
                actions.len() - 1
            }
        };
        let tally = &mut actions[i];
        if a.outcome == Some(Outcome::Effective) {
            tally.effective = tally.effective.saturating_add(1);
        } else {
            tally.ineffective = tally.ineffective.saturating_add(1);
        }
        tally.last_tried = Some(a.recorded_at.clone());
    }
}

/// The episode: what it was diagnosed as, what was done, and whether (and
/// how fast) it was resolved.
fn occurrence(
    incident: String,
    detected_at: Time,
    status: &IncidentStatus,
    executed: &[&ActionRecord],
) -> OccurrenceRecord {
    let resolved = status.phase == Phase::Resolved;
    OccurrenceRecord {
        incident,
        detected_at: detected_at.clone(),
        category: status.diagnosis.as_ref().map(|d| d.category),
        actions: executed.iter().map(|a| a.type_).collect(),
        outcome: Some(if resolved {
            Outcome::Effective
        } else {
            Outcome::Ineffective
        }),
        time_to_mitigate_seconds: resolved
            .then(|| {
                status
                    .mitigated_at
                    .as_ref()
                    .or(status.resolved_at.as_ref())
                    .map(|r| r.0.duration_since(detected_at.0).as_secs())
            })
            .flatten(),
        summary: status.diagnosis.as_ref().map(diagnosis_summary),
    }
}

/// The longest occurrence summary, in characters (the CRD's bound).
pub const MAX_SUMMARY_CHARS: usize = 512;

/// `Category: root cause`, redacted and cut to [`MAX_SUMMARY_CHARS`].
fn diagnosis_summary(d: &crate::crd::Diagnosis) -> String {
    let line = crate::redact::string(&format!("{:?}: {}", d.category, d.root_cause));
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_SUMMARY_CHARS {
        return line;
    }
    let mut short: String = line.chars().take(MAX_SUMMARY_CHARS - 1).collect();
    short.push('…');
    short
}

/// Within the schema's bounds, what an older version wrote included, so
/// the API server never refuses the memory: counting stops there, and the
/// oldest occurrences are dropped.
fn keep_within_schema(spec: &mut IncidentMemorySpec) {
    let max_tally = i32::try_from(crate::limits::MAX_TALLY).unwrap_or(i32::MAX);
    for t in &mut spec.actions {
        t.effective = t.effective.clamp(0, max_tally);
        t.ineffective = t.ineffective.clamp(0, max_tally);
    }
    for o in &mut spec.occurrences {
        if let Some(s) = &mut o.summary
            && s.chars().count() > MAX_SUMMARY_CHARS
        {
            *s = s.chars().take(MAX_SUMMARY_CHARS).collect();
        }
        o.time_to_mitigate_seconds = o
            .time_to_mitigate_seconds
            .map(|s| s.clamp(0, crate::limits::MAX_RECORDED_SECONDS));
    }
    let excess = spec.occurrences.len().saturating_sub(MAX_OCCURRENCES);
    spec.occurrences.drain(..excess);
}

/// Adds the words this incident can be found by (signal, category, reason,
/// container), keeping the newest `MAX_KEYWORDS`.
fn add_keywords(keywords: &mut Vec<String>, incident: &Incident, status: &IncidentStatus) {
    let mut add = |k: String| {
        if !k.is_empty() && !keywords.contains(&k) {
            keywords.push(k);
        }
    };
    add(similar::signal_term(incident.spec.signal));
    if let Some(d) = &status.diagnosis {
        add(similar::category_term(d.category));
    }
    if let Some(s) = &status.last_signal {
        add(similar::reason_term(&s.reason));
        if let Some(c) = &s.container {
            add(similar::container_term(c));
        }
    }
    let excess = keywords.len().saturating_sub(MAX_KEYWORDS);
    keywords.drain(..excess);
}

/// The summary in the memory's status.
fn summary(spec: &IncidentMemorySpec, total: i64, incident: &Incident) -> IncidentMemoryStatus {
    let best_action = spec
        .actions
        .iter()
        .filter(|t| t.effective > 0)
        .max_by_key(|t| t.effective)
        .map(|t| t.type_);
    IncidentMemoryStatus {
        total_occurrences: total.max(spec.occurrences.len() as i64),
        best_action,
        last_seen: incident.status.as_ref().and_then(|s| s.last_seen.clone()),
    }
}

/// Reads the memory of a problem.
pub async fn load(client: &Client, namespace: &str, name: &str) -> Result<Option<IncidentMemory>> {
    Ok(Api::<IncidentMemory>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// Records an ended incident in its memory, creating the memory if needed.
pub async fn remember(client: &Client, incident: &Incident, now: Timestamp) -> Result<()> {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let name = incident.metadata.name.clone().unwrap_or_default();
    let api: Api<IncidentMemory> = Api::namespaced(client.clone(), &ns);
    let existing = api.get_opt(&name).await?;
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let (stored, status) = match record(existing.as_ref(), incident, now) {
        Some((spec, status)) => {
            let stored = match existing {
                Some(mut m) => {
                    m.spec = spec;
                    api.replace(&name, &pp, &m).await?
                }
                None => api.create(&pp, &IncidentMemory::new(&name, spec)).await?,
            };
            (stored, status)
        }
        // Already recorded; its summary may still be missing if writing it
        // failed last time, so it is written again (it is idempotent).
        None => match existing {
            Some(m) => {
                let total = m.status.as_ref().map(|s| s.total_occurrences).unwrap_or(0);
                let status = summary(&m.spec, total, incident);
                (m, status)
            }
            None => return Ok(()),
        },
    };
    if stored.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&name, &pp, &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;
    use crate::testing::{self, now};

    #[test]
    fn an_occurrence_keeps_its_diagnosis_in_a_redacted_bounded_line() {
        let mut inc = testing::incident(Phase::Resolved, vec![]);
        let (spec, _) = record(None, &inc, now()).expect("a new episode");
        assert_eq!(
            spec.occurrences[0].summary.as_deref(),
            Some("OutOfMemory: the container ran out of memory")
        );

        let status = inc.status.as_mut().expect("a status");
        status.detected_at = Some(testing::at(-100));
        if let Some(d) = status.diagnosis.as_mut() {
            d.root_cause = format!("login failed: password=hunter2hunter2 {}", "x ".repeat(600));
        }
        let (spec, _) = record(None, &inc, now()).expect("a new episode");
        let summary = spec.occurrences[0].summary.clone().unwrap_or_default();
        assert!(!summary.contains("hunter2"), "{summary}");
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS, "{summary}");
        assert!(summary.ends_with('…'));
    }
}
