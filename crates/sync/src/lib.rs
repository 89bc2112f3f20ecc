//! Scheduled mailbox sync.
//!
//! - Fan-out ([`SyncEngine::enqueue_all_by`], [`SyncEngine::fan_out`]): one job per
//!   sync-enabled mailbox of every connected org, sent through the [`JobQueue`] port in chunks of
//!   ten as the walk goes. A walk out of time queues its rest as a [`FanOutJob`] (where it stopped
//!   in the org's users); "sync now" is such a job, so the API answers at once. Each sent job's id then takes the mailbox lease (sent first, leased second: never
//!   a lease without a job), so a mailbox whose previous job still holds its lease is skipped,
//!   and the worker re-takes the lease under the same id.
//! - Worker ([`SyncEngine::handle_batch`]): per mailbox, each folder's delta chain is followed
//!   from the stored link (or started fresh within the backfill window); every page is written
//!   to the archive BEFORE its link is saved, so a crash anywhere resumes without loss and a
//!   replay only rewrites the same items. The invocation's deadline is checked before every
//!   page: a mailbox that needs longer is handed back as a continuation job (same id, so it
//!   keeps the mailbox's lease) and the record is acknowledged — a batch never outlives its
//!   invocation.
//! - Failures land where they belong: user-level codes on the user, org-level codes on the
//!   org's connection (with an audit event), throttling back to the queue with a delay.
//!
//! Modules by responsibility: `fanout`, `worker` (a batch, one mailbox run), `folder` (one
//! folder's delta chain and the 410 reconciliation), `failures` (where a failure lands),
//! `resolve` (the mailbox's directory user) and [`metrics`]. No AWS types: the SQS adapter of
//! [`JobQueue`] is the `o365-queue-sqs` crate.

mod failures;
mod fanout;
mod folder;
pub mod metrics;
mod resolve;
mod run;
mod worker;

pub use fanout::request_sync;
use run::{MailSourceRef, Run};

use o365_domain::message::WriteStamp;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use o365_domain::DomainError;
use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::capture_policy::CapturePolicy;
use o365_domain::connection::{Connection, ConnectionStatus};
use o365_domain::failure::{Failure, FailureCode, FailureScope};
use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::{MailFolder, MailboxCursor, SyncLink};
use o365_domain::message::RemovalReason;
use o365_domain::microsoft::{DeltaRequest, Directory, MailSource, MicrosoftError};
use o365_domain::page::PageRequest;
use o365_domain::ports::{MailboxStateStore, MessageArchive, OrgStore, SyncRunLog, UserStore};
use o365_domain::sync_run::{RunOutcome, SyncRun};
use o365_domain::user::{MessageCounters, SyncState, SyncStateKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One mailbox to sync. `job_id` doubles as the mailbox lease holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJob {
    pub org: OrgId,
    pub mailbox: Email,
    pub job_id: String,
    /// The "sync now" request this job belongs to: its run is recorded even when it found
    /// nothing, so the request can be followed in `GET /v1/sync/runs?request=…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A walk of one org's sync-enabled mailboxes, queued for the fan-out function: a "sync now"
/// request, an org the schedule had no time left for, or the rest of a walk whose invocation
/// ran out of time (`after`: where the walk goes on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutJob {
    pub org: OrgId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl FanOutJob {
    /// The whole org, from the start.
    pub fn whole(org: OrgId, request: Option<String>) -> Self {
        Self {
            org,
            request,
            after: None,
        }
    }
}

/// The queues between the schedule, the fan-out and the workers (SQS in AWS).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends jobs (any number; the adapter batches). Returns the indexes that were not sent.
    async fn send(&self, jobs: &[SyncJob]) -> o365_domain::Result<Vec<usize>>;
    /// Queues an org's walk for the fan-out function.
    async fn send_fan_out(&self, job: &FanOutJob) -> o365_domain::Result<()>;
    /// Makes a received job visible again only after `delay` (it stays on the queue).
    async fn retry_later(&self, receipt: &str, delay: Duration) -> o365_domain::Result<()>;
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `Prefer: odata.maxpagesize` (Graph may answer with fewer). 1000 by default: a tenth of
    /// the Graph requests of 100 and less CPU per message, and, since pages are read as they
    /// arrive and written a slice at a time, within the worker's memory target.
    pub page_size: u32,
    /// A first sync only fetches mail received in the last this-many days (None: everything).
    pub backfill_days: Option<u32>,
    /// How long a running job holds its mailbox.
    pub run_lease: Duration,
    /// How long an enqueued (not yet running) job holds its mailbox.
    pub enqueue_lease: Duration,
    /// Mailboxes synced at once by one worker invocation.
    pub max_parallel_mailboxes: usize,
    /// Ask Graph for message bodies (both of our apps may read them; the bench can skip them).
    pub include_bodies: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            page_size: 1000,
            backfill_days: Some(90),
            run_lease: Duration::from_secs(15 * 60),
            enqueue_lease: Duration::from_secs(30 * 60),
            max_parallel_mailboxes: 10,
            include_bodies: true,
        }
    }
}

/// The stores the engine uses; usually one adapter behind all five.
#[derive(Clone)]
pub struct Stores {
    pub orgs: Arc<dyn OrgStore>,
    pub users: Arc<dyn UserStore>,
    pub state: Arc<dyn MailboxStateStore>,
    pub archive: Arc<dyn MessageArchive>,
    /// One record per mailbox run that did work or failed (not for skipped jobs).
    pub runs: Arc<dyn SyncRunLog>,
}

impl Stores {
    pub fn single<S>(store: Arc<S>) -> Self
    where
        S: OrgStore + UserStore + MailboxStateStore + MessageArchive + SyncRunLog + 'static,
    {
        Self {
            orgs: store.clone(),
            users: store.clone(),
            state: store.clone(),
            archive: store.clone(),
            runs: store,
        }
    }
}

/// What one mailbox run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Synced,
    /// Stopped on a user-level failure (recorded on the user).
    UserError(FailureCode),
    /// Stopped on an org-level failure (recorded on the connection).
    OrgError(FailureCode),
    /// Nothing to do (org not connected, user gone or switched off, lease held elsewhere).
    Skipped(&'static str),
    /// Throttled beyond the time left: back to the queue for this long.
    RetryAfter(Duration),
    /// Another delivery of this job is running the mailbox: back to the queue until that
    /// run's claim ends (SQS delivers at least once; this is not throttling).
    Busy(Duration),
    /// Transient trouble (store or Microsoft): the queue redelivers it.
    Failed(String),
    /// Out of the invocation's time between two pages: every stored page's position is saved;
    /// a continuation job (same id, so it keeps the mailbox's lease) goes on from there.
    Continued,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxReport {
    pub counters: MessageCounters,
    /// Delta pages fetched (successful Graph delta calls).
    pub pages: u64,
}

/// One record of a worker batch.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    /// Message ids to report as `batchItemFailures`.
    pub failed: Vec<String>,
    pub mailboxes: u64,
    pub totals: MailboxReport,
    pub throttled: u64,
    /// Jobs handed back because another delivery of the same job was running the mailbox.
    pub busy: u64,
    /// Jobs handed back with their position saved (continuations queued).
    pub continued: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub outcomes: Vec<(String, JobOutcome)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgFanOut {
    /// The walk ran out of time and its rest was queued as a fan-out job.
    pub continued: bool,
    pub enqueued: u64,
    pub skipped_leased: u64,
    pub send_failures: u64,
    pub users: u64,
    pub users_in_error: u64,
    /// The domain's alarm rule holds ([`o365_domain::user::org_in_alarm`]).
    pub alarm: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutReport {
    pub orgs: u64,
    /// Orgs (or the rest of their walk) handed to the fan-out queue for lack of time.
    pub orgs_queued: u64,
    pub orgs_in_alarm: u64,
    pub enqueued: u64,
    pub skipped_leased: u64,
    pub send_failures: u64,
}

enum Stop {
    Microsoft(MicrosoftError),
    Store(DomainError),
    /// The invocation's deadline came before the next page.
    OutOfTime,
    /// Another run's claim holds the mailbox for this long: the job comes back after it.
    Busy(Duration),
}

impl From<DomainError> for Stop {
    fn from(e: DomainError) -> Self {
        Stop::Store(e)
    }
}

pub struct SyncEngine {
    stores: Stores,
    mail: Arc<dyn MailSource>,
    directory: Arc<dyn Directory>,
    queue: Arc<dyn JobQueue>,
    cfg: SyncConfig,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn plus(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t + time::Duration::try_from(d).unwrap_or(time::Duration::hours(1))
}

impl SyncEngine {
    pub fn new(
        stores: Stores,
        mail: Arc<dyn MailSource>,
        directory: Arc<dyn Directory>,
        queue: Arc<dyn JobQueue>,
        cfg: SyncConfig,
    ) -> Self {
        Self {
            stores,
            mail,
            directory,
            queue,
            cfg,
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }
}

/// The snake_case name of a failure code (as serialised).
pub fn code_name(code: FailureCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// Jobs are unique per mailbox within one fan-out (used by tests and the bench).
pub fn distinct_mailboxes(jobs: &[SyncJob]) -> usize {
    jobs.iter()
        .map(|j| (j.org.clone(), j.mailbox.clone()))
        .collect::<HashSet<_>>()
        .len()
}
