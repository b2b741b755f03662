use super::*;

fn triggers(kinds: &[SignalKind]) -> Vec<Trigger> {
    kinds.iter().map(|k| Trigger::of(*k)).collect()
}

fn all() -> Vec<Trigger> {
    triggers(&[
        SignalKind::OOMKilled,
        SignalKind::CrashLoopBackOff,
        SignalKind::ImagePullBackOff,
        SignalKind::Unschedulable,
        SignalKind::ReadinessFailing,
    ])
}

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web-1", "uid": "u1" },
        "status": status
    }))
    .unwrap()
}

#[test]
fn oom_kill_in_last_state_is_one_signal_with_its_finish_time() {
    let p = pod(serde_json::json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": true, "restartCount": 1,
            "state": { "running": {} },
            "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
        }]
    }));
    let r = read_pod(&p, &all(), now());
    assert_eq!(r.signals.len(), 1);
    let s = &r.signals[0];
    assert_eq!(s.kind, SignalKind::OOMKilled);
    assert_eq!(s.container.as_deref(), Some("app"));
    assert_eq!(
        s.observed_at,
        "2026-11-26T09:59:50Z".parse::<Timestamp>().unwrap()
    );
    assert!(s.message.contains("exit code 137"), "{}", s.message);
}

#[test]
fn the_same_oom_kill_seen_down_and_restarted_has_one_key() {
    let down = pod(
        serde_json::json!({ "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
        }]}),
    );
    let up = pod(
        serde_json::json!({ "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": true, "restartCount": 1,
            "state": { "running": {} },
            "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
        }]}),
    );
    assert_eq!(
        read_pod(&down, &all(), now()).signals[0].key,
        read_pod(&up, &all(), now()).signals[0].key
    );
}

#[test]
fn crash_loop_counts_only_past_the_restart_threshold() {
    let looping = |restarts: i32| {
        pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": restarts,
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "exitCode": 1, "reason": "Error" } }
            }]}),
        )
    };
    assert!(read_pod(&looping(2), &all(), now()).signals.is_empty());
    let r = read_pod(&looping(3), &all(), now());
    assert_eq!(r.signals.len(), 1);
    assert_eq!(r.signals[0].kind, SignalKind::CrashLoopBackOff);
    assert!(r.signals[0].message.contains("last exit code 1"));
}

#[test]
fn an_oom_crash_loop_is_one_oom_signal() {
    let p = pod(
        serde_json::json!({ "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 5,
            "state": { "waiting": { "reason": "CrashLoopBackOff" } },
            "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } }
        }]}),
    );
    let kinds: Vec<_> = read_pod(&p, &all(), now())
        .signals
        .iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds, [SignalKind::OOMKilled]);
}

#[test]
fn untriggered_kinds_are_ignored() {
    let p = pod(
        serde_json::json!({ "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 5,
            "state": { "waiting": { "reason": "ImagePullBackOff" } }
        }]}),
    );
    assert!(
        read_pod(&p, &triggers(&[SignalKind::OOMKilled]), now())
            .signals
            .is_empty()
    );
    assert_eq!(
        read_pod(&p, &all(), now()).signals[0].kind,
        SignalKind::ImagePullBackOff
    );
}

#[test]
fn unschedulable_waits_for_its_grace_period() {
    let p = |since: &str| {
        pod(serde_json::json!({ "phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.", "lastTransitionTime": since
        }]}))
    };
    let early = read_pod(&p("2026-11-26T09:59:30Z"), &all(), now());
    assert!(early.signals.is_empty());
    assert_eq!(early.recheck_after, Some(Duration::from_secs(30)));
    let late = read_pod(&p("2026-11-26T09:58:00Z"), &all(), now());
    assert_eq!(late.signals[0].kind, SignalKind::Unschedulable);
    assert!(late.signals[0].message.contains("Insufficient memory"));
}

#[test]
fn not_ready_is_a_signal_only_when_nothing_else_explains_it() {
    let p = pod(serde_json::json!({ "phase": "Running",
        "conditions": [{ "type": "Ready", "status": "False", "lastTransitionTime": "2026-11-26T09:50:00Z" }],
        "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": { "running": {} } }]
    }));
    assert_eq!(
        read_pod(&p, &all(), now()).signals[0].kind,
        SignalKind::ReadinessFailing
    );
}

#[test]
fn terminating_and_completed_pods_are_churn() {
    let mut p = pod(
        serde_json::json!({ "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 9,
            "state": { "waiting": { "reason": "CrashLoopBackOff" } }
        }]}),
    );
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    assert!(read_pod(&p, &all(), now()).signals.is_empty());
    let done = pod(serde_json::json!({ "phase": "Succeeded" }));
    assert!(read_pod(&done, &all(), now()).signals.is_empty());
}

// The kinds the Scout reads from pods, as a policy that lists them all.
fn every() -> Vec<Trigger> {
    let kinds: Vec<SignalKind> = SignalKind::ALL
        .into_iter()
        .filter(|k| k.is_pod_signal())
        .collect();
    triggers(&kinds)
}

fn kinds(r: &PodReading) -> Vec<SignalKind> {
    r.signals.iter().map(|s| s.kind).collect()
}

/// A pod `web-1` controlled by `owner` (kind, name), or bare, with its spec
/// and status as the API server returns them.
fn owned(owner: Option<(&str, &str)>, spec: serde_json::Value, status: serde_json::Value) -> Pod {
    let owners = owner.map(|(kind, name)| {
        serde_json::json!([{ "apiVersion": if kind == "Job" { "batch/v1" } else { "apps/v1" },
            "kind": kind, "name": name, "uid": "owner-uid", "controller": true }])
    });
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web-1", "namespace": "shop", "uid": "u1", "ownerReferences": owners },
        "spec": spec,
        "status": status
    }))
    .unwrap()
}

fn one(r: &PodReading) -> &Signal {
    assert_eq!(r.signals.len(), 1, "{:#?}", r.signals);
    &r.signals[0]
}

// The conditions the kubelet writes for a scheduled pod whose containers are
// not ready, as of `since`.
fn not_ready_conditions(since: &str) -> serde_json::Value {
    serde_json::json!([
        { "type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-11-26T09:40:02Z" },
        { "type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-26T09:40:00Z" },
        { "type": "Ready", "status": "False", "reason": "ContainersNotReady",
          "message": "containers with unready status: [app]", "lastTransitionTime": since },
        { "type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
          "message": "containers with unready status: [app]", "lastTransitionTime": since },
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T09:40:00Z" }
    ])
}

fn running_with(container: serde_json::Value) -> Pod {
    pod(serde_json::json!({
        "phase": "Running",
        "conditions": not_ready_conditions("2026-11-26T09:50:00Z"),
        "containerStatuses": [container]
    }))
}

#[test]
fn a_container_the_kubelet_cannot_create_or_start_is_a_config_error_naming_it() {
    // (waiting reason, the kubelet's message, what the signal must quote)
    let rows = [
        (
            "CreateContainerConfigError",
            r#"configmap "app-config" not found"#,
            r#"configmap "app-config" not found"#,
        ),
        (
            "CreateContainerConfigError",
            "couldn't find key DB_HOST in ConfigMap shop/app-config",
            "couldn't find key DB_HOST in ConfigMap shop/app-config",
        ),
        (
            "CreateContainerConfigError",
            r#"secret "db-credentials" not found"#,
            r#"secret "db-credentials" not found"#,
        ),
        (
            "CreateContainerError",
            r#"failed to generate container "3f1c" spec: failed to generate spec: failed to mkdir "/data": mkdir /data: read-only file system"#,
            "read-only file system",
        ),
        (
            "RunContainerError",
            r#"failed to start container "3f1c": Error response from daemon: failed to create task for container: OCI runtime create failed: exec: "serve": executable file not found in $PATH: unknown"#,
            r#"exec: "serve": executable file not found in $PATH"#,
        ),
    ];
    for (reason, message, quoted) in rows {
        let p = pod(serde_json::json!({ "phase": "Pending",
            "conditions": not_ready_conditions("2026-11-26T09:59:58Z"),
            "containerStatuses": [{ "name": "app", "image": "web:2", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": { "waiting": { "reason": reason, "message": message } } }]
        }));
        let r = read_pod(&p, &every(), now());
        let s = one(&r);
        assert_eq!(s.kind, SignalKind::ConfigError, "{reason}");
        assert_eq!(s.reason, reason);
        assert_eq!(s.container.as_deref(), Some("app"));
        assert!(
            s.message.starts_with("container app of pod web-1 "),
            "{}",
            s.message
        );
        assert!(s.message.contains(quoted), "{reason}: {}", s.message);
    }
}

#[test]
fn a_command_that_cannot_run_is_a_config_error_not_a_crash_loop() {
    // containerd (exit 128, StartError) and Docker (ContainerCannotRun).
    let rows = [
        (
            "StartError",
            r#"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: "serve": executable file not found in $PATH: unknown"#,
        ),
        (
            "ContainerCannotRun",
            r#"OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "serve": executable file not found in $PATH: unknown"#,
        ),
    ];
    for (reason, message) in rows {
        let p = running_with(serde_json::json!({
            "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 5, "started": false,
            "state": { "waiting": { "reason": "CrashLoopBackOff",
                "message": "back-off 2m40s restarting failed container=app pod=web-1_shop(u1)" } },
            "lastState": { "terminated": { "exitCode": 128, "reason": reason, "message": message,
                "startedAt": "1970-01-01T00:00:00Z", "finishedAt": "2026-11-26T09:58:00Z" } }
        }));
        let r = read_pod(&p, &every(), now());
        let s = one(&r);
        assert_eq!(s.kind, SignalKind::ConfigError, "{reason}");
        assert!(s.message.contains("exit code 128"), "{}", s.message);
        assert!(
            s.message
                .contains(r#"exec: "serve": executable file not found in $PATH"#),
            "{}",
            s.message
        );
    }
}

#[test]
fn the_same_failed_start_counts_once_however_the_kubelet_shows_it() {
    let last = serde_json::json!({ "terminated": { "exitCode": 128, "reason": "StartError",
        "message": "exec: \"serve\": executable file not found in $PATH: unknown",
        "finishedAt": "2026-11-26T09:58:00Z" } });
    let as_run_error = running_with(serde_json::json!({
        "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 2,
        "state": { "waiting": { "reason": "RunContainerError",
            "message": "failed to start container: exec: \"serve\": executable file not found in $PATH: unknown" } },
        "lastState": last
    }));
    let as_crash_loop = running_with(serde_json::json!({
        "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 7,
        "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container=app pod=web-1_shop(u1)" } },
        "lastState": last
    }));
    let a = read_pod(&as_run_error, &every(), now());
    let b = read_pod(&as_crash_loop, &every(), now());
    assert_eq!(one(&a).key, one(&b).key);
    assert_eq!(one(&a).key, "u1/app/config/start");
}

fn creating(scheduled: &str) -> Pod {
    pod(serde_json::json!({ "phase": "Pending",
        "conditions": [
            { "type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": scheduled },
            { "type": "Initialized", "status": "True", "lastTransitionTime": scheduled },
            { "type": "Ready", "status": "False", "reason": "ContainersNotReady",
              "message": "containers with unready status: [app]", "lastTransitionTime": scheduled },
            { "type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
              "message": "containers with unready status: [app]", "lastTransitionTime": scheduled },
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled }
        ],
        "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
            "restartCount": 0, "started": false, "state": { "waiting": { "reason": "ContainerCreating" } } }]
    }))
}

#[test]
fn a_container_still_creating_past_the_grace_period_is_a_config_error() {
    let early = read_pod(&creating("2026-11-26T09:59:30Z"), &every(), now());
    assert!(early.signals.is_empty(), "{:?}", early.signals);
    assert_eq!(early.recheck_after, Some(Duration::from_secs(30)));

    let late = read_pod(&creating("2026-11-26T09:57:00Z"), &every(), now());
    let s = one(&late);
    assert_eq!(s.kind, SignalKind::ConfigError);
    assert_eq!(s.reason, "ContainerCreating");
    assert_eq!(s.container.as_deref(), Some("app"));
    assert!(
        s.message
            .contains("container app of pod web-1 is still ContainerCreating 180s"),
        "{}",
        s.message
    );
    assert!(s.message.contains("FailedMount"), "{}", s.message);
    // Read again a minute later: the same stuck pod, the same key.
    let later = read_pod(
        &creating("2026-11-26T09:57:00Z"),
        &every(),
        now() + k8s_openapi::jiff::SignedDuration::from_secs(60),
    );
    assert_eq!(one(&later).key, s.key);

    let mut p = triggers(&[SignalKind::ConfigError]);
    p[0].grace_period_seconds = Some(600);
    assert!(
        read_pod(&creating("2026-11-26T09:57:00Z"), &p, now())
            .signals
            .is_empty(),
        "a longer grace period leaves room for a slow image pull"
    );
}

#[test]
fn containers_waiting_on_an_init_container_are_not_stuck_creating() {
    let status = |init_state: serde_json::Value, initialized: bool| {
        pod(serde_json::json!({ "phase": "Pending",
            "conditions": [
                { "type": "Initialized", "status": if initialized { "True" } else { "False" },
                  "lastTransitionTime": "2026-11-26T09:59:50Z" },
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T09:50:00Z" }
            ],
            "initContainerStatuses": [{ "name": "migrate", "image": "tools:1", "imageID": "", "ready": false,
                "restartCount": 0, "started": false, "state": init_state }],
            "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": { "waiting": { "reason": if initialized { "ContainerCreating" } else { "PodInitializing" } } } }]
        }))
    };
    // The init container runs a long migration: nothing is stuck.
    let running = status(
        serde_json::json!({ "running": { "startedAt": "2026-11-26T09:50:05Z" } }),
        false,
    );
    assert!(read_pod(&running, &every(), now()).signals.is_empty());
    // The init container itself was never created (its volume does not
    // mount): stuck since the pod was scheduled, and it is named.
    let never = status(
        serde_json::json!({ "waiting": { "reason": "PodInitializing" } }),
        false,
    );
    let r = read_pod(&never, &every(), now());
    assert_eq!(one(&r).kind, SignalKind::ConfigError);
    assert!(
        one(&r)
            .message
            .starts_with("init container migrate of pod web-1 is still PodInitializing 600s"),
        "{}",
        one(&r).message
    );
    // The migration finished ten seconds ago and the app is being created:
    // measured from the end of initialisation, not from scheduling.
    let done = status(
        serde_json::json!({ "terminated": { "exitCode": 0, "reason": "Completed",
            "finishedAt": "2026-11-26T09:59:50Z" } }),
        true,
    );
    let r = read_pod(&done, &every(), now());
    assert!(r.signals.is_empty(), "{:?}", r.signals);
    assert_eq!(r.recheck_after, Some(Duration::from_secs(50)));
}

fn init_pod(phase: &str, init: serde_json::Value, initialized: bool) -> serde_json::Value {
    serde_json::json!({ "phase": phase,
        "conditions": [
            { "type": "Initialized", "status": if initialized { "True" } else { "False" },
              "reason": if initialized { serde_json::Value::Null } else { "ContainersNotInitialized".into() },
              "message": if initialized { serde_json::Value::Null } else { "containers with incomplete status: [migrate]".into() },
              "lastTransitionTime": "2026-11-26T09:40:00Z" },
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T09:40:00Z" }
        ],
        "initContainerStatuses": [init],
        "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
            "restartCount": 0, "started": false, "state": { "waiting": { "reason": "PodInitializing" } } }]
    })
}

fn init_looping(restarts: i32, last: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "name": "migrate", "image": "tools:1", "imageID": "", "ready": false,
        "restartCount": restarts, "started": false,
        "state": { "waiting": { "reason": "CrashLoopBackOff",
            "message": "back-off 40s restarting failed container=migrate pod=web-1_shop(u1)" } },
        "lastState": { "terminated": last } })
}

#[test]
fn an_init_container_crash_loop_is_init_container_failed_past_its_threshold() {
    let last = serde_json::json!({ "exitCode": 1, "reason": "Error",
        "finishedAt": "2026-11-26T09:59:00Z" });
    let below = pod(init_pod("Pending", init_looping(2, last.clone()), false));
    assert!(read_pod(&below, &every(), now()).signals.is_empty());

    let past = pod(init_pod("Pending", init_looping(3, last.clone()), false));
    let r = read_pod(&past, &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::InitContainerFailed);
    assert_eq!(s.reason, "Init:CrashLoopBackOff");
    assert_eq!(s.container.as_deref(), Some("migrate"));
    assert!(
        s.message
            .starts_with("init container migrate of pod web-1 is crash-looping"),
        "{}",
        s.message
    );
    assert!(s.message.contains("last exit code 1"), "{}", s.message);

    // The trigger's own threshold, not CrashLoopBackOff's.
    let mut t = triggers(&[
        SignalKind::InitContainerFailed,
        SignalKind::CrashLoopBackOff,
    ]);
    t[0].restart_threshold = Some(5);
    assert!(read_pod(&past, &t, now()).signals.is_empty());
    // A policy that does not list InitContainerFailed is not told of it as
    // a crash loop.
    assert!(
        read_pod(&past, &triggers(&[SignalKind::CrashLoopBackOff]), now())
            .signals
            .is_empty()
    );
}

#[test]
fn a_restarting_sidecar_of_an_initialized_pod_is_a_crash_loop() {
    let last = serde_json::json!({ "exitCode": 1, "reason": "Error" });
    let mut status = init_pod("Running", init_looping(4, last), true);
    status["containerStatuses"][0]["state"] =
        serde_json::json!({ "running": { "startedAt": "2026-11-26T09:40:10Z" } });
    status["containerStatuses"][0]["ready"] = true.into();
    let r = read_pod(&pod(status), &every(), now());
    assert_eq!(kinds(&r), [SignalKind::CrashLoopBackOff]);
    assert!(
        one(&r)
            .message
            .starts_with("init container migrate of pod web-1"),
        "{}",
        one(&r).message
    );
}

#[test]
fn a_failed_init_container_of_a_never_restarting_bare_pod_is_init_error() {
    let failed = serde_json::json!({ "name": "migrate", "image": "tools:1", "imageID": "",
        "ready": false, "restartCount": 0, "started": false,
        "state": { "terminated": { "exitCode": 2, "reason": "Error",
            "startedAt": "2026-11-26T09:58:00Z", "finishedAt": "2026-11-26T09:58:30Z" } } });
    let spec = serde_json::json!({ "restartPolicy": "Never",
        "initContainers": [{ "name": "migrate", "image": "tools:1" }],
        "containers": [{ "name": "app", "image": "web:1" }] });
    let bare = owned(
        None,
        spec.clone(),
        init_pod("Failed", failed.clone(), false),
    );
    assert!(!is_churn(&bare));
    let r = read_pod(&bare, &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::InitContainerFailed);
    assert_eq!(s.reason, "Init:Error");
    assert!(
        s.message.starts_with(
            "init container migrate of pod web-1 failed with exit code 2 (Init:Error)"
        ),
        "{}",
        s.message
    );
    assert_eq!(s.key, "u1/migrate/init-error");
    assert_eq!(
        s.observed_at,
        "2026-11-26T09:58:30Z".parse::<Timestamp>().unwrap()
    );
    // Without the spec, as the Scout's store keeps pods, the Failed phase
    // says the same.
    let mut trimmed = bare.clone();
    trimmed.spec = None;
    assert_eq!(read_pod(&trimmed, &every(), now()).signals, r.signals);

    // A Job's pod that failed in init is the Job's failure to report, also
    // in the moment before the kubelet marks it Failed.
    let of_job = owned(
        Some(("Job", "report")),
        spec.clone(),
        init_pod("Failed", failed.clone(), false),
    );
    assert!(is_churn(&of_job));
    assert!(read_pod(&of_job, &every(), now()).signals.is_empty());
    let pending = owned(
        Some(("Job", "report")),
        spec,
        init_pod("Pending", failed, false),
    );
    assert!(read_pod(&pending, &every(), now()).signals.is_empty());
}

#[test]
fn an_init_container_that_cannot_pull_or_runs_out_of_memory_keeps_its_kind() {
    let pull = serde_json::json!({ "name": "migrate", "image": "tools:9", "imageID": "",
        "ready": false, "restartCount": 0, "started": false,
        "state": { "waiting": { "reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"tools:9\": ErrImagePull: failed to pull and unpack image \"docker.io/library/tools:9\": not found" } } });
    let r = read_pod(&pod(init_pod("Pending", pull, false)), &every(), now());
    assert_eq!(kinds(&r), [SignalKind::ImagePullBackOff]);
    assert!(
        one(&r).message.contains("of init container migrate"),
        "{}",
        one(&r).message
    );

    let oom = init_looping(
        4,
        serde_json::json!({ "exitCode": 137, "reason": "OOMKilled",
            "finishedAt": "2026-11-26T09:59:00Z" }),
    );
    let r = read_pod(&pod(init_pod("Pending", oom, false)), &every(), now());
    assert_eq!(kinds(&r), [SignalKind::OOMKilled]);
    assert!(
        one(&r)
            .message
            .starts_with("init container migrate of pod web-1 was OOMKilled"),
        "{}",
        one(&r).message
    );
}

#[test]
fn a_crash_looping_pod_past_the_readiness_grace_is_one_crash_loop_signal() {
    let p = running_with(serde_json::json!({
        "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 6, "started": false,
        "state": { "waiting": { "reason": "CrashLoopBackOff",
            "message": "back-off 5m0s restarting failed container=app pod=web-1_shop(u1)" } },
        "lastState": { "terminated": { "exitCode": 1, "reason": "Error",
            "startedAt": "2026-11-26T09:57:58Z", "finishedAt": "2026-11-26T09:58:00Z" } }
    }));
    assert_eq!(
        kinds(&read_pod(&p, &every(), now())),
        [SignalKind::CrashLoopBackOff]
    );
}

#[test]
fn readiness_fails_only_for_running_containers_that_did_not_restart_since() {
    // Ready went False at 09:50:00. (container status, ReadinessFailing?)
    let rows = [
        // Running since before, never restarted: the probe is the problem.
        (
            serde_json::json!({ "state": { "running": { "startedAt": "2026-11-26T09:40:05Z" } }, "restartCount": 0 }),
            true,
        ),
        // Restarted once, before readiness was lost: still the probe.
        (
            serde_json::json!({ "state": { "running": { "startedAt": "2026-11-26T09:45:05Z" } }, "restartCount": 1,
                "lastState": { "terminated": { "exitCode": 137, "reason": "Error", "finishedAt": "2026-11-26T09:45:00Z" } } }),
            true,
        ),
        // Up again between two crashes: the crash loop explains it.
        (
            serde_json::json!({ "state": { "running": { "startedAt": "2026-11-26T09:59:55Z" } }, "restartCount": 2,
                "lastState": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T09:59:50Z" } } }),
            false,
        ),
        // Crash-looping, below the restart threshold.
        (
            serde_json::json!({ "state": { "waiting": { "reason": "CrashLoopBackOff" } }, "restartCount": 1,
                "lastState": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T09:59:00Z" } } }),
            false,
        ),
        // Down right now.
        (
            serde_json::json!({ "state": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T09:59:59Z" } }, "restartCount": 0 }),
            false,
        ),
        // Never started: its config is missing.
        (
            serde_json::json!({ "state": { "waiting": { "reason": "CreateContainerConfigError",
                "message": "configmap \"app-config\" not found" } }, "restartCount": 0 }),
            false,
        ),
    ];
    for (i, (state, readiness)) in rows.into_iter().enumerate() {
        let mut container =
            serde_json::json!({ "name": "app", "image": "web:1", "imageID": "", "ready": false });
        for (k, v) in state.as_object().unwrap() {
            container[k] = v.clone();
        }
        let r = read_pod(&running_with(container), &every(), now());
        assert_eq!(
            kinds(&r).contains(&SignalKind::ReadinessFailing),
            readiness,
            "row {i}: {:?}",
            r.signals
        );
    }
}

#[test]
fn a_failed_job_pod_that_ran_out_of_memory_is_reported_once() {
    let status = |reason: &str, code: i32| {
        serde_json::json!({ "phase": "Failed",
            "conditions": [{ "type": "Ready", "status": "False", "reason": "PodFailed" }],
            "containerStatuses": [{ "name": "work", "image": "report:1", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": { "terminated": { "exitCode": code, "reason": reason,
                    "startedAt": "2026-11-26T09:55:00Z", "finishedAt": "2026-11-26T09:56:00Z" } } }]
        })
    };
    let spec = serde_json::json!({ "restartPolicy": "Never", "containers": [{ "name": "work", "image": "report:1" }] });
    let oom = owned(
        Some(("Job", "report")),
        spec.clone(),
        status("OOMKilled", 137),
    );
    assert!(!is_churn(&oom));
    let first = read_pod(&oom, &every(), now());
    let s = one(&first);
    assert_eq!(s.kind, SignalKind::OOMKilled);
    let finished: Timestamp = "2026-11-26T09:56:00Z".parse().unwrap();
    assert_eq!(s.key, format!("u1/work/oom/{}", finished.as_second()));
    assert_eq!(s.observed_at, finished);
    let again = read_pod(
        &oom,
        &every(),
        now() + k8s_openapi::jiff::SignedDuration::from_secs(600),
    );
    assert_eq!(again.signals, first.signals, "the same kill, the same key");

    // Any other failure of a Job's pod is the Job's to report.
    let error = owned(Some(("Job", "report")), spec.clone(), status("Error", 1));
    assert!(is_churn(&error));
    assert!(read_pod(&error, &every(), now()).signals.is_empty());
    // A Job's pod that completed is never a fault.
    let mut done = status("Completed", 0);
    done["phase"] = "Succeeded".into();
    let done = owned(Some(("Job", "report")), spec, done);
    assert!(is_churn(&done));
    assert!(read_pod(&done, &every(), now()).signals.is_empty());
}

const EVICTION: &str = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 43140Ki. Container app was using 201316Ki, request is 64Mi, has larger consumption of memory. ";

fn evicted(message: &str, node: Option<&str>) -> Pod {
    owned(
        Some(("ReplicaSet", "web-abc")),
        serde_json::json!({ "nodeName": node, "containers": [{ "name": "app", "image": "web:1" }] }),
        serde_json::json!({ "phase": "Failed", "reason": "Evicted", "message": message,
            "hostIP": "172.18.0.3",
            "conditions": [
                { "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                  "message": message, "lastTransitionTime": "2026-11-26T09:59:00Z" },
                { "type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": "2026-11-26T09:59:01Z" }
            ],
            "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": { "terminated": { "exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated" } } }]
        }),
    )
}

#[test]
fn a_pod_evicted_for_node_pressure_is_a_node_failure_naming_node_and_pressure() {
    let p = evicted(EVICTION, Some("kind-worker"));
    assert!(
        !is_churn(&p),
        "its ReplicaSet replaced it, but it is still told once"
    );
    let r = read_pod(&p, &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::NodeFailure);
    assert_eq!(s.reason, "Evicted");
    assert_eq!(s.key, "u1/evicted");
    assert!(
        s.message
            .starts_with("pod web-1 was evicted by the kubelet of node kind-worker under memory pressure: The node was low on resource: memory."),
        "{}",
        s.message
    );
    assert_eq!(
        s.observed_at,
        "2026-11-26T09:59:00Z".parse::<Timestamp>().unwrap()
    );
    // As the Scout's store keeps it, without its spec: the node's address.
    let mut trimmed = p.clone();
    trimmed.spec = None;
    let r = read_pod(&trimmed, &every(), now());
    assert!(
        one(&r)
            .message
            .contains("of the node at 172.18.0.3 under memory pressure"),
        "{}",
        one(&r).message
    );
    let disk = evicted(
        "The node had condition: [DiskPressure]. ",
        Some("kind-worker"),
    );
    let r = read_pod(&disk, &every(), now());
    assert!(
        one(&r)
            .message
            .contains("node kind-worker under DiskPressure: "),
        "{}",
        one(&r).message
    );
    assert!(
        read_pod(&p, &all(), now()).signals.is_empty(),
        "only a policy listing NodeFailure hears of it"
    );
}

fn on_a_lost_node() -> Pod {
    owned(
        Some(("ReplicaSet", "web-abc")),
        serde_json::json!({ "nodeName": "kind-worker2", "containers": [{ "name": "app", "image": "web:1" }] }),
        serde_json::json!({ "phase": "Running", "hostIP": "172.18.0.4",
            "conditions": [
                { "type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-26T09:00:00Z" },
                { "type": "Ready", "status": "False", "lastTransitionTime": "2026-11-26T09:50:00Z" },
                { "type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-26T09:00:10Z" },
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T09:00:00Z" }
            ],
            "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": true,
                "restartCount": 0, "started": true,
                "state": { "running": { "startedAt": "2026-11-26T09:00:05Z" } } }]
        }),
    )
}

#[test]
fn a_pod_marked_not_ready_by_the_node_controller_is_a_node_failure_not_a_readiness_one() {
    let r = read_pod(&on_a_lost_node(), &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::NodeFailure);
    assert_eq!(s.reason, "NodeNotReady");
    assert!(
        s.message.contains("node kind-worker2 stopped reporting"),
        "{}",
        s.message
    );
    // Without NodeFailure in the policy, it is still not a readiness
    // problem of the workload.
    let t = triggers(&[SignalKind::ReadinessFailing]);
    assert!(read_pod(&on_a_lost_node(), &t, now()).signals.is_empty());
}

#[test]
fn a_pod_the_taint_manager_deletes_is_the_same_node_failure_and_other_deletions_are_churn() {
    let mut p = on_a_lost_node();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let not_ready_key = one(&read_pod(&on_a_lost_node(), &every(), now()))
        .key
        .clone();
    let conditions = p.status.as_mut().unwrap().conditions.as_mut().unwrap();
    conditions.push(
        serde_json::from_value(serde_json::json!({ "type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": "2026-11-26T09:55:00Z" }))
        .unwrap(),
    );
    assert!(!is_churn(&p));
    let r = read_pod(&p, &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::NodeFailure);
    assert_eq!(s.key, not_ready_key, "one fault, counted once");
    assert!(
        s.message.contains("node kind-worker2 is tainted NoExecute")
            && s.message
                .contains("Taint manager: deleting due to NoExecute taint"),
        "{}",
        s.message
    );

    // Deleted by a person, or evicted through the API (a drain, or the
    // operator's own RestartPod): churn.
    let mut deleted = running_with(
        serde_json::json!({ "name": "app", "image": "web:1", "imageID": "",
        "ready": false, "restartCount": 9, "state": { "waiting": { "reason": "CrashLoopBackOff" } } }),
    );
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    assert!(is_churn(&deleted));
    let conditions = deleted
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap();
    conditions.push(
        serde_json::from_value(
            serde_json::json!({ "type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting" }),
        )
        .unwrap(),
    );
    assert!(is_churn(&deleted));
    assert!(read_pod(&deleted, &every(), now()).signals.is_empty());
}

#[test]
fn a_config_error_quoting_a_secret_is_redacted() {
    let p = running_with(serde_json::json!({
        "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": 1,
        "state": { "waiting": { "reason": "RunContainerError",
            "message": "failed to start container: exec: \"/bin/sync --token ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\": stat /bin/sync --token ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789: no such file or directory: unknown" } }
    }));
    let r = read_pod(&p, &every(), now());
    let s = one(&r);
    assert_eq!(s.kind, SignalKind::ConfigError);
    assert!(!s.message.contains("ghp_AbCdEf"), "{}", s.message);
    assert!(
        s.message.contains("no such file or directory"),
        "{}",
        s.message
    );
}
