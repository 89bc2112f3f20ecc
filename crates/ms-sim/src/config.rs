//! Simulator-wide configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How the simulator misbehaves during the propagation window right after consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PropagationFailure {
    /// Token requests fail with AADSTS7000229 (no service principal yet).
    #[default]
    Token,
    /// Tokens are issued but Graph answers 401 `Authorization_IdentityNotFound`.
    Graph,
}

/// What a non-admin sees on the admin-consent endpoint (Microsoft does not document it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonAdminConsent {
    /// A "Need admin approval" page (AADSTS90094) that never redirects back.
    #[default]
    Page,
    /// A redirect to `redirect_uri` with `error=consent_required` and AADSTS90094.
    Redirect,
}

/// Which AADSTS error a token request gets when the app has no service principal in the tenant
/// (never consented, or consent revoked). Real tenants answer either, so it is selectable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnconsentedError {
    /// AADSTS7000229, invalid_client / 401.
    #[default]
    NoServicePrincipal,
    /// AADSTS700016, unauthorized_client / 400.
    AppNotFound,
    /// AADSTS65001, invalid_grant / 400.
    ConsentMissing,
}

/// Outlook throttling limits (documented: 10,000 requests / 10 min per app and mailbox, 4 concurrent).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ThrottleLimits {
    pub requests_per_window: u32,
    pub window: Duration,
    pub max_concurrent_per_mailbox: u32,
    /// Retry-After (seconds, may be fractional) sent with a concurrency 429.
    pub concurrency_retry_after: f64,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            requests_per_window: 10_000,
            window: Duration::from_secs(600),
            max_concurrent_per_mailbox: 4,
            concurrency_retry_after: 1.0,
        }
    }
}

/// Sizes of generated HTML bodies. Most mail is small; a few are huge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct BodySizes {
    pub min: u32,
    pub max: u32,
    /// Share of bodies between 8 KB and 100 KB.
    pub medium_share: f64,
    /// Share of bodies between 100 KB and `max`.
    pub large_share: f64,
}

impl Default for BodySizes {
    fn default() -> Self {
        BodySizes {
            min: 1024,
            max: 1024 * 1024,
            medium_share: 0.08,
            large_share: 0.002,
        }
    }
}

/// How an expired or unknown delta/skip token is answered (Microsoft shows all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GoneStyle {
    /// 410 with error code `SyncStateNotFound`.
    #[default]
    SyncStateNotFound,
    /// 410 with a `Location` header pointing at a fresh (token-less) delta URL.
    Location,
    /// 410 with error code `resyncRequired`.
    ResyncRequired,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for all generated content, ids and seeded fault decisions.
    pub seed: u64,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Page size when the client sends no `Prefer: odata.maxpagesize`.
    pub default_page_size: u32,
    /// Server maximum that caps `odata.maxpagesize` (Microsoft does not document one).
    pub max_page_size: u32,
    /// At most this many messages come back for a delta round with `$filter`.
    pub filter_cap: u32,
    /// Propagation window after consent (0 = none); tenants can override it.
    pub propagation: Duration,
    pub propagation_failure: PropagationFailure,
    pub non_admin_consent: NonAdminConsent,
    pub throttle: ThrottleLimits,
    pub token_lifetime_secs: u32,
    /// Delta/skip tokens older than this are answered with 410 (None = never by age).
    pub delta_token_ttl: Option<Duration>,
    /// Shape of the 410 for an expired delta/skip token.
    pub gone_style: GoneStyle,
    /// Newest seed message time; None = the start time rounded down to the hour.
    pub time_anchor: Option<OffsetDateTime>,
    /// Seed messages of a folder are spread over this many days before the anchor.
    pub history_days: u32,
    pub body_sizes: BodySizes,
    /// With `ConsistencyLevel: eventual`, users created or renamed less than this ago are
    /// missing from `GET /users?$filter=` results (an eventually consistent index).
    pub eventual_consistency_lag: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            port: 0,
            default_page_size: 10,
            max_page_size: 1000,
            filter_cap: 5000,
            propagation: Duration::ZERO,
            propagation_failure: PropagationFailure::Token,
            non_admin_consent: NonAdminConsent::Page,
            throttle: ThrottleLimits::default(),
            token_lifetime_secs: 3599,
            delta_token_ttl: None,
            gone_style: GoneStyle::SyncStateNotFound,
            time_anchor: None,
            history_days: 365,
            body_sizes: BodySizes::default(),
            eventual_consistency_lag: Duration::from_secs(30),
        }
    }
}
