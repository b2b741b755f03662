//! Table tests of the breadth families, from objects as the kubelet, the
//! controllers and the API server write them.

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::diagnose;
use crate::brain::rollout::TemplateChange;
use crate::brain::{
    ContainerLog, ContainerResources, Facts, NodeFacts, ObjectCondition, Rollout, WorkloadFacts,
};
use crate::crd::{
    ActionType, Category, Diagnosis, SignalKind, SignalObservation, WorkloadKind, WorkloadRef,
};

fn now() -> Timestamp {
    "2026-12-02T07:00:00Z".parse().expect("time")
}

/// Facts of a signal about pod `web-7d9c6b5f4-x2k8p` of Deployment/web in
/// `shop`, container `app`, with nothing else gathered.
fn facts(signal: SignalKind, message: &str) -> Facts {
    Facts {
        namespace: "shop".into(),
        target: WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        },
        signal,
        observation: Some(SignalObservation {
            pod: Some("web-7d9c6b5f4-x2k8p".into()),
            container: Some("app".into()),
            reason: signal.as_str().into(),
            message: message.into(),
            observed_at: Time(now()),
            key: "k".into(),
        }),
        pod: None,
        events: vec![],
        owner_chain: vec![],
        rollout: None,
        resources: vec![ContainerResources {
            container: "app".into(),
            memory_limit: Some("128Mi".into()),
            memory_request: Some("64Mi".into()),
        }],
        memory: None,
        traces: None,
        logs: vec![],
        workload: None,
        claims: vec![],
        claim_events: vec![],
        storage_classes: None,
        node: None,
        template: None,
        alert_category: None,
        metric_category: None,
        similar: vec![],
    }
}

/// A pod of Deployment/web with this spec and status.
fn pod(spec: Value, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "web-7d9c6b5f4-x2k8p", "namespace": "shop",
            "labels": { "pod-template-hash": "7d9c6b5f4" } },
        "spec": spec,
        "status": status,
    }))
    .expect("a pod")
}

/// An event about `name` as the kubelet or a controller records it.
fn event(name: &str, type_: &str, reason: &str, message: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": { "name": format!("{name}.18c3f2a1b0c4d5e6"), "namespace": "shop" },
        "involvedObject": { "name": name, "namespace": "shop" },
        "type": type_,
        "reason": reason,
        "message": message,
        "count": 3,
        "lastTimestamp": "2026-12-02T06:59:00Z",
    }))
    .expect("an event")
}

fn waiting(container: &str, reason: &str, message: &str) -> Value {
    json!({ "containerStatuses": [{
        "name": container, "image": "registry.local/web:2", "imageID": "", "ready": false,
        "restartCount": 0, "state": { "waiting": { "reason": reason, "message": message } }
    }]})
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> ObjectCondition {
    ObjectCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
    }
}

/// Every hypothesis cites evidence the diagnosis recorded, and says what
/// would confirm and refute it.
fn assert_grounded(d: &Diagnosis) {
    assert_ne!(d.category, Category::Unknown, "{d:#?}");
    for h in &d.hypotheses {
        assert!(!h.evidence.is_empty(), "{} cites nothing", h.statement);
        for id in &h.evidence {
            assert!(
                d.evidence.iter().any(|e| &e.id == id),
                "{id} of {} is not recorded",
                h.statement
            );
        }
        assert!(
            h.confirm.is_some() && h.refute.is_some(),
            "{} says not what would confirm or refute it",
            h.statement
        );
    }
}

fn app_spec(extra: Value) -> Value {
    let mut c = json!({ "name": "app", "image": "registry.local/web:2" });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({ "containers": [c] })
}

#[test]
fn configuration_errors_name_the_missing_object_and_the_field_that_references_it() {
    let env_from = json!({ "envFrom": [
        { "secretRef": { "name": "web-secrets" } },
        { "configMapRef": { "name": "app-config" } },
    ]});
    let secret_key = json!({ "env": [
        { "name": "LOG_LEVEL", "value": "info" },
        { "name": "DB_PASSWORD", "valueFrom": { "secretKeyRef": { "name": "db-creds", "key": "password" } } },
    ]});
    let config_key = json!({ "env": [
        { "name": "DB_HOST", "valueFrom": { "configMapKeyRef": { "name": "app-config", "key": "db-host" } } },
    ]});
    let cases: Vec<(&str, Value, Value, Vec<Event>, &str)> = vec![
        (
            "envFrom of a ConfigMap that does not exist",
            app_spec(env_from),
            waiting(
                "app",
                "CreateContainerConfigError",
                "configmap \"app-config\" not found",
            ),
            vec![event(
                "web-7d9c6b5f4-x2k8p",
                "Warning",
                "Failed",
                "Error: configmap \"app-config\" not found",
            )],
            "ConfigMap `app-config` does not exist in `shop`; it is referenced at spec.template.spec.containers[0].envFrom[1] of Deployment/web: create it, or remove the reference",
        ),
        (
            "a key a Secret does not have",
            app_spec(secret_key),
            waiting(
                "app",
                "CreateContainerConfigError",
                "couldn't find key password in Secret shop/db-creds",
            ),
            vec![],
            "Secret `db-creds` in `shop` has no key `password`; it is referenced at spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef of Deployment/web: add the key, or fix the reference",
        ),
        (
            "a key a ConfigMap does not have",
            app_spec(config_key),
            waiting(
                "app",
                "CreateContainerConfigError",
                "couldn't find key db-host in ConfigMap shop/app-config",
            ),
            vec![],
            "ConfigMap `app-config` in `shop` has no key `db-host`; it is referenced at spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef",
        ),
        (
            "a Secret volume whose Secret does not exist holds the pod in ContainerCreating",
            {
                let mut s =
                    app_spec(json!({ "volumeMounts": [{ "name": "certs", "mountPath": "/tls" }] }));
                s["volumes"] = json!([{ "name": "certs", "secret": { "secretName": "tls-cert" } }]);
                s
            },
            waiting("app", "ContainerCreating", ""),
            vec![event(
                "web-7d9c6b5f4-x2k8p",
                "Warning",
                "FailedMount",
                "MountVolume.SetUp failed for volume \"certs\" : secret \"tls-cert\" not found",
            )],
            "Secret `tls-cert` does not exist in `shop`; volume `certs` at spec.template.spec.volumes[0] of Deployment/web mounts it",
        ),
        (
            "a command the image does not have",
            app_spec(json!({ "command": ["/app/serve", "--port=8080"] })),
            waiting(
                "app",
                "RunContainerError",
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: \"/app/serve\": stat /app/serve: no such file or directory: unknown",
            ),
            vec![],
            "the command `/app/serve` of container `app` does not exist in its image `registry.local/web:2` (stat /app/serve: no such file or directory); it is set at spec.template.spec.containers[0].command of Deployment/web",
        ),
        (
            "an image that runs as root where runAsNonRoot is required",
            app_spec(json!({ "securityContext": { "runAsNonRoot": true } })),
            waiting(
                "app",
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root (pod: \"web-7d9c6b5f4-x2k8p_shop(0b9d2c1e)\", container: app)",
            ),
            vec![],
            "container `app` of Deployment/web must not run as root (runAsNonRoot, at spec.template.spec.containers[0].securityContext",
        ),
    ];
    for (what, spec, status, events, expected) in cases {
        let mut f = facts(
            SignalKind::ConfigError,
            "container app of pod web-7d9c6b5f4-x2k8p cannot start",
        );
        f.pod = Some(pod(spec, status));
        f.events = events;
        let d = diagnose(&f, now());
        assert_eq!(
            d.category,
            Category::ConfigError,
            "{what}: {}",
            d.root_cause
        );
        assert!(
            d.root_cause.starts_with(expected),
            "{what}:\n{}\nexpected:\n{expected}",
            d.root_cause
        );
        assert_eq!(d.proposed_action, Some(ActionType::Escalate), "{what}");
        assert_grounded(&d);
    }
}

#[test]
fn a_crash_loop_of_a_command_that_does_not_exist_is_a_configuration_error_not_a_probe_failure() {
    let mut f = facts(
        SignalKind::CrashLoopBackOff,
        "container app is in CrashLoopBackOff",
    );
    f.pod = Some(pod(
        app_spec(
            json!({ "command": ["serve"], "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 } } }),
        ),
        json!({ "containerStatuses": [{
            "name": "app", "image": "registry.local/web:2", "imageID": "", "ready": false, "restartCount": 4,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container=app pod=web-7d9c6b5f4-x2k8p_shop(0b9d2c1e)" } },
            "lastState": { "terminated": { "exitCode": 128, "reason": "StartError",
                "message": "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"serve\": executable file not found in $PATH: unknown" } }
        }]}),
    ));
    f.events = vec![event(
        "web-7d9c6b5f4-x2k8p",
        "Warning",
        "Unhealthy",
        "Readiness probe failed: Get \"http://10.244.0.12:8080/ready\": dial tcp 10.244.0.12:8080: connect: connection refused",
    )];
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::ConfigError, "{}", d.root_cause);
    assert!(
        d.root_cause
            .contains("the command `serve` of container `app` does not exist in its image")
            && d.root_cause
                .contains("spec.template.spec.containers[0].command"),
        "{}",
        d.root_cause
    );
    assert_grounded(&d);
}

#[test]
fn a_rollout_that_added_the_missing_reference_is_a_bad_rollout_to_roll_back() {
    let mut f = facts(SignalKind::ConfigError, "container app cannot start");
    f.pod = Some(pod(
        app_spec(json!({ "envFrom": [{ "configMapRef": { "name": "app-config-v2" } }] })),
        waiting(
            "app",
            "CreateContainerConfigError",
            "configmap \"app-config-v2\" not found",
        ),
    ));
    f.rollout = Some(Rollout {
        revision: 4,
        previous_revision: 3,
        at: Some(Time(now())),
        changes: vec![TemplateChange {
            field: "containers[app].envFrom".into(),
            from: r#"["configMapRef app-config"]"#.into(),
            to: r#"["configMapRef app-config-v2"]"#.into(),
        }],
        failing_pod_is_new: true,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout, "{}", d.root_cause);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
    assert!(
        d.root_cause.contains("containers[app].envFrom"),
        "{}",
        d.root_cause
    );
    assert!(
        d.root_cause
            .contains("ConfigMap `app-config-v2` does not exist in `shop`"),
        "{}",
        d.root_cause
    );
    assert_eq!(d.hypotheses[1].category, Category::ConfigError);
    assert_grounded(&d);
}

fn migrate_pod() -> Pod {
    pod(
        json!({
            "initContainers": [
                { "name": "wait-db", "image": "busybox:1.36" },
                { "name": "migrate", "image": "registry.local/web-migrate:2", "command": ["/migrate", "up"] },
            ],
            "containers": [{ "name": "app", "image": "registry.local/web:2" }],
        }),
        json!({
            "phase": "Pending",
            "initContainerStatuses": [
                { "name": "wait-db", "image": "busybox:1.36", "imageID": "", "ready": true, "restartCount": 0,
                  "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } },
                { "name": "migrate", "image": "registry.local/web-migrate:2", "imageID": "", "ready": false, "restartCount": 3,
                  "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=migrate pod=web-7d9c6b5f4-x2k8p_shop(0b9d2c1e)" } },
                  "lastState": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": "2026-12-02T06:58:00Z" } } },
            ],
            "containerStatuses": [{ "name": "app", "image": "registry.local/web:2", "imageID": "", "ready": false,
                "restartCount": 0, "state": { "waiting": { "reason": "PodInitializing" } } }],
        }),
    )
}

#[test]
fn a_failing_init_container_is_named_with_its_exit_code_and_the_log_line_that_explains_it() {
    let mut f = facts(
        SignalKind::InitContainerFailed,
        "init container migrate of pod web-7d9c6b5f4-x2k8p: Init:CrashLoopBackOff",
    );
    f.observation.as_mut().expect("observation").container = Some("migrate".into());
    f.pod = Some(migrate_pod());
    f.logs = vec![ContainerLog {
        container: "migrate".into(),
        previous: true,
        lines: vec![
            "2026-12-02T06:57:58Z INFO connecting to postgres://app:hunter2@db:5432/shop".into(),
            "2026-12-02T06:57:59Z INFO applying 0042_add_orders_index".into(),
            "2026-12-02T06:57:59Z ERROR migration 0042 failed: relation \"orders\" does not exist"
                .into(),
            "2026-12-02T06:57:59Z INFO shutting down".into(),
        ],
    }];
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::InitFailure, "{}", d.root_cause);
    for part in [
        "init container `migrate` (spec.template.spec.initContainers[1]) of Deployment/web exits with code 1",
        "its log says: \"2026-12-02T06:57:59Z ERROR migration 0042 failed: relation \\\"orders\\\" does not exist\"",
        "(3 restarts)",
        "until it completes, the app containers never start",
    ] {
        assert!(
            d.root_cause.contains(part),
            "{part} missing from {}",
            d.root_cause
        );
    }
    let log = d
        .evidence
        .iter()
        .find(|e| e.kind == crate::crd::EvidenceKind::Log)
        .expect("the log is evidence");
    assert_eq!(
        log.source,
        "pod/web-7d9c6b5f4-x2k8p/container/migrate/log?previous=true"
    );
    assert!(
        log.summary.starts_with("line 3 of the last 4"),
        "{}",
        log.summary
    );
    assert!(d.hypotheses[0].evidence.contains(&log.id));
    assert!(!serde_json::to_string(&d).expect("json").contains("hunter2"));
    assert_grounded(&d);
}

#[test]
fn a_rollout_that_added_the_failing_init_container_is_a_bad_rollout() {
    let mut f = facts(SignalKind::InitContainerFailed, "Init:CrashLoopBackOff");
    f.observation.as_mut().expect("observation").container = Some("migrate".into());
    f.pod = Some(migrate_pod());
    f.rollout = Some(Rollout {
        revision: 7,
        previous_revision: 6,
        at: Some(Time(now())),
        changes: vec![TemplateChange {
            field: "initContainers[migrate]".into(),
            from: "(absent)".into(),
            to: "added (image registry.local/web-migrate:2)".into(),
        }],
        failing_pod_is_new: true,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout, "{}", d.root_cause);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
    assert!(
        d.root_cause.contains("changed initContainers[migrate]"),
        "{}",
        d.root_cause
    );
    assert_grounded(&d);
}

fn job_facts(conditions: Vec<ObjectCondition>, terminated: Value, owner: Option<&str>) -> Facts {
    let mut f = facts(SignalKind::JobFailed, "Job nightly-report-29412345 failed");
    f.target = WorkloadRef {
        kind: WorkloadKind::Job,
        name: "nightly-report-29412345".into(),
    };
    f.observation.as_mut().expect("observation").container = None;
    f.observation.as_mut().expect("observation").pod = None;
    f.resources[0].container = "report".into();
    f.pod = Some(
        serde_json::from_value(json!({
            "metadata": { "name": "nightly-report-29412345-7xk2q", "namespace": "shop",
                "labels": { "job-name": "nightly-report-29412345" } },
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "report", "image": "registry.local/report:5" }] },
            "status": { "phase": "Failed", "containerStatuses": [{
                "name": "report", "image": "registry.local/report:5", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": terminated } }] }
        }))
        .expect("a pod"),
    );
    f.workload = Some(WorkloadFacts {
        conditions,
        owner: owner.map(String::from),
        backoff_limit: Some(3),
        active_deadline_seconds: Some(600),
        failed: Some(4),
        ..WorkloadFacts::default()
    });
    f
}

#[test]
fn job_failures_say_whether_retries_time_or_memory_ran_out() {
    let failed = |reason: &str, message: &str| {
        vec![
            condition("FailureTarget", "True", reason, message),
            condition("Failed", "True", reason, message),
        ]
    };
    let exit1 = json!({ "exitCode": 1, "reason": "Error" });
    let cases = [
        (
            "out of retries",
            job_facts(
                failed(
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
                exit1.clone(),
                None,
            ),
            Category::JobFailure,
            "Job/nightly-report-29412345 ran out of retries (BackoffLimitExceeded: Job has reached the specified backoff limit): 4 pod(s) failed, backoffLimit is 3; container `report` exits with code 1",
            ActionType::Escalate,
        ),
        (
            "out of time",
            job_facts(
                failed(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
                json!({ "exitCode": 143, "reason": "Error" }),
                None,
            ),
            Category::JobFailure,
            "Job/nightly-report-29412345 ran longer than its activeDeadlineSeconds of 600s and was stopped (DeadlineExceeded: Job was active longer than specified deadline)",
            ActionType::Escalate,
        ),
        (
            "out of memory, in a Job a CronJob runs",
            job_facts(
                failed(
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
                json!({ "exitCode": 137, "reason": "OOMKilled" }),
                Some("CronJob/nightly-report"),
            ),
            Category::OutOfMemory,
            "container `report` of Job/nightly-report-29412345 (run by CronJob/nightly-report) needs more memory than 128Mi: the kernel killed it (OOMKilled), and the Job failed (BackoffLimitExceeded); raise the limit at spec.jobTemplate.spec.template.spec.containers[0].resources.limits.memory of CronJob/nightly-report",
            ActionType::RaiseMemoryLimit,
        ),
    ];
    for (what, f, category, expected, action) in cases {
        let d = diagnose(&f, now());
        assert_eq!(d.category, category, "{what}: {}", d.root_cause);
        assert!(
            d.root_cause.starts_with(expected),
            "{what}:\n{}\nexpected:\n{expected}",
            d.root_cause
        );
        assert_eq!(d.proposed_action, Some(action), "{what}");
        assert_grounded(&d);
    }
}

#[test]
fn a_job_failure_cites_the_log_line_before_the_exit() {
    let mut f = job_facts(
        vec![condition(
            "Failed",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        )],
        json!({ "exitCode": 2, "reason": "Error" }),
        None,
    );
    f.logs = vec![ContainerLog {
        container: "report".into(),
        previous: false,
        lines: vec![
            "Traceback (most recent call last):".into(),
            "  File \"/app/report.py\", line 12, in <module>".into(),
            "KeyError: 'REPORT_BUCKET'".into(),
        ],
    }];
    let d = diagnose(&f, now());
    assert!(
        d.root_cause.contains(
            "container `report` exits with code 2, its log says: \"KeyError: 'REPORT_BUCKET'\""
        ),
        "{}",
        d.root_cause
    );
}

fn claim(name: &str, class: Option<&str>, modes: &[&str]) -> PersistentVolumeClaim {
    let mut spec =
        json!({ "accessModes": modes, "resources": { "requests": { "storage": "5Gi" } } });
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "shop" },
        "spec": spec,
        "status": { "phase": "Pending" },
    }))
    .expect("a claim")
}

fn class(name: &str, provisioner: &str, default: bool) -> StorageClass {
    let mut c = json!({ "metadata": { "name": name }, "provisioner": provisioner });
    if default {
        c["metadata"]["annotations"] =
            json!({ "storageclass.kubernetes.io/is-default-class": "true" });
    }
    serde_json::from_value(c).expect("a storage class")
}

fn pending_pod(claim: &str, scheduler: &str) -> Pod {
    let mut spec = app_spec(json!({ "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }));
    spec["volumes"] = json!([{ "name": "data", "persistentVolumeClaim": { "claimName": claim } }]);
    pod(
        spec,
        json!({ "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": scheduler }] }),
    )
}

/// What, the pod, its claims, their events, the StorageClasses, and the
/// root cause expected.
type StorageCase = (
    &'static str,
    Pod,
    Vec<PersistentVolumeClaim>,
    Vec<Event>,
    Option<Vec<StorageClass>>,
    &'static str,
);

const UNBOUND: &str = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

#[test]
fn an_unbound_claim_says_which_claim_and_why() {
    let local = || Some(vec![class("local-path", "rancher.io/local-path", true)]);
    let cases: Vec<StorageCase> = vec![
        (
            "a StorageClass that does not exist",
            pending_pod("data", UNBOUND),
            vec![claim("data", Some("fast-ssd"), &["ReadWriteOnce"])],
            vec![event(
                "data",
                "Warning",
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"fast-ssd\" not found",
            )],
            local(),
            "StorageClass `fast-ssd` does not exist; PersistentVolumeClaim `data` (referenced at spec.template.spec.volumes[0] of Deployment/web) names it at spec.storageClassName, so nothing provisions its volume: name an existing class (the cluster has local-path), or create it",
        ),
        (
            "no StorageClass and no default",
            pending_pod("data", UNBOUND),
            vec![claim("data", None, &["ReadWriteOnce"])],
            vec![event(
                "data",
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )],
            Some(vec![class("local-path", "rancher.io/local-path", false)]),
            "PersistentVolumeClaim `data` (referenced at spec.template.spec.volumes[0] of Deployment/web) names no StorageClass (spec.storageClassName is unset) and the cluster has no default StorageClass",
        ),
        (
            "no PersistentVolume matches a claim without a class",
            pending_pod("data", UNBOUND),
            vec![claim("data", Some(""), &["ReadWriteOnce"])],
            vec![event(
                "data",
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )],
            local(),
            "no PersistentVolume matches PersistentVolumeClaim `data` (referenced at spec.template.spec.volumes[0] of Deployment/web) (requests 5Gi, access modes ReadWriteOnce, storageClassName \"\")",
        ),
        (
            "an access mode the provisioner does not offer",
            pending_pod("data", UNBOUND),
            vec![claim("data", Some("local-path"), &["ReadWriteMany"])],
            vec![event(
                "data",
                "Warning",
                "ProvisioningFailed",
                "failed to provision volume with StorageClass \"local-path\": Only support ReadWriteOnce access mode",
            )],
            local(),
            "PersistentVolumeClaim `data` (referenced at spec.template.spec.volumes[0] of Deployment/web) asks for access mode ReadWriteMany at spec.accessModes, which StorageClass `local-path` (provisioner rancher.io/local-path) does not provide",
        ),
        (
            "a claim that does not exist",
            pending_pod(
                "data",
                "0/1 nodes are available: persistentvolumeclaim \"data\" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            ),
            vec![],
            vec![],
            None,
            "PersistentVolumeClaim `data` does not exist in `shop`; it is referenced at spec.template.spec.volumes[0] of Deployment/web: create it, or remove the reference",
        ),
    ];
    for (what, p, claims, claim_events, classes, expected) in cases {
        let mut f = facts(
            SignalKind::Unschedulable,
            "pod web-7d9c6b5f4-x2k8p is unschedulable",
        );
        f.pod = Some(p);
        f.claims = claims;
        f.claim_events = claim_events;
        f.storage_classes = classes;
        let d = diagnose(&f, now());
        assert_eq!(
            d.category,
            Category::StorageUnavailable,
            "{what}: {}",
            d.root_cause
        );
        assert!(
            d.root_cause.starts_with(expected),
            "{what}:\n{}\nexpected:\n{expected}",
            d.root_cause
        );
        assert_eq!(d.proposed_action, Some(ActionType::Escalate));
        assert_grounded(&d);
    }
}

#[test]
fn a_pod_no_node_has_room_for_stays_unschedulable_even_with_a_claim_waiting_for_it() {
    let mut f = facts(
        SignalKind::Unschedulable,
        "pod web-7d9c6b5f4-x2k8p is unschedulable",
    );
    f.pod = Some(pending_pod(
        "data",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    ));
    f.claims = vec![claim("data", Some("local-path"), &["ReadWriteOnce"])];
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::Unschedulable, "{}", d.root_cause);
}

fn refused(message: &str) -> Facts {
    let mut f = facts(
        SignalKind::FailedCreate,
        "Deployment web has 0 of 3 replicas; its pods are refused",
    );
    f.observation.as_mut().expect("observation").pod = None;
    f.observation.as_mut().expect("observation").container = None;
    f.workload = Some(WorkloadFacts {
        conditions: vec![condition("ReplicaFailure", "True", "FailedCreate", message)],
        desired: Some(3),
        ready: Some(0),
        events: vec![event(
            "web-7d9c6b5f4",
            "Warning",
            "FailedCreate",
            &format!("Error creating: {message}"),
        )],
        ..WorkloadFacts::default()
    });
    f
}

#[test]
fn refused_pods_quote_the_quota_the_limit_range_or_the_pod_security_field() {
    let cases = [
        (
            "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: exceeded quota: compute-quota, requested: limits.memory=512Mi, used: limits.memory=768Mi, limited: limits.memory=1Gi",
            Category::QuotaExceeded,
            "ResourceQuota `compute-quota` in `shop` refuses the pods of Deployment/web: they request limits.memory=512Mi while limits.memory=768Mi of limits.memory=1Gi is used",
        ),
        (
            "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: exceeded quota: compute-quota, requested: limits.cpu=1,limits.memory=512Mi, used: limits.cpu=2,limits.memory=768Mi, limited: limits.cpu=2,limits.memory=1Gi",
            Category::QuotaExceeded,
            "ResourceQuota `compute-quota` in `shop` refuses the pods of Deployment/web: they request limits.cpu=1,limits.memory=512Mi while limits.cpu=2,limits.memory=768Mi of limits.cpu=2,limits.memory=1Gi is used",
        ),
        (
            "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: failed quota: compute-quota: must specify limits.memory for: app; requests.memory for: app",
            Category::QuotaExceeded,
            "ResourceQuota `compute-quota` in `shop` requires every pod to set limits.memory for: app; requests.memory for: app",
        ),
        (
            "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi",
            Category::QuotaExceeded,
            "a LimitRange in `shop` refuses the pods of Deployment/web: maximum memory usage per Container is 512Mi, but limit is 1Gi; change memory at spec.template.spec.containers[*].resources",
        ),
        (
            "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true)",
            Category::ConfigError,
            "Pod Security `restricted:latest` enforced in `shop` refuses the pods of Deployment/web: allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
        ),
        (
            "pods \"web-7d9c6b5f4-\" is forbidden: error looking up service account shop/web-runner: serviceaccount \"web-runner\" not found",
            Category::ConfigError,
            "ServiceAccount `web-runner` does not exist in `shop`; it is named at spec.template.spec.serviceAccountName of Deployment/web",
        ),
    ];
    for (message, category, expected) in cases {
        let d = diagnose(&refused(message), now());
        assert_eq!(d.category, category, "{message}: {}", d.root_cause);
        assert!(
            d.root_cause.starts_with(expected),
            "\n{}\nexpected:\n{expected}",
            d.root_cause
        );
        assert_eq!(d.proposed_action, Some(ActionType::Escalate));
        assert_grounded(&d);
    }
    let d = diagnose(&refused(cases[4].0), now());
    assert!(
        d.root_cause.contains(
            "(fields: securityContext.allowPrivilegeEscalation, securityContext.runAsNonRoot)"
        ),
        "{}",
        d.root_cause
    );
}

fn probed(kill_reason: &str, exit: i32, probe_message: &str) -> Facts {
    let mut f = facts(
        SignalKind::CrashLoopBackOff,
        "container app is in CrashLoopBackOff",
    );
    f.pod = Some(pod(
        app_spec(json!({
            "ports": [{ "name": "http", "containerPort": 8080 }],
            "livenessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "timeoutSeconds": 2 },
        })),
        json!({ "containerStatuses": [{
            "name": "app", "image": "registry.local/web:2", "imageID": "", "ready": false, "restartCount": 5,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container=app" } },
            "lastState": { "terminated": { "exitCode": exit, "reason": kill_reason } }
        }]}),
    ));
    f.events = vec![
        event("web-7d9c6b5f4-x2k8p", "Warning", "Unhealthy", probe_message),
        event(
            "web-7d9c6b5f4-x2k8p",
            "Normal",
            "Killing",
            "Container app failed liveness probe, will be restarted",
        ),
    ];
    f
}

#[test]
fn a_liveness_probe_that_kills_the_container_names_its_port_and_path_and_what_answered() {
    let cases = [
        (
            "Liveness probe failed: Get \"http://10.244.0.12:8080/healthz\": dial tcp 10.244.0.12:8080: connect: connection refused",
            137,
            "nothing listens on port 8080",
        ),
        (
            "Liveness probe failed: HTTP probe failed with statuscode: 503",
            143,
            "the endpoint answers 503",
        ),
        (
            "Liveness probe failed: Get \"http://10.244.0.12:8080/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            137,
            "the endpoint does not answer within the probe's timeoutSeconds (2s)",
        ),
    ];
    for (message, exit, verdict) in cases {
        let d = diagnose(&probed("Error", exit, message), now());
        assert_eq!(d.category, Category::ProbeFailure, "{}", d.root_cause);
        let expected = format!(
            "container `app` of Deployment/web is killed by its liveness probe (HTTP GET :8080/healthz) at spec.template.spec.containers[0].livenessProbe: {verdict}; it exited with code {exit} after 5 restarts"
        );
        assert!(
            d.root_cause.starts_with(&expected),
            "\n{}\nexpected:\n{expected}",
            d.root_cause
        );
        assert_grounded(&d);
    }
    // The kernel's kill is memory, whatever the probe said before.
    let oom = diagnose(
        &probed(
            "OOMKilled",
            137,
            "Liveness probe failed: HTTP probe failed with statuscode: 503",
        ),
        now(),
    );
    assert_eq!(oom.category, Category::CrashLoop, "{}", oom.root_cause);
}

#[test]
fn a_new_liveness_probe_that_kills_the_pods_is_a_bad_rollout() {
    let mut f = probed(
        "Error",
        137,
        "Liveness probe failed: HTTP probe failed with statuscode: 404",
    );
    f.rollout = Some(Rollout {
        revision: 9,
        previous_revision: 8,
        at: Some(Time(now())),
        changes: vec![TemplateChange {
            field: "containers[app].livenessProbe".into(),
            from: "(unset)".into(),
            to: r#"{"httpGet":{"path":"/healthz","port":"http"}}"#.into(),
        }],
        failing_pod_is_new: true,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
    assert!(
        d.root_cause.contains("the endpoint answers 404"),
        "{}",
        d.root_cause
    );
}

#[test]
fn node_failures_name_the_node_and_do_not_blame_the_workload() {
    let mut evicted = facts(
        SignalKind::NodeFailure,
        "pod web-7d9c6b5f4-x2k8p was evicted",
    );
    evicted.pod = Some(pod(
        json!({ "nodeName": "worker-2", "containers": [{ "name": "app", "image": "registry.local/web:2" }] }),
        json!({ "phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 92476Ki. Container app was using 412Mi, request is 128Mi, has larger consumption of memory." }),
    ));
    let d = diagnose(&evicted, now());
    assert_eq!(d.category, Category::NodeFailure, "{}", d.root_cause);
    assert!(
        d.root_cause.starts_with(
            "node `worker-2` ran low on memory and the kubelet evicted pod `web-7d9c6b5f4-x2k8p` of Deployment/web; node `worker-2`, not Deployment/web, is at fault"
        ),
        "{}",
        d.root_cause
    );
    assert_grounded(&d);

    let mut lost = facts(
        SignalKind::NodeFailure,
        "pod web-7d9c6b5f4-x2k8p is on a node that is not ready",
    );
    lost.pod = Some(pod(
        json!({ "nodeName": "worker-3", "containers": [{ "name": "app", "image": "registry.local/web:2" }] }),
        json!({ "phase": "Running" }),
    ));
    lost.node = Some(NodeFacts {
        name: "worker-3".into(),
        conditions: vec![
            condition(
                "MemoryPressure",
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            ),
            condition(
                "Ready",
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            ),
        ],
        taints: vec!["node.kubernetes.io/unreachable=:NoExecute".into()],
    });
    let d = diagnose(&lost, now());
    assert_eq!(d.category, Category::NodeFailure);
    assert!(
        d.root_cause.starts_with(
            "node `worker-3` is not ready (Ready=Unknown, NodeStatusUnknown: Kubelet stopped posting node status.)"
        ),
        "{}",
        d.root_cause
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.source == "node/worker-3" && e.summary.contains("unreachable"))
    );
    assert_grounded(&d);
}

#[test]
fn a_stalled_rollout_names_the_changed_fields_or_the_refusal() {
    let mut f = facts(
        SignalKind::RolloutStalled,
        "Deployment web: ProgressDeadlineExceeded",
    );
    f.observation.as_mut().expect("observation").pod = None;
    f.observation.as_mut().expect("observation").container = None;
    f.workload = Some(WorkloadFacts {
        conditions: vec![
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "ReplicaSet \"web-5d4f8b9c7\" has timed out progressing.",
            ),
        ],
        desired: Some(3),
        ready: Some(2),
        ..WorkloadFacts::default()
    });
    f.rollout = Some(Rollout {
        revision: 5,
        previous_revision: 4,
        at: Some(Time(now())),
        changes: vec![TemplateChange {
            field: "containers[app].image".into(),
            from: "registry.local/web:2".into(),
            to: "registry.local/web:3".into(),
        }],
        failing_pod_is_new: false,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
    assert!(
        d.root_cause.starts_with(
            "the rollout of Deployment/web to revision 5 changed containers[app].image and has not progressed since (ProgressDeadlineExceeded: ReplicaSet \"web-5d4f8b9c7\" has timed out progressing., 2 of 3 replicas ready)"
        ),
        "{}",
        d.root_cause
    );
    assert_grounded(&d);

    let mut quota = refused(
        "pods \"web-5d4f8b9c7-4xv2n\" is forbidden: exceeded quota: compute-quota, requested: requests.cpu=500m, used: requests.cpu=1800m, limited: requests.cpu=2",
    );
    quota.signal = SignalKind::RolloutStalled;
    let d = diagnose(&quota, now());
    assert_eq!(d.category, Category::QuotaExceeded, "{}", d.root_cause);
}

#[test]
fn no_new_signal_is_unknown_when_the_facts_hold_its_evidence() {
    let cases: Vec<(SignalKind, Facts)> = vec![
        (SignalKind::ConfigError, {
            let mut f = facts(SignalKind::ConfigError, "cannot start");
            f.pod = Some(pod(
                app_spec(json!({})),
                waiting(
                    "app",
                    "CreateContainerConfigError",
                    "secret \"db\" not found",
                ),
            ));
            f
        }),
        (SignalKind::InitContainerFailed, {
            let mut f = facts(SignalKind::InitContainerFailed, "Init:Error");
            f.pod = Some(migrate_pod());
            f
        }),
        (
            SignalKind::JobFailed,
            job_facts(
                vec![condition(
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )],
                json!({ "exitCode": 1 }),
                None,
            ),
        ),
        (
            SignalKind::FailedCreate,
            refused(
                "pods \"w\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10",
            ),
        ),
        (
            SignalKind::NodeFailure,
            facts(
                SignalKind::NodeFailure,
                "pod web-7d9c6b5f4-x2k8p was evicted: The node was low on resource: ephemeral-storage.",
            ),
        ),
        (SignalKind::RolloutStalled, {
            let mut f = facts(SignalKind::RolloutStalled, "ProgressDeadlineExceeded");
            f.workload = Some(WorkloadFacts {
                conditions: vec![condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    "ReplicaSet \"web-5d4f8b9c7\" has timed out progressing.",
                )],
                ..WorkloadFacts::default()
            });
            f
        }),
    ];
    let mut mount = facts(
        SignalKind::ConfigError,
        "pod web-7d9c6b5f4-x2k8p is stuck in ContainerCreating",
    );
    mount.pod = Some(pod(
        app_spec(json!({})),
        waiting("app", "ContainerCreating", ""),
    ));
    mount.events = vec![event(
        "web-7d9c6b5f4-x2k8p",
        "Warning",
        "FailedMount",
        "Unable to attach or mount volumes: unmounted volumes=[certs], unattached volumes=[certs kube-api-access-7xk2q]: timed out waiting for the condition",
    )];
    let mut refusal = facts(
        SignalKind::FailedCreate,
        "Deployment web has 0 of 3 replicas: pods \"web-7d9c6b5f4-\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10",
    );
    refusal.observation.as_mut().expect("observation").pod = None;
    for (signal, f) in cases.into_iter().chain([
        (SignalKind::ConfigError, mount),
        (SignalKind::FailedCreate, refusal),
    ]) {
        let d = diagnose(&f, now());
        assert_ne!(d.category, Category::Unknown, "{signal:?}");
        assert_grounded(&d);
    }
}

#[test]
fn the_line_that_explains_the_exit_is_the_last_error_looking_one() {
    let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let explaining = |l: &[&str]| super::evidence::explaining_line(&lines(l));
    assert_eq!(
        explaining(&[
            "listening on :8080",
            "panic: runtime error: invalid memory address",
            "goroutine 1 [running]:",
            "main.main()"
        ]),
        Some(1)
    );
    assert_eq!(
        explaining(&[
            "ERROR first",
            "level=error msg=\"cannot connect to db:5432\"",
            "shutting down"
        ]),
        Some(1)
    );
    assert_eq!(explaining(&["completed with 0 errors", "bye"]), None);
    assert_eq!(explaining(&[]), None);
}

#[test]
fn facts_captured_before_breadth_still_load() {
    let mut old = serde_json::to_value(facts(SignalKind::CrashLoopBackOff, "m")).expect("json");
    for field in [
        "logs",
        "workload",
        "claims",
        "claim_events",
        "storage_classes",
        "node",
        "template",
    ] {
        old.as_object_mut().expect("object").remove(field);
    }
    let f: Facts = serde_json::from_value(old).expect("old facts load");
    assert!(
        f.logs.is_empty()
            && f.workload.is_none()
            && f.storage_classes.is_none()
            && f.template.is_none()
    );
}

#[test]
fn a_pod_security_refusal_names_the_violated_field() {
    let f = refused(
        "pods \"web-7d9c6b5f4-4xv2n\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"app\" must not set securityContext.privileged=true)",
    );
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::ConfigError);
    assert!(
        d.root_cause
            .contains("(fields: securityContext.privileged)"),
        "{}",
        d.root_cause
    );
}

#[test]
fn a_crash_loop_quotes_the_log_line_that_explains_the_exit() {
    let mut f = facts(
        SignalKind::CrashLoopBackOff,
        "container app is in CrashLoopBackOff",
    );
    f.logs = vec![
        ContainerLog {
            container: "app".into(),
            previous: false,
            lines: vec!["starting web 2.4.1".into()],
        },
        ContainerLog {
            container: "app".into(),
            previous: true,
            lines: vec![
                "starting web 2.4.1".into(),
                "level=error msg=\"cannot load config\" err=\"open /etc/web/config.yaml: no such file or directory\"".into(),
                "level=info msg=\"bye\"".into(),
            ],
        },
    ];
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::CrashLoop);
    assert!(
        d.root_cause.contains(
            "its log says: \"level=error msg=\\\"cannot load config\\\" err=\\\"open /etc/web/config.yaml: no such file or directory\\\"\""
        ),
        "{}",
        d.root_cause
    );
    let previous = d
        .evidence
        .iter()
        .find(|e| e.source.ends_with("/log?previous=true"))
        .expect("the previous log is evidence");
    assert!(d.hypotheses[0].evidence.contains(&previous.id));
    assert!(
        d.evidence
            .iter()
            .any(|e| e.source.ends_with("/container/app/log")),
        "the current instance's log is recorded too"
    );
}

#[test]
fn an_init_container_whose_image_cannot_be_pulled_is_named() {
    let mut f = facts(SignalKind::InitContainerFailed, "Init:ImagePullBackOff");
    f.observation.as_mut().expect("observation").container = Some("wait-db".into());
    f.pod = Some(pod(
        json!({ "initContainers": [{ "name": "wait-db", "image": "busybox:1.366" }],
                "containers": [{ "name": "app", "image": "registry.local/web:2" }] }),
        json!({ "phase": "Pending", "initContainerStatuses": [{
            "name": "wait-db", "image": "busybox:1.366", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"busybox:1.366\"" } } }] }),
    ));
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::InitFailure);
    assert!(
        d.root_cause.starts_with(
            "init container `wait-db` (spec.template.spec.initContainers[0]) of Deployment/web cannot pull its image `busybox:1.366` (ImagePullBackOff)"
        ),
        "{}",
        d.root_cause
    );
}

#[test]
fn the_postmortem_says_what_would_confirm_or_refute_the_two_leading_hypotheses() {
    let mut f = facts(SignalKind::ConfigError, "container app cannot start");
    f.pod = Some(pod(
        app_spec(json!({ "envFrom": [{ "configMapRef": { "name": "app-config" } }] })),
        waiting(
            "app",
            "CreateContainerConfigError",
            "configmap \"app-config\" not found",
        ),
    ));
    let mut i = crate::testing::incident(crate::crd::Phase::Escalated, vec![]);
    if let Some(s) = i.status.as_mut() {
        s.diagnosis = Some(diagnose(&f, now()));
    }
    let text = crate::brain::postmortem::render(&i, now());
    assert!(text.contains("  - would confirm: "), "{text}");
    assert!(text.contains("answers NotFound"), "{text}");
    assert!(text.contains("  - would refute: "), "{text}");
}

/// The signal a Metric trigger raises for Deployment/web, as the Scout
/// words it.
fn metric_facts(category: Option<Category>) -> Facts {
    let message = "Deployment/web: value 0.42 > 0.2 for 30 s (forSeconds 30); \
         query rate(errors_total{token=\"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"}[1m]); \
         graph: http://prometheus.example:9090/graph?g0.expr=rate%28errors_total%5B1m%5D%29&g0.tab=0";
    let mut f = facts(SignalKind::Metric, message);
    if let Some(o) = f.observation.as_mut() {
        o.pod = None;
        o.container = None;
    }
    f.metric_category = category;
    f
}

#[test]
fn a_metric_incident_cites_the_series_query_value_threshold_and_graph_link_redacted() {
    let d = diagnose(&metric_facts(None), now());
    let series = d
        .evidence
        .iter()
        .find(|e| e.kind == crate::crd::EvidenceKind::Metric)
        .expect("the series is evidence");
    assert_eq!(series.source, "prometheus/Deployment/web");
    for cited in [
        "value 0.42 > 0.2",
        "query rate(errors_total",
        "graph: http://prometheus.example:9090/graph?g0.expr=",
    ] {
        assert!(
            series.summary.contains(cited),
            "{cited} in {}",
            series.summary
        );
    }
    assert!(
        !series.summary.contains("ghp_abcdefghij"),
        "redacted: {}",
        series.summary
    );
    assert!(d.hypotheses[0].evidence.contains(&series.id));
}

#[test]
fn a_metric_triggers_category_decides_the_diagnosis_even_after_a_rollout() {
    let mut f = metric_facts(Some(Category::Latency));
    f.rollout = Some(Rollout {
        revision: 2,
        previous_revision: 1,
        at: Some(Time(
            now() - k8s_openapi::jiff::SignedDuration::from_mins(5),
        )),
        changes: vec![TemplateChange {
            field: "containers[app].image".into(),
            from: "web:1".into(),
            to: "web:2".into(),
        }],
        failing_pod_is_new: true,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::Latency, "{}", d.root_cause);
    assert_eq!(d.proposed_action, Some(ActionType::RolloutRestart));
    assert!(
        d.hypotheses
            .iter()
            .any(|h| h.category == Category::BadRollout),
        "the rollout stays a suspect"
    );
}

#[test]
fn a_metric_trigger_without_a_category_is_unknown_unless_a_rollout_came_just_before() {
    let d = diagnose(&metric_facts(None), now());
    assert_eq!(d.category, Category::Unknown, "{}", d.root_cause);
    assert!(
        d.root_cause
            .contains("a metric of Deployment/web crossed the policy's threshold"),
        "{}",
        d.root_cause
    );
    let mut f = metric_facts(None);
    f.rollout = Some(Rollout {
        revision: 2,
        previous_revision: 1,
        at: Some(Time(
            now() - k8s_openapi::jiff::SignedDuration::from_mins(5),
        )),
        changes: vec![TemplateChange {
            field: "containers[app].image".into(),
            from: "web:1".into(),
            to: "web:2".into(),
        }],
        failing_pod_is_new: true,
    });
    let d = diagnose(&f, now());
    assert_eq!(d.category, Category::BadRollout);
    assert_eq!(d.proposed_action, Some(ActionType::Rollback));
}
