//! SRE-Space: a Kubernetes operator that detects, diagnoses, remediates and
//! verifies workload incidents within the guardrails of a RemediationPolicy.

pub mod crd;
