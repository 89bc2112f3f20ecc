//! Scheduled mailbox sync.
//!
//! - Fan-out ([`SyncEngine::enqueue_all`], [`SyncEngine::enqueue_org`]): one job per sync-enabled
//!   mailbox of every connected org, sent through the [`JobQueue`] port. The job's id is taken
//!   as the mailbox lease when it is enqueued, so a mailbox whose previous job still holds its
//!   lease is skipped, and the worker re-takes the lease under the same id.
//! - Worker ([`SyncEngine::handle_batch`]): per mailbox, each folder's delta chain is followed
//!   from the stored link (or started fresh within the backfill window); every page is written
//!   to the archive BEFORE its link is saved, so a crash anywhere resumes without loss and a
//!   replay only rewrites the same items.
//! - Failures land where they belong: user-level codes on the user, org-level codes on the
//!   org's connection (with an audit event), throttling back to the queue with a delay.
//!
//! No AWS types here except in [`sqs`], the queue adapter.

pub mod metrics;
mod resolve;
pub mod sqs;

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
use o365_domain::message::{RemovalReason, StoredMessage};
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
}

/// The queue between fan-out and workers (SQS in AWS).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends jobs (any number; the adapter batches). Returns the indexes that were not sent.
    async fn send(&self, jobs: &[SyncJob]) -> o365_domain::Result<Vec<usize>>;
    /// Makes a received job visible again only after `delay` (it stays on the queue).
    async fn retry_later(&self, receipt: &str, delay: Duration) -> o365_domain::Result<()>;
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `Prefer: odata.maxpagesize`.
    pub page_size: u32,
    /// A first sync only fetches mail received in the last this-many days (None: everything).
    pub backfill_days: Option<u32>,
    /// How long a running job holds its mailbox.
    pub run_lease: Duration,
    /// How long an enqueued (not yet running) job holds its mailbox.
    pub enqueue_lease: Duration,
    /// Mailboxes synced at once by one worker invocation.
    pub max_parallel_mailboxes: usize,
    /// An org is in alarm when at least this share of its sync-enabled users is in error.
    pub org_alarm_ratio: f64,
    /// Ask Graph for message bodies (both of our apps may read them; the bench can skip them).
    pub include_bodies: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            page_size: 100,
            backfill_days: Some(90),
            run_lease: Duration::from_secs(15 * 60),
            enqueue_lease: Duration::from_secs(30 * 60),
            max_parallel_mailboxes: 10,
            org_alarm_ratio: 0.2,
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
    /// Transient trouble (store or Microsoft): the queue redelivers it.
    Failed(String),
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
    pub errors_by_code: BTreeMap<String, u64>,
    pub outcomes: Vec<(String, JobOutcome)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgFanOut {
    pub enqueued: u64,
    pub skipped_leased: u64,
    pub send_failures: u64,
    pub users: u64,
    pub users_in_error: u64,
    /// At least `org_alarm_ratio` of the org's sync-enabled users are in error.
    pub alarm: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutReport {
    pub orgs: u64,
    pub orgs_in_alarm: u64,
    pub enqueued: u64,
    pub skipped_leased: u64,
    pub send_failures: u64,
}

enum Stop {
    Microsoft(MicrosoftError),
    Store(DomainError),
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

    // ---- fan-out --------------------------------------------------------------------------

    /// Every connected org: one job per sync-enabled mailbox.
    pub async fn enqueue_all(&self) -> o365_domain::Result<FanOutReport> {
        let mut report = FanOutReport::default();
        let mut after = None;
        loop {
            let page = self
                .stores
                .orgs
                .orgs_with_connection(
                    ConnectionStatus::Connected,
                    PageRequest {
                        limit: 100,
                        after: after.take(),
                    },
                )
                .await?;
            for org in &page.items {
                match self.enqueue_org(org).await {
                    Ok(r) => {
                        report.orgs += 1;
                        report.orgs_in_alarm += u64::from(r.alarm);
                        report.enqueued += r.enqueued;
                        report.skipped_leased += r.skipped_leased;
                        report.send_failures += r.send_failures;
                    }
                    // One org's trouble does not stop the others.
                    Err(e) => tracing::error!(org = %org, error = %e, "fan-out failed for org"),
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        tracing::info!(
            orgs = report.orgs,
            enqueued = report.enqueued,
            skipped_leased = report.skipped_leased,
            send_failures = report.send_failures,
            orgs_in_alarm = report.orgs_in_alarm,
            "fan-out done"
        );
        Ok(report)
    }

    /// "Sync now" for one org (also the scheduled path): jobs for its sync-enabled mailboxes,
    /// skipping those whose previous job still holds the lease.
    pub async fn enqueue_org(&self, org: &OrgId) -> o365_domain::Result<OrgFanOut> {
        let mut report = OrgFanOut::default();
        let connection = self.stores.orgs.connection(org).await?;
        if connection.status != ConnectionStatus::Connected {
            tracing::info!(org = %org, status = connection.status.as_str(), "org not connected; nothing enqueued");
            return Ok(report);
        }
        let mut jobs = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stores
                .users
                .sync_enabled_users(
                    org,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            for mailbox in page.items {
                report.users += 1;
                let job = SyncJob {
                    org: org.clone(),
                    mailbox,
                    job_id: uuid::Uuid::new_v4().to_string(),
                };
                let t = now();
                let taken = self
                    .stores
                    .state
                    .acquire_lease(
                        org,
                        &job.mailbox,
                        &job.job_id,
                        plus(t, self.cfg.enqueue_lease),
                        t,
                    )
                    .await?;
                if taken {
                    jobs.push(job);
                } else {
                    report.skipped_leased += 1;
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        if !jobs.is_empty() {
            let failed = self.queue.send(&jobs).await.unwrap_or_else(|e| {
                tracing::error!(org = %org, error = %e, "cannot enqueue jobs");
                (0..jobs.len()).collect()
            });
            for i in &failed {
                let j = &jobs[*i];
                let _ = self
                    .stores
                    .state
                    .release_lease(org, &j.mailbox, &j.job_id)
                    .await;
            }
            report.send_failures = failed.len() as u64;
            report.enqueued = (jobs.len() - failed.len()) as u64;
        }
        report.users_in_error = self.count_users(org, SyncStateKind::Error).await?;
        report.alarm = report.users > 0
            && report.users_in_error as f64 >= self.cfg.org_alarm_ratio * report.users as f64;
        if report.alarm {
            tracing::warn!(
                org = %org,
                users = report.users,
                users_in_error = report.users_in_error,
                alarm = "org_users_in_error",
                "20% or more of the org's users are in error"
            );
        }
        tracing::info!(org = %org, enqueued = report.enqueued, skipped_leased = report.skipped_leased, "org enqueued");
        Ok(report)
    }

    async fn count_users(&self, org: &OrgId, kind: SyncStateKind) -> o365_domain::Result<u64> {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = self
                .stores
                .users
                .list_users(
                    org,
                    Some(kind),
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            n += page.items.iter().filter(|u| u.sync_enabled).count() as u64;
            match page.next {
                Some(x) => after = Some(x),
                None => return Ok(n),
            }
        }
    }

    // ---- worker ---------------------------------------------------------------------------

    /// Runs a batch of queue records; returns which to report as failed.
    pub async fn handle_batch(
        self: &Arc<Self>,
        records: Vec<QueueRecord>,
        deadline: Instant,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.cfg.max_parallel_mailboxes.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for record in records {
            let job: SyncJob = match serde_json::from_str(&record.body) {
                Ok(j) => j,
                Err(e) => {
                    // A message we cannot read will never succeed, but it is evidence of a bug:
                    // reported as failed, the queue's redrive policy moves it to the dead-letter
                    // queue instead of it vanishing.
                    tracing::error!(message_id = record.message_id, error = %e, "unreadable sync job; left for the dead-letter queue");
                    report.failed.push(record.message_id);
                    continue;
                }
            };
            let engine = self.clone();
            let limit = limit.clone();
            // The invocation's span (request id, trace id) follows each mailbox task.
            tasks.spawn(tracing::Instrument::in_current_span(async move {
                let _permit = limit.acquire_owned().await;
                let (outcome, mailbox_report) = engine.run_job(&job, deadline).await;
                (record, outcome, mailbox_report)
            }));
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((record, outcome, r)) = done else {
                tracing::error!("a mailbox task panicked");
                continue;
            };
            report.mailboxes += 1;
            report.totals.pages += r.pages;
            report.totals.counters.captured += r.counters.captured;
            report.totals.counters.updated += r.counters.updated;
            report.totals.counters.deleted += r.counters.deleted;
            match &outcome {
                JobOutcome::RetryAfter(d) => {
                    report.throttled += 1;
                    if let Err(e) = self.queue.retry_later(&record.receipt_handle, *d).await {
                        tracing::warn!(message_id = record.message_id, error = %e, "cannot delay the job; default visibility applies");
                    }
                    report.failed.push(record.message_id.clone());
                }
                JobOutcome::Failed(_) => report.failed.push(record.message_id.clone()),
                JobOutcome::UserError(c) | JobOutcome::OrgError(c) => {
                    *report.errors_by_code.entry(code_name(*c)).or_default() += 1;
                }
                JobOutcome::Synced | JobOutcome::Skipped(_) => {}
            }
            report.outcomes.push((record.message_id, outcome));
        }
        report
    }

    /// One mailbox, both folders. Never panics; every path logs one line.
    pub async fn run_job(&self, job: &SyncJob, deadline: Instant) -> (JobOutcome, MailboxReport) {
        let started = Instant::now();
        let started_at = now();
        let mut report = MailboxReport::default();
        let mut failure = None;
        let outcome = self
            .run_job_inner(job, deadline, &mut report, &mut failure)
            .await;
        let (kind, code) = match &outcome {
            JobOutcome::Synced => ("synced", None),
            JobOutcome::UserError(c) => ("user_error", Some(code_name(*c))),
            JobOutcome::OrgError(c) => ("org_error", Some(code_name(*c))),
            JobOutcome::Skipped(_) => ("skipped", None),
            JobOutcome::RetryAfter(_) => ("retry_later", None),
            JobOutcome::Failed(_) => ("failed", None),
        };
        tracing::info!(
            target: "mailbox_run",
            org = %job.org,
            mailbox = job.mailbox.key(),
            job_id = job.job_id,
            outcome = kind,
            error_code = code.as_deref(),
            reason = match &outcome { JobOutcome::Skipped(r) => Some(*r), _ => None },
            retry_after_ms = match &outcome { JobOutcome::RetryAfter(d) => Some(d.as_millis() as u64), _ => None },
            captured = report.counters.captured,
            updated = report.counters.updated,
            deleted = report.counters.deleted,
            pages = report.pages,
            duration_ms = started.elapsed().as_millis() as u64,
            "mailbox run"
        );
        self.record_run(job, started_at, &outcome, &report, failure)
            .await;
        (outcome, report)
    }

    /// The run's history record. Best effort: a run that cannot be recorded is logged, and the
    /// job's outcome stands.
    async fn record_run(
        &self,
        job: &SyncJob,
        started_at: OffsetDateTime,
        outcome: &JobOutcome,
        report: &MailboxReport,
        failure: Option<Failure>,
    ) {
        let outcome = match outcome {
            JobOutcome::Skipped(_) => return,
            JobOutcome::Synced => RunOutcome::Synced,
            JobOutcome::UserError(_) => RunOutcome::UserError,
            JobOutcome::OrgError(_) => RunOutcome::OrgError,
            JobOutcome::RetryAfter(_) => RunOutcome::Deferred,
            JobOutcome::Failed(_) => RunOutcome::Failed,
        };
        let run = SyncRun {
            org: job.org.clone(),
            mailbox: job.mailbox.clone(),
            started_at,
            finished_at: now(),
            outcome,
            counters: report.counters,
            pages: report.pages,
            error: failure,
        };
        if let Err(e) = self.stores.runs.record_run(&run).await {
            tracing::warn!(org = %job.org, mailbox = job.mailbox.key(), job_id = job.job_id, error = %e, "cannot record the sync run");
        }
    }

    async fn run_job_inner(
        &self,
        job: &SyncJob,
        deadline: Instant,
        report: &mut MailboxReport,
        failure: &mut Option<Failure>,
    ) -> JobOutcome {
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        let connection = match s.orgs.connection(org).await {
            Ok(c) => c,
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let (ConnectionStatus::Connected, Some(tenant), Some(app)) =
            (connection.status, connection.tenant_id, connection.app)
        else {
            let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
            return JobOutcome::Skipped("org not connected");
        };
        let user = match s.users.user(org, mailbox).await {
            Ok(u) if u.sync_enabled => u,
            Ok(_) | Err(DomainError::NotFound(_)) => {
                let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
                return JobOutcome::Skipped("user removed or sync switched off");
            }
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let t = now();
        match s
            .state
            .acquire_lease(org, mailbox, &job.job_id, plus(t, self.cfg.run_lease), t)
            .await
        {
            Ok(true) => {}
            Ok(false) => return JobOutcome::Skipped("another job holds the mailbox"),
            Err(e) => return JobOutcome::Failed(e.to_string()),
        }
        let backfill_since = self
            .cfg
            .backfill_days
            .map(|d| t - time::Duration::days(i64::from(d)));
        // What the org keeps out of its archive: read once per run.
        let policy = match s.orgs.capture_policy(org).await {
            Ok(p) => p,
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let mut retried = false;
        let mut link = match user.directory {
            Some(link) => link,
            None => match self.resolve(job, tenant, app).await {
                Ok(link) => link,
                Err(stop) => return self.stop(job, &connection, stop, report, failure).await,
            },
        };
        let mut folders = MailFolder::ALL.iter();
        while let Some(&folder) = folders.next() {
            let result = self
                .sync_folder(
                    job,
                    tenant,
                    app,
                    &link.object_id,
                    folder,
                    &policy,
                    backfill_since,
                    deadline,
                    report,
                )
                .await;
            match result {
                Ok(()) => {}
                // Graph does not know the user the stored id or links name (a user deleted and
                // re-created, or links from before mailboxes were addressed by id naming an
                // address that moved): look the email up again, once, drop the folders' links
                // (they name the old user) and start both folders fresh.
                Err(ref e) if resolve::is_user_not_found(e) && !retried => {
                    retried = true;
                    link = match self.resolve(job, tenant, app).await {
                        Ok(found) => found,
                        Err(stop) => {
                            return self.stop(job, &connection, stop, report, failure).await;
                        }
                    };
                    tracing::info!(org = %job.org, mailbox = job.mailbox.key(), "mailbox looked up again; its folders start over");
                    for folder in MailFolder::ALL {
                        if let Err(e) = self
                            .stores
                            .state
                            .clear_cursor(&job.org, &job.mailbox, folder)
                            .await
                        {
                            return JobOutcome::Failed(e.to_string());
                        }
                    }
                    folders = MailFolder::ALL.iter();
                }
                Err(stop) => return self.stop(job, &connection, stop, report, failure).await,
            }
        }
        if let Err(e) = s
            .users
            .record_sync(org, mailbox, &SyncState::Ok, now(), report.counters)
            .await
        {
            return JobOutcome::Failed(e.to_string());
        }
        let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
        JobOutcome::Synced
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_folder(
        &self,
        job: &SyncJob,
        tenant: o365_domain::ids::TenantId,
        app: o365_domain::connection::AppRegistration,
        user_id: &str,
        folder: MailFolder,
        policy: &CapturePolicy,
        backfill_since: Option<OffsetDateTime>,
        deadline: Instant,
        report: &mut MailboxReport,
    ) -> Result<(), Stop> {
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        let mut restarts = 0;
        let stored = s.state.cursor(org, mailbox, folder).await?;
        // After a 410 the folder is read again from scratch; whatever the archive holds in this
        // folder that the new round does not return was removed while the link was dead. The
        // round's start is persisted with every cursor of the round, so the reconciliation at
        // its end survives crashes and redeliveries: it compares each item's stored write time
        // with this instant instead of a set of ids held in memory.
        let mut resync_started_at = stored.as_ref().and_then(|c| c.resync_started_at);
        let mut link = stored.map(|c| c.link);
        // A first backfill (no cursor at all) archives nothing that exists: skip the look-ups.
        let mut fresh_round = link.is_none();
        loop {
            let request = DeltaRequest {
                tenant: &tenant,
                app,
                mailbox,
                user_id,
                folder,
                from: link.as_ref(),
                page_size: self.cfg.page_size,
                backfill_since: if link.is_none() { backfill_since } else { None },
                // Both of our apps hold Mail.Read or Mail.ReadWrite: bodies are allowed.
                include_body: self.cfg.include_bodies,
                deadline,
            };
            let mut page = match self.mail.delta_page(request).await {
                Ok(p) => p,
                Err(MicrosoftError::SyncStateExpired) if restarts < 2 => {
                    restarts += 1;
                    tracing::info!(org = %org, mailbox = mailbox.key(), folder = folder.well_known_name(), "delta link expired; resyncing the folder");
                    // The stored cursor is left alone: until the new round's first page is
                    // stored it still names the dead link, so a crash before then meets the
                    // same 410 and starts the round again. (A 410 in the middle of a resync
                    // round restarts it with a new start: what the abandoned part wrote is
                    // then older than the new round and reconciled like the rest.)
                    link = None;
                    resync_started_at = Some(now());
                    fresh_round = false;
                    continue;
                }
                Err(e) => return Err(Stop::Microsoft(e)),
            };
            report.pages += 1;
            // Kept out by the org's capture policy: never archived, only counted.
            let fetched = page.messages.len();
            page.messages.retain(|m| policy.admits(m));
            report.counters.skipped += (fetched - page.messages.len()) as u64;
            // "captured" is a message the archive never held; anything it already holds, live in
            // this folder or another or as a tombstone (a move's removal processed first), is
            // "updated". That costs one read per message, paid only outside a first backfill
            // (incremental rounds are small; a resync is rare), and only for counting: writes
            // are idempotent either way. A first backfill skips the reads and counts every
            // message as captured; the only message it can count twice is one moved between
            // the two folders' first rounds.
            if fresh_round {
                report.counters.captured += page.messages.len() as u64;
            } else {
                for m in &page.messages {
                    match s.archive.message(org, mailbox, &m.id).await? {
                        Some(_) => report.counters.updated += 1,
                        None => report.counters.captured += 1,
                    }
                }
            }
            report.counters.deleted += page
                .removals
                .iter()
                .filter(|r| r.reason == RemovalReason::Deleted)
                .count() as u64;
            // Within a resync round every write is stamped no earlier than the round's start,
            // whatever this host's clock says, so the round's own items never look stale.
            let at = match resync_started_at {
                Some(started) => now().max(started),
                None => now(),
            };
            if !page.messages.is_empty() || !page.removals.is_empty() {
                s.archive
                    .write_page(
                        org,
                        mailbox,
                        &page.messages,
                        &page.removals,
                        WriteStamp {
                            at,
                            keep_for: policy.keep_for(),
                        },
                    )
                    .await?;
            }
            let done = matches!(page.next, SyncLink::Delta(_));
            if done && let Some(started) = resync_started_at {
                // Reconcile BEFORE the round's end is saved: a crash here leaves the previous
                // page's link (and the marker) stored, the rerun replays the last page and
                // reconciles again (idempotent).
                self.reconcile(job, folder, started, report).await?;
            }
            // Only after the page is safely stored (and a resync reconciled) does the chain
            // move on.
            s.state
                .save_cursor(&MailboxCursor {
                    org: org.clone(),
                    mailbox: mailbox.clone(),
                    folder,
                    link: page.next.clone(),
                    saved_at: now(),
                    resync_started_at: if done { None } else { resync_started_at },
                })
                .await?;
            if done {
                return Ok(());
            }
            link = Some(page.next);
        }
    }

    /// Tombstones live messages of `folder` that a complete resync round, begun at `started`,
    /// did not return: every item the round returned was (re)written at or after `started`, so
    /// a live item of this folder stored earlier is one the round no longer saw. Messages older
    /// than the backfill window the round asked for are kept (the round could not return them).
    /// Removals are conditional on the folder, so a message moved meanwhile is left alone.
    async fn reconcile(
        &self,
        job: &SyncJob,
        folder: MailFolder,
        started: OffsetDateTime,
        report: &mut MailboxReport,
    ) -> Result<(), Stop> {
        let (org, mailbox) = (&job.org, &job.mailbox);
        // The round's first request was made at or after `started`, with a window ending no
        // later than this (a later window start only keeps more).
        let since = self
            .cfg
            .backfill_days
            .map(|d| started - time::Duration::days(i64::from(d)));
        let mut gone = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stores
                .archive
                .all_messages(
                    org,
                    mailbox,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            for item in page.items {
                if let StoredMessage::Live {
                    message, stored_at, ..
                } = item
                    && message.folder == folder
                    && stored_at.is_none_or(|t| t < started)
                    && since.is_none_or(|s| message.received_at.is_none_or(|r| r >= s))
                {
                    gone.push(o365_domain::message::MessageRemoval {
                        id: message.id,
                        folder,
                        reason: RemovalReason::Changed,
                    });
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        if !gone.is_empty() {
            tracing::info!(org = %org, mailbox = mailbox.key(), folder = folder.well_known_name(), removed = gone.len(), "resync reconciled");
            report.counters.deleted += gone.len() as u64;
            self.stores
                .archive
                .write_page(
                    org,
                    mailbox,
                    &[],
                    &gone,
                    WriteStamp::from(now().max(started)),
                )
                .await?;
        }
        Ok(())
    }

    async fn stop(
        &self,
        job: &SyncJob,
        connection: &Connection,
        stop: Stop,
        report: &MailboxReport,
        failure: &mut Option<Failure>,
    ) -> JobOutcome {
        match stop {
            Stop::Store(e) => JobOutcome::Failed(e.to_string()),
            Stop::Microsoft(e) => {
                self.microsoft_stop(job, connection, e, report, failure)
                    .await
            }
        }
    }

    async fn microsoft_stop(
        &self,
        job: &SyncJob,
        connection: &Connection,
        error: MicrosoftError,
        report: &MailboxReport,
        failure_out: &mut Option<Failure>,
    ) -> JobOutcome {
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        match error {
            MicrosoftError::Throttled { retry_after } => {
                // Keep the mailbox ours while the job waits on the queue.
                let t = now();
                let _ = s
                    .state
                    .acquire_lease(
                        org,
                        mailbox,
                        &job.job_id,
                        plus(t, retry_after + self.cfg.run_lease),
                        t,
                    )
                    .await;
                JobOutcome::RetryAfter(retry_after)
            }
            MicrosoftError::Unavailable { message } => {
                *failure_out = Some(Failure::new(
                    FailureCode::MicrosoftUnavailable,
                    None,
                    message.clone(),
                    now(),
                ));
                JobOutcome::Failed(message)
            }
            MicrosoftError::SyncStateExpired => {
                JobOutcome::Failed("the delta link kept expiring".into())
            }
            MicrosoftError::Refused {
                code,
                microsoft_code,
                message,
            } => {
                let failure = Failure::new(code, Some(&microsoft_code), message, now());
                *failure_out = Some(failure.clone());
                match code.scope() {
                    FailureScope::User => {
                        let state = SyncState::Error { cause: failure };
                        if let Err(e) = s
                            .users
                            .record_sync(org, mailbox, &state, now(), report.counters)
                            .await
                        {
                            return JobOutcome::Failed(e.to_string());
                        }
                        let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
                        JobOutcome::UserError(code)
                    }
                    FailureScope::Transient => JobOutcome::Failed(failure.message),
                    FailureScope::Org => {
                        if let Err(e) = self.fail_org(org, connection, failure).await {
                            return JobOutcome::Failed(e.to_string());
                        }
                        let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
                        JobOutcome::OrgError(code)
                    }
                }
            }
        }
    }

    /// Puts the org's connection in Error (once), with an audit event by the sync system.
    async fn fail_org(
        &self,
        org: &OrgId,
        seen: &Connection,
        failure: Failure,
    ) -> o365_domain::Result<()> {
        let mut before = seen.clone();
        for _ in 0..3 {
            if before.status != ConnectionStatus::Connected {
                return Ok(()); // Someone (maybe another mailbox of this org) already acted.
            }
            let after = Connection {
                status: ConnectionStatus::Error,
                last_error: Some(failure.clone()),
                version: before.version + 1,
                ..before.clone()
            };
            let audit = AuditEvent::new(
                org,
                now(),
                Actor::System("sync".into()),
                AuditAction::ConnectionFailed,
                "connection",
            )
            .change(Some(&before), Some(&after));
            match self.stores.orgs.save_connection(org, &after, audit).await {
                Ok(()) => {
                    tracing::warn!(org = %org, error_code = code_name(failure.code), microsoft_code = failure.microsoft_code.as_deref(), "org connection set to error by sync");
                    return Ok(());
                }
                Err(DomainError::Conflict(_)) => before = self.stores.orgs.connection(org).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
