//! Builders for the objects the unit tests share: incidents, their action
//! records, policies, a workload's objects, and a fake API server.

pub mod api;
pub mod world;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{
    ActionRecord, ActionState, ActionStep, ActionType, Approval, ApprovalDecision, Category,
    Diagnosis, Guardrails, Incident, IncidentSpec, IncidentStatus, Mode, Phase, RemediationPolicy,
    RemediationPolicySpec, SignalKind, SignalObservation, WorkloadKind, WorkloadRef,
    WorkloadSelector,
};

/// The time the tests run at.
pub fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().expect("a timestamp")
}

/// `now()` moved by `secs` seconds (negative: before).
pub fn at(secs: i64) -> Time {
    Time(now() + SignedDuration::from_secs(secs))
}

/// An action record of the first episode.
pub fn record(n: usize, type_: ActionType, state: ActionState) -> ActionRecord {
    ActionRecord {
        id: crate::incident::approval::action_id(1, n, type_),
        type_,
        state,
        detail: format!("{} the workload", type_.as_str()),
        target: None,
        target_uid: None,
        container: None,
        from: None,
        to: None,
        recorded_at: at(-120),
        finished_at: None,
        outcome: None,
        pull_request: None,
        diff: None,
        precondition: None,
    }
}

/// The same record, finished `ago` seconds before `now()`.
pub fn finished(mut r: ActionRecord, ago: i64) -> ActionRecord {
    r.finished_at = Some(at(-ago));
    r
}

/// An incident of the `web` Deployment under the policy `heal`, observed
/// once, in `phase`, with `actions`.
pub fn incident(phase: Phase, actions: Vec<ActionRecord>) -> Incident {
    let target = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    };
    let mut i = Incident::new(
        "web-oomkilled",
        IncidentSpec {
            fingerprint: "shop/Deployment/web/OOMKilled".into(),
            target,
            signal: SignalKind::OOMKilled,
            policy: "heal".into(),
            approval: None,
        },
    );
    i.metadata.namespace = Some("shop".into());
    i.status = Some(IncidentStatus {
        phase,
        occurrences: 1,
        detected_at: Some(at(-300)),
        last_signal: Some(SignalObservation {
            pod: Some("web-1".into()),
            container: Some("app".into()),
            reason: "OOMKilled".into(),
            message: "web-1/app was OOMKilled".into(),
            observed_at: at(-300),
            key: "web-1/app/OOMKilled".into(),
        }),
        episode: Some(1),
        diagnosis: Some(Diagnosis {
            analyzer: "rules".into(),
            category: Category::OutOfMemory,
            root_cause: "the container ran out of memory".into(),
            confidence: 0.9,
            hypotheses: vec![],
            evidence: vec![],
            proposed_action: None,
            rules_category: None,
            diagnosed_at: at(-290),
        }),
        actions,
        ..IncidentStatus::default()
    });
    i
}

/// The incident with an approval of `decision` for the action `id`.
pub fn approved(mut i: Incident, id: &str, decision: ApprovalDecision) -> Incident {
    i.spec.approval = Some(Approval {
        action_id: id.into(),
        decision,
        by: Some("sre-on-call".into()),
    });
    i
}

/// The policy `heal` in namespace `shop`: restart, then escalate.
pub fn policy(mode: Mode) -> RemediationPolicy {
    let step = |type_| ActionStep {
        type_,
        on_categories: vec![],
        max_replicas: None,
        memory: None,
    };
    let mut p = RemediationPolicy::new(
        "heal",
        RemediationPolicySpec {
            selector: WorkloadSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..WorkloadSelector::default()
            },
            triggers: vec![],
            actions: vec![step(ActionType::RestartPod), step(ActionType::Escalate)],
            mode,
            guardrails: Guardrails::default(),
            github: None,
            notify: None,
            runbooks: None,
        },
    );
    p.metadata.namespace = Some("shop".into());
    p
}

/// A watch store holding `objects`, as a reflector fills it.
pub fn store<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    for o in objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(o));
    }
    store
}
