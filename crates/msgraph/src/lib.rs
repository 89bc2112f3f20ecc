//! Microsoft identity platform + Graph adapter of the domain's Microsoft ports: [`GraphClient`]
//! (app-only: [`Directory`](o365_domain::microsoft::Directory), [`MailSource`]) and
//! [`EntraSignIn`] (the admin's OpenID Connect sign-in and the admin-consent URL).
//!
//! - App-only tokens (client-credentials grant) with a client secret or a certificate
//!   assertion, cached per (tenant, app) until shortly before expiry; a refused credential is
//!   read again once (a rotation needs no restart); a token issued for another tenant is refused.
//! - Graph calls honour `Retry-After` (never retrying a 429 early), back off with full jitter on
//!   5xx, resets and broken bodies, never keep more than `max_in_flight_per_mailbox` requests in
//!   flight per mailbox across every clone of the client, and give up with
//!   [`MicrosoftError::Throttled`] rather than sleep past the caller's deadline.
//! - Logs carry mailbox, folder, status and Graph's request id only: never a token, a
//!   credential or mail content.

mod body_reader;
mod delta;
mod directory;
mod errors;
mod oidc;
mod page_splitter;
mod signin;
mod token;

pub use signin::{EntraSignIn, SignInConfig};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use o365_domain::connection::AppRegistration;
use o365_domain::ids::TenantId;
use o365_domain::microsoft::{DeltaPage, DeltaRequest, MailSource, MicrosoftError};
use o365_domain::ports::SecretStore;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;

use body_reader::BodyReader;
use errors::{CallKind, GraphRefusal, classify_graph_error};

pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";

/// Where Microsoft lives and how patiently we talk to it.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Identity platform authority, e.g. `https://login.microsoftonline.com`.
    pub authority_url: String,
    /// Graph root, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_base_url: String,
    /// Outlook allows 4 concurrent requests per mailbox.
    pub max_in_flight_per_mailbox: usize,
    /// Consecutive transient failures (5xx, resets, broken bodies) before giving up.
    pub max_transient_attempts: u32,
    /// Shortest wait, and first backoff step (doubling with jitter, capped), when Microsoft sends
    /// no Retry-After.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Per-request timeout (connect + answer).
    pub request_timeout: Duration,
    /// A cached token is renewed this long before it expires.
    pub token_refresh_margin: Duration,
    /// Patience for calls that carry no deadline of their own (grant verification).
    pub default_patience: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            authority_url: DEFAULT_AUTHORITY_URL.into(),
            graph_base_url: DEFAULT_GRAPH_BASE_URL.into(),
            max_in_flight_per_mailbox: 4,
            max_transient_attempts: 6,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            token_refresh_margin: Duration::from_secs(300),
            default_patience: Duration::from_secs(30),
        }
    }
}

/// Counters of what the client did (for metrics); cumulative since start.
#[derive(Debug, Default)]
struct Stats {
    token_requests: AtomicU64,
    graph_requests: AtomicU64,
    throttled: AtomicU64,
    transient_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub token_requests: u64,
    pub graph_requests: u64,
    /// 429 answers (and 503s that carried Retry-After).
    pub throttled: u64,
    pub transient_failures: u64,
}

impl StatsSnapshot {
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            token_requests: self.token_requests - earlier.token_requests,
            graph_requests: self.graph_requests - earlier.graph_requests,
            throttled: self.throttled - earlier.throttled,
            transient_failures: self.transient_failures - earlier.transient_failures,
        }
    }
}

/// Per-mailbox admission: a concurrency cap and the Retry-After of the last throttle.
struct MailboxGate {
    permits: Semaphore,
    not_before: Mutex<Option<Instant>>,
}

impl MailboxGate {
    fn wait_needed(&self) -> Duration {
        let nb = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        nb.map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn hold_until(&self, until: Instant) {
        let mut nb = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }
}

struct Inner {
    cfg: GraphConfig,
    http: reqwest::Client,
    secrets: Arc<dyn SecretStore>,
    tokens: token::TokenCache,
    gates: Mutex<HashMap<String, Arc<MailboxGate>>>,
    stats: Stats,
}

/// The adapter. Cheap to clone; clones share the token cache, the per-mailbox gates and stats.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

/// Where a request comes from, for logs.
#[derive(Clone, Copy)]
struct LogCtx<'a> {
    mailbox: &'a str,
    folder: &'a str,
}

enum Attempt<T> {
    Done(T),
    /// 429 (or 503 with Retry-After): wait at least this long before the mailbox's next request.
    Throttled(Option<Duration>),
    Transient(Option<Duration>, String),
    Refused(GraphRefusal),
}

impl GraphClient {
    pub fn new(cfg: GraphConfig, secrets: Arc<dyn SecretStore>) -> Self {
        let http = o365_http_client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .expect("the HTTP client builds (rustls)");
        Self {
            inner: Arc::new(Inner {
                cfg,
                http,
                secrets,
                tokens: token::TokenCache::default(),
                gates: Mutex::new(HashMap::new()),
                stats: Stats::default(),
            }),
        }
    }

    pub fn config(&self) -> &GraphConfig {
        &self.inner.cfg
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        StatsSnapshot {
            token_requests: s.token_requests.load(Ordering::Relaxed),
            graph_requests: s.graph_requests.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            transient_failures: s.transient_failures.load(Ordering::Relaxed),
        }
    }

    /// `subject`: the mailbox (or directory user) the request is about.
    fn gate(&self, tenant: &TenantId, subject: &str) -> Arc<MailboxGate> {
        let key = format!("{tenant}/{subject}");
        let mut gates = self.inner.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(key)
            .or_insert_with(|| {
                Arc::new(MailboxGate {
                    permits: Semaphore::new(self.inner.cfg.max_in_flight_per_mailbox.max(1)),
                    not_before: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Exponential backoff with jitter, never below `backoff_base`: a retry a few milliseconds
    /// after a 5xx or a timeout would only add to whatever overloaded Microsoft.
    fn backoff(&self, attempt: u32) -> Duration {
        let cfg = &self.inner.cfg;
        let ceiling = cfg
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(cfg.backoff_cap);
        let floor = cfg.backoff_base.min(ceiling);
        let spread = (ceiling - floor).as_millis() as u64;
        floor
            + Duration::from_millis(if spread == 0 {
                0
            } else {
                rand::random_range(0..=spread)
            })
    }

    /// One Graph GET with the whole resilience policy; a reader from `reader` (given the
    /// announced length) turns a 2xx body into `T` as it arrives (a body it cannot read counts
    /// as a transient failure).
    #[allow(clippy::too_many_arguments)]
    async fn get<T, R: BodyReader<T>>(
        &self,
        url: &str,
        tenant: &TenantId,
        app: AppRegistration,
        prefer: &[String],
        kind: CallKind,
        deadline: Instant,
        log: LogCtx<'_>,
        reader: impl Fn(Option<u64>) -> R,
    ) -> Result<T, MicrosoftError> {
        let gate = self.gate(tenant, log.mailbox);
        let mut transient = 0u32;
        let mut throttles = 0u32;
        let mut renewed_token = false;
        loop {
            let wait = gate.wait_needed();
            if !wait.is_zero() {
                if Instant::now() + wait > deadline {
                    return Err(MicrosoftError::Throttled { retry_after: wait });
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            let token = self.token(tenant, app, renewed_token).await?;
            let permit = gate
                .permits
                .acquire()
                .await
                .expect("gates are never closed");
            // Another request of this mailbox may have been throttled while we queued.
            if !gate.wait_needed().is_zero() {
                drop(permit);
                continue;
            }
            let attempt = self
                .send_once(url, token.expose(), prefer, kind, log, &reader)
                .await;
            if let Attempt::Throttled(ra) = &attempt {
                // Record the wait before the permit goes, so no queued request slips in early.
                let ra = ra.unwrap_or_else(|| self.backoff(throttles));
                gate.hold_until(Instant::now() + ra);
            }
            drop(permit);
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Throttled(_) => {
                    throttles += 1;
                    self.inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    let wait = gate.wait_needed();
                    if Instant::now() + wait > deadline {
                        return Err(MicrosoftError::Throttled { retry_after: wait });
                    }
                }
                Attempt::Transient(ra, why) => {
                    transient += 1;
                    self.inner
                        .stats
                        .transient_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if transient >= self.inner.cfg.max_transient_attempts {
                        return Err(MicrosoftError::Unavailable { message: why });
                    }
                    let wait = ra.unwrap_or_else(|| self.backoff(transient - 1));
                    if Instant::now() + wait > deadline {
                        return Err(MicrosoftError::Throttled { retry_after: wait });
                    }
                    tokio::time::sleep(wait).await;
                }
                Attempt::Refused(GraphRefusal::TokenRejected(code)) => {
                    if renewed_token {
                        return Err(MicrosoftError::Unavailable {
                            message: format!("Graph refused a fresh token ({code})"),
                        });
                    }
                    renewed_token = true;
                }
                Attempt::Refused(GraphRefusal::Final(e)) => return Err(e),
            }
        }
    }

    async fn send_once<T, R: BodyReader<T>>(
        &self,
        url: &str,
        token: &str,
        prefer: &[String],
        kind: CallKind,
        log: LogCtx<'_>,
        reader: &impl Fn(Option<u64>) -> R,
    ) -> Attempt<T> {
        self.inner
            .stats
            .graph_requests
            .fetch_add(1, Ordering::Relaxed);
        let mut req = self.inner.http.get(url).bearer_auth(token);
        for p in prefer {
            req = req.header("Prefer", p);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(mailbox = log.mailbox, folder = log.folder, error = %without_url(&e), "Graph request failed");
                return Attempt::Transient(
                    None,
                    format!("Graph request failed: {}", without_url(&e)),
                );
            }
        };
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if (200..=299).contains(&status) {
            let reader = reader(resp.content_length());
            return read_success(resp, reader, log, status, &request_id).await;
        }
        let body = match read_body(resp).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(mailbox = log.mailbox, folder = log.folder, status, request_id, error = %without_url(&e), "Graph answer cut short");
                return Attempt::Transient(
                    None,
                    format!("Graph answer cut short: {}", without_url(&e)),
                );
            }
        };
        tracing::debug!(
            mailbox = log.mailbox,
            folder = log.folder,
            status,
            request_id,
            "Graph answered"
        );
        match status {
            429 => {
                tracing::info!(
                    mailbox = log.mailbox,
                    folder = log.folder,
                    status,
                    request_id,
                    retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                    "Graph throttled"
                );
                Attempt::Throttled(retry_after)
            }
            503 if retry_after.is_some() => Attempt::Throttled(retry_after),
            500..=599 => {
                tracing::info!(
                    mailbox = log.mailbox,
                    folder = log.folder,
                    status,
                    request_id,
                    "Graph unavailable"
                );
                Attempt::Transient(retry_after, format!("Graph answered {status}"))
            }
            _ => {
                let r = classify_graph_error(status, &String::from_utf8_lossy(&body), kind);
                tracing::info!(
                    mailbox = log.mailbox,
                    folder = log.folder,
                    status,
                    request_id,
                    "Graph refused"
                );
                Attempt::Refused(r)
            }
        }
    }

    fn graph_url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.inner.cfg.graph_base_url.trim_end_matches('/'),
            path
        )
    }
}

/// A 2xx body, each chunk handed to the reader and dropped as it arrives (`Response::bytes`
/// keeps every chunk until the end and then copies them into one buffer: at page size 1000
/// that was the worker's peak memory).
async fn read_success<T>(
    mut resp: reqwest::Response,
    mut reader: impl BodyReader<T>,
    log: LogCtx<'_>,
    status: u16,
    request_id: &str,
) -> Attempt<T> {
    let unreadable = |why: String| {
        tracing::warn!(
            mailbox = log.mailbox,
            folder = log.folder,
            status,
            request_id,
            "Graph body unreadable"
        );
        Attempt::Transient(None, why)
    };
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(why) = reader.feed(&chunk) {
                    return unreadable(why);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(mailbox = log.mailbox, folder = log.folder, status, request_id, error = %without_url(&e), "Graph answer cut short");
                return Attempt::Transient(
                    None,
                    format!("Graph answer cut short: {}", without_url(&e)),
                );
            }
        }
    }
    match reader.finish() {
        Ok(v) => Attempt::Done(v),
        Err(why) => unreadable(why),
    }
}

/// An error answer's body (small), whole.
async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error without its URL (links carry delta tokens).
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    match e.source() {
        Some(s) => format!("{kind}: {s}"),
        None => kind.to_owned(),
    }
}

/// `Retry-After` in (possibly fractional) seconds; an HTTP date falls back to our backoff.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Percent-encode everything but RFC 3986 unreserved characters and `keep`.
fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl MailSource for GraphClient {
    async fn delta_page(&self, request: DeltaRequest<'_>) -> Result<DeltaPage, MicrosoftError> {
        let folder = request.folder;
        let url = match request.from {
            // Links are opaque: followed byte for byte, never rebuilt.
            Some(link) => link.url().to_owned(),
            None => {
                let mut select = delta::SELECT.to_owned();
                if request.include_body {
                    select.push_str(",body");
                }
                let mut url = self.graph_url(&format!(
                    "/users/{}/mailFolders/{}/messages/delta?$select={}",
                    encode(request.user_id, b""),
                    folder.well_known_name(),
                    encode(&select, b",")
                ));
                if let Some(since) = request.backfill_since {
                    let since = since
                        .to_offset(time::UtcOffset::UTC)
                        .replace_nanosecond(0)
                        .unwrap_or(since);
                    let iso = since.format(&Rfc3339).unwrap_or_default();
                    url.push_str("&$filter=");
                    url.push_str(&encode(&format!("receivedDateTime ge {iso}"), b":"));
                }
                url
            }
        };
        let prefer = [
            format!("odata.maxpagesize={}", request.page_size.max(1)),
            "IdType=\"ImmutableId\"".to_owned(),
        ];
        let log = LogCtx {
            mailbox: request.mailbox.key(),
            folder: folder.well_known_name(),
        };
        let include_body = request.include_body;
        self.get(
            &url,
            request.tenant,
            request.app,
            &prefer,
            CallKind::Mailbox,
            request.deadline,
            log,
            |_| delta::DeltaPageReader::new(folder, include_body),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_fractions() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn user_names_are_percent_encoded() {
        assert_eq!(encode("adele@contoso.com", b""), "adele%40contoso.com");
        assert_eq!(
            encode("receivedDateTime ge 2024-01-01T00:00:00Z", b":"),
            "receivedDateTime%20ge%202024-01-01T00:00:00Z"
        );
    }
}
