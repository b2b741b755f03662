//! What held, or failed, on the same problem of other workloads: cited, and
//! a little weight, always less than this problem's own history.

use crate::brain::Facts;
use crate::crd::Hypothesis;

/// A fix that held on a similar problem raises its hypothesis by this much.
const HELD: f64 = 0.04;
/// A fix that only failed on similar problems lowers it by this much.
const FAILED: f64 = 0.1;

/// Cites the similar problems (evidence `ids`, in `facts.similar`'s order)
/// on each hypothesis whose category they were diagnosed as and whose
/// action they tried; raises it where the action held there and lowers it
/// where it only failed. Where this problem's own history has a verdict on
/// the action, that verdict stands alone (`history::weigh`), and the
/// similar ones are cited without weight.
pub(super) fn weigh(hypotheses: &mut [Hypothesis], facts: &Facts, ids: &[String]) {
    for h in hypotheses {
        let Some(action) = h.proposed_action else {
            continue;
        };
        let own_verdict = facts
            .memory
            .as_ref()
            .and_then(|m| m.actions.iter().find(|t| t.type_ == action))
            .is_some_and(|t| t.effective > 0 || t.ineffective > 0);
        let (mut worked, mut failed) = (0i32, 0i32);
        for (r, id) in facts.similar.iter().zip(ids) {
            let Some(t) = r.tally(action).filter(|_| r.of_category(h.category)) else {
                continue;
            };
            worked = worked.saturating_add(t.effective);
            failed = failed.saturating_add(t.ineffective);
            if !h.evidence.contains(id) {
                h.evidence.push(id.clone());
            }
        }
        if own_verdict {
            continue;
        }
        if worked > 0 && worked >= failed {
            h.confidence = (h.confidence + HELD).min(1.0);
        } else if worked == 0 && failed > 0 {
            h.confidence = (h.confidence - FAILED).max(0.05);
        }
    }
}
