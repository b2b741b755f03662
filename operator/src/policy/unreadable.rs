//! A policy the operator cannot read still gets a status that says why.
//!
//! The API server checks a policy against the CRD it has, which may be newer
//! or older than this operator (a value added by a newer version, a field an
//! older CRD did not constrain). Such a policy is watched as a
//! `DeserializeGuard`, so it does not stop the watch of every other policy,
//! and is reported `Ready=False` with the reason `Unreadable`, the reader's
//! error, and an event. It acts on nothing until it is fixed.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use serde_json::json;

use super::{Context, RECHECK};
use crate::crd::{Condition, ConditionStatus, RemediationPolicy};
use crate::{Result, conditions};

/// The `Ready` condition an unreadable policy gets.
pub fn message(invalid: &InvalidObject) -> String {
    format!(
        "the policy cannot be read by this version of the operator: {}; fix the field it names (kubectl explain remediationpolicy.spec)",
        invalid.error
    )
}

/// Writes `Ready=False Unreadable` when it is not there yet, with an event.
pub async fn report(invalid: &InvalidObject, ctx: &Context, now: Timestamp) -> Result<Action> {
    let meta = &invalid.metadata;
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let resource = ApiResource::erase::<RemediationPolicy>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    let Some(current) = api.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let mut found: Vec<Condition> =
        serde_json::from_value(current.data["status"]["conditions"].clone()).unwrap_or_default();
    let before = found.clone();
    let message = message(invalid);
    conditions::set(
        &mut found,
        conditions::READY,
        ConditionStatus::False,
        "Unreadable",
        message.clone(),
        meta.generation,
        now,
    );
    if found == before {
        return Ok(Action::requeue(RECHECK));
    }
    let pp = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({
        "metadata": { "resourceVersion": current.metadata.resource_version },
        "status": { "conditions": found, "observedGeneration": meta.generation },
    });
    api.patch_status(name, &pp, &Patch::Merge(patch)).await?;
    let on = ObjectReference {
        api_version: Some(RemediationPolicy::api_version(&()).into()),
        kind: Some(RemediationPolicy::kind(&()).into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    ctx.publisher
        .note(&on, EventType::Warning, "PolicyUnreadable", message)
        .await;
    Ok(Action::requeue(RECHECK))
}
