//! Configuration errors: the pod references a ConfigMap, Secret or key that
//! does not exist, mounts a volume whose source is missing, or runs a
//! command its image does not have. Read from the container's waiting and
//! termination messages (the kubelet's own words) and the pod's events, and
//! traced back to the field of the pod spec that references the missing
//! thing. Restarting changes none of it: a person must create the object or
//! fix the reference.

use k8s_openapi::api::core::v1::PodSpec;

use super::{Case, Cite, checked, first_match, group, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

/// A ConfigMap or a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn parse(word: &str) -> Self {
        if word.to_ascii_lowercase().starts_with("secret") {
            Self::Secret
        } else {
            Self::ConfigMap
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// What the kubelet says is wrong with the pod's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// `configmap "app-config" not found`
    Missing { source: Source, name: String },
    /// `couldn't find key DB_HOST in ConfigMap shop/app-config`
    MissingKey {
        source: Source,
        name: String,
        key: String,
    },
    /// `MountVolume.SetUp failed for volume "config" : configmap "app-config" not found`
    Volume {
        volume: String,
        source: Source,
        name: String,
    },
    /// `MountVolume.SetUp failed for volume "config" : configmap references
    /// non-existent config key: app.yaml`
    VolumeKey { volume: String, key: String },
    /// `exec: "/app/start": stat /app/start: no such file or directory`
    Command { exe: String, why: String },
    /// `container has runAsNonRoot and image will run as root`
    RunsAsRoot,
}

/// Reads a fault from one of the kubelet's messages.
pub(super) fn parse(text: &str) -> Option<Fault> {
    let one = |p: &str| first_match(p, [text]);
    if let Some(c) = one(
        r#"MountVolume\.SetUp failed for volume "([^"]+)" : (configmaps?|secrets?) "([^"]+)" not found"#,
    ) {
        return Some(Fault::Volume {
            volume: group(&c, 1),
            source: Source::parse(&group(&c, 2)),
            name: group(&c, 3),
        });
    }
    if let Some(c) = one(
        r#"MountVolume\.SetUp failed for volume "([^"]+)" : \w+ references non-existent (?:config|secret) key: (\S+)"#,
    ) {
        return Some(Fault::VolumeKey {
            volume: group(&c, 1),
            key: group(&c, 2),
        });
    }
    if let Some(c) = one(r"(?i)couldn't find key (\S+) in (ConfigMap|Secret) [^/\s]+/(\S+)") {
        return Some(Fault::MissingKey {
            key: group(&c, 1),
            source: Source::parse(&group(&c, 2)),
            name: group(&c, 3),
        });
    }
    if let Some(c) = one(r#"\b(configmaps?|secrets?) "([^"]+)" not found"#) {
        return Some(Fault::Missing {
            source: Source::parse(&group(&c, 1)),
            name: group(&c, 2),
        });
    }
    if let Some(c) = one(
        r#"exec: "([^"]+)": (executable file not found in \$PATH|stat [^:]+: no such file or directory|no such file or directory|permission denied)"#,
    ) {
        return Some(Fault::Command {
            exe: group(&c, 1),
            why: group(&c, 2),
        });
    }
    if text.contains("runAsNonRoot and image will run as root")
        || text.contains("runAsNonRoot and image has non-numeric user")
    {
        return Some(Fault::RunsAsRoot);
    }
    None
}

/// The kubelet's messages about the pod, most telling first: the waiting
/// and termination messages of its containers (the failing one first),
/// then its warning events, newest first, then the signal. Each with the
/// container it is about, where known.
fn messages<'a>(c: &'a Case) -> Vec<(Option<&'a str>, &'a str)> {
    let mut out = Vec::new();
    if let Some(status) = c.facts.pod.as_ref().and_then(|p| p.status.as_ref()) {
        let mut statuses: Vec<_> = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .collect();
        statuses.sort_by_key(|cs| cs.name != c.container);
        for cs in statuses {
            for state in [&cs.state, &cs.last_state].into_iter().flatten() {
                let texts = [
                    state.waiting.as_ref().and_then(|w| w.message.as_deref()),
                    state.terminated.as_ref().and_then(|t| t.message.as_deref()),
                ];
                out.extend(
                    texts
                        .into_iter()
                        .flatten()
                        .map(|m| (Some(cs.name.as_str()), m)),
                );
            }
        }
    }
    for e in c.facts.events.iter().rev() {
        if e.type_.as_deref() == Some("Warning")
            && let Some(m) = e.message.as_deref()
        {
            out.push((None, m));
        }
    }
    if let Some(o) = &c.facts.observation {
        out.push((o.container.as_deref(), o.message.as_str()));
    }
    out
}

/// The fault the pod's messages name, and the container it is about.
pub(super) fn find(c: &Case) -> Option<(Option<String>, Fault)> {
    messages(c)
        .into_iter()
        .find_map(|(container, m)| parse(m).map(|f| (container.map(String::from), f)))
}

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let Some((container, fault)) = find(c) else {
        return unexplained(c);
    };
    let container = container.unwrap_or_else(|| c.container.clone());
    let (statement, confirm, refute) = explain(c, &container, &fault);
    let evidence = c.cite_with_events(&[Cite::Signal, Cite::Termination, Cite::Workload]);
    let mut hypotheses = Vec::new();
    // A rollout that introduced the reference (or the command) is the
    // cause; rolling back puts the working configuration back.
    if let Some(r) = c.rollout.filter(|r| {
        r.changes
            .iter()
            .any(|ch| introduced(ch, &container, &fault))
    }) {
        hypotheses.push(c.bad_rollout(
            r,
            &format!("and since then {statement}"),
            0.92,
            c.cite_with_events(&[Cite::Rollout, Cite::Signal, Cite::Termination]),
        ));
    }
    hypotheses.push(checked(
        hypothesis(
            Category::ConfigError,
            statement,
            0.9,
            evidence,
            Some(ActionType::Escalate),
        ),
        confirm,
        refute,
    ));
    hypotheses
}

/// A ConfigError signal whose messages name nothing the rules know (only
/// `Unable to attach or mount volumes: ... timed out waiting for the
/// condition`, say): the container's own waiting reason, less sure.
fn unexplained(c: &Case) -> Vec<Hypothesis> {
    if c.facts.signal != crate::crd::SignalKind::ConfigError {
        return vec![];
    }
    let waiting = c
        .facts
        .pod
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter(|s| s.name == c.container)
        .find_map(|s| s.state.as_ref()?.waiting.as_ref());
    let event = c
        .facts
        .events
        .iter()
        .rev()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .and_then(|e| {
            Some(format!(
                "{}: {}",
                e.reason.as_deref()?,
                e.message.as_deref()?
            ))
        });
    let why = match (waiting, event) {
        (_, Some(e)) => e,
        (Some(w), None) => format!(
            "{}: {}",
            w.reason.as_deref().unwrap_or("waiting"),
            w.message.as_deref().unwrap_or("")
        ),
        (None, None) => match &c.facts.observation {
            Some(o) => o.message.clone(),
            None => return vec![],
        },
    };
    vec![checked(
        hypothesis(
            Category::ConfigError,
            format!(
                "container `{}` of {} cannot start because of its configuration ({why})",
                c.container,
                c.owner()
            ),
            0.6,
            c.cite_with_events(&[Cite::Signal, Cite::Termination]),
            Some(ActionType::Escalate),
        ),
        "`kubectl describe pod` shows the same reason after the pod is recreated".into(),
        "a new pod of the same spec starts".into(),
    )]
}

/// Whether a change of the rollout introduced the fault.
fn introduced(ch: &crate::brain::rollout::TemplateChange, container: &str, fault: &Fault) -> bool {
    let of_container = ch.field.starts_with(&format!("containers[{container}]"))
        || ch
            .field
            .starts_with(&format!("initContainers[{container}]"));
    match fault {
        Fault::Missing { name, .. } | Fault::MissingKey { name, .. } => {
            ch.to.contains(name.as_str())
        }
        Fault::Volume { volume, name, .. } => {
            ch.field == format!("volumes[{volume}]") || ch.to.contains(name.as_str())
        }
        Fault::VolumeKey { volume, key } => {
            ch.field == format!("volumes[{volume}]") || ch.to.contains(key.as_str())
        }
        Fault::Command { .. } => {
            of_container
                && [".command", ".args", ".image"]
                    .iter()
                    .any(|f| ch.field.ends_with(f))
        }
        Fault::RunsAsRoot => of_container && ch.field.ends_with(".image"),
    }
}

/// The root cause, what would confirm it and what would refute it.
fn explain(c: &Case, container: &str, fault: &Fault) -> (String, String, String) {
    let (ns, owner) = (c.ns(), c.owner());
    let at = |paths: Vec<String>| {
        if paths.is_empty() {
            format!("by container `{container}` of {owner}")
        } else {
            format!("at {} of {owner}", paths.join(", "))
        }
    };
    let spec = c.spec();
    let prefix = c.spec_path();
    match fault {
        Fault::Missing { source, name } => {
            let kind = source.as_str();
            (
                format!(
                    "{kind} `{name}` does not exist in `{ns}`; it is referenced {}: create it, or remove the reference",
                    at(spec
                        .map(|s| references(s, prefix, *source, name, None))
                        .unwrap_or_default())
                ),
                format!(
                    "`kubectl get {} {name} -n {ns}` answers NotFound",
                    kind.to_ascii_lowercase()
                ),
                format!("{kind} `{name}` exists in `{ns}` and the container still does not start"),
            )
        }
        Fault::MissingKey { source, name, key } => {
            let kind = source.as_str();
            (
                format!(
                    "{kind} `{name}` in `{ns}` has no key `{key}`; it is referenced {}: add the key, or fix the reference",
                    at(spec
                        .map(|s| references(s, prefix, *source, name, Some(key)))
                        .unwrap_or_default())
                ),
                format!("{kind} `{name}` in `{ns}` lacks the key `{key}`"),
                format!(
                    "{kind} `{name}` has the key `{key}` and the container still does not start"
                ),
            )
        }
        Fault::Volume {
            volume,
            source,
            name,
        } => {
            let kind = source.as_str();
            let path = spec
                .and_then(|s| volume_index(s, volume))
                .map(|i| format!("{prefix}.volumes[{i}]"))
                .unwrap_or_else(|| format!("volume `{volume}`"));
            (
                format!(
                    "{kind} `{name}` does not exist in `{ns}`; volume `{volume}` at {path} of {owner} mounts it, so the pod cannot start (FailedMount): create it, or remove the volume"
                ),
                format!(
                    "`kubectl get {} {name} -n {ns}` answers NotFound",
                    kind.to_ascii_lowercase()
                ),
                format!("{kind} `{name}` exists and the volume still fails to mount"),
            )
        }
        Fault::VolumeKey { volume, key } => {
            let path = spec
                .and_then(|s| volume_index(s, volume))
                .map(|i| format!("{prefix}.volumes[{i}]"))
                .unwrap_or_else(|| format!("volume `{volume}`"));
            (
                format!(
                    "volume `{volume}` at {path} of {owner} asks for key `{key}`, which its source does not have, so the pod cannot start (FailedMount): add the key, or fix the volume's items"
                ),
                format!("the volume's ConfigMap or Secret has no key `{key}`"),
                format!("the key `{key}` exists and the volume still fails to mount"),
            )
        }
        Fault::Command { exe, why } => {
            let cs = c.container_spec(container);
            let image = cs
                .and_then(|s| s.image.clone())
                .map(|i| format!(" `{i}`"))
                .unwrap_or_default();
            let base = c.container_path(container);
            let set = match (cs, &base) {
                (Some(s), Some(b)) if s.command.is_some() => {
                    format!("it is set at {b}.command of {owner}")
                }
                (Some(s), Some(b)) if s.args.is_some() => {
                    format!("the image's entrypoint runs it with {b}.args of {owner}")
                }
                _ => "it is the image's own entrypoint".into(),
            };
            let what = if why.contains("permission denied") {
                "is not executable in"
            } else {
                "does not exist in"
            };
            (
                format!(
                    "the command `{exe}` of container `{container}` {what} its image{image} ({why}); {set}: fix the command, or the image"
                ),
                format!("running `{exe}` in the image{image} fails the same way"),
                "the command exists and is executable in the image".into(),
            )
        }
        Fault::RunsAsRoot => {
            let at = c
                .container_path(container)
                .map(|b| format!("{b}.securityContext"))
                .unwrap_or_else(|| "the pod's securityContext".into());
            (
                format!(
                    "container `{container}` of {owner} must not run as root (runAsNonRoot, at {at} or the pod's securityContext) but its image runs as root: set runAsUser to a non-zero user id, or use an image with a non-root user"
                ),
                "the image's USER is root or unset".into(),
                "the image sets a numeric non-root USER".into(),
            )
        }
    }
}

/// The index of a volume of the spec, by name.
fn volume_index(spec: &PodSpec, volume: &str) -> Option<usize> {
    spec.volumes.iter().flatten().position(|v| v.name == volume)
}

/// The fields of the spec that reference the ConfigMap or Secret `name`
/// (its key `key`, where given), as paths under `prefix`.
pub(super) fn references(
    spec: &PodSpec,
    prefix: &str,
    source: Source,
    name: &str,
    key: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in lists {
        for (i, ctr) in containers.iter().enumerate() {
            for (j, e) in ctr.env_from.iter().flatten().enumerate() {
                let from = match source {
                    Source::ConfigMap => e.config_map_ref.as_ref().map(|r| r.name.as_str()),
                    Source::Secret => e.secret_ref.as_ref().map(|r| r.name.as_str()),
                };
                if key.is_none() && from == Some(name) {
                    out.push(format!("{prefix}.{list}[{i}].envFrom[{j}]"));
                }
            }
            for (j, e) in ctr.env.iter().flatten().enumerate() {
                let Some(v) = e.value_from.as_ref() else {
                    continue;
                };
                let (field, r) = match source {
                    Source::ConfigMap => (
                        "configMapKeyRef",
                        v.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key)),
                    ),
                    Source::Secret => (
                        "secretKeyRef",
                        v.secret_key_ref.as_ref().map(|r| (&r.name, &r.key)),
                    ),
                };
                if let Some((n, k)) = r
                    && n == name
                    && key.is_none_or(|key| key == k)
                {
                    out.push(format!("{prefix}.{list}[{i}].env[{j}].valueFrom.{field}"));
                }
            }
        }
    }
    if key.is_none() {
        for (k, v) in spec.volumes.iter().flatten().enumerate() {
            let direct = match source {
                Source::ConfigMap => v.config_map.as_ref().map(|m| m.name.as_str()),
                Source::Secret => v.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            };
            let projected = v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .any(|p| match source {
                    Source::ConfigMap => p.config_map.as_ref().is_some_and(|m| m.name == name),
                    Source::Secret => p.secret.as_ref().is_some_and(|s| s.name == name),
                });
            if direct == Some(name) || projected {
                out.push(format!("{prefix}.volumes[{k}]"));
            }
        }
    }
    out
}
