//! The operator's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    /// Acting was refused because this replica may not be the leader; the
    /// action stays recorded for the leader to take.
    #[error(transparent)]
    NotLeader(#[from] crate::fixer::NotLeader),
}

impl Error {
    /// Whether the API server refused a write because the object changed
    /// since it was read; the reconcile is simply run again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
