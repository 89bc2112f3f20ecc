//! Throttling (Outlook's per app+mailbox request window and per-mailbox concurrency), fault
//! injection, request counters and the record of protocol rules clients broke.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::ThrottleLimits;
use crate::util::unit_from;

/// Endpoints counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Token,
    AdminConsent,
    GraphUser,
    GraphDelta,
    GraphOther,
    /// `/{tenant}/oauth2/v2.0/authorize`.
    Authorize,
    /// `/{tenant}/v2.0/.well-known/openid-configuration`.
    OpenIdConfig,
    /// `/{tenant}/discovery/v2.0/keys`.
    Jwks,
    /// `GET /v1.0/users` (collection, `$filter`).
    GraphUsersQuery,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestCount {
    pub endpoint: Endpoint,
    /// User (mailbox owner) id; None for requests not about one mailbox.
    pub mailbox: Option<Uuid>,
    pub count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A request on a mailbox before the Retry-After of this client's last 429 there elapsed.
    RetryAfterIgnored,
    /// More requests in flight on one mailbox than the concurrency limit.
    ConcurrencyExceeded,
    /// A token of one tenant used against a user of another.
    WrongTenantToken,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub client_id: Option<Uuid>,
    pub mailbox: Option<Uuid>,
    pub detail: String,
}

/// How often a fault fires: with a probability (seeded) or on every Nth request of its scope.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FaultRate {
    Probability(f64),
    EveryNth(u64),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    pub rate: FaultRate,
    /// Retry-After seconds (fractional allowed) for 429 and 503.
    #[serde(default)]
    pub retry_after: Option<f64>,
    /// Send a 429 without any Retry-After header (clients must fall back to backoff).
    #[serde(default)]
    pub omit_retry_after: bool,
}

impl FaultRule {
    pub fn every(n: u64) -> Self {
        FaultRule {
            rate: FaultRate::EveryNth(n),
            retry_after: None,
            omit_retry_after: false,
        }
    }
    pub fn probability(p: f64) -> Self {
        FaultRule {
            rate: FaultRate::Probability(p),
            retry_after: None,
            omit_retry_after: false,
        }
    }
    pub fn without_retry_after(mut self) -> Self {
        self.omit_retry_after = true;
        self
    }
    pub fn with_retry_after(mut self, secs: f64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// Faults for Graph requests of one scope. Each is decided independently per request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FaultSpec {
    /// 429 `TooManyRequests` with Retry-After (default 1 s).
    pub throttle: Option<FaultRule>,
    /// 503 `ServiceNotAvailable` (Retry-After only if set).
    pub unavailable: Option<FaultRule>,
    /// 504 `GatewayTimeout`.
    pub gateway_timeout: Option<FaultRule>,
    /// Added latency before answering (milliseconds).
    pub latency_ms: Option<u64>,
    /// A 200 whose body stops halfway and the connection is dropped.
    pub reset_mid_body: Option<FaultRule>,
    /// A complete 200 whose JSON body is cut short.
    pub truncated_json: Option<FaultRule>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "scope", content = "mailbox")]
pub enum FaultScope {
    Global,
    /// A user id or UPN.
    Mailbox(String),
}

/// Sliding window approximated by 10 buckets (keeps memory per app+mailbox tiny).
#[derive(Default)]
struct Window {
    slots: [(u64, u32); 10],
}

#[derive(Default)]
pub(crate) struct ThrottleState {
    origin: Option<Instant>,
    windows: HashMap<(Uuid, u32), Window>,
    /// Retry-After deadline of the last 429 per (client, mailbox).
    penalties: HashMap<(Uuid, u32), Instant>,
    pub faults_global: Option<(FaultSpec, u64)>,
    pub faults_mailbox: HashMap<u32, (FaultSpec, u64)>,
    pub violations: Vec<Violation>,
    pub counters: HashMap<(Endpoint, Option<Uuid>), u64>,
}

/// What the gate decided for one Graph request.
pub(crate) enum Admission {
    Proceed {
        latency: Option<Duration>,
        post: PostFault,
    },
    Reject(Rejection),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostFault {
    None,
    ResetMidBody,
    Truncate,
}

pub(crate) struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
    pub retry_after: Option<f64>,
    pub latency: Option<Duration>,
}

pub(crate) fn format_retry_after(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{}", secs as u64)
    } else {
        format!("{secs}")
    }
}

fn fires(rule: &Option<FaultRule>, seed: u64, scope: u64, n: u64, salt: u64) -> Option<FaultRule> {
    let r = (*rule)?;
    let hit = match r.rate {
        FaultRate::EveryNth(k) => k > 0 && n.is_multiple_of(k),
        FaultRate::Probability(p) => unit_from(&[seed, scope, n, salt]) < p,
    };
    hit.then_some(r)
}

impl ThrottleState {
    pub fn count(&mut self, ep: Endpoint, mailbox: Option<Uuid>) {
        *self.counters.entry((ep, mailbox)).or_default() += 1;
    }

    pub fn violation(
        &mut self,
        kind: ViolationKind,
        client: Option<Uuid>,
        mailbox: Option<Uuid>,
        detail: String,
    ) {
        tracing::warn!(?kind, ?client, ?mailbox, %detail, "client broke a protocol rule");
        self.violations.push(Violation {
            kind,
            at: crate::util::now(),
            client_id: client,
            mailbox,
            detail,
        });
    }

    /// Decide a Graph request on a mailbox. The caller has already incremented the mailbox's
    /// in-flight count (passed as `in_flight`) and decrements it when the response is done.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        limits: &ThrottleLimits,
        seed: u64,
        app: Uuid,
        mbx: u32,
        user: Uuid,
        in_flight: u32,
        now: Instant,
    ) -> Admission {
        let origin = *self.origin.get_or_insert(now);
        if in_flight > limits.max_concurrent_per_mailbox {
            self.violation(
                ViolationKind::ConcurrencyExceeded,
                Some(app),
                Some(user),
                format!(
                    "{in_flight} requests in flight (limit {})",
                    limits.max_concurrent_per_mailbox
                ),
            );
            let ra = limits.concurrency_retry_after;
            self.penalties
                .insert((app, mbx), now + Duration::from_secs_f64(ra));
            return Admission::Reject(Rejection {
                status: 429,
                code: "ApplicationThrottled",
                message: "Application is over its MailboxConcurrency limit.",
                retry_after: Some(ra),
                latency: None,
            });
        }
        if let Some(until) = self.penalties.get(&(app, mbx)).copied() {
            if now + Duration::from_millis(5) < until {
                let left = (until - now).as_secs_f64();
                self.violation(
                    ViolationKind::RetryAfterIgnored,
                    Some(app),
                    Some(user),
                    format!("request {left:.3}s before Retry-After elapsed"),
                );
                let ra = (left * 10.0).ceil() / 10.0;
                return Admission::Reject(Rejection {
                    status: 429,
                    code: "TooManyRequests",
                    message: "Too many requests. Retry after the time given in the Retry-After header.",
                    retry_after: Some(ra),
                    latency: None,
                });
            }
            self.penalties.remove(&(app, mbx));
        }
        // Request window: every request counts, throttled ones included.
        let slot_len = (limits.window / 10).max(Duration::from_millis(1));
        let abs = (now - origin).as_nanos() as u64 / slot_len.as_nanos() as u64;
        let w = self.windows.entry((app, mbx)).or_default();
        let i = (abs % 10) as usize;
        if w.slots[i].0 != abs {
            w.slots[i] = (abs, 0);
        }
        w.slots[i].1 += 1;
        let live = |s: &(u64, u32)| s.0 + 10 > abs && s.1 > 0;
        let total: u64 = w
            .slots
            .iter()
            .filter(|s| live(s))
            .map(|s| u64::from(s.1))
            .sum();
        if total > u64::from(limits.requests_per_window) {
            let oldest = w
                .slots
                .iter()
                .filter(|s| live(s))
                .map(|s| s.0)
                .min()
                .unwrap_or(abs);
            let free_at = origin + slot_len * ((oldest + 10) as u32);
            let ra = free_at
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil()
                .max(1.0);
            self.penalties
                .insert((app, mbx), now + Duration::from_secs_f64(ra));
            return Admission::Reject(Rejection {
                status: 429,
                code: "TooManyRequests",
                message: "Application is over its request limit for this mailbox.",
                retry_after: Some(ra),
                latency: None,
            });
        }
        // Injected faults: the mailbox's own spec first, then the global one.
        let mut latency = None;
        let mut post = PostFault::None;
        let scopes: [(u64, Option<&mut (FaultSpec, u64)>); 2] = [
            (u64::from(mbx) + 1, self.faults_mailbox.get_mut(&mbx)),
            (0, self.faults_global.as_mut()),
        ];
        let mut reject = None;
        for (scope, entry) in scopes {
            let Some((spec, n)) = entry else { continue };
            *n += 1;
            let n = *n;
            if let Some(ms) = spec.latency_ms {
                latency = Some(Duration::from_millis(ms));
            }
            if reject.is_some() {
                continue;
            }
            if let Some(r) = fires(&spec.throttle, seed, scope, n, 1) {
                reject = Some(Rejection {
                    status: 429,
                    code: "TooManyRequests",
                    message: "Too many requests. Retry after the time given in the Retry-After header.",
                    retry_after: (!r.omit_retry_after).then(|| r.retry_after.unwrap_or(1.0)),
                    latency: None,
                });
            } else if let Some(r) = fires(&spec.unavailable, seed, scope, n, 2) {
                reject = Some(Rejection {
                    status: 503,
                    code: "ServiceNotAvailable",
                    message: "The service is temporarily unavailable. Please retry later.",
                    retry_after: r.retry_after,
                    latency: None,
                });
            } else if fires(&spec.gateway_timeout, seed, scope, n, 3).is_some() {
                reject = Some(Rejection {
                    status: 504,
                    code: "GatewayTimeout",
                    message: "The gateway did not receive a response in time.",
                    retry_after: None,
                    latency: None,
                });
            } else if fires(&spec.reset_mid_body, seed, scope, n, 4).is_some() {
                post = PostFault::ResetMidBody;
            } else if fires(&spec.truncated_json, seed, scope, n, 5).is_some() {
                post = PostFault::Truncate;
            }
        }
        if let Some(mut r) = reject {
            if r.status == 429
                && let Some(ra) = r.retry_after
            {
                self.penalties
                    .insert((app, mbx), now + Duration::from_secs_f64(ra));
            }
            r.latency = latency;
            return Admission::Reject(r);
        }
        Admission::Proceed { latency, post }
    }
}
