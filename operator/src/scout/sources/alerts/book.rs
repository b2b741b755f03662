//! The firing alerts the leader holds, and which policy's trigger accepts
//! each for which workload. Pure: the source loop passes the policies and
//! ReplicaSets in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use regex::Regex;
use sha2::{Digest, Sha256};

use super::payload::{Alert, Status};
use crate::crd::{
    AlertMatcher, AlertTrigger, MatchOperator, RemediationPolicy, SignalKind, WorkloadKind,
    WorkloadSelector,
};
use crate::limits::MAX_HELD_ALERTS;
use crate::scout::measured::Subject;

/// How long a firing alert is held after it was last received when its
/// `endsAt` says nothing later: longer than the `repeat_interval` the
/// receiver's route should set (docs/alerts.md), so an alert still firing
/// is sent again before it expires.
pub const HOLD_SECONDS: i64 = 15 * 60;

/// The compiled size a matcher's regular expression may reach: a policy
/// cannot make the operator build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// A firing alert, as last received.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub alert: Alert,
    pub received_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The firing alerts, by the identity of their label set (what
/// Alertmanager's fingerprint hashes; ours is computed, not taken from the
/// sender).
#[derive(Clone, Debug, Default)]
pub struct Book {
    firing: BTreeMap<String, Held>,
}

fn identity(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Book {
    /// Takes the alerts of one notification: a firing one is held (again),
    /// a resolved one let go.
    pub fn receive(&mut self, alerts: Vec<Alert>, now: Timestamp) {
        for alert in alerts {
            let id = identity(&alert.labels);
            match alert.status {
                Status::Resolved => {
                    self.firing.remove(&id);
                }
                Status::Firing => {
                    let hold = crate::limits::after(now, HOLD_SECONDS);
                    let expires_at = alert.ends_at.map_or(hold, |end| end.max(hold));
                    if !self.firing.contains_key(&id) && self.firing.len() >= MAX_HELD_ALERTS {
                        self.drop_soonest();
                    }
                    self.firing.insert(
                        id,
                        Held {
                            alert,
                            received_at: now,
                            expires_at,
                        },
                    );
                }
            }
        }
    }

    fn drop_soonest(&mut self) {
        let soonest = self
            .firing
            .iter()
            .min_by_key(|(_, h)| h.expires_at)
            .map(|(id, _)| id.clone());
        if let Some(id) = soonest {
            self.firing.remove(&id);
        }
    }

    /// Lets go of the alerts not sent again before they expired.
    pub fn expire(&mut self, now: Timestamp) {
        self.firing.retain(|_, h| h.expires_at > now);
    }

    /// The alerts firing at `now`.
    pub fn firing(&self, now: Timestamp) -> Vec<Held> {
        self.firing
            .values()
            .filter(|h| h.expires_at > now)
            .cloned()
            .collect()
    }
}

/// A matcher ready to apply; a regular expression that does not compile
/// (or would be too large) matches nothing.
enum Compiled<'a> {
    Equal(&'a str, &'a str, bool),
    Regex(&'a str, Option<Regex>, bool),
}

fn compile(m: &AlertMatcher) -> Compiled<'_> {
    let regex = |v: &str| {
        regex::RegexBuilder::new(&format!("^(?:{v})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .ok()
    };
    match m.operator {
        MatchOperator::Equal => Compiled::Equal(&m.label, &m.value, true),
        MatchOperator::NotEqual => Compiled::Equal(&m.label, &m.value, false),
        MatchOperator::Regex => Compiled::Regex(&m.label, regex(&m.value), true),
        MatchOperator::NotRegex => Compiled::Regex(&m.label, regex(&m.value), false),
    }
}

/// Why a matcher of a trigger cannot be used: its regular expression does
/// not compile within the size limit. For the policy's Ready condition.
pub fn invalid_matcher(t: &AlertTrigger) -> Option<String> {
    t.matchers.iter().find_map(|m| match compile(m) {
        Compiled::Regex(label, None, _) => Some(format!(
            "alert matcher on {label:?}: {:?} is not a regular expression of at most {REGEX_SIZE_LIMIT} bytes compiled",
            m.value
        )),
        _ => None,
    })
}

/// Whether a trigger accepts an alert: by name (when it lists names) and
/// by every matcher. A missing label has the empty value, as in
/// Alertmanager.
fn accepts(t: &AlertTrigger, matchers: &[Compiled], alert: &Alert) -> bool {
    let named = t.alert_names.is_empty() || t.alert_names.contains(&alert.name);
    named
        && matchers.iter().all(|m| {
            let value = |label: &str| alert.labels.get(label).map_or("", String::as_str);
            match m {
                Compiled::Equal(label, v, eq) => (value(label) == *v) == *eq,
                Compiled::Regex(label, Some(re), eq) => re.is_match(value(label)) == *eq,
                Compiled::Regex(_, None, _) => false,
            }
        })
}

/// Whether the policy's selector covers the Deployment `name` of `ns`:
/// the pod template of one of its ReplicaSets carries the labels.
pub fn covers(
    selector: &WorkloadSelector,
    ns: &str,
    name: &str,
    replicasets: &[Arc<ReplicaSet>],
) -> bool {
    replicasets.iter().any(|rs| {
        rs.namespace().as_deref() == Some(ns)
            && rs
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "Deployment" && o.name == name)
            && rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
                .is_some_and(|labels| crate::workload::selector_matches(selector, labels))
    })
}

/// The Alert triggers of a policy, with the fixed workload each names.
pub fn triggers(policy: &RemediationPolicy) -> impl Iterator<Item = (&AlertTrigger, Option<&str>)> {
    policy
        .spec
        .triggers
        .iter()
        .filter(|t| t.type_ == SignalKind::Alert)
        .filter_map(|t| Some((t.alert.as_ref()?, t.workload.as_deref())))
}

/// Which subject (a policy's Deployment) each firing alert is trouble for.
/// An alert counts only for a policy of the namespace its namespace label
/// names, whose trigger accepts it, and for a Deployment that policy
/// covers: nothing in the alert can point the operator elsewhere.
pub fn subjects(
    policies: &[Arc<RemediationPolicy>],
    firing: &[Held],
    replicasets: &[Arc<ReplicaSet>],
) -> HashMap<Subject, Vec<Held>> {
    let mut out: HashMap<Subject, Vec<Held>> = HashMap::new();
    for policy in policies
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let ns = policy.namespace().unwrap_or_default();
        for (trigger, fixed) in triggers(policy) {
            let matchers: Vec<Compiled> = trigger.matchers.iter().map(compile).collect();
            for held in firing {
                let a = &held.alert;
                if a.labels.get(&trigger.namespace_label) != Some(&ns)
                    || !accepts(trigger, &matchers, a)
                {
                    continue;
                }
                let Some(workload) =
                    fixed.or(a.labels.get(&trigger.workload_label).map(String::as_str))
                else {
                    continue;
                };
                if !covers(&policy.spec.selector, &ns, workload, replicasets) {
                    continue;
                }
                let subject = Subject {
                    namespace: ns.clone(),
                    policy: policy.name_any(),
                    kind: SignalKind::Alert,
                    workload: workload.to_string(),
                    workload_kind: WorkloadKind::Deployment,
                };
                let alerts = out.entry(subject).or_default();
                if !alerts.contains(held) {
                    alerts.push(held.clone());
                }
            }
        }
    }
    out
}

/// What a subject's firing alerts say, in one line for the Incident and the
/// Brain: the names, since when, the first alert's summary, source, labels
/// and annotations. Values are quoted (escaped) and cut: they are data.
pub fn summary(alerts: &[Held]) -> String {
    let mut names: Vec<&str> = alerts.iter().map(|h| h.alert.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let Some(first) = alerts
        .iter()
        .min_by_key(|h| h.alert.starts_at.unwrap_or(h.received_at))
    else {
        return "no alert fires".into();
    };
    let a = &first.alert;
    let quoted = |v: &str| format!("{:?}", super::payload::cut(v, 200));
    let since = a.starts_at.unwrap_or(first.received_at);
    let mut text = format!(
        "alert {} firing since {since} ({} series)",
        names.join(", "),
        alerts.len()
    );
    if let Some(s) = a.annotations.get("summary") {
        text.push_str(&format!(": {}", quoted(s)));
    }
    if !a.generator_url.is_empty() {
        text.push_str(&format!("; source: {}", quoted(&a.generator_url)));
    }
    let labels: Vec<String> = a
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quoted(v)))
        .collect();
    text.push_str(&format!("; labels: {}", labels.join(", ")));
    let annotations: Vec<String> = a
        .annotations
        .iter()
        .filter(|(k, _)| k.as_str() != "summary")
        .map(|(k, v)| format!("{k}={}", quoted(v)))
        .collect();
    if !annotations.is_empty() {
        text.push_str(&format!("; annotations: {}", annotations.join(", ")));
    }
    super::payload::cut(&text, 2000).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Trigger;
    use crate::scout::sources::alerts::payload::{parse, tests::firing_payload};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn policy(trigger: AlertTrigger, workload: Option<&str>) -> Arc<RemediationPolicy> {
        let mut p = crate::testing::policy(crate::crd::Mode::Automatic);
        p.metadata.namespace = Some("shop".into());
        p.spec.selector.match_labels = [("tier".to_string(), "backend".to_string())].into();
        let mut t = Trigger::of(SignalKind::Alert);
        t.alert = Some(trigger);
        t.workload = workload.map(str::to_string);
        p.spec.triggers = vec![t];
        Arc::new(p)
    }

    fn by_name(names: &[&str]) -> AlertTrigger {
        AlertTrigger {
            alert_names: names.iter().map(|n| n.to_string()).collect(),
            matchers: vec![],
            namespace_label: "namespace".into(),
            workload_label: "deployment".into(),
            category: None,
        }
    }

    fn replicaset(ns: &str, deployment: &str, tier: &str) -> Arc<ReplicaSet> {
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{deployment}-7d4b9c"), "namespace": ns,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                    "uid": "u", "controller": true}]},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"tier": tier}}}}
        }))
        .expect("replicaset");
        Arc::new(rs)
    }

    fn received() -> Book {
        let mut book = Book::default();
        book.receive(parse(firing_payload().as_bytes()).expect("parses"), at(0));
        book
    }

    fn covered() -> Vec<Arc<ReplicaSet>> {
        vec![replicaset("shop", "policy-service", "backend")]
    }

    #[test]
    fn alerts_of_one_name_across_pods_of_a_deployment_are_one_subject() {
        let book = received();
        let found = subjects(
            &[policy(by_name(&["HighErrorRate"]), None)],
            &book.firing(at(1)),
            &covered(),
        );
        assert_eq!(found.len(), 1);
        let (subject, alerts) = found.iter().next().expect("one");
        assert_eq!(subject.workload, "policy-service");
        assert_eq!(subject.kind, SignalKind::Alert);
        assert_eq!(alerts.len(), 2);
        let text = summary(alerts);
        assert!(
            text.starts_with(
                "alert HighErrorRate firing since 2026-12-03T07:30:00.123Z (2 series): \"policy-service fails 30% of requests\"; source: \"http://prometheus.monitoring:9090/graph?"
            ),
            "{text}"
        );
        assert!(text.contains("severity=\"page\""), "{text}");
        assert!(
            text.contains("runbook_url=\"https://runbooks.example/high-error-rate\""),
            "{text}"
        );
    }

    #[test]
    fn the_same_notification_again_holds_the_same_alerts_once() {
        let mut book = received();
        book.receive(parse(firing_payload().as_bytes()).expect("parses"), at(60));
        assert_eq!(book.firing(at(61)).len(), 2);
    }

    #[test]
    fn an_alert_of_another_name_namespace_or_an_uncovered_deployment_is_not_trouble() {
        let book = received();
        let firing = book.firing(at(1));
        let other_name = policy(by_name(&["HighLatency"]), None);
        assert!(subjects(&[other_name], &firing, &covered()).is_empty());
        let mut elsewhere = (*policy(by_name(&[]), None)).clone();
        elsewhere.spec.triggers[0]
            .alert
            .as_mut()
            .expect("alert")
            .matchers = vec![AlertMatcher {
            label: "severity".into(),
            operator: MatchOperator::Equal,
            value: "page".into(),
        }];
        elsewhere.metadata.namespace = Some("payments".into());
        assert!(subjects(&[Arc::new(elsewhere)], &firing, &covered()).is_empty());
        let frontend_only = vec![replicaset("shop", "policy-service", "frontend")];
        let p = policy(by_name(&["HighErrorRate"]), None);
        assert!(subjects(std::slice::from_ref(&p), &firing, &frontend_only).is_empty());
        let other_ns = vec![replicaset("payments", "policy-service", "backend")];
        assert!(subjects(&[p], &firing, &other_ns).is_empty());
    }

    #[test]
    fn matchers_select_by_label_equality_and_anchored_regex() {
        let book = received();
        let firing = book.firing(at(1));
        let with = |operator, value: &str| {
            let mut t = by_name(&[]);
            t.matchers = vec![AlertMatcher {
                label: "severity".into(),
                operator,
                value: value.into(),
            }];
            subjects(&[policy(t, None)], &firing, &covered()).len()
        };
        assert_eq!(with(MatchOperator::Equal, "page"), 1);
        assert_eq!(with(MatchOperator::NotEqual, "page"), 0);
        assert_eq!(with(MatchOperator::Regex, "pa.e|critical"), 1);
        assert_eq!(with(MatchOperator::Regex, "pa"), 0, "anchored at both ends");
        assert_eq!(with(MatchOperator::NotRegex, "warn.*"), 1);
        assert_eq!(with(MatchOperator::Regex, "(unclosed"), 0);
    }

    #[test]
    fn a_regex_that_does_not_compile_or_is_too_large_is_reported() {
        let mut t = by_name(&[]);
        t.matchers = vec![AlertMatcher {
            label: "pod".into(),
            operator: MatchOperator::Regex,
            value: "(a{1000}){1000}".into(),
        }];
        let why = invalid_matcher(&t).expect("too large");
        assert!(why.starts_with("alert matcher on \"pod\""), "{why}");
        let mut p = (*policy(t.clone(), None)).clone();
        p.spec.triggers[0].alert = Some(t.clone());
        let problems = crate::policy::validate(&p.spec, &[]);
        assert!(
            problems.iter().any(|p| p.reason == "InvalidAlertMatcher"
                && p.message.starts_with("triggers[0].alert matcher")),
            "the policy is not Ready: {problems:?}"
        );
        t.matchers[0].value = "policy-service-.*".into();
        assert_eq!(invalid_matcher(&t), None);
    }

    #[test]
    fn the_triggers_fixed_workload_wins_over_any_label() {
        let book = received();
        let mut rs = covered();
        rs.push(replicaset("shop", "quote-service", "backend"));
        let found = subjects(
            &[policy(by_name(&["HighErrorRate"]), Some("quote-service"))],
            &book.firing(at(1)),
            &rs,
        );
        let names: Vec<&str> = found.keys().map(|s| s.workload.as_str()).collect();
        assert_eq!(names, ["quote-service"]);
    }

    #[test]
    fn a_resolved_alert_is_let_go_and_an_alert_not_sent_again_expires() {
        let mut book = received();
        let resolved = firing_payload().replacen(
            "\"status\": \"firing\",\n      \"labels\"",
            "\"status\": \"resolved\",\n      \"labels\"",
            1,
        );
        book.receive(parse(resolved.as_bytes()).expect("parses"), at(30));
        assert_eq!(book.firing(at(31)).len(), 1, "one pod's alert resolved");
        assert_eq!(book.firing(at(HOLD_SECONDS + 29)).len(), 1);
        assert!(book.firing(at(HOLD_SECONDS + 30)).is_empty(), "expired");
        book.expire(at(HOLD_SECONDS + 30));
        assert!(book.firing.is_empty());
    }

    #[test]
    fn a_full_book_drops_the_alert_due_to_expire_first() {
        let mut book = Book::default();
        let alerts = parse(firing_payload().as_bytes()).expect("parses");
        for i in 0..MAX_HELD_ALERTS {
            let mut a = alerts[0].clone();
            a.labels.insert("pod".into(), format!("p{i}"));
            book.receive(vec![a], at(i64::try_from(i).expect("small")));
        }
        let mut newest = alerts[0].clone();
        newest.labels.insert("pod".into(), "new".into());
        book.receive(vec![newest], at(100_000));
        assert_eq!(book.firing.len(), MAX_HELD_ALERTS);
        assert!(
            !book.firing.values().any(|h| h.alert.labels["pod"] == "p0"),
            "the oldest went"
        );
    }
}
