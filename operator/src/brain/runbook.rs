//! Runbooks: the team's own procedures, markdown in a ConfigMap the policy
//! names (`spec.runbooks.configMap`), keyed `workload.<name>.md` or
//! `category.<Category>.md`. The Brain cites the one that matches in the
//! diagnosis as evidence (kind `Runbook`, source
//! `configmap/<name>/<key>`, an excerpt as summary). A runbook is data like
//! every other piece of evidence: the model reads it fenced, and it never
//! changes a hypothesis, the category or the ladder.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

use crate::crd::{Category, Diagnosis, Evidence, EvidenceKind, WorkloadRef};

/// The most of one runbook that is read; the rest is cut, and the cut said.
pub const MAX_RUNBOOK_BYTES: usize = 16 * 1024;
/// The most of a runbook the diagnosis quotes (and the model reads).
pub const MAX_EXCERPT_BYTES: usize = 900;

/// The key of a workload's runbook.
pub fn workload_key(target: &WorkloadRef) -> String {
    format!("workload.{}.md", target.name)
}

/// The key of a category's runbook.
pub fn category_key(category: Category) -> String {
    format!("category.{category:?}.md")
}

/// A runbook found for an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Runbook {
    pub config_map: String,
    pub key: String,
    /// At most `MAX_RUNBOOK_BYTES`, redacted.
    pub text: String,
    /// Whether the runbook was longer and was cut.
    pub cut: bool,
}

/// What looking for an incident's runbook found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Found(Runbook),
    /// The ConfigMap does not exist (or could not be read: `why`).
    NoConfigMap {
        config_map: String,
        why: String,
    },
    /// The ConfigMap has neither key.
    NoKey {
        config_map: String,
        tried: Vec<String>,
    },
}

impl Lookup {
    /// The `Runbook` condition: status, reason and message.
    pub fn condition(&self) -> (bool, &'static str, String) {
        match self {
            Lookup::Found(r) => (
                true,
                "RunbookCited",
                format!(
                    "runbook {} of ConfigMap {} is cited in the diagnosis{}",
                    r.key,
                    r.config_map,
                    if r.cut {
                        format!(" (cut to its first {} KiB)", MAX_RUNBOOK_BYTES / 1024)
                    } else {
                        String::new()
                    }
                ),
            ),
            Lookup::NoConfigMap { config_map, why } => (
                false,
                "RunbookConfigMapMissing",
                format!("the policy's runbook ConfigMap {config_map} {why}; no runbook is cited"),
            ),
            Lookup::NoKey { config_map, tried } => (
                false,
                "NoRunbookForIncident",
                format!(
                    "ConfigMap {config_map} has no runbook for this incident (looked for {})",
                    tried.join(", ")
                ),
            ),
        }
    }
}

/// The incident's runbook in the ConfigMap's data (None: no ConfigMap, with
/// why): the workload's, else the category's. Bounded and redacted.
pub fn select(
    config_map: &str,
    data: Result<Option<&BTreeMap<String, String>>, String>,
    target: &WorkloadRef,
    category: Category,
) -> Lookup {
    let data = match data {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Lookup::NoConfigMap {
                config_map: config_map.into(),
                why: "does not exist".into(),
            };
        }
        Err(why) => {
            return Lookup::NoConfigMap {
                config_map: config_map.into(),
                why: format!("could not be read: {why}"),
            };
        }
    };
    let tried = vec![workload_key(target), category_key(category)];
    let Some((key, text)) = tried
        .iter()
        .find_map(|k| data.get(k).map(|t| (k.clone(), t)))
    else {
        return Lookup::NoKey {
            config_map: config_map.into(),
            tried,
        };
    };
    let (text, cut) = bounded(text, MAX_RUNBOOK_BYTES);
    Lookup::Found(Runbook {
        config_map: config_map.into(),
        key,
        text: crate::redact::string(&text),
        cut,
    })
}

/// The first `max` bytes of `text` (at a character boundary), and whether
/// it was longer.
fn bounded(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// Adds the runbook to the diagnosis as evidence, cited by the hypotheses
/// it is about (all for a workload's runbook, those of its category for a
/// category's). Confidences, categories and actions stay as they were.
pub fn cite(d: &mut Diagnosis, runbook: &Runbook, now: Timestamp) {
    let id = format!("e{}", d.evidence.len().saturating_add(1));
    let (excerpt, cut) = bounded(&runbook.text, MAX_EXCERPT_BYTES);
    let more = if cut || runbook.cut { " …" } else { "" };
    d.evidence.push(Evidence {
        id: id.clone(),
        kind: EvidenceKind::Runbook,
        source: source(&runbook.config_map, &runbook.key),
        summary: format!("{}{more}", excerpt.trim_end()),
        observed_at: Some(Time(now)),
    });
    let category = runbook
        .key
        .strip_prefix("category.")
        .and_then(|k| k.strip_suffix(".md"));
    for h in &mut d.hypotheses {
        if category.is_none_or(|c| format!("{:?}", h.category) == c) {
            h.evidence.push(id.clone());
        }
    }
}

/// The evidence source of a runbook: `configmap/<name>/<key>` (neither a
/// ConfigMap's name nor a key holds a `/`).
pub fn source(config_map: &str, key: &str) -> String {
    format!("configmap/{config_map}/{key}")
}

/// The runbook a diagnosis cites: (ConfigMap, key).
pub fn cited(d: &Diagnosis) -> Option<(&str, &str)> {
    d.evidence
        .iter()
        .filter(|e| e.kind == EvidenceKind::Runbook)
        .find_map(|e| {
            let rest = e.source.strip_prefix("configmap/")?;
            rest.split_once('/')
        })
}

/// Whether a ConfigMap key is a runbook's (what the dashboard serves).
pub fn is_runbook_key(key: &str) -> bool {
    (key.starts_with("workload.") || key.starts_with("category."))
        && key.ends_with(".md")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The command that prints a runbook.
pub fn kubectl_command(namespace: &str, config_map: &str, key: &str) -> String {
    // jsonpath escapes the dots of the key.
    let escaped = key.replace('.', "\\.");
    format!("kubectl get configmap {config_map} -n {namespace} -o jsonpath='{{.data.{escaped}}}'")
}

/// The dashboard's page of a runbook under the public address `base`.
pub fn url(base: Option<&str>, namespace: &str, config_map: &str, key: &str) -> Option<String> {
    let base = crate::dashboard::view::safe_url(base?)?;
    Some(format!(
        "{}/runbooks/{namespace}/{config_map}/{key}",
        base.trim_end_matches('/')
    ))
}

/// Reads the incident's runbook, when the policy names a ConfigMap.
pub async fn find(
    client: &Client,
    namespace: &str,
    config_map: &str,
    target: &WorkloadRef,
    category: Category,
) -> Lookup {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(config_map).await {
        Ok(cm) => select(
            config_map,
            Ok(cm.as_ref().and_then(|c| c.data.as_ref())),
            target,
            category,
        ),
        Err(e) => select(config_map, Err(e.to_string()), target, category),
    }
}

/// A runbook's text from the ConfigMap, bounded and redacted, for the
/// dashboard: None when the ConfigMap or the key does not exist.
pub async fn text(
    client: &Client,
    namespace: &str,
    config_map: &str,
    key: &str,
) -> kube::Result<Option<(String, bool)>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(config_map).await?.and_then(|cm| {
        let text = cm.data?.remove(key)?;
        let (text, cut) = bounded(&text, MAX_RUNBOOK_BYTES);
        Some((crate::redact::string(&text), cut))
    }))
}

#[cfg(test)]
mod tests;
