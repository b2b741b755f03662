//! Tier 3: what takes over when runtime fixes keep failing. The daily
//! sweep (`sweep`) reviews the whole history and hands each architectural
//! problem on as a `jules-fix` issue with a brief.

pub mod sweep;
