//! A pending admin-consent round trip, bound to our signed state by a single-use nonce.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::connection::AppRegistration;
use crate::ids::{Email, OrgId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRequest {
    /// Random, unguessable, consumed exactly once.
    pub nonce: String,
    pub org: OrgId,
    pub initiated_by: Email,
    pub app: AppRegistration,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl ConsentRequest {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}
