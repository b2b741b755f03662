//! No value the API server accepts can crash the operator: on the real API
//! server, numbers past the CRD's bounds are refused with a message naming
//! the field. (That the operator's arithmetic saturates on such values, for
//! CRDs installed by older versions, is shown by the unit and property tests
//! in operator/src/limits.)
#![cfg(feature = "cluster")]

use anyhow::Result;
use sre_space_e2e::{TestNamespace, client, create_policy, install_crds};

/// The API server's refusal of a create, or a panic saying it was accepted.
fn refusal(result: Result<sre_space::crd::RemediationPolicy>) -> String {
    match result {
        Ok(p) => panic!("the API server accepted {:?}", p.spec),
        Err(e) => match e.downcast::<kube::Error>() {
            Ok(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
                status.message
            }
            Ok(other) => panic!("unexpected error: {other}"),
            Err(other) => panic!("unexpected error: {other}"),
        },
    }
}

#[tokio::test]
async fn numbers_past_the_crd_bounds_are_refused_with_a_message_naming_the_field() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-limits").await?;

    // The measured crash: this window was accepted, and three seconds after
    // an OOM kill the operator panicked in its timestamp arithmetic.
    let cases: [(&str, &str, i64, &str); 5] = [
        (
            "huge-window",
            "verificationWindowSeconds",
            999_999_999_999,
            "604800",
        ),
        ("long-cooldown", "cooldownSeconds", 604_801, "604800"),
        (
            "max-recurrence",
            "recurrenceWindowSeconds",
            i64::MAX,
            "604800",
        ),
        ("busy", "maxActionsPerHour", 1001, "1000"),
        ("stubborn", "escalateAfterAttempts", 101, "100"),
    ];
    for (name, field, value, max) in cases {
        let msg = refusal(
            create_policy(&client, &ns.name, |v| {
                v["metadata"]["name"] = name.into();
                v["spec"]["guardrails"][field] = value.into();
            })
            .await,
        );
        assert!(
            msg.contains(&format!("spec.guardrails.{field}"))
                && msg.contains(&format!("less than or equal to {max}")),
            "{field}: {msg}"
        );
    }

    let msg = refusal(
        create_policy(&client, &ns.name, |v| {
            v["metadata"]["name"] = "long-grace".into();
            v["spec"]["triggers"][3]["gracePeriodSeconds"] = 10_000_000.into();
        })
        .await,
    );
    assert!(
        msg.contains("spec.triggers[3].gracePeriodSeconds") && msg.contains("604800"),
        "{msg}"
    );

    let msg = refusal(
        create_policy(&client, &ns.name, |v| {
            v["metadata"]["name"] = "negative-cap".into();
            v["spec"]["actions"][0]["memory"]["max"] = "-1Gi".into();
        })
        .await,
    );
    assert!(
        msg.contains("spec.actions[0].memory") && msg.contains("memory.max must be above zero"),
        "{msg}"
    );

    // The bounds themselves, and quantities in every form Kubernetes
    // writes, are accepted.
    create_policy(&client, &ns.name, |v| {
        v["metadata"]["name"] = "at-the-bounds".into();
        let g = &mut v["spec"]["guardrails"];
        g["verificationWindowSeconds"] = 604_800.into();
        g["cooldownSeconds"] = 604_800.into();
        g["recurrenceWindowSeconds"] = 604_800.into();
        g["maxActionsPerHour"] = 1000.into();
        g["escalateAfterAttempts"] = 100.into();
        v["spec"]["actions"][0]["memory"]["max"] = "1e9".into();
        v["spec"]["actions"][0]["memory"]["minIncrease"] = "0.5e8".into();
    })
    .await?;
    ns.cleanup().await
}
