//! Probes: pods that run but fail their readiness probe, and containers
//! their liveness probe kills (events `Liveness probe failed` and `failed
//! liveness probe, will be restarted`, exit 137 or 143 without OOMKilled).
//! For a liveness failure the probe's port and path come from the pod spec
//! and the probe's own message says what answered.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Case, Cite, checked, first_match, group, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let mut hypotheses = c.suspect(
        c.rollout,
        "and the new pods never become ready",
        0.6,
        &[Cite::Rollout, Cite::Signal],
    );
    hypotheses.push(checked(
        hypothesis(
            Category::ProbeFailure,
            format!("{} runs but fails its readiness probe", c.target),
            0.5,
            c.cite_with_events(&[Cite::Signal]),
            Some(ActionType::RestartPod),
        ),
        "the readiness endpoint fails when called from inside the pod".into(),
        "the readiness endpoint answers success from inside the pod".into(),
    ));
    hypotheses
}

/// A crash loop its liveness probe causes; empty when the events do not
/// show the probe killing the container, or the kernel killed it (OOM).
pub(super) fn liveness(c: &Case) -> Vec<Hypothesis> {
    let failures: Vec<&str> = c
        .facts
        .events
        .iter()
        .rev()
        .filter_map(|e| e.message.as_deref())
        .filter(|m| m.starts_with("Liveness probe failed"))
        .collect();
    let killed = c.facts.events.iter().any(|e| {
        e.reason.as_deref() == Some("Killing")
            && e.message.as_deref().is_some_and(|m| {
                m.contains(&format!("Container {} failed liveness probe", c.container))
                    || m.contains("failed liveness probe, will be restarted")
            })
    });
    if failures.is_empty() && !killed {
        return vec![];
    }
    let terminated = c
        .facts
        .pod
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|s| s.iter().find(|s| s.name == c.container))
        .and_then(|s| {
            s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map(|t| (t, s.restart_count))
        });
    if let Some((t, _)) = terminated
        && (t.reason.as_deref() == Some("OOMKilled") || ![137, 143].contains(&t.exit_code))
    {
        return vec![];
    }
    let spec = c.container_spec(&c.container);
    let probe = spec.and_then(|s| s.liveness_probe.as_ref());
    let described = probe.map(|p| describe(p, spec)).unwrap_or_default();
    let at = c
        .container_path(&c.container)
        .map(|p| format!(" at {p}.livenessProbe"))
        .unwrap_or_default();
    let port = probe.and_then(|p| port_of(p, spec));
    let verdict = failures
        .first()
        .map(|m| verdict(m, port.as_deref(), probe))
        .unwrap_or_else(|| "it fails".into());
    let exit = terminated
        .map(|(t, restarts)| {
            format!(
                "; it exited with code {} after {restarts} restarts",
                t.exit_code
            )
        })
        .unwrap_or_default();
    let statement = format!(
        "container `{}` of {} is killed by its liveness probe{described}{at}: {verdict}{exit}; fix the probe or what it checks, a restart only repeats this",
        c.container,
        c.owner()
    );
    let evidence = c.cite_with_events(&[Cite::Signal, Cite::Termination, Cite::Log]);
    let probe_changed = c.rollout.filter(|r| {
        r.changes
            .iter()
            .any(|ch| ch.field == format!("containers[{}].livenessProbe", c.container))
    });
    let mut hypotheses = Vec::new();
    if let Some(r) = probe_changed.or(c.rollout) {
        let confidence = if probe_changed.is_some() { 0.9 } else { 0.8 };
        hypotheses.push(c.bad_rollout(
            r,
            &format!("and since then {statement}"),
            confidence,
            c.cite_with_events(&[Cite::Rollout, Cite::Signal, Cite::Termination]),
        ));
    }
    hypotheses.push(checked(
        hypothesis(
            Category::ProbeFailure,
            statement,
            if c.rollout.is_some() { 0.6 } else { 0.85 },
            evidence,
            Some(ActionType::Escalate),
        ),
        format!("calling the probe{described} from inside the pod fails the same way"),
        "the probe succeeds from inside the pod while the container runs".into(),
    ));
    hypotheses
}

/// ` (HTTP GET :8080/healthz)`, ` (TCP :5432)`, ` (exec [cat /tmp/ok])`.
fn describe(p: &Probe, spec: Option<&Container>) -> String {
    let port = port_of(p, spec).unwrap_or_default();
    if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP");
        format!(
            " ({scheme} GET :{port}{})",
            h.path.as_deref().unwrap_or("/")
        )
    } else if p.tcp_socket.is_some() {
        format!(" (TCP :{port})")
    } else if p.grpc.is_some() {
        format!(" (gRPC :{port})")
    } else if let Some(e) = &p.exec {
        format!(" (exec {:?})", e.command.clone().unwrap_or_default())
    } else {
        String::new()
    }
}

/// The probe's port as a number, a named port resolved against the
/// container's ports.
fn port_of(p: &Probe, spec: Option<&Container>) -> Option<String> {
    let port = p
        .http_get
        .as_ref()
        .map(|h| h.port.clone())
        .or_else(|| p.tcp_socket.as_ref().map(|t| t.port.clone()))
        .or_else(|| p.grpc.as_ref().map(|g| IntOrString::Int(g.port)))?;
    Some(match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(name) => spec
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
            })
            .map(|p| p.container_port.to_string())
            .unwrap_or(name),
    })
}

/// What the probe's message says answered.
fn verdict(message: &str, port: Option<&str>, probe: Option<&Probe>) -> String {
    if message.contains("connection refused") {
        let port = port
            .map(String::from)
            .or_else(|| {
                first_match(r":(\d+): connect: connection refused", [message]).map(|m| group(&m, 1))
            })
            .unwrap_or_else(|| "the probe's port".into());
        return format!("nothing listens on port {port}");
    }
    if let Some(m) = first_match(r"statuscode: (\d+)", [message]) {
        return format!("the endpoint answers {}", group(&m, 1));
    }
    if [
        "context deadline exceeded",
        "Client.Timeout",
        "i/o timeout",
        "timed out",
    ]
    .iter()
    .any(|t| message.contains(t))
    {
        let secs = probe.and_then(|p| p.timeout_seconds).unwrap_or(1);
        return format!("the endpoint does not answer within the probe's timeoutSeconds ({secs}s)");
    }
    format!("the probe fails ({})", message.trim())
}
