//! The o365-sync domain: one organisation's Office 365 service-account integration.
//!
//! Types here validate themselves on construction, so an invalid email or role can never reach a
//! store. Storage, secrets and Microsoft are reached through the traits in [`ports`]; this crate
//! knows nothing of AWS or HTTP.

pub mod admin_identity;
pub mod audit;
pub mod capture_policy;
pub mod connection;
pub mod consent;
pub mod consent_state;
pub mod error;
pub mod failure;
pub mod ids;
pub mod mailbox;
pub mod mailbox_directory;
pub mod message;
pub mod microsoft;
pub mod page;
pub mod ports;
pub mod secret;
pub mod service;
pub mod settings;
pub mod sync_run;
pub mod user;

pub use error::{DomainError, Entity, FieldError, Result, RuleViolation};
