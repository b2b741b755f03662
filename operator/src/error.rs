//! The operator's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    /// A setting of the operator process is wrong: it does not start.
    #[error("{0}")]
    Config(String),
    /// An action the cluster's state makes impossible (the ReplicaSet to
    /// roll back to is gone, the pod is the workload's last): retrying
    /// cannot help, so the step fails and the next one is planned.
    #[error("{0}")]
    Refused(String),
    /// Bad input from a person (a command's arguments, a file).
    #[error("{0}")]
    Invalid(String),
    /// A watch ended while the operator was starting.
    #[error("{0}")]
    Stopped(String),
    /// Acting was refused because this replica may not be the leader; the
    /// action stays recorded for the leader to take.
    #[error(transparent)]
    NotLeader(#[from] crate::lease::NotLeader),
}

impl Error {
    /// Whether the API server refused a write because the object changed
    /// since it was read; the reconcile is simply run again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// Whether the object the reconcile wrote (or its namespace) is gone:
    /// nothing to retry, its deletion is an event of its own.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
