//! RemediationPolicy: validation beyond what the API server's schema can say,
//! and the workloads a policy covers. Its status says whether it is in force
//! and, when not, what to fix.

mod unreadable;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use crate::allowlist::{AllowList, Tenant};
use crate::crd::{
    ActionType, ConditionStatus, RemediationPolicy, RemediationPolicySpec, WorkloadKind,
    WorkloadRef,
};
use crate::quantity::parse_bytes;
use crate::workload::selector_matches;
use crate::{Result, conditions};

/// A reason a policy cannot be in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase, for the Ready condition's reason.
    pub reason: &'static str,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Checks a policy against itself and the workloads it covers.
pub fn validate(
    spec: &RemediationPolicySpec,
    covered: &[(WorkloadRef, PodTemplateSpec)],
) -> Vec<Problem> {
    // A CRD installed by an older version may have let in numbers the
    // schema now refuses; such a policy never acts.
    let mut problems: Vec<Problem> = crate::crd::bounds::out_of_bounds(spec)
        .into_iter()
        .map(|message| Problem {
            reason: "ValueOutOfRange",
            message,
        })
        .collect();
    // Measured signals name what they watch, so a kind may be listed once
    // per workload or Service (a Metric trigger once per workload and
    // query); pod signals once.
    let subject = |t: &crate::crd::Trigger| {
        let watched = t.workload.clone().or_else(|| {
            t.health_check
                .as_ref()
                .and_then(|h| h.service.as_ref())
                .map(|s| format!("service/{}", s.name))
        });
        match &t.metric {
            Some(m) => Some(format!(
                "{}query {:?}",
                watched.map(|w| format!("{w} by ")).unwrap_or_default(),
                m.query
            )),
            None => watched,
        }
    };
    for (i, t) in spec.triggers.iter().enumerate() {
        if spec.triggers[..i]
            .iter()
            .any(|u| u.type_ == t.type_ && subject(u) == subject(t))
        {
            problems.push(Problem {
                reason: "DuplicateTrigger",
                message: format!(
                    "triggers[{i}]: {}{} is listed twice; keep one",
                    t.type_.as_str(),
                    subject(t).map(|s| format!(" for {s}")).unwrap_or_default()
                ),
            });
        }
        if let Some(why) = t
            .alert
            .as_ref()
            .and_then(crate::scout::sources::alerts::book::invalid_matcher)
        {
            problems.push(Problem {
                reason: "InvalidAlertMatcher",
                message: format!("triggers[{i}].{why}"),
            });
        }
        if let Some(name) = &t.workload
            && !covered
                .iter()
                .any(|(w, _)| w.kind == crate::crd::WorkloadKind::Deployment && &w.name == name)
        {
            problems.push(Problem {
                reason: "WorkloadNotCovered",
                message: format!(
                    "triggers[{i}].workload is {name}, but no Deployment of that name is covered by the policy's selector; \
                     fix the name or widen the selector"
                ),
            });
        }
    }
    for (i, step) in spec.actions.iter().enumerate() {
        if step.type_ == ActionType::Escalate && i + 1 < spec.actions.len() {
            problems.push(Problem {
                reason: "StepsAfterEscalate",
                message: format!(
                    "actions[{i}] is Escalate, so the steps after it never run; move it last"
                ),
            });
        }
        let Some(raise) = &step.memory else { continue };
        if let Some(Err(e)) = raise.min_increase.as_deref().map(parse_bytes) {
            problems.push(Problem {
                reason: "InvalidQuantity",
                message: format!("actions[{i}].memory.minIncrease: {e}"),
            });
        }
        let cap = match parse_bytes(&raise.max) {
            Ok(cap) => cap,
            Err(e) => {
                problems.push(Problem {
                    reason: "InvalidQuantity",
                    message: format!("actions[{i}].memory.max: {e}"),
                });
                continue;
            }
        };
        for (workload, template) in covered {
            for c in template.spec.iter().flat_map(|s| s.containers.iter()) {
                let limit = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get("memory"));
                if let Some(limit) = limit
                    && parse_bytes(&limit.0).is_ok_and(|l| l > cap)
                {
                    problems.push(Problem {
                        reason: "CapBelowCurrentLimit",
                        message: format!(
                            "actions[{i}].memory.max is {} but container {} of {workload} already has a limit of {}; \
                             raise memory.max above it or remove the step",
                            raise.max, c.name, limit.0
                        ),
                    });
                }
            }
        }
    }
    problems
}

/// Checks what a policy would make the operator's credentials and network
/// reach against the operator-side allow-list: its GitHub repository and
/// GitOps file, and its health-check URLs (before any lookup; the probe
/// checks the addresses again).
pub fn check_allowlist(
    spec: &RemediationPolicySpec,
    tenant: &Tenant,
    allow: &AllowList,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(gh) = &spec.github {
        let path = gh.gitops.as_ref().map(|g| g.path.as_str());
        let checked = allow
            .check_github(tenant, &gh.repository, None)
            .and_then(|()| match path {
                Some(p) => allow.check_github(tenant, &gh.repository, Some(p)),
                None => Ok(()),
            })
            .and_then(|()| match &gh.gitops {
                Some(g) => crate::github::check_branch(&g.base_branch)
                    .map_err(|e| format!("github.gitops.baseBranch: {e}")),
                None => Ok(()),
            });
        if let Err(message) = checked {
            problems.push(Problem {
                reason: "RepositoryNotAllowed",
                message,
            });
        }
    }
    for (i, t) in spec.triggers.iter().enumerate() {
        let Some(url) = t.health_check.as_ref().and_then(|h| h.url.as_ref()) else {
            continue;
        };
        if let Err(why) = allow.plan_health_url(tenant, url) {
            problems.push(Problem {
                reason: "HealthCheckTargetNotAllowed",
                message: format!("triggers[{i}].healthCheck.url: {why}"),
            });
        }
    }
    problems
}

/// Whether a policy still selects an incident's target, judged on the
/// labels of the target's pod template and current pods: the selector may
/// have changed since the incident opened. Err says why not, for the
/// `TargetNotSelected` condition.
pub fn selects_target<'a>(
    policy: &RemediationPolicy,
    target: &WorkloadRef,
    labels: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> std::result::Result<(), String> {
    let name = policy.name_any();
    if policy.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "policy {name} is being deleted; nothing is done to {target}"
        ));
    }
    let mut seen = false;
    for l in labels {
        if selector_matches(&policy.spec.selector, l) {
            return Ok(());
        }
        seen = true;
    }
    Err(if seen {
        format!(
            "policy {name} no longer selects {target} (its selector matches neither the pod template nor a pod of it); \
             nothing is done until the selector or the labels cover it again"
        )
    } else {
        format!(
            "{target} has no pod template or pod left to check against policy {name}'s selector; nothing is done"
        )
    })
}

/// The workloads of a namespace and their pod templates.
async fn workloads(client: &kube::Client, ns: &str) -> Result<Vec<(WorkloadRef, PodTemplateSpec)>> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    let named = |kind, name: Option<String>| WorkloadRef {
        kind,
        name: name.unwrap_or_default(),
    };
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push((
            named(WorkloadKind::Deployment, d.metadata.name),
            d.spec.template,
        ));
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push((
            named(WorkloadKind::StatefulSet, s.metadata.name),
            s.spec.template,
        ));
    }
    for s in Api::<DaemonSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push((
            named(WorkloadKind::DaemonSet, s.metadata.name),
            s.spec.template,
        ));
    }
    Ok(out)
}

/// Sets one condition in a policy's status, as the sources of measured
/// signals report whether they can measure (`KafkaAvailable`,
/// `HealthChecksAvailable`, `TracesAvailable`). Writes only on a change, and
/// retries when the policy changed in between.
pub async fn set_condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> Result<()> {
    let api: Api<RemediationPolicy> = Api::namespaced(client.clone(), ns);
    let mut attempts = 0;
    loop {
        let Some(mut policy) = api.get_opt(name).await? else {
            return Ok(());
        };
        let mut s = policy.status.clone().unwrap_or_default();
        let before = s.conditions.clone();
        conditions::set(
            &mut s.conditions,
            type_,
            status,
            reason,
            message,
            policy.metadata.generation,
            Timestamp::now(),
        );
        if s.conditions == before {
            return Ok(());
        }
        policy.status = Some(s);
        policy.metadata.managed_fields = None;
        let pp = kube::api::PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace_status(name, &pp, &policy).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the policy controller reads and writes.
pub struct Context {
    pub client: kube::Client,
    pub publisher: crate::publish::Publisher,
    /// What each namespace's policies may reach.
    pub allowlist: Arc<crate::allowlist::Shared>,
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// How often a policy's matched workloads are recounted.
const RECHECK: Duration = Duration::from_secs(30);

/// Validates a policy and reports what it covers; a policy that cannot be
/// read is reported so.
pub async fn reconcile(
    policy: Arc<DeserializeGuard<RemediationPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let now = ctx.clock.now();
    match &policy.0 {
        Ok(p) => validate_and_report(p, &ctx, now).await,
        Err(invalid) => unreadable::report(invalid, &ctx, now).await,
    }
}

/// Validates a policy and reports what it covers.
async fn validate_and_report(
    policy: &RemediationPolicy,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let covered: Vec<(WorkloadRef, PodTemplateSpec)> = workloads(&ctx.client, &ns)
        .await?
        .into_iter()
        .filter(|(_, t)| {
            let labels = t
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            selector_matches(&policy.spec.selector, &labels)
        })
        .collect();
    // What the policy may reach comes first: it is what a reviewer of the
    // policy must fix before anything else counts.
    let tenant = ctx.allowlist.tenant(&ctx.client, &ns).await;
    let mut problems = check_allowlist(&policy.spec, &tenant, &ctx.allowlist.current());
    problems.extend(validate(&policy.spec, &covered));

    // The measured-signal sources write their own conditions into the same
    // status: start from the freshest copy and write with its
    // resourceVersion, so neither side drops the other's.
    let api: Api<RemediationPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let mut status = fresh.status.clone().unwrap_or_default();
    let generation = fresh.metadata.generation;
    let was_ready =
        conditions::get(&status.conditions, "Ready").map(|c| (c.status, c.message.clone()));
    let (ready, reason, message) = match problems.first() {
        None if covered.is_empty() => (
            ConditionStatus::True,
            "Valid",
            "the policy is valid; it covers no workload yet".to_string(),
        ),
        None => (
            ConditionStatus::True,
            "Valid",
            format!(
                "the policy is valid and covers {} workload(s)",
                covered.len()
            ),
        ),
        Some(p) => {
            let all: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            (ConditionStatus::False, p.reason, all.join("; "))
        }
    };
    conditions::set(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        message.clone(),
        generation,
        now,
    );
    status.matched = covered.len() as i32;
    status.matched_workloads = covered.iter().take(100).map(|(w, _)| w.clone()).collect();
    status.observed_generation = generation;

    if fresh.status.as_ref() != Some(&status) {
        let pp = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(
            &name,
            &pp,
            &Patch::Merge(serde_json::json!({
                "metadata": { "resourceVersion": fresh.resource_version() },
                "status": status,
            })),
        )
        .await?;
    }
    if was_ready != Some((ready, message.clone())) {
        let (type_, reason) = match ready {
            ConditionStatus::True => (EventType::Normal, "PolicyValid"),
            _ => (EventType::Warning, "PolicyInvalid"),
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(message),
            action: "Validate".into(),
            secondary: None,
        };
        ctx.publisher.publish(&event, &policy.object_ref(&())).await;
    }
    Ok(Action::requeue(RECHECK))
}

#[cfg(test)]
mod reconcile_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ActionStep, Guardrails, MemoryRaise, Mode, SignalKind, Trigger, WorkloadSelector,
    };

    fn spec(actions: Vec<ActionStep>, triggers: Vec<SignalKind>) -> RemediationPolicySpec {
        RemediationPolicySpec {
            selector: WorkloadSelector::default(),
            triggers: triggers.into_iter().map(Trigger::of).collect(),
            actions,
            mode: Mode::DryRun,
            guardrails: Guardrails::default(),
            github: None,
            notify: None,
            runbooks: None,
        }
    }

    fn raise(max: &str) -> ActionStep {
        ActionStep {
            type_: ActionType::RaiseMemoryLimit,
            on_categories: vec![],
            max_replicas: None,
            memory: Some(MemoryRaise {
                increase_percent: 50,
                min_increase: None,
                max: max.into(),
            }),
        }
    }

    fn workload(limit: &str) -> (WorkloadRef, PodTemplateSpec) {
        let t: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({ "spec": { "containers": [
                { "name": "app", "resources": { "limits": { "memory": limit } } }
            ]}}))
            .unwrap();
        (
            WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            },
            t,
        )
    }

    #[test]
    fn a_cap_below_a_covered_containers_limit_is_a_problem_that_says_what_to_do() {
        let p = validate(
            &spec(vec![raise("128Mi")], vec![SignalKind::OOMKilled]),
            &[workload("256Mi")],
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].reason, "CapBelowCurrentLimit");
        assert!(
            p[0].message.contains("Deployment/web") && p[0].message.contains("256Mi"),
            "{}",
            p[0].message
        );
        assert!(
            validate(
                &spec(vec![raise("1Gi")], vec![SignalKind::OOMKilled]),
                &[workload("256Mi")]
            )
            .is_empty()
        );
    }

    #[test]
    fn a_repository_or_path_outside_the_allow_list_makes_the_policy_not_ready_with_how_to_allow_it()
    {
        let allow = crate::allowlist::parse(
            "namespaces: [{namespace: shop, github: [{repository: acme/deploy, paths: [apps/shop]}]}]",
        )
        .unwrap();
        let with_github = |repo: &str, path: Option<&str>, base: &str| {
            let mut s = spec(vec![raise("1Gi")], vec![SignalKind::OOMKilled]);
            s.github = Some(crate::crd::GitHubTarget {
                repository: repo.into(),
                labels: vec![],
                gitops: path.map(|p| crate::crd::GitOpsTarget {
                    path: p.into(),
                    base_branch: base.into(),
                    values_key: Some("a.b".into()),
                    container: None,
                    replicas_key: None,
                    image_key: None,
                }),
            });
            s
        };
        let shop = Tenant::named("shop");
        let fine = with_github("acme/deploy", Some("apps/shop/values.yaml"), "main");
        assert!(check_allowlist(&fine, &shop, &allow).is_empty());
        let p = check_allowlist(&with_github("acme/other", None, "main"), &shop, &allow);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].reason, "RepositoryNotAllowed");
        assert!(
            p[0].message.contains("acme/other") && p[0].message.contains("allowList"),
            "{}",
            p[0].message
        );
        let p = check_allowlist(
            &with_github("acme/deploy", Some("apps/shop-evil/values.yaml"), "main"),
            &shop,
            &allow,
        );
        assert_eq!(p[0].reason, "RepositoryNotAllowed");
        assert!(
            p[0].message.contains("apps/shop-evil/values.yaml"),
            "{}",
            p[0].message
        );
        let p = check_allowlist(
            &with_github("acme/deploy", Some("apps/shop/values.yaml"), "main?x=1"),
            &shop,
            &allow,
        );
        assert_eq!(p[0].reason, "RepositoryNotAllowed");
        assert!(p[0].message.contains("baseBranch"), "{}", p[0].message);
        assert_eq!(
            check_allowlist(&fine, &Tenant::named("other"), &allow)[0].reason,
            "RepositoryNotAllowed",
            "another namespace may not use shop's repository"
        );
    }

    #[test]
    fn a_health_check_url_outside_the_namespace_and_the_allow_list_makes_the_policy_not_ready() {
        let mut s = spec(vec![raise("1Gi")], vec![SignalKind::OOMKilled]);
        let by_url = |url: &str| {
            let mut t = Trigger::of(SignalKind::HealthCheck);
            t.workload = Some("web".into());
            t.health_check =
                Some(serde_json::from_value(serde_json::json!({ "url": url })).unwrap());
            t
        };
        s.triggers = vec![
            by_url("http://web.shop:8080/healthz"),
            by_url("http://169.254.169.254/latest/meta-data/"),
            by_url("http://127.0.0.1:8080/healthz"),
            by_url("http://web.billing:8080/healthz"),
        ];
        let p = check_allowlist(&s, &Tenant::named("shop"), &AllowList::deny_all());
        let reasons: Vec<_> = p.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["HealthCheckTargetNotAllowed"; 3]);
        assert!(
            p[0].message.starts_with("triggers[1]") && p[0].message.contains("169.254.169.254")
        );
        assert!(p[2].message.contains("web.billing"), "{}", p[2].message);
        let allow = crate::allowlist::parse(
            "namespaces: [{namespace: shop, healthCheckHosts: [127.0.0.0/8, web.billing]}]",
        )
        .unwrap();
        assert_eq!(check_allowlist(&s, &Tenant::named("shop"), &allow).len(), 1);
    }

    #[test]
    fn a_target_the_selector_no_longer_matches_is_not_selected() {
        let mut policy = RemediationPolicy::new("shop", spec(vec![], vec![]));
        policy.spec.selector.match_labels = [("app".to_string(), "web".to_string())].into();
        let target = workload("1Gi").0;
        let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let moved: BTreeMap<String, String> = [("app".to_string(), "other".to_string())].into();
        assert_eq!(selects_target(&policy, &target, [&web]), Ok(()));
        assert_eq!(
            selects_target(&policy, &target, [&moved, &web]),
            Ok(()),
            "one matching pod or template is enough"
        );
        let why = selects_target(&policy, &target, [&moved]).expect_err("not selected");
        assert!(why.contains("no longer selects Deployment/web"), "{why}");
        assert!(selects_target(&policy, &target, []).is_err());
        // The selector changed so that it matches the workload no more.
        policy.spec.selector.match_labels = [("app".to_string(), "api".to_string())].into();
        assert!(selects_target(&policy, &target, [&web]).is_err());
        policy.spec.selector.match_labels = [("app".to_string(), "web".to_string())].into();
        policy.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert!(selects_target(&policy, &target, [&web]).is_err());
    }

    #[test]
    fn duplicate_triggers_and_steps_after_escalate_are_problems() {
        let escalate = ActionStep {
            type_: ActionType::Escalate,
            on_categories: vec![],
            max_replicas: None,
            memory: None,
        };
        let p = validate(
            &spec(
                vec![escalate, raise("1Gi")],
                vec![SignalKind::OOMKilled, SignalKind::OOMKilled],
            ),
            &[],
        );
        let reasons: Vec<_> = p.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["DuplicateTrigger", "StepsAfterEscalate"]);
    }
}
