//! What worked before for this very problem outranks the rules' guess.

use crate::brain::Facts;
use crate::crd::Hypothesis;

/// Raises the hypotheses whose action cleared this problem before and lowers
/// those whose action did not, citing the history (evidence `history_id`).
pub(super) fn weigh(hypotheses: &mut [Hypothesis], facts: &Facts, history_id: Option<&String>) {
    let history = facts.memory.as_ref().filter(|m| !m.occurrences.is_empty());
    let (Some(m), Some(id)) = (history, history_id) else {
        return;
    };
    for h in hypotheses {
        let Some(action) = h.proposed_action else {
            continue;
        };
        if let Some(t) = m.actions.iter().find(|t| t.type_ == action) {
            if t.effective > 0 {
                h.confidence = (h.confidence + 0.05).min(1.0);
                h.evidence.push(id.clone());
            } else if t.ineffective > 0 {
                h.confidence = (h.confidence - 0.2).max(0.05);
                h.evidence.push(id.clone());
            }
        }
    }
}
