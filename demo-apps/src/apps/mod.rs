//! The routes of each service.

pub mod frontend;
pub mod policy;
pub mod quote;
pub mod user;
