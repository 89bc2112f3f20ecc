//! Key layout of the state table. One place, so every reader and writer agrees.
//!
//! | item               | pk                     | sk                | gsi1pk                      | gsi1sk |
//! |--------------------|------------------------|-------------------|-----------------------------|--------|
//! | org (settings, Primary, admin count) | `ORG#{org}` | `ORG`     |                             |        |
//! | connection         | `ORG#{org}`            | `CONNECTION`      | `CONN#{status}`             | org    |
//! | capture policy     | `ORG#{org}`            | `CAPTURE_POLICY`  |                             |        |
//! | user               | `ORG#{org}`            | `USER#{email}`    | `USTATE#{org}#{state}`      | email  |
//! | consent request    | `CONSENT#{nonce}`      | `CONSENT`         |                             |        |
//! | tenant claim       | `TENANT#{tenant id}`   | `TENANT`          |                             |        |
//! | audit event        | `AUDIT#{org}`          | `{event id}`      |                             |        |
//! | cursor             | `MBX#{org}#{email}`    | `CURSOR#{folder}` |                             |        |
//! | lease              | `MBX#{org}#{email}`    | `LEASE`           |                             |        |
//! | sync run (TTL)     | `RUNS#{org}`           | `{millis}#{email}`|                             |        |
//!
//! Emails in keys are the canonical lower-case form. Mailbox items sit in their own partition
//! so a large org's sync writes spread over many partitions.

use o365_domain::ids::{Email, OrgId, TenantId};

use crate::tables::{PK, SK};
use crate::{Item, s};

pub fn org_pk(org: &OrgId) -> String {
    format!("ORG#{org}")
}

pub const ORG_SK: &str = "ORG";
pub const CONNECTION_SK: &str = "CONNECTION";
pub const CAPTURE_POLICY_SK: &str = "CAPTURE_POLICY";
pub const USER_SK_PREFIX: &str = "USER#";

pub fn user_sk(email: &Email) -> String {
    format!("{USER_SK_PREFIX}{}", email.key())
}

pub fn connection_gsi_pk(status: &str) -> String {
    format!("CONN#{status}")
}

pub fn user_state_gsi_pk(org: &OrgId, state: &str) -> String {
    format!("USTATE#{org}#{state}")
}

pub fn consent_pk(nonce: &str) -> String {
    format!("CONSENT#{nonce}")
}

pub const CONSENT_SK: &str = "CONSENT";

pub fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

pub const TENANT_SK: &str = "TENANT";

pub fn audit_pk(org: &OrgId) -> String {
    format!("AUDIT#{org}")
}

pub fn mailbox_pk(org: &OrgId, mailbox: &Email) -> String {
    format!("MBX#{org}#{}", mailbox.key())
}

/// The mailbox item: lease, folder positions, counters, last run.
pub const MAILBOX_SK: &str = "MAILBOX";

/// Messages table partition: one mailbox.
pub fn message_pk(org: &OrgId, mailbox: &Email) -> String {
    format!("{}{}", message_pk_prefix(org), mailbox.key())
}

/// What every messages partition of the org starts with (org ids hold no `#`).
pub fn message_pk_prefix(org: &OrgId) -> String {
    format!("{org}#")
}

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    Item::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}
