//! Which past problems of other workloads look like this one: the same
//! signal kind and terms of evidence in common (the Jaccard similarity of
//! the IncidentMemories' `keywords`). Pure; the caller lists the memories
//! of the incident's own namespace, and only those are ever considered, so
//! one namespace's history is never cited into another.
//!
//! The dashboard lists similar problems with `rank`; the Brain and the
//! Fixer use `recall`, which keeps only those above `THRESHOLD` whose
//! history says how an action fared.

use serde::{Deserialize, Serialize};

use crate::crd::{
    ActionTally, ActionType, Category, Incident, IncidentMemory, IncidentMemorySpec, SignalKind,
    WorkloadRef,
};

/// The least Jaccard similarity (shared terms over all terms of both) at
/// which another workload's problem counts as the same problem: one with
/// the same signal and category differs at most in one more term (a
/// container's name) than it shares.
pub const THRESHOLD: f64 = 0.5;

/// The memories compared at most (one LIST page); the rest are ignored, so
/// the work stays bounded however much history a namespace keeps.
pub const MAX_CANDIDATES: usize = 500;

/// The similar problems recalled at most, most similar first.
pub const MAX_RECALLED: usize = 3;

/// The term a signal kind is found by.
pub fn signal_term(signal: SignalKind) -> String {
    signal.as_str().to_lowercase()
}

/// The term a category is found by.
pub fn category_term(category: Category) -> String {
    format!("{category:?}").to_lowercase()
}

/// The term a signal's reason is found by.
pub fn reason_term(reason: &str) -> String {
    reason.to_lowercase()
}

/// The term a container is found by.
pub fn container_term(container: &str) -> String {
    format!("container:{container}")
}

/// The terms an open incident is compared by: its signal, its latest
/// reason and container, and the keywords its own history gathered.
pub fn terms(incident: &Incident, own: Option<&IncidentMemorySpec>) -> Vec<String> {
    let mut terms = vec![signal_term(incident.spec.signal)];
    if let Some(s) = incident
        .status
        .as_ref()
        .and_then(|s| s.last_signal.as_ref())
    {
        terms.push(reason_term(&s.reason));
        if let Some(c) = &s.container {
            terms.push(container_term(c));
        }
    }
    terms.extend(own.iter().flat_map(|m| m.keywords.iter().cloned()));
    let mut unique: Vec<String> = Vec::with_capacity(terms.len());
    for t in terms {
        if !t.is_empty() && !unique.contains(&t) {
            unique.push(t);
        }
    }
    unique
}

/// Shared terms over all terms of both (0 to 1), and the shared terms.
pub fn jaccard(ours: &[String], theirs: &[String]) -> (f64, Vec<String>) {
    let mut shared: Vec<String> = theirs
        .iter()
        .filter(|k| ours.contains(k))
        .cloned()
        .collect();
    shared.dedup();
    let union = ours
        .len()
        .saturating_add(theirs.len())
        .saturating_sub(shared.len());
    let score = if union == 0 {
        0.0
    } else {
        shared.len() as f64 / union as f64
    };
    (score, shared)
}

/// Another problem compared with this one.
#[derive(Clone, Debug)]
pub struct Match<'a> {
    pub memory: &'a IncidentMemory,
    pub score: f64,
    pub shared: Vec<String>,
}

/// The other problems among `memories` that share terms with `terms`, most
/// similar first (then the most frequent, then by name); before this problem
/// has any terms, those of the same signal kind. No threshold: this is the
/// dashboard's list.
pub fn rank<'a>(
    fingerprint: &str,
    signal: SignalKind,
    terms: &[String],
    memories: &'a [IncidentMemory],
) -> Vec<Match<'a>> {
    let mut found: Vec<Match<'a>> = memories
        .iter()
        .take(MAX_CANDIDATES)
        .filter(|m| m.spec.fingerprint != fingerprint)
        .filter_map(|m| {
            let (score, shared) = jaccard(terms, &m.spec.keywords);
            let same_signal = m.spec.signal == signal;
            if shared.is_empty() && !(terms.is_empty() && same_signal) {
                return None;
            }
            Some(Match {
                memory: m,
                score,
                shared,
            })
        })
        .collect();
    found.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| total(b.memory).cmp(&total(a.memory)))
            .then_with(|| a.memory.metadata.name.cmp(&b.memory.metadata.name))
    });
    found
}

fn total(m: &IncidentMemory) -> i64 {
    m.status.as_ref().map(|s| s.total_occurrences).unwrap_or(0)
}

/// What the history of a similar problem of another workload says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recalled {
    /// The IncidentMemory.
    pub memory: String,
    /// Its workload.
    pub target: WorkloadRef,
    pub signal: SignalKind,
    /// The Jaccard similarity of the terms (0 to 1).
    pub score: f64,
    /// The terms in common.
    pub shared: Vec<String>,
    /// The categories its occurrences were diagnosed as.
    pub categories: Vec<Category>,
    /// How each action fared on it.
    pub actions: Vec<ActionTally>,
}

impl Recalled {
    /// How an action fared on it, if it was tried.
    pub fn tally(&self, action: ActionType) -> Option<&ActionTally> {
        self.actions
            .iter()
            .find(|t| t.type_ == action && (t.effective > 0 || t.ineffective > 0))
    }

    /// Whether one of its occurrences was diagnosed as this category.
    pub fn of_category(&self, category: Category) -> bool {
        self.categories.contains(&category)
    }

    /// "Rollback cleared the same problem on deployment/a 2 time(s);
    /// RolloutRestart did not clear it 1 time(s)".
    pub fn sentence(&self) -> String {
        let mut parts = vec![];
        for t in &self.actions {
            let (a, on) = (t.type_.as_str(), &self.target);
            if t.effective > 0 {
                parts.push(format!(
                    "{a} cleared the same problem on {on} {} time(s)",
                    t.effective
                ));
            }
            if t.ineffective > 0 {
                parts.push(format!(
                    "{a} did not clear it on {on} {} time(s)",
                    t.ineffective
                ));
            }
        }
        let categories: Vec<String> = self.categories.iter().map(|c| format!("{c:?}")).collect();
        format!(
            "{:.0}% similar ({} signal{}; shared terms: {}): {}",
            self.score * 100.0,
            self.signal.as_str(),
            if categories.is_empty() {
                String::new()
            } else {
                format!(", diagnosed {}", categories.join(", "))
            },
            self.shared.join(", "),
            parts.join("; ")
        )
    }
}

/// The problems of other workloads of the incident's own namespace that are
/// the same problem as this one: the same signal kind, terms in common at
/// or above `THRESHOLD`, and an action whose outcome is recorded. At most
/// `MAX_RECALLED`, most similar first. A memory of another namespace (or of
/// none) is never recalled, whatever the caller passes.
pub fn recall(
    incident: &Incident,
    own: Option<&IncidentMemorySpec>,
    memories: &[IncidentMemory],
) -> Vec<Recalled> {
    let Some(namespace) = incident.metadata.namespace.as_deref() else {
        return vec![];
    };
    let ours = terms(incident, own);
    let same_namespace: Vec<IncidentMemory> = memories
        .iter()
        .take(MAX_CANDIDATES)
        .filter(|m| m.metadata.namespace.as_deref() == Some(namespace))
        .filter(|m| m.spec.target != incident.spec.target)
        .filter(|m| m.spec.signal == incident.spec.signal)
        .cloned()
        .collect();
    rank(
        &incident.spec.fingerprint,
        incident.spec.signal,
        &ours,
        &same_namespace,
    )
    .into_iter()
    .filter(|m| m.score >= THRESHOLD)
    .filter(|m| {
        m.memory
            .spec
            .actions
            .iter()
            .any(|t| t.effective > 0 || t.ineffective > 0)
    })
    .take(MAX_RECALLED)
    .map(|m| {
        let mut categories: Vec<Category> = vec![];
        for c in m.memory.spec.occurrences.iter().filter_map(|o| o.category) {
            if !categories.contains(&c) {
                categories.push(c);
            }
        }
        Recalled {
            memory: m.memory.metadata.name.clone().unwrap_or_default(),
            target: m.memory.spec.target.clone(),
            signal: m.memory.spec.signal,
            score: m.score,
            shared: m.shared.iter().map(|s| crate::redact::string(s)).collect(),
            categories,
            actions: m.memory.spec.actions.clone(),
        }
    })
    .collect()
}

/// Whether `action` held on the similar problems diagnosed as `category`:
/// it cleared one of them at least once, and did not fail on them more
/// often than it worked. Returns the times it worked.
pub fn held(similar: &[Recalled], category: Category, action: ActionType) -> Option<i32> {
    let (worked, failed) = similar
        .iter()
        .filter(|r| r.of_category(category))
        .filter_map(|r| r.tally(action))
        .fold((0i32, 0i32), |(w, f), t| {
            (
                w.saturating_add(t.effective),
                f.saturating_add(t.ineffective),
            )
        });
    (worked > 0 && worked >= failed).then_some(worked)
}

#[cfg(test)]
mod tests;
