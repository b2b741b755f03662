//! What a rollout changed: the difference between two pod templates, in the
//! fields that break workloads (image, command, args, env, resources).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};

/// One changed field of a pod template.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateChange {
    /// Where, for example `containers[app].command`.
    pub field: String,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for TemplateChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed from {} to {}",
            self.field, self.from, self.to
        )
    }
}

fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| n.contains(s))
}

fn render_env(env: &EnvVar) -> String {
    match (&env.value, &env.value_from) {
        (Some(_), _) if looks_secret(&env.name) => "<redacted>".into(),
        (Some(v), _) => format!("{v:?}"),
        (None, Some(_)) => "<from a reference>".into(),
        (None, None) => "\"\"".into(),
    }
}

fn render_list(items: Option<&Vec<String>>) -> String {
    match items {
        None => "(unset)".into(),
        Some(v) => format!("{v:?}"),
    }
}

fn resources(c: &Container) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(r) = &c.resources {
        for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
            for (name, q) in map.iter().flatten() {
                out.insert(format!("{kind}.{name}"), q.0.clone());
            }
        }
    }
    out
}

/// A container's envFrom as `configMapRef app-config`, `secretRef db`.
fn render_env_from(c: &Container) -> String {
    let refs: Vec<String> = c
        .env_from
        .iter()
        .flatten()
        .map(|e| match (&e.config_map_ref, &e.secret_ref) {
            (Some(m), _) => format!("configMapRef {}", m.name),
            (_, Some(s)) => format!("secretRef {}", s.name),
            _ => "(empty)".into(),
        })
        .collect();
    if refs.is_empty() {
        "(unset)".into()
    } else {
        format!("{refs:?}")
    }
}

/// A value as compact JSON, or "(unset)".
fn render_json<T: serde::Serialize>(v: Option<&T>) -> String {
    v.and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_else(|| "(unset)".into())
}

/// A volume by its source: `ConfigMap app-config`, `Secret tls-cert`,
/// `PersistentVolumeClaim data`, or the kind of source.
fn render_volume(v: &k8s_openapi::api::core::v1::Volume) -> String {
    if let Some(m) = &v.config_map {
        format!("ConfigMap {}", m.name)
    } else if let Some(s) = &v.secret {
        format!("Secret {}", s.secret_name.as_deref().unwrap_or(""))
    } else if let Some(c) = &v.persistent_volume_claim {
        format!("PersistentVolumeClaim {}", c.claim_name)
    } else if v.empty_dir.is_some() {
        "emptyDir".into()
    } else if v.projected.is_some() {
        "projected".into()
    } else {
        "another source".into()
    }
}

fn diff_container(list: &str, prev: &Container, cur: &Container, out: &mut Vec<TemplateChange>) {
    let at = |what: &str| format!("{list}[{}].{what}", cur.name);
    let mut push = |field: String, from: String, to: String| {
        if from != to {
            // Arguments and values may carry credentials (`--password=…`,
            // a URL with userinfo) whatever the variable's name.
            let (from, mut to) = (crate::redact::string(&from), crate::redact::string(&to));
            if from == to {
                to.push_str(" (changed)");
            }
            out.push(TemplateChange { field, from, to });
        }
    };
    push(
        at("image"),
        prev.image.clone().unwrap_or_default(),
        cur.image.clone().unwrap_or_default(),
    );
    push(
        at("command"),
        render_list(prev.command.as_ref()),
        render_list(cur.command.as_ref()),
    );
    push(
        at("args"),
        render_list(prev.args.as_ref()),
        render_list(cur.args.as_ref()),
    );
    push(at("envFrom"), render_env_from(prev), render_env_from(cur));
    push(
        at("livenessProbe"),
        render_json(prev.liveness_probe.as_ref()),
        render_json(cur.liveness_probe.as_ref()),
    );
    push(
        at("readinessProbe"),
        render_json(prev.readiness_probe.as_ref()),
        render_json(cur.readiness_probe.as_ref()),
    );

    let env = |c: &Container| -> BTreeMap<String, EnvVar> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    };
    let (pe, ce) = (env(prev), env(cur));
    for name in pe
        .keys()
        .chain(ce.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (p, c) = (pe.get(name), ce.get(name));
        if p == c {
            continue;
        }
        let render =
            |e: Option<&EnvVar>| e.map(render_env).unwrap_or_else(|| "(unset)".to_string());
        let (from, mut to) = (render(p), render(c));
        if from == to {
            // Redacted on both sides: say that it changed, not to what.
            to.push_str(" (changed)");
        }
        push(at(&format!("env[{name}]")), from, to);
    }
    let (pr, cr) = (resources(prev), resources(cur));
    for key in pr
        .keys()
        .chain(cr.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let unset = || "(unset)".to_string();
        push(
            at(&format!("resources.{key}")),
            pr.get(key).cloned().unwrap_or_else(unset),
            cr.get(key).cloned().unwrap_or_else(unset),
        );
    }
}

/// The changes from `prev` to `cur`, container by container.
pub fn diff_templates(prev: &PodTemplateSpec, cur: &PodTemplateSpec) -> Vec<TemplateChange> {
    let mut out = Vec::new();
    let containers = |t: &PodTemplateSpec| {
        t.spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
    };
    let init_containers = |t: &PodTemplateSpec| {
        t.spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default()
    };
    diff_list("containers", &containers(prev), &containers(cur), &mut out);
    diff_list(
        "initContainers",
        &init_containers(prev),
        &init_containers(cur),
        &mut out,
    );
    // Volumes, by name: a new ConfigMap or Secret volume, or a changed one.
    let volumes = |t: &PodTemplateSpec| -> BTreeMap<String, String> {
        t.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| (v.name.clone(), render_volume(v)))
            .collect()
    };
    let (pv, cv) = (volumes(prev), volumes(cur));
    for name in pv
        .keys()
        .chain(cv.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let unset = || "(unset)".to_string();
        let (from, to) = (
            pv.get(name).cloned().unwrap_or_else(unset),
            cv.get(name).cloned().unwrap_or_else(unset),
        );
        if from != to {
            out.push(TemplateChange {
                field: format!("volumes[{name}]"),
                from: crate::redact::string(&from),
                to: crate::redact::string(&to),
            });
        }
    }
    out
}

/// The changes of one list of containers (`containers` or
/// `initContainers`), by name.
fn diff_list(list: &str, pc: &[Container], cc: &[Container], out: &mut Vec<TemplateChange>) {
    for c in cc {
        match pc.iter().find(|p| p.name == c.name) {
            Some(p) => diff_container(list, p, c, out),
            None => out.push(TemplateChange {
                field: format!("{list}[{}]", c.name),
                from: "(absent)".into(),
                to: format!("added (image {})", c.image.as_deref().unwrap_or("unset")),
            }),
        }
    }
    for p in pc.iter().filter(|p| !cc.iter().any(|c| c.name == p.name)) {
        out.push(TemplateChange {
            field: format!("{list}[{}]", p.name),
            from: "present".into(),
            to: "(removed)".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({ "spec": { "containers": v } })).unwrap()
    }

    #[test]
    fn names_the_changed_command_and_nothing_else() {
        let prev =
            template(serde_json::json!([{ "name": "app", "image": "web:1", "command": ["/web"] }]));
        let cur = template(
            serde_json::json!([{ "name": "app", "image": "web:1", "command": ["/web", "--crash"] }]),
        );
        let changes = diff_templates(&prev, &cur);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].field, "containers[app].command");
        assert_eq!(changes[0].to, r#"["/web", "--crash"]"#);
    }

    #[test]
    fn secret_looking_env_values_are_redacted() {
        let prev = template(
            serde_json::json!([{ "name": "app", "env": [{ "name": "DB_PASSWORD", "value": "hunter2" }] }]),
        );
        let cur = template(
            serde_json::json!([{ "name": "app", "env": [{ "name": "DB_PASSWORD", "value": "swordfish" }] }]),
        );
        let changes = diff_templates(&prev, &cur);
        assert_eq!(
            changes.len(),
            1,
            "a rotated secret is a change worth seeing"
        );
        assert_eq!(changes[0].to, "<redacted> (changed)");
        assert!(!format!("{changes:?}").contains("swordfish"));
        let cur = template(
            serde_json::json!([{ "name": "app", "env": [{ "name": "MODE", "value": "fast" }] }]),
        );
        let text = format!("{:?}", diff_templates(&prev, &cur));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn credentials_in_arguments_and_plain_named_values_are_redacted() {
        let prev = template(serde_json::json!([{ "name": "app",
            "args": ["--db=postgres://app:old-pw@db:5432/x"],
            "env": [{ "name": "DATABASE_URL", "value": "postgres://app:old-pw@db/x" }] }]));
        let cur = template(serde_json::json!([{ "name": "app",
            "args": ["--db=postgres://app:new-pw@db:5432/x", "--api-token=ghp_abcdef123456"],
            "env": [{ "name": "DATABASE_URL", "value": "postgres://app:new-pw@db/x" }] }]));
        let changes = diff_templates(&prev, &cur);
        let text = format!("{changes:?}");
        for secret in ["old-pw", "new-pw", "ghp_abcdef123456"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let env = changes
            .iter()
            .find(|c| c.field == "containers[app].env[DATABASE_URL]")
            .expect("the env change is reported");
        assert_eq!(env.to, "\"postgres://app:<redacted>@db/x\" (changed)");
    }

    #[test]
    fn a_new_config_map_reference_init_container_and_probe_are_changes() {
        let prev = template(serde_json::json!([{ "name": "app", "image": "web:1" }]));
        let cur: PodTemplateSpec = serde_json::from_value(serde_json::json!({ "spec": {
            "initContainers": [{ "name": "migrate", "image": "web-migrate:2" }],
            "containers": [{ "name": "app", "image": "web:1",
                "envFrom": [{ "configMapRef": { "name": "app-config" } }],
                "livenessProbe": { "httpGet": { "path": "/healthz", "port": 8080 } } }],
            "volumes": [{ "name": "certs", "secret": { "secretName": "tls-cert" } }],
        }}))
        .unwrap();
        let changes: Vec<String> = diff_templates(&prev, &cur)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            vec![
                r#"containers[app].envFrom changed from (unset) to ["configMapRef app-config"]"#,
                r#"containers[app].livenessProbe changed from (unset) to {"httpGet":{"path":"/healthz","port":8080}}"#,
                "initContainers[migrate] changed from (absent) to added (image web-migrate:2)",
                "volumes[certs] changed from (unset) to Secret tls-cert",
            ]
        );
    }

    #[test]
    fn resource_changes_are_reported_per_key() {
        let prev = template(
            serde_json::json!([{ "name": "app", "resources": { "limits": { "memory": "256Mi" } } }]),
        );
        let cur = template(
            serde_json::json!([{ "name": "app", "resources": { "limits": { "memory": "64Mi" } } }]),
        );
        let changes = diff_templates(&prev, &cur);
        assert_eq!(
            changes[0].to_string(),
            "containers[app].resources.limits.memory changed from 256Mi to 64Mi"
        );
    }
}
