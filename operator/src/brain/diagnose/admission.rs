//! Pods the API server refuses to create (FailedCreate): a ResourceQuota, a
//! LimitRange, Pod Security, a missing ServiceAccount or an admission
//! webhook. No pod exists to restart; the refusal's own words say which
//! rule and which resource, and a person changes the pods or the rule.

use super::{Case, Cite, checked, first_match, group, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

/// The refusal: the newest FailedCreate event of the workload or its
/// ReplicaSets, its ReplicaFailure condition, or the signal.
pub(super) fn refusal<'a>(c: &'a Case) -> Option<&'a str> {
    let w = c.facts.workload.as_ref();
    w.and_then(|w| {
        w.events
            .iter()
            .rev()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .find_map(|e| e.message.as_deref())
    })
    .or_else(|| {
        w?.conditions
            .iter()
            .filter(|k| k.type_ == "ReplicaFailure" && k.status == "True")
            .find_map(|k| k.message.as_deref())
    })
    .or_else(|| {
        c.facts
            .observation
            .as_ref()
            .map(|o| o.message.as_str())
            .filter(|m| m.contains("forbidden") || m.contains("denied"))
    })
}

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    // The Scout's own message of a FailedCreate signal quotes the refusal
    // when nothing else was read.
    let observed = c
        .facts
        .observation
        .as_ref()
        .filter(|_| c.facts.signal == crate::crd::SignalKind::FailedCreate)
        .map(|o| o.message.as_str());
    let Some(text) = refusal(c).or(observed) else {
        return vec![];
    };
    let Some((category, statement, confirm, refute)) = explain(c, text) else {
        return vec![];
    };
    let mut hypotheses = Vec::new();
    // A rollout that raised the pods' resources is what the quota refuses.
    if category == Category::QuotaExceeded
        && let Some(r) = c
            .facts
            .rollout
            .as_ref()
            .filter(|r| r.changes.iter().any(|ch| ch.field.contains(".resources.")))
    {
        hypotheses.push(c.bad_rollout(
            r,
            &format!("and since then {statement}"),
            0.9,
            c.cite(&[Cite::Rollout, Cite::Workload, Cite::Signal]),
        ));
    }
    hypotheses.push(checked(
        hypothesis(
            category,
            statement,
            0.9,
            c.cite(&[Cite::Workload, Cite::Signal]),
            Some(ActionType::Escalate),
        ),
        confirm,
        refute,
    ));
    hypotheses
}

type Finding = (Category, String, String, String);

fn explain(c: &Case, text: &str) -> Option<Finding> {
    let (ns, owner, prefix) = (c.ns(), c.owner(), c.spec_path());
    let one = |p: &str| first_match(p, [text]);
    if let Some(m) = one(
        r"exceeded quota: ([^,]+), requested: ([^,]+(?:,[^,:]+=[^,]+)*), used: ([^,]+(?:,[^,:]+=[^,]+)*), limited: (.+)$",
    ) {
        let (quota, requested, used, limited) =
            (group(&m, 1), group(&m, 2), group(&m, 3), group(&m, 4));
        return Some((
            Category::QuotaExceeded,
            format!(
                "ResourceQuota `{quota}` in `{ns}` refuses the pods of {owner}: they request {requested} while {used} of {limited} is used; raise the quota, free some of it, or lower the requests at {prefix}.containers[*].resources"
            ),
            format!("`kubectl describe resourcequota {quota} -n {ns}` shows {used} of {limited}"),
            format!("ResourceQuota `{quota}` has room for {requested}"),
        ));
    }
    if let Some(m) = one(r"failed quota: ([^:]+): must specify (.+)$") {
        let (quota, what) = (group(&m, 1), group(&m, 2));
        return Some((
            Category::QuotaExceeded,
            format!(
                "ResourceQuota `{quota}` in `{ns}` requires every pod to set {what}, and the pods of {owner} do not: set them at {prefix}.containers[*].resources, or add a LimitRange with defaults"
            ),
            format!("the containers of {owner} have no such requests or limits"),
            "every container sets the named requests and limits".into(),
        ));
    }
    if let Some(m) = one(
        r"((?:maximum|minimum) (\S+) usage per (?:Container|Pod) is \S+, but (?:limit|request) is \S+|(\S+) max limit to request ratio per (?:Container|Pod) is \S+, but provided ratio is \S+)",
    ) {
        let rule = group(&m, 1);
        let resource = m.get(2).or(m.get(3)).map(|g| g.as_str()).unwrap_or("");
        return Some((
            Category::QuotaExceeded,
            format!(
                "a LimitRange in `{ns}` refuses the pods of {owner}: {rule}; change {resource} at {prefix}.containers[*].resources, or the LimitRange"
            ),
            format!("`kubectl describe limitrange -n {ns}` shows this {resource} bound"),
            format!("the LimitRange allows the pods' {resource}"),
        ));
    }
    if let Some(m) = one(r#"violates PodSecurity "([^"]+)": (.+)$"#) {
        let (level, violations) = (group(&m, 1), group(&m, 2));
        let mut fields: Vec<String> = regex::Regex::new(r"securityContext\.[A-Za-z.]+|spec\.[A-Za-z.]+|\b(?:hostNetwork|hostPID|hostIPC|hostPath volumes?|hostPort)\b")
            .map(|re| re.find_iter(&violations).map(|f| f.as_str().to_string()).collect())
            .unwrap_or_default();
        fields.dedup();
        let fields = if fields.is_empty() {
            String::new()
        } else {
            format!(" (fields: {})", fields.join(", "))
        };
        return Some((
            Category::ConfigError,
            format!(
                "Pod Security `{level}` enforced in `{ns}` refuses the pods of {owner}: {violations}; set these in {prefix} (the pod's and containers' securityContext){fields}, or change the namespace's pod-security.kubernetes.io/enforce label"
            ),
            format!("the namespace `{ns}` has the label pod-security.kubernetes.io/enforce"),
            "a pod with the named fields set is still refused".into(),
        ));
    }
    if let Some(m) = one(r#"serviceaccount "([^"]+)" not found"#) {
        let sa = group(&m, 1);
        return Some((
            Category::ConfigError,
            format!(
                "ServiceAccount `{sa}` does not exist in `{ns}`; it is named at {prefix}.serviceAccountName of {owner}: create it, or fix the name"
            ),
            format!("`kubectl get serviceaccount {sa} -n {ns}` answers NotFound"),
            format!("ServiceAccount `{sa}` exists in `{ns}`"),
        ));
    }
    if let Some(m) = one(r#"admission webhook "([^"]+)" denied the request: (.+)$"#) {
        let (hook, why) = (group(&m, 1), group(&m, 2));
        return Some((
            Category::ConfigError,
            format!(
                "admission webhook `{hook}` refuses the pods of {owner}: {why}; change the pods as it asks, or its policy"
            ),
            format!("the webhook `{hook}` refuses a dry-run of the pod"),
            format!("the webhook `{hook}` admits the pod"),
        ));
    }
    Some((
        Category::ConfigError,
        format!("the API server refuses the pods of {owner}: {text}"),
        "a dry-run of the pod is refused the same way".into(),
        "a dry-run of the pod is admitted".into(),
    ))
}
