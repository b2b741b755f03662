//! The bounds today's CRD schema sets on a RemediationPolicy's numbers,
//! checked again in the operator: a CRD installed by an older version may
//! have let a larger value in.

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;

use super::RemediationPolicy;

/// The `spec` schema of RemediationPolicy, as the CRD the operator installs
/// says it.
static POLICY_SPEC_SCHEMA: LazyLock<Option<JSONSchemaProps>> = LazyLock::new(|| {
    RemediationPolicy::crd()
        .spec
        .versions
        .into_iter()
        .next()?
        .schema?
        .open_api_v3_schema?
        .properties?
        .remove("spec")
});

/// The schema of a RemediationPolicy's `spec`.
pub fn policy_spec_schema() -> Option<&'static JSONSchemaProps> {
    POLICY_SPEC_SCHEMA.as_ref()
}

/// Every number in a RemediationPolicy spec outside the bounds of today's
/// CRD schema, each in a sentence naming the field. The API server checks
/// them, but a CRD installed by an older version did not.
pub fn out_of_bounds(spec: &super::RemediationPolicySpec) -> Vec<String> {
    let (Ok(value), Some(schema)) = (serde_json::to_value(spec), policy_spec_schema()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&value, schema, "", &mut out);
    out
}

fn walk(value: &serde_json::Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Number(n) => {
            let Some(x) = n.as_f64() else { return };
            if let Some(max) = schema.maximum
                && x > max
            {
                out.push(format!(
                    "{path} is {n}, above the maximum {max}; lower it (a CRD installed by an older version let it in)"
                ));
            }
            if let Some(min) = schema.minimum
                && x < min
            {
                out.push(format!(
                    "{path} is {n}, below the minimum {min}; raise it (a CRD installed by an older version let it in)"
                ));
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, v) in fields {
                if let Some(s) = schema.properties.as_ref().and_then(|p| p.get(key)) {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(v, s, &path, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Guardrails, RemediationPolicySpec};
    use crate::limits::{MAX_REPLICAS, WEEK_SECONDS};

    #[test]
    fn a_value_an_old_crd_let_in_is_named_with_its_bound() {
        let mut spec: RemediationPolicySpec = serde_json::from_value(serde_json::json!({
            "selector": { "matchLabels": { "app": "web" } },
            "triggers": [{ "type": "OOMKilled" }, { "type": "Unschedulable", "gracePeriodSeconds": 86_400_000 }],
            "actions": [{ "type": "Scale", "maxReplicas": 2_000_000_000 }],
        }))
        .unwrap();
        spec.guardrails = Guardrails {
            verification_window_seconds: 999_999_999_999,
            ..Guardrails::default()
        };
        let found = out_of_bounds(&spec);
        assert_eq!(found.len(), 3, "{found:#?}");
        for expected in [
            "actions[0].maxReplicas is 2000000000, above the maximum 10000",
            "guardrails.verificationWindowSeconds is 999999999999, above the maximum 604800",
            "triggers[1].gracePeriodSeconds is 86400000, above the maximum 604800",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected} in {found:#?}"
            );
        }
        spec.guardrails.verification_window_seconds = WEEK_SECONDS;
        spec.actions[0].max_replicas = Some(MAX_REPLICAS as i32);
        spec.triggers[1].grace_period_seconds = Some(0);
        assert_eq!(
            out_of_bounds(&spec),
            Vec::<String>::new(),
            "the bounds themselves are allowed"
        );
    }
}
