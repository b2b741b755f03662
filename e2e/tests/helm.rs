//! The Helm charts and the sre-chaos CLI: the charts render (what each
//! value turns on, the monitoring objects only with their API, the
//! dashboard's JSON, the README as the values' comments write it), their
//! schemas refuse bad values naming the field; those tests run `helm
//! template`, `helm lint` and a client-side `helm install --dry-run` and
//! need no cluster. On the real local cluster: the operator's chart installs
//! into a namespace that enforces the `restricted` Pod Security level, its
//! RBAC lets the operator do its whole job and nothing more, and every chaos
//! command is undone by `revert`.
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::Value;
use sre_chaos::Target;
use sre_space::crd::SignalKind;
use sre_space::crd::{ActionState, ActionType, IncidentMemory, RemediationPolicy};
use sre_space_e2e::incident_of;
use sre_space_e2e::{
    Operator, TestNamespace, chaos_bin, client, create_policy, deployment, helm_output, helm_run,
    install_crds, kubectl, kubectl_output, repo_dir, service_account_kubeconfig, wait_ready,
    wait_resolved, wait_until,
};

const CHART: &str = "charts/sre-space";
const DEMO_CHART: &str = "charts/demo-services";
const LONG: Duration = Duration::from_secs(60);
/// The API group and version the Prometheus Operator serves.
const MONITORING: &str = "monitoring.coreos.com/v1";

fn chart(path: &str) -> String {
    repo_dir().join(path).to_string_lossy().into_owned()
}

/// The objects of a rendered chart, one JSON value per YAML document.
fn objects(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).context("parsing helm's output")?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .with_context(|| format!("{kind} {name}"))
}

fn kinds(objects: &[Value]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for o in objects {
        *count
            .entry(o["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    count
}

/// The operator container's environment: name → value (or the source of a
/// value taken from elsewhere, as JSON).
fn operator_env(objects: &[Value]) -> BTreeMap<String, String> {
    let deployments = of_kind(objects, "Deployment");
    assert_eq!(deployments.len(), 1, "one operator Deployment");
    let container = &deployments[0]["spec"]["template"]["spec"]["containers"][0];
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = match &e["value"] {
                Value::String(v) => v.clone(),
                _ => e["valueFrom"].to_string(),
            };
            (e["name"].as_str().unwrap_or_default().to_string(), value)
        })
        .collect()
}

/// `helm template rel charts/sre-space --namespace ops ARGS...`, parsed.
fn template(args: &[&str]) -> Result<Vec<Value>> {
    let path = chart(CHART);
    let mut all = vec!["template", "rel", path.as_str(), "--namespace", "ops"];
    all.extend_from_slice(args);
    objects(&helm_output(&all)?)
}

/// The checked-in CRD files, parsed.
fn checked_in_crds() -> Result<BTreeMap<String, Value>> {
    let mut crds = BTreeMap::new();
    for entry in std::fs::read_dir(repo_dir().join("crds"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for crd in objects(&std::fs::read_to_string(&path)?)? {
                crds.insert(
                    crd["metadata"]["name"].as_str().unwrap_or_default().into(),
                    crd,
                );
            }
        }
    }
    Ok(crds)
}

/// Values at the edges of what the schema allows: stopped, one namespace,
/// an existing account, no CRDs, numbers too big for a float's default
/// format, the reserved secrets referenced, every optional integration on
/// (traces, OpenTelemetry, Kafka, monitoring, the Grafana dashboard, an
/// allow-list by selector) and the lists a user extends. Returns the path
/// of a file of the caller's own (`test`).
fn edge_values(test: &str) -> Result<String> {
    let edge = std::env::temp_dir().join(format!(
        "sre-space-edge-values-{}-{test}.yaml",
        std::process::id()
    ));
    std::fs::write(
        &edge,
        r#"
replicaCount: 0
fullnameOverride: ops-watcher
image: {repository: registry.example/sre-space, tag: "1.2.3", pullPolicy: Always}
serviceAccount: {create: false, name: existing-account}
crds: {enabled: false}
operator:
  watchNamespace: team-a
  logFormat: text
  logLevel: debug
  breaker: {limit: 1, windowSeconds: 86400000}
github: {tokenSecret: {name: github-token}}
llm: {apiKeySecret: {name: llm, key: openai}}
dashboard: {enabled: true, address: 0.0.0.0, port: 65535, tokenSecret: {name: dash, key: t}, jaegerUrl: "http://jaeger.ops:16686", embeddingsModel: text-embedding-3-small}
resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: 1500m, memory: 2Gi}}
traces: {jaegerQueryUrl: "http://jaeger-query.observability:16686"}
otel:
  endpoint: "https://otel.example:4318"
  serviceName: ops-watcher
  resourceAttributes: {deployment.environment: prod, k8s.cluster.name: east}
  headersSecret: {name: otel-headers, key: h}
kafka: {bootstrap: "kafka-0.kafka:9092,kafka-1.kafka:9092", group: ops}
allowList:
  namespaces:
  - namespaceSelector:
      matchExpressions: [{key: team, operator: Exists}]
    healthCheckHosts: ["*.partner.example", "10.20.0.0/16"]
metrics:
  serviceMonitor: {enabled: true, interval: 1m30s, scrapeTimeout: 10s, labels: {release: prom}}
  prometheusRule: {enabled: true, labels: {release: prom}, ruleLabels: {team: sre}}
grafana:
  dashboard: {enabled: true, label: example.com/dashboard, labelValue: "yes", namespace: monitoring, annotations: {grafana_folder: SRE}}
podDisruptionBudget: {enabled: true, maxUnavailable: 100%}
topologySpreadConstraints: []
extraEnv: [{name: OTEL_EXPORTER_OTLP_TIMEOUT, value: "5000"}]
extraVolumes: [{name: scratch, emptyDir: {sizeLimit: 16Mi}}]
extraVolumeMounts: [{name: scratch, mountPath: /scratch}]
"#,
    )?;
    Ok(edge.to_string_lossy().into_owned())
}

#[tokio::test]
async fn both_charts_lint_clean_with_default_and_edge_values() -> Result<()> {
    let edge = edge_values("lint")?;
    // The edge values with the monitoring API served: the ServiceMonitor
    // and PrometheusRule are rendered, and must be valid YAML with the rest.
    let monitored = objects(&helm_output(&[
        "template",
        "rel",
        &chart(CHART),
        "-f",
        &edge,
        "--api-versions",
        MONITORING,
    ])?)?;
    assert!(!of_kind(&monitored, "ServiceMonitor").is_empty());
    assert!(!of_kind(&monitored, "PrometheusRule").is_empty());
    for (path, extra) in [
        (CHART, None),
        (CHART, Some(edge.as_str())),
        (DEMO_CHART, None),
    ] {
        let path = chart(path);
        let mut args = vec!["lint", "--strict", path.as_str()];
        if let Some(values) = extra {
            args.extend(["-f", values]);
        }
        helm_output(&args)?;
    }
    std::fs::remove_file(&edge)?;
    Ok(())
}

#[tokio::test]
async fn by_default_the_operator_is_hardened_least_privileged_and_gets_the_checked_in_crds()
-> Result<()> {
    // Defaults: everything, hardened, with the CRDs of crds/ kept on
    // uninstall.
    let all = template(&[])?;
    assert_eq!(
        kinds(&all),
        BTreeMap::from(
            [
                ("ClusterRole", 4),
                ("ClusterRoleBinding", 1),
                ("CustomResourceDefinition", 3),
                ("Deployment", 1),
                ("Pod", 1),
                ("PodDisruptionBudget", 1),
                ("Role", 1),
                ("RoleBinding", 1),
                ("Service", 1),
                ("ServiceAccount", 1),
                ("ValidatingAdmissionPolicy", 1),
                ("ValidatingAdmissionPolicyBinding", 1),
            ]
            .map(|(k, n)| (k.to_string(), n))
        ),
        "the operator, its RBAC, people's roles, the approval policy, its CRDs, its metrics Service, a disruption budget and the `helm test` pod"
    );
    let d = of_kind(&all, "Deployment")[0];
    assert_eq!(d["spec"]["replicas"], 2, "a leader and a standby");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-sre-space");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "sre-space/operator:0.1.0");
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} is set"
            );
        }
    }
    let env = operator_env(&all);
    assert_eq!(env["SRE_SPACE_LOG_FORMAT"], "json");
    assert_eq!(env["RUST_LOG"], "info,kube=warn");
    assert_eq!(env["SRE_SPACE_BREAKER_LIMIT"], "20");
    assert_eq!(env["SRE_SPACE_BREAKER_WINDOW_SECONDS"], "600");
    assert_eq!(env["SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT"], "50");
    assert!(
        env["POD_NAME"].contains("metadata.name"),
        "{}",
        env["POD_NAME"]
    );
    for absent in [
        "SRE_SPACE_WATCH_NAMESPACE",
        "SRE_SPACE_GITHUB_TOKEN",
        "SRE_SPACE_LLM_API_KEY",
        "SRE_SPACE_DASHBOARD_ADDR",
        "SRE_SPACE_JAEGER_QUERY",
        "SRE_SPACE_KAFKA_BOOTSTRAP",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ] {
        assert!(!env.contains_key(absent), "{absent} is unset by default");
    }

    let role = named(&all, "ClusterRole", "rel-sre-space")?;
    let rules = role["rules"].as_array().context("ClusterRole rules")?;
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs"] {
            for item in rule[field].as_array().context("a list")? {
                let item = item.as_str().unwrap_or_default();
                assert!(!item.contains('*'), "no wildcards: {rule}");
                assert!(item != "secrets", "no Secrets: {rule}");
                assert!(
                    item != "delete" && item != "deletecollection",
                    "no deletes: {rule}"
                );
            }
        }
    }
    assert_eq!(
        of_kind(&all, "ClusterRoleBinding")[0]["subjects"][0],
        serde_json::json!({ "kind": "ServiceAccount", "name": "rel-sre-space", "namespace": "ops" })
    );
    let leases = of_kind(&all, "Role")[0];
    assert_eq!(leases["metadata"]["namespace"], "ops");
    assert_eq!(
        leases["rules"][0]["resources"],
        serde_json::json!(["leases"])
    );

    // The chart's CRDs are exactly crds/, plus the keep annotation.
    let expected = checked_in_crds()?;
    let rendered = of_kind(&all, "CustomResourceDefinition");
    assert_eq!(rendered.len(), expected.len());
    for crd in rendered {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name} is kept on uninstall"
        );
        let mut bare = crd.clone();
        let meta = bare["metadata"].as_object_mut().context("metadata")?;
        meta.remove("annotations");
        meta.remove("labels");
        assert!(
            Some(&bare) == expected.get(name),
            "the chart's {name} differs from crds/: run `make crds`"
        );
    }
    let unkept = template(&["--set", "crds.keep=false"])?;
    for crd in of_kind(&unkept, "CustomResourceDefinition") {
        assert!(
            crd["metadata"]["annotations"].is_null(),
            "{}",
            crd["metadata"]
        );
    }
    Ok(())
}

#[tokio::test]
async fn edge_values_render_a_stopped_one_namespace_operator_without_crds() -> Result<()> {
    let edge = edge_values("render")?;
    let edge_objects = template(&["-f", &edge])?;
    std::fs::remove_file(&edge)?;
    assert_eq!(
        kinds(&edge_objects),
        BTreeMap::from(
            [
                ("ClusterRole", 4),
                ("ConfigMap", 2),
                ("Deployment", 1),
                ("Pod", 1),
                ("Role", 1),
                ("RoleBinding", 2),
                ("Service", 1),
                ("ValidatingAdmissionPolicy", 1),
                ("ValidatingAdmissionPolicyBinding", 1),
            ]
            .map(|(k, n)| (k.to_string(), n))
        ),
        "no CRDs, no ServiceAccount, a RoleBinding instead of the ClusterRoleBinding, no \
         disruption budget for no replicas, no ServiceMonitor or PrometheusRule without their \
         API; the allow-list and the dashboard ConfigMaps"
    );
    let binding = of_kind(&edge_objects, "RoleBinding")
        .into_iter()
        .find(|b| b["roleRef"]["kind"] == "ClusterRole")
        .context("the ClusterRole bound in the watched namespace")?;
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(binding["subjects"][0]["name"], "existing-account");
    let d = of_kind(&edge_objects, "Deployment")[0];
    assert_eq!(d["metadata"]["name"], "ops-watcher");
    assert_eq!(d["spec"]["replicas"], 0);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/sre-space:1.2.3");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["limits"]["memory"], "2Gi");
    let env = operator_env(&edge_objects);
    assert_eq!(env["SRE_SPACE_WATCH_NAMESPACE"], "team-a");
    assert_eq!(env["SRE_SPACE_LOG_FORMAT"], "text");
    assert_eq!(env["RUST_LOG"], "debug");
    assert_eq!(env["SRE_SPACE_BREAKER_LIMIT"], "1");
    assert_eq!(env["SRE_SPACE_BREAKER_WINDOW_SECONDS"], "86400000");
    let secret = |name: &str| -> Result<Value> { Ok(serde_json::from_str(&env[name])?) };
    assert_eq!(
        secret("SRE_SPACE_GITHUB_TOKEN")?["secretKeyRef"],
        serde_json::json!({ "name": "github-token", "key": "token" })
    );
    assert_eq!(
        secret("SRE_SPACE_LLM_API_KEY")?["secretKeyRef"],
        serde_json::json!({ "name": "llm", "key": "openai" })
    );
    assert_eq!(env["SRE_SPACE_DASHBOARD_ADDR"], "0.0.0.0:65535");
    assert_eq!(
        secret("SRE_SPACE_DASHBOARD_TOKEN")?["secretKeyRef"],
        serde_json::json!({ "name": "dash", "key": "t" })
    );
    assert_eq!(env["SRE_SPACE_JAEGER_UI"], "http://jaeger.ops:16686");
    assert_eq!(env["SRE_SPACE_EMBEDDINGS_MODEL"], "text-embedding-3-small");
    assert_eq!(container["ports"][1]["containerPort"], 65535);
    assert_eq!(
        env["SRE_SPACE_JAEGER_QUERY"],
        "http://jaeger-query.observability:16686"
    );
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "https://otel.example:4318"
    );
    assert_eq!(env["OTEL_SERVICE_NAME"], "ops-watcher");
    assert_eq!(
        env["OTEL_RESOURCE_ATTRIBUTES"],
        "deployment.environment=prod,k8s.cluster.name=east"
    );
    assert_eq!(
        secret("OTEL_EXPORTER_OTLP_HEADERS")?["secretKeyRef"],
        serde_json::json!({ "name": "otel-headers", "key": "h" })
    );
    assert_eq!(
        env["SRE_SPACE_KAFKA_BOOTSTRAP"],
        "kafka-0.kafka:9092,kafka-1.kafka:9092"
    );
    assert_eq!(env["SRE_SPACE_KAFKA_GROUP"], "ops");
    assert_eq!(env["OTEL_EXPORTER_OTLP_TIMEOUT"], "5000");
    assert_eq!(env["SRE_SPACE_LEASE_NAME"], "ops-watcher");
    let pod = &d["spec"]["template"]["spec"];
    assert!(
        pod["topologySpreadConstraints"].is_null(),
        "[] turns spreading off"
    );
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&pod["volumes"]), ["allowlist", "scratch"]);
    assert_eq!(names(&container["volumeMounts"]), ["allowlist", "scratch"]);
    let dashboard = named(&edge_objects, "ConfigMap", "ops-watcher-dashboard")?;
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(
        dashboard["metadata"]["labels"]["example.com/dashboard"],
        "yes"
    );
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "SRE"
    );
    Ok(())
}

/// The verbs a rendered role grants on `resource` of group sre.space.
fn verbs(role: &Value, resource: &str) -> BTreeSet<String> {
    role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["apiGroups"] == serde_json::json!(["sre.space"])
                && r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })
        .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_chart_ships_roles_for_people_and_has_the_api_server_check_who_approved() -> Result<()>
{
    let all = template(&[])?;
    let set = |verbs: &[&str]| verbs.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>();
    let read = set(&["get", "list", "watch"]);

    let view = named(&all, "ClusterRole", "rel-sre-space-view")?;
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    for resource in ["incidents", "remediationpolicies", "incidentmemories"] {
        assert_eq!(verbs(view, resource), read, "view: {resource}");
    }
    let edit = named(&all, "ClusterRole", "rel-sre-space-edit")?;
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        verbs(edit, "remediationpolicies"),
        set(&[
            "get", "list", "watch", "create", "update", "patch", "delete"
        ])
    );
    assert_eq!(verbs(edit, "incidents"), read, "edit does not approve");
    let approve = named(&all, "ClusterRole", "rel-sre-space-approve")?;
    assert!(
        approve["metadata"]["labels"].as_object().is_some_and(|l| !l
            .keys()
            .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate"))),
        "approving is granted on its own, not with edit: {}",
        approve["metadata"]
    );
    assert_eq!(
        verbs(approve, "incidents"),
        set(&["get", "list", "watch", "patch"])
    );
    for role in [view, edit, approve] {
        let text = role["rules"].to_string();
        assert!(!text.contains('*'), "no wildcards: {text}");
    }
    let operator = named(&all, "ClusterRole", "rel-sre-space")?;
    assert!(
        verbs(operator, "incidents").contains("patch"),
        "the operator clears used approvals"
    );

    // Who approved is the API server's to check: a new or changed approval
    // must be signed with its writer's username.
    let policy = named(
        &all,
        "ValidatingAdmissionPolicy",
        "rel-sre-space-approval-identity",
    )?;
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
        serde_json::json!(["incidents"])
    );
    assert!(
        policy["spec"]["validations"][0]["expression"]
            .as_str()
            .is_some_and(|e| e.contains("object.spec.approval.by == request.userInfo.username")),
        "{}",
        policy["spec"]
    );
    let binding = named(
        &all,
        "ValidatingAdmissionPolicyBinding",
        "rel-sre-space-approval-identity",
    )?;
    assert_eq!(
        binding["spec"]["policyName"],
        "rel-sre-space-approval-identity"
    );
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    assert!(
        binding["spec"]["matchResources"].is_null(),
        "every namespace"
    );
    let one = template(&["--set", "operator.watchNamespace=team-a"])?;
    assert_eq!(
        of_kind(&one, "ValidatingAdmissionPolicyBinding")[0]["spec"]["matchResources"],
        serde_json::json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "team-a" } } }),
        "with one watched namespace, bound there"
    );

    // Both can be turned off.
    let off = template(&[
        "--set",
        "approvals.requireIdentity=false",
        "--set",
        "rbac.userRoles=false",
    ])?;
    let kinds = kinds(&off);
    assert_eq!(kinds.get("ClusterRole"), Some(&1), "{kinds:?}");
    assert!(
        !kinds.contains_key("ValidatingAdmissionPolicy"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains_key("ValidatingAdmissionPolicyBinding"),
        "{kinds:?}"
    );
    Ok(())
}

/// `helm template RELEASE charts/sre-space --namespace ops ARGS...`, parsed.
fn template_release(release: &str, args: &[&str]) -> Result<Vec<Value>> {
    let path = chart(CHART);
    let mut all = vec!["template", release, path.as_str(), "--namespace", "ops"];
    all.extend_from_slice(args);
    objects(&helm_output(&all)?)
}

/// The label selector of the operator's pods, as the Deployment declares it.
fn pod_selector(objects: &[Value]) -> Value {
    of_kind(objects, "Deployment")[0]["spec"]["selector"]["matchLabels"].clone()
}

#[tokio::test]
async fn a_disruption_budget_keeps_a_standby_through_a_drain_only_when_there_is_one() -> Result<()>
{
    let all = template(&[])?;
    let pdbs = of_kind(&all, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1, "two replicas by default: a budget");
    assert_eq!(pdbs[0]["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdbs[0]["spec"]["selector"]["matchLabels"],
        pod_selector(&all),
        "the budget counts exactly the operator's pods"
    );
    let percent = template(&[
        "--set",
        "replicaCount=4,podDisruptionBudget.maxUnavailable=50%",
    ])?;
    assert_eq!(
        of_kind(&percent, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"],
        "50%"
    );
    for (set, why) in [
        (
            "replicaCount=1",
            "one replica: a budget would block every drain",
        ),
        ("replicaCount=0", "no replicas"),
        ("podDisruptionBudget.enabled=false", "turned off"),
    ] {
        let objects = template(&["--set", set])?;
        assert!(
            of_kind(&objects, "PodDisruptionBudget").is_empty(),
            "{set}: {why}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn replicas_prefer_separate_nodes_without_refusing_a_one_node_cluster() -> Result<()> {
    let all = template(&[])?;
    let pod = &of_kind(&all, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["topologySpreadConstraints"],
        serde_json::json!([{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": { "matchLabels": pod_selector(&all) },
        }]),
        "a preference, not a requirement, over this release's pods"
    );

    // A list of one's own replaces it; a constraint naming its own
    // selector keeps it.
    let zones = template(&[
        "--set-json",
        r#"topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule"},{"maxSkew":2,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"ScheduleAnyway","labelSelector":{"matchLabels":{"tier":"ops"}}}]"#,
    ])?;
    let spread =
        &of_kind(&zones, "Deployment")[0]["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        pod_selector(&zones)
    );
    assert_eq!(
        spread[1]["labelSelector"],
        serde_json::json!({ "matchLabels": { "tier": "ops" } })
    );
    assert_eq!(spread.as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn two_releases_elect_their_leaders_on_two_leases() -> Result<()> {
    let mut leases = BTreeSet::new();
    for release in ["blue", "green"] {
        let all = template_release(release, &[])?;
        let lease = operator_env(&all)
            .remove("SRE_SPACE_LEASE_NAME")
            .context("the operator is told its Lease's name")?;
        assert_eq!(lease, format!("{release}-sre-space"), "the full name");
        // The Role renews that Lease and no other.
        let role = named(&all, "Role", &format!("{release}-sre-space-leases"))?;
        let rules = role["rules"].as_array().context("rules")?;
        for rule in rules {
            let verbs = rule["verbs"].to_string();
            if verbs.contains("get") || verbs.contains("update") {
                assert_eq!(rule["resourceNames"], serde_json::json!([lease]), "{rule}");
            } else {
                assert_eq!(rule["verbs"], serde_json::json!(["create"]), "{rule}");
            }
        }
        leases.insert(lease);
    }
    assert_eq!(leases.len(), 2, "{leases:?}");
    let renamed = template(&["--set", "fullnameOverride=ops-watcher"])?;
    assert_eq!(
        operator_env(&renamed)["SRE_SPACE_LEASE_NAME"],
        "ops-watcher"
    );
    Ok(())
}

/// The names the operator registers its metrics under (telemetry.rs), with
/// the `sre_space_` prefix.
fn registered_metrics() -> Result<BTreeSet<String>> {
    let source = std::fs::read_to_string(repo_dir().join("operator/src/telemetry.rs"))?;
    let mut names = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find("registry.register(") {
        rest = &rest[at..];
        let start = rest.find('"').context("a metric name")? + 1;
        let end = start + rest[start..].find('"').context("its end")?;
        names.insert(format!("sre_space_{}", &rest[start..end]));
        rest = &rest[end..];
    }
    Ok(names)
}

/// Every `sre_space_` series an expression reads, each a metric the operator
/// exports (counters end in `_total`, histograms in `_bucket`, `_count`,
/// `_sum`).
fn assert_reads_exported_metrics(expr: &str, exported: &BTreeSet<String>) {
    let mut rest = expr;
    let mut read = 0;
    while let Some(at) = rest.find("sre_space_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(base) || exported.contains(&name),
            "{name} is not a metric the operator exports ({exported:?}): {expr}"
        );
        read += 1;
        rest = &rest[at + name.len()..];
    }
    assert!(read > 0, "reads the operator's metrics: {expr}");
}

#[tokio::test]
async fn monitoring_objects_need_the_prometheus_operators_api_and_their_values() -> Result<()> {
    let both = [
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
    ];
    // Asked for, but the cluster does not serve the API: nothing that
    // would fail the install, and the notes say so.
    let without_api = template(&both)?;
    assert!(of_kind(&without_api, "ServiceMonitor").is_empty());
    assert!(of_kind(&without_api, "PrometheusRule").is_empty());
    let notes = notes(&both)?;
    assert!(
        notes.contains("metrics.serviceMonitor.enabled is set, but this cluster does not serve")
            && notes.contains("no PrometheusRule was created"),
        "{notes}"
    );
    // Served, but not asked for.
    let not_asked = template(&["--api-versions", MONITORING])?;
    assert!(of_kind(&not_asked, "ServiceMonitor").is_empty());
    assert!(of_kind(&not_asked, "PrometheusRule").is_empty());

    let all = template(&[
        "--api-versions",
        MONITORING,
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.serviceMonitor.interval=15s,metrics.serviceMonitor.labels.release=prom",
        "--set",
        "metrics.prometheusRule.labels.release=prom,metrics.prometheusRule.ruleLabels.team=sre",
    ])?;
    // The ServiceMonitor finds the metrics Service, and no other, by its
    // labels, and scrapes its port.
    let monitor = named(&all, "ServiceMonitor", "rel-sre-space")?;
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = named(&all, "Service", "rel-sre-space-metrics")?;
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("matchLabels")?;
    assert!(wanted.contains_key("app.kubernetes.io/component"));
    for (key, value) in wanted {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["ops"])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");

    // The alerts: each reads metrics the operator exports, does not depend
    // on how the controller label is spelled, carries the rule labels and
    // says what to check.
    let rule = named(&all, "PrometheusRule", "rel-sre-space")?;
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let exported = registered_metrics()?;
    let alerts = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .context("rules")?;
    let names: BTreeSet<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "SreSpaceActionsFailing",
            "SreSpaceCircuitBreakerOpen",
            "SreSpaceNoLeader",
            "SreSpaceReconcileErrors",
            "SreSpaceReconcileStalled",
        ])
    );
    for alert in alerts {
        let name = &alert["alert"];
        let expr = alert["expr"].as_str().context("expr")?;
        assert_reads_exported_metrics(expr, &exported);
        assert!(!expr.contains("controller="), "{name}: {expr}");
        assert!(
            expr.contains(r#"job="rel-sre-space-metrics", namespace="ops""#),
            "{name} reads this release's series only: {expr}"
        );
        assert_eq!(alert["labels"]["team"], "sre", "{name}");
        assert!(alert["labels"]["severity"].is_string(), "{name}");
        let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
        let description = alert["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(!summary.is_empty(), "{name} has a summary");
        assert!(
            description.contains("kubectl "),
            "{name} says what to check: {description}"
        );
    }
    let breaker = alerts
        .iter()
        .find(|a| a["alert"] == "SreSpaceCircuitBreakerOpen")
        .context("the breaker's alert")?;
    assert!(
        breaker["expr"]
            .as_str()
            .is_some_and(|e| e.contains("sre_space_circuit_breaker_open")),
        "{breaker}"
    );

    // A stopped operator (replicaCount 0) is not an outage.
    let stopped = template(&[
        "--api-versions",
        MONITORING,
        "--set",
        "metrics.prometheusRule.enabled=true,replicaCount=0",
    ])?;
    let rules = named(&stopped, "PrometheusRule", "rel-sre-space")?["spec"]["groups"][0]["rules"]
        .to_string();
    assert!(!rules.contains("SreSpaceNoLeader"), "{rules}");
    assert!(!rules.contains("SreSpaceReconcileStalled"), "{rules}");
    Ok(())
}

#[tokio::test]
async fn the_grafana_dashboard_is_valid_json_in_a_configmap_the_sidecar_loads() -> Result<()> {
    // The file itself, as Grafana would import it.
    let file =
        std::fs::read_to_string(repo_dir().join(CHART).join("files/grafana-dashboard.json"))?;
    let dashboard: Value =
        serde_json::from_str(&file).context("files/grafana-dashboard.json is not valid JSON")?;

    assert!(
        of_kind(&template(&[])?, "ConfigMap").is_empty(),
        "off by default"
    );
    let all = template(&["--set", "grafana.dashboard.enabled=true"])?;
    let map = named(&all, "ConfigMap", "rel-sre-space-dashboard")?;
    assert_eq!(map["metadata"]["namespace"], "ops");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = map["data"].as_object().context("data")?;
    assert_eq!(data.len(), 1);
    let (key, json) = data.iter().next().context("one dashboard")?;
    assert!(key.ends_with(".json"), "{key}");
    let rendered: Value = serde_json::from_str(json.as_str().unwrap_or_default())
        .context("the ConfigMap's dashboard is not valid JSON")?;
    assert_eq!(rendered, dashboard, "the file, unchanged");

    let panels = dashboard["panels"].as_array().context("panels")?;
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["MTTD", "MTTR", "Actions by result", "Open incidents"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "a {wanted} panel: {titles:?}"
        );
    }
    let exported = registered_metrics()?;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("expr")?;
            assert_reads_exported_metrics(expr, &exported);
        }
    }
    let quantiles = panels
        .iter()
        .filter(|p| p["targets"].to_string().contains("histogram_quantile"))
        .count();
    assert_eq!(
        quantiles, 2,
        "MTTD and MTTR as quantiles of their histograms"
    );

    // Another sidecar's label, in the sidecar's namespace.
    let elsewhere = template(&[
        "--set",
        "grafana.dashboard.enabled=true,grafana.dashboard.label=dashboards,grafana.dashboard.labelValue=sre,grafana.dashboard.namespace=monitoring",
    ])?;
    let map = named(&elsewhere, "ConfigMap", "rel-sre-space-dashboard")?;
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["dashboards"], "sre");
    assert!(map["metadata"]["labels"]["grafana_dashboard"].is_null());
    Ok(())
}

#[tokio::test]
async fn extra_env_and_volumes_are_appended_after_the_charts_own() -> Result<()> {
    let all = template(&[
        "--set",
        "allowList.namespaces[0].namespace=shop",
        "--set-json",
        r#"extraEnv=[{"name":"OTEL_EXPORTER_OTLP_TIMEOUT","value":"5000"},{"name":"TEAM","valueFrom":{"configMapKeyRef":{"name":"team","key":"name"}}}]"#,
        "--set-json",
        r#"extraVolumes=[{"name":"scratch","emptyDir":{"sizeLimit":"16Mi"}}]"#,
        "--set-json",
        r#"extraVolumeMounts=[{"name":"scratch","mountPath":"/scratch"}]"#,
    ])?;
    let pod = &of_kind(&all, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env: Vec<&str> = container["env"]
        .as_array()
        .context("env")?
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        &env[env.len() - 2..],
        ["OTEL_EXPORTER_OTLP_TIMEOUT", "TEAM"],
        "last, so one of them may override the chart's: {env:?}"
    );
    assert!(env.contains(&"SRE_SPACE_ALLOWLIST"));
    assert_eq!(
        container["env"][env.len() - 1]["valueFrom"]["configMapKeyRef"]["name"],
        "team"
    );
    assert_eq!(
        pod["volumes"],
        serde_json::json!([
            { "name": "allowlist", "configMap": { "name": "rel-sre-space-allowlist" } },
            { "name": "scratch", "emptyDir": { "sizeLimit": "16Mi" } },
        ])
    );
    assert_eq!(
        container["volumeMounts"],
        serde_json::json!([
            { "name": "allowlist", "mountPath": "/etc/sre-space/allowlist", "readOnly": true },
            { "name": "scratch", "mountPath": "/scratch" },
        ])
    );

    // Without the chart's own volume, the extra ones alone.
    let alone = template(&[
        "--set-json",
        r#"extraVolumes=[{"name":"tmp","emptyDir":{}}]"#,
        "--set-json",
        r#"extraVolumeMounts=[{"name":"tmp","mountPath":"/tmp"}]"#,
    ])?;
    let pod = &of_kind(&alone, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{ "name": "tmp", "emptyDir": {} }])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        serde_json::json!([{ "name": "tmp", "mountPath": "/tmp" }])
    );
    let plain = template(&[])?;
    let pod = &of_kind(&plain, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null() && pod["containers"][0]["volumeMounts"].is_null());
    Ok(())
}

#[tokio::test]
async fn the_alertmanager_token_is_a_mounted_file_and_the_webhook_is_on_the_metrics_service()
-> Result<()> {
    let plain = template(&[])?;
    assert!(!operator_env(&plain).contains_key("SRE_SPACE_ALERTMANAGER_TOKEN_FILE"));
    let all = template(&[
        "--set",
        "alertmanager.tokenSecret.name=am-webhook,alertmanager.tokenSecret.key=bearer",
    ])?;
    assert_eq!(
        operator_env(&all)["SRE_SPACE_ALERTMANAGER_TOKEN_FILE"],
        "/etc/sre-space/alertmanager/token"
    );
    let pod = &of_kind(&all, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{ "name": "alertmanager-token", "secret": {
            "secretName": "am-webhook", "items": [{ "key": "bearer", "path": "token" }] } }])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        serde_json::json!([{ "name": "alertmanager-token",
            "mountPath": "/etc/sre-space/alertmanager", "readOnly": true }])
    );
    let service = named(&all, "Service", "rel-sre-space-metrics")?;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    Ok(())
}

#[tokio::test]
async fn traces_and_opentelemetry_reach_the_operator_under_the_names_it_reads() -> Result<()> {
    let all = template(&[
        "--set",
        "traces.jaegerQueryUrl=http://jaeger-query.observability:16686",
        "--set",
        "otel.endpoint=http://otel-collector.observability:4318,otel.serviceName=sre-space-prod",
        "--set",
        "otel.resourceAttributes.k8s\\.cluster\\.name=east,otel.resourceAttributes.deployment\\.environment=prod",
        "--set",
        "otel.headersSecret.name=otel-auth",
        "--set",
        "dashboard.enabled=true,dashboard.jaegerUrl=https://jaeger.example.com",
    ])?;
    let env = operator_env(&all);
    // What the operator reads traces from, and the link people follow, are
    // two settings.
    assert_eq!(
        env["SRE_SPACE_JAEGER_QUERY"],
        "http://jaeger-query.observability:16686"
    );
    assert_eq!(env["SRE_SPACE_JAEGER_UI"], "https://jaeger.example.com");
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4318"
    );
    assert_eq!(env["OTEL_SERVICE_NAME"], "sre-space-prod");
    assert_eq!(
        env["OTEL_RESOURCE_ATTRIBUTES"], "deployment.environment=prod,k8s.cluster.name=east",
        "key=value pairs in key order"
    );
    let headers: Value = serde_json::from_str(&env["OTEL_EXPORTER_OTLP_HEADERS"])?;
    assert_eq!(
        headers["secretKeyRef"],
        serde_json::json!({ "name": "otel-auth", "key": "headers" })
    );

    // The exporter's settings mean nothing without an endpoint: none is set.
    let no_endpoint = template(&["--set", "otel.serviceName=sre-space-prod"])?;
    let env = operator_env(&no_endpoint);
    assert!(
        !env.keys().any(|k| k.starts_with("OTEL_")),
        "{:?}",
        env.keys()
    );
    Ok(())
}

/// The notes `helm install` prints with these arguments (no cluster needed).
fn notes(args: &[&str]) -> Result<String> {
    let path = chart(CHART);
    let mut all = vec![
        "install",
        "rel",
        path.as_str(),
        "--namespace",
        "ops",
        "--dry-run=client",
    ];
    all.extend_from_slice(args);
    let out = helm_output(&all)?;
    let at = out.find("NOTES:").context("helm printed the notes")?;
    Ok(out[at..].to_string())
}

#[tokio::test]
async fn the_notes_show_commands_that_work_without_a_checkout() -> Result<()> {
    let notes = notes(&[])?;
    for command in [
        "kubectl get incidents -A -w",
        "kubectl explain remediationpolicy.spec",
        "kubectl get lease -n ops rel-sre-space",
        "kubectl logs -n ops deployment/rel-sre-space",
    ] {
        assert!(notes.contains(command), "{command} in:\n{notes}");
    }
    assert!(
        !notes.contains("-f examples/") && !notes.contains("--path chaos"),
        "nothing that needs the source repository checked out:\n{notes}"
    );
    assert!(!notes.contains("not use them yet"), "{notes}");

    // The policy it shows is one the operator reads.
    let start = notes.find("<<'EOF'\n").context("the example policy")? + "<<'EOF'\n".len();
    let end = start + notes[start..].find("\n     EOF").context("its end")?;
    let yaml: String = notes[start..end]
        .lines()
        .map(|l| l.strip_prefix("     ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let policy: RemediationPolicy =
        serde_yaml::from_str(&yaml).with_context(|| format!("the notes' policy:\n{yaml}"))?;
    assert!(!policy.spec.triggers.is_empty() && !policy.spec.actions.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_chart_readme_is_written_from_the_values_comments() -> Result<()> {
    // helm-docs at the pinned version (built on first use) renders the
    // README again and compares.
    let out = std::process::Command::new(repo_dir().join("e2e/chart-docs.sh"))
        .arg("--check")
        .output()
        .context("running e2e/chart-docs.sh --check")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: every value of values.yaml has a row.
    let readme = std::fs::read_to_string(repo_dir().join(CHART).join("README.md"))?;
    for key in [
        "| traces.jaegerQueryUrl |",
        "| otel.endpoint |",
        "| metrics.prometheusRule.enabled |",
        "| grafana.dashboard.enabled |",
        "| podDisruptionBudget.maxUnavailable |",
        "| extraEnv |",
    ] {
        assert!(readme.contains(key), "{key}");
    }
    Ok(())
}

#[tokio::test]
async fn the_demo_chart_keeps_each_memory_limit_on_its_own_line() -> Result<()> {
    // The demo chart: each service's memory limit on a line of its own, the
    // line a GitOps pull request changes.
    let values = std::fs::read_to_string(repo_dir().join(DEMO_CHART).join("values.yaml"))?;
    let lines: Vec<&str> = values.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("policyService:"))
        .context("policyService in the demo values")?;
    assert!(
        lines[at..].iter().any(|l| l.trim() == "memory: 64Mi"),
        "policyService.resources.limits.memory on its own line"
    );
    let demo_path = chart(DEMO_CHART);
    let demo = objects(&helm_output(&[
        "template",
        "demo",
        &demo_path,
        "--set",
        "policyService.resources.limits.memory=96Mi",
    ])?)?;
    let d = of_kind(&demo, "Deployment")[0];
    assert_eq!(d["metadata"]["name"], "policy-service");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["sre.space/protected"],
        "true"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "96Mi"
    );
    Ok(())
}

/// The value of environment variable `name` of a Deployment's container.
fn env_of(d: &Value, name: &str) -> Option<String> {
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn the_demo_chart_deploys_the_demo_business_with_peers_by_service_or_loopback() -> Result<()>
{
    let demo_path = chart(DEMO_CHART);
    // A real cluster: peers are the chart's Services; the switches' token
    // is a Secret; policy-service keeps its own memory-limit line.
    let rendered = objects(&helm_output(&[
        "template",
        "demo",
        &demo_path,
        "-n",
        "shop",
        "--set",
        "apps.enabled=true,apps.chaosToken=t0k,policyService.resources.limits.memory=96Mi",
    ])?)?;
    let deployments: BTreeMap<&str, &Value> = of_kind(&rendered, "Deployment")
        .into_iter()
        .map(|d| (d["metadata"]["name"].as_str().unwrap_or_default(), d))
        .collect();
    assert_eq!(
        deployments.keys().copied().collect::<Vec<_>>(),
        [
            "frontend",
            "policy-service",
            "quote-service",
            "user-service"
        ]
    );
    assert_eq!(of_kind(&rendered, "Service").len(), 4);
    let policy = deployments["policy-service"];
    assert_eq!(
        policy["spec"]["template"]["spec"]["containers"][0]["image"],
        "sre.space/policy-service:dev"
    );
    assert_eq!(
        policy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "96Mi"
    );
    assert_eq!(
        policy["spec"]["template"]["metadata"]["labels"]["sre.space/protected"],
        "true"
    );
    assert_eq!(
        env_of(policy, "USER_SERVICE_URL").as_deref(),
        Some("http://user-service.shop.svc")
    );
    assert_eq!(env_of(policy, "PAYMENT_MODE").as_deref(), Some("normal"));
    assert_eq!(
        env_of(deployments["frontend"], "POLICY_SERVICE_URL").as_deref(),
        Some("http://policy-service.shop.svc")
    );
    assert_eq!(env_of(deployments["frontend"], "KAFKA_BOOTSTRAP"), None);
    // user-service publishes its eligibility checks.
    assert_eq!(
        env_of(deployments["user-service"], "KAFKA_BOOTSTRAP").as_deref(),
        Some("kafka:9092")
    );
    assert_eq!(
        env_of(deployments["user-service"], "USER_TOPIC").as_deref(),
        Some("eligibility_checked")
    );
    let token_ref = &policy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "CHAOS_TOKEN").cloned())
        .context("CHAOS_TOKEN")?["valueFrom"]["secretKeyRef"];
    assert_eq!(token_ref["name"], "demo-chaos-token");
    assert_eq!(
        of_kind(&rendered, "Secret")[0]["stringData"]["token"],
        "t0k"
    );
    assert!(policy["spec"]["template"]["spec"]["hostNetwork"].is_null());

    // The local harness: the host's network, peers on loopback.
    let rendered = objects(&helm_output(&[
        "template",
        "demo",
        &demo_path,
        "--set",
        "apps.enabled=true,apps.hostNetwork=true,policyService.replicas=1,apps.ports.user-service=29083",
    ])?)?;
    let quote = of_kind(&rendered, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "quote-service")
        .context("quote-service")?;
    assert_eq!(quote["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(
        env_of(quote, "USER_SERVICE_URL").as_deref(),
        Some("http://127.0.0.1:29083")
    );
    assert!(
        of_kind(&rendered, "Secret").is_empty(),
        "no token, no Secret"
    );

    // Two replicas cannot share a host port: refused, naming the service.
    let out = helm_run(&[
        "template",
        "demo",
        &demo_path,
        "--set",
        "apps.enabled=true,apps.hostNetwork=true",
    ])?;
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("policy-service: with apps.hostNetwork each service runs one replica"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn the_values_schemas_refuse_bad_values_naming_the_field() -> Result<()> {
    let (operator, demo) = (chart(CHART), chart(DEMO_CHART));
    let cases: &[(&str, &str, &str)] = &[
        (
            &operator,
            "replicaCount=-1",
            "at '/replicaCount': minimum: got -1, want 0",
        ),
        (
            &operator,
            "replicaCount=6",
            "at '/replicaCount': maximum: got 6, want 5",
        ),
        (
            &operator,
            "operator.logFormat=yaml",
            "at '/operator/logFormat': value must be one of 'json', 'text'",
        ),
        (
            &operator,
            "operator.breaker.limit=0",
            "at '/operator/breaker/limit'",
        ),
        (
            &operator,
            "operator.breaker.namespaceSharePercent=0",
            "at '/operator/breaker/namespaceSharePercent'",
        ),
        (
            &operator,
            "operator.watchNamespace=Team_A",
            "at '/operator/watchNamespace'",
        ),
        (
            &operator,
            "dashboard.enabled=true,dashboard.address=0.0.0.0",
            "at '/dashboard/tokenSecret/name'",
        ),
        (
            &operator,
            "replicas=3",
            "additional properties 'replicas' not allowed",
        ),
        (
            &operator,
            "podDisruptionBudget.maxUnavailable=0",
            "at '/podDisruptionBudget/maxUnavailable'",
        ),
        (
            &operator,
            "traces.jaegerQueryUrl=jaeger-query:16686",
            "at '/traces/jaegerQueryUrl'",
        ),
        (
            &operator,
            "otel.endpoint=otel-collector:4318",
            "at '/otel/endpoint'",
        ),
        (
            &operator,
            "otel.resourceAttributes.team=a\\,b",
            "at '/otel/resourceAttributes/team'",
        ),
        (
            &operator,
            "metrics.serviceMonitor.interval=soon",
            "at '/metrics/serviceMonitor/interval'",
        ),
        (
            &operator,
            "metrics.prometheusRule.enabled=sometimes",
            "at '/metrics/prometheusRule/enabled'",
        ),
        (
            &operator,
            "grafana.dashboard.labelValue=not a label",
            "at '/grafana/dashboard/labelValue'",
        ),
        (&operator, "extraEnv[0].value=no-name", "at '/extraEnv/0'"),
        (
            &operator,
            "extraVolumeMounts[0].name=scratch,extraVolumeMounts[0].mountPath=scratch",
            "at '/extraVolumeMounts/0/mountPath'",
        ),
        (
            &operator,
            "topologySpreadConstraints[0].maxSkew=1,topologySpreadConstraints[0].topologyKey=zone,topologySpreadConstraints[0].whenUnsatisfiable=Maybe",
            "at '/topologySpreadConstraints/0/whenUnsatisfiable'",
        ),
        (
            &demo,
            "policyService.resources.limits.memory=lots",
            "at '/policyService/resources/limits/memory'",
        ),
    ];
    for &(path, set, message) in cases {
        let out = helm_run(&["template", "rel", path, "--set", set])?;
        assert!(!out.success, "helm template --set {set} must fail");
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                && out.stderr.contains(message),
            "--set {set}: stderr names the field: {}",
            out.stderr
        );
        assert!(
            out.stdout.trim().is_empty(),
            "nothing rendered: {}",
            out.stdout
        );
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_refuses_bad_values_before_anything_reaches_the_cluster() -> Result<()> {
    let operator = chart(CHART);
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-helm-schema").await?;
    let out = helm_run(&[
        "install",
        "bad",
        &operator,
        "-n",
        &ns.name,
        "--set",
        "replicaCount=-1",
        "--set",
        "crds.enabled=false",
    ])?;
    assert!(!out.success);
    assert!(out.stderr.contains("at '/replicaCount'"), "{}", out.stderr);
    let status = helm_run(&["status", "bad", "-n", &ns.name])?;
    assert!(
        !status.success && status.stderr.contains("not found"),
        "no release recorded: {}",
        status.stdout
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?;
    assert!(deployments.items.is_empty(), "nothing created");
    ns.cleanup().await
}

/// Uninstalls a release when dropped, so that a failing test leaves no
/// cluster-scoped objects (the ClusterRole and its binding) behind.
struct Uninstall {
    release: String,
    namespace: String,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = helm_run(&[
            "uninstall",
            &self.release,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]);
    }
}

/// Labels a namespace to enforce (and warn about) the `restricted` level.
async fn restrict(client: &Client, ns: &str) -> Result<()> {
    let labels = serde_json::json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    } } });
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(labels))
        .await?;
    Ok(())
}

async fn pod_security_refusals(client: &Client, ns: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields("reason=FailedCreate"))
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .filter(|m| m.contains("PodSecurity"))
        .collect())
}

#[tokio::test]
async fn the_chart_installs_into_a_restricted_namespace_and_its_pods_are_admitted() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-helm-psa").await?;
    restrict(&client, &ns.name).await?;
    let release = ns.name.clone();
    let path = chart(CHART);

    // The namespace really enforces the level: an unhardened pod is refused.
    let plain: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "plain" },
        "spec": { "containers": [{ "name": "app", "image": "registry.local/app:1" }] }
    }))?;
    let refused = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &plain)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("violates PodSecurity")),
        "{refused:?}"
    );

    // The CRDs may already be in the cluster (applied from crds/ by other
    // tests, as a user may have done): the release adopts them.
    let out = helm_run(&[
        "install",
        &release,
        &path,
        "-n",
        &ns.name,
        "--take-ownership",
        "--wait",
        "--timeout",
        "60s",
    ])?;
    assert!(out.success, "helm install failed: {}", out.stderr);
    let _uninstall = Uninstall {
        release: release.clone(),
        namespace: ns.name.clone(),
    };
    assert!(
        !out.stderr.contains("PodSecurity"),
        "no Pod Security warning: {}",
        out.stderr
    );
    assert!(
        out.stdout.contains("kubectl get incidents -A -w"),
        "NOTES: {}",
        out.stdout
    );

    let selector = format!("app.kubernetes.io/instance={release}");
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels(&selector))
        .await?;
    assert_eq!(sets.items.len(), 1);
    let status = sets.items[0].status.clone().unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (2, Some(2)));
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels(&selector))
        .await?;
    assert_eq!(pods.items.len(), 2, "the ReplicaSet created both pods");
    assert_eq!(
        pods.items[0]
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        pod_security_refusals(&client, &ns.name).await?,
        Vec::<String>::new()
    );

    // The check above can fail: the same chart with one hardening setting
    // undone is warned about at install, and its pods are refused.
    let loose = helm_run(&[
        "install",
        "loose",
        &path,
        "-n",
        &ns.name,
        "--set",
        "securityContext.allowPrivilegeEscalation=true",
        "--set",
        "crds.enabled=false",
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=default",
    ])?;
    assert!(loose.success, "{}", loose.stderr);
    assert!(
        loose.stderr.contains("would violate PodSecurity"),
        "{}",
        loose.stderr
    );
    wait_until(
        Duration::from_secs(30),
        "the loosened pods refused",
        || async { Ok(!pod_security_refusals(&client, &ns.name).await?.is_empty()) },
    )
    .await?;

    // The CRDs are the release's, kept on uninstall with what they hold.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names = [
        "incidents.sre.space",
        "remediationpolicies.sre.space",
        "incidentmemories.sre.space",
    ];
    for name in names {
        let crd = crds.get(name).await?;
        assert_eq!(
            crd.annotations()
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep"),
            "{name}"
        );
    }
    create_policy(&client, &ns.name, |_| {}).await?;
    helm_output(&["uninstall", "loose", "-n", &ns.name])?;
    let out = helm_output(&["uninstall", &release, "-n", &ns.name, "--wait"])?;
    assert!(out.contains("kept due to the resource policy"), "{out}");
    for name in names {
        assert!(crds.get_opt(name).await?.is_some(), "{name} kept");
    }
    assert!(
        Api::<RemediationPolicy>::namespaced(client.clone(), &ns.name)
            .get_opt("demo-services")
            .await?
            .is_some(),
        "the policy survives the uninstall"
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&format!("{release}-sre-space"))
            .await?
            .is_none(),
        "the release's own objects are gone"
    );
    ns.cleanup().await
}

/// `kubectl auth can-i VERB RESOURCE... --as ServiceAccount`: true for yes.
fn can_i(account: &str, ns: &str, args: &[&str]) -> Result<bool> {
    let out = kubectl()
        .args(["auth", "can-i", "--as", account, "-n", ns])
        .args(args)
        .output()?;
    let answer = String::from_utf8(out.stdout)?;
    match answer.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => anyhow::bail!(
            "kubectl auth can-i {args:?}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn the_operator_with_the_charts_service_account_resolves_an_oom_and_may_do_no_more()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-helm-rbac").await?;
    let release = ns.name.clone();
    helm_output(&[
        "install",
        &release,
        &chart(CHART),
        "-n",
        &ns.name,
        "--set",
        "crds.enabled=false",
        "--wait",
        "--timeout",
        "60s",
    ])?;
    let _uninstall = Uninstall {
        release: release.clone(),
        namespace: ns.name.clone(),
    };
    let account = format!("{release}-sre-space");

    // The operator, out of the cluster, with nothing but the chart's
    // ServiceAccount's rights.
    let kubeconfig = service_account_kubeconfig(&ns.name, &account)?;
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut operator = Operator::start(&ns.name, &[("KUBECONFIG", kubeconfig.as_str())]).await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    })
    .await?;
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment("quote", 2, "64Mi"))
        .await?;
    wait_ready(&client, &ns.name, "quote", 2, LONG).await?;
    Target {
        client: client.clone(),
        namespace: ns.name.clone(),
        deployment: "quote".into(),
        dry_run: false,
    }
    .oom()
    .await?;

    let inc = wait_resolved(
        &client,
        &ns.name,
        &incident_of("quote", SignalKind::OOMKilled),
        Duration::from_secs(90),
    )
    .await?;
    let actions: Vec<(ActionType, ActionState)> = inc
        .status
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| (a.type_, a.state))
        .collect();
    assert_eq!(
        actions,
        [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)]
    );
    let limit = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("quote")
        .await?
        .spec
        .template
        .spec
        .and_then(|s| s.containers[0].resources.clone())
        .and_then(|r| r.limits)
        .and_then(|l| l.get("memory").map(|q| q.0.clone()));
    assert_eq!(limit.as_deref(), Some("96Mi"));
    // What each of the other rules is for happened too: the memory was
    // written, the policy's status, and the events.
    let memory = Api::<IncidentMemory>::namespaced(client.clone(), &ns.name)
        .get(&incident_of("quote", SignalKind::OOMKilled))
        .await?;
    assert!(memory.status.is_some_and(|s| s.total_occurrences == 1));
    let policy = Api::<RemediationPolicy>::namespaced(client.clone(), &ns.name)
        .get("demo-services")
        .await?;
    assert!(
        policy
            .status
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready")),
        "the policy's status was written"
    );
    let reasons = kubectl_output(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &ns.name,
        "--field-selector",
        &format!(
            "regarding.name={}",
            incident_of("quote", SignalKind::OOMKilled)
        ),
        "-o",
        "jsonpath={.items[*].reason}",
    ])?;
    for reason in ["Detected", "Diagnosed", "ActionTaken", "Resolved"] {
        assert!(
            reasons.split(' ').any(|r| r == reason),
            "event {reason} in: {reasons}"
        );
    }
    operator.kill();
    let log = operator.output();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );

    // And nothing more than its job.
    let sa = format!("system:serviceaccount:{}:{account}", ns.name);
    for (allowed, args) in [
        (false, &["list", "secrets"][..]),
        (false, &["get", "secrets", "--all-namespaces"]),
        (false, &["delete", "namespaces"]),
        (false, &["create", "deployments"]),
        (false, &["delete", "pods"]),
        (false, &["update", "incidents"]),
        (true, &["create", "pods", "--subresource=eviction"]),
        (true, &["patch", "deployments"]),
        (true, &["watch", "pods", "--all-namespaces"]),
        (true, &["update", "incidents", "--subresource=status"]),
        // Clearing a used or stale approval from the spec.
        (true, &["patch", "incidents"]),
    ] {
        assert_eq!(can_i(&sa, &ns.name, args)?, allowed, "can-i {args:?}");
    }
    std::fs::remove_file(&kubeconfig)?;
    helm_output(&["uninstall", &release, "-n", &ns.name, "--wait"])?;
    ns.cleanup().await
}

/// The parts of the demo service a fault may change: the pod template, and
/// how many of its pods are running, ready and not going away.
async fn service_state(client: &Client, ns: &str) -> Result<(Value, usize, usize)> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("policy-service")
        .await?;
    let template = serde_json::to_value(d.spec.template)?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app=policy-service"))
        .await?;
    let live: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let healthy = live
        .iter()
        .filter(|p| {
            let s = p.status.as_ref();
            s.and_then(|s| s.phase.as_deref()) == Some("Running")
                && s.and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                && s.and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().all(|c| {
                            c.last_state
                                .as_ref()
                                .and_then(|l| l.terminated.as_ref())
                                .is_none()
                        })
                    })
        })
        .count();
    Ok((template, healthy, live.len()))
}

fn sre_chaos(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(chaos_bin())
        .args(args)
        .output()
        .with_context(|| format!("running {}", chaos_bin().display()))?;
    anyhow::ensure!(
        out.status.success(),
        "sre-chaos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Installs the demo chart, injects `fault` with the CLI, checks it took
/// effect, reverts it, and checks the service is as it was.
async fn fault_then_revert(
    prefix: &str,
    fault: &str,
    took_effect: impl Fn(&Pod) -> bool,
) -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    helm_output(&[
        "install",
        "demo",
        &chart(DEMO_CHART),
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "60s",
    ])?;
    wait_ready(&client, &ns.name, "policy-service", 2, LONG).await?;
    let before = service_state(&client, &ns.name).await?;
    assert_eq!((before.1, before.2), (2, 2));

    let said = sre_chaos(&[fault, "-n", &ns.name, "-t", "policy-service"])?;
    assert!(said.starts_with("changed: "), "{said}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_until(LONG, &format!("the {fault} fault in a pod"), || async {
        let list = pods
            .list(&ListParams::default().labels("app=policy-service"))
            .await?;
        Ok(list.items.iter().any(&took_effect))
    })
    .await?;

    let said = sre_chaos(&["revert", "-n", &ns.name, "-t", "policy-service"])?;
    assert!(said.starts_with("changed: "), "{said}");
    wait_until(LONG, "the service as it was before the fault", || async {
        let now = service_state(&client, &ns.name).await?;
        Ok(now == before)
    })
    .await
    .with_context(|| format!("after {fault} and revert"))?;
    let annotations = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("policy-service")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(sre_chaos::SAVED_TEMPLATE),
        "revert leaves no trace: {annotations:?}"
    );
    let again = sre_chaos(&["revert", "-n", &ns.name, "-t", "policy-service"])?;
    assert!(again.contains("nothing to revert"), "{again}");
    ns.cleanup().await
}

fn last_terminated(p: &Pod) -> Vec<String> {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref()?.reason.clone())
        .collect()
}

fn waiting(p: &Pod) -> Vec<String> {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect()
}

#[tokio::test]
async fn chaos_oom_then_revert_leaves_the_service_as_it_was() -> Result<()> {
    fault_then_revert("e2e-chaos-oom", "oom", |p| {
        last_terminated(p).iter().any(|r| r == "OOMKilled")
    })
    .await
}

#[tokio::test]
async fn chaos_crashloop_then_revert_leaves_the_service_as_it_was() -> Result<()> {
    fault_then_revert("e2e-chaos-crash", "crashloop", |p| {
        waiting(p).iter().any(|r| r == "CrashLoopBackOff")
    })
    .await
}

#[tokio::test]
async fn chaos_bad_rollout_then_revert_leaves_the_service_as_it_was() -> Result<()> {
    fault_then_revert("e2e-chaos-rollout", "bad-rollout", |p| {
        let new_args = p.spec.as_ref().is_some_and(|s| {
            s.containers[0]
                .args
                .iter()
                .flatten()
                .any(|a| a.starts_with("--config="))
        });
        new_args && waiting(p).iter().any(|r| r == "CrashLoopBackOff")
    })
    .await
}

/// `helm test`'s pod runs the operator's image with `sre-space smoke`
/// against this release's metrics Service and Lease, passes the
/// `restricted` level like the replicas, and is not one of them: the
/// metrics Service and the disruption budget do not select it.
#[tokio::test]
async fn helm_test_checks_this_releases_metrics_and_lease_from_a_pod_that_is_not_a_replica()
-> Result<()> {
    let all = template(&[])?;
    let pod = of_kind(&all, "Pod")[0];
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let d = of_kind(&all, "Deployment")[0];
    let replica = &d["spec"]["template"]["spec"]["containers"][0];
    let smoke = &pod["spec"]["containers"][0];
    assert_eq!(smoke["image"], replica["image"], "the operator's own image");
    assert_eq!(smoke["securityContext"], replica["securityContext"]);
    assert_eq!(
        pod["spec"]["securityContext"],
        d["spec"]["template"]["spec"]["securityContext"]
    );
    let args: Vec<&str> = smoke["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let lease = operator_env(&all)
        .get("SRE_SPACE_LEASE_NAME")
        .cloned()
        .context("the Lease's name")?;
    assert_eq!(
        args,
        [
            "smoke",
            "--url",
            "http://$(REL_SRE_SPACE_METRICS_SERVICE_HOST):$(REL_SRE_SPACE_METRICS_SERVICE_PORT)",
            "--lease",
            lease.as_str(),
            "--namespace",
            "ops"
        ]
    );
    let service = of_kind(&all, "Service")[0];
    assert_eq!(
        service["metadata"]["name"], "rel-sre-space-metrics",
        "the variables' prefix"
    );
    let labels = pod["metadata"]["labels"].as_object().context("labels")?;
    let selects = |selector: &Value| {
        selector
            .as_object()
            .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    assert!(
        !selects(&service["spec"]["selector"]),
        "the Service does not send it traffic"
    );
    for pdb in of_kind(&all, "PodDisruptionBudget") {
        assert!(
            !selects(&pdb["spec"]["selector"]["matchLabels"]),
            "not counted as a replica"
        );
    }
    Ok(())
}
