//! What the domain needs from the outside world. Adapters live in other crates.
//!
//! Store conventions: every versioned write carries the *new* state with its version already
//! bumped; the store refuses it with [`DomainError::Conflict`] unless the stored version is the
//! one before. Each write commits its audit event in the same transaction.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::AuditEvent;
use crate::connection::AppRegistration;
use crate::connection::{Connection, ConnectionStatus};
use crate::consent::ConsentRequest;
use crate::error::Result;
use crate::ids::{Email, OrgId, TenantId};
use crate::mailbox::{Checkpoint, MailFolder, MailboxCursor, MailboxState, RunClaim};
use crate::message::{CapturedMessage, MessageRemoval, PageWriteSummary, StoredMessage};
use crate::page::{Page, PageRequest};
use crate::secret::{AppCredential, Freshness, Sensitive};
use crate::settings::IntegrationSettings;
use crate::user::{NewUser, Role, SyncState, SyncStateKind, User};

/// Most rows one all-or-nothing bulk change may carry (a DynamoDB transaction holds 100 writes,
/// one of which is the audit event).
pub const MAX_BULK_CHANGES: usize = 99;

#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Creates an org with its first admin, who is also its Primary user.
    async fn create_org(&self, org: &OrgId, first_admin: &NewUser, audit: AuditEvent)
    -> Result<()>;
    async fn settings(&self, org: &OrgId) -> Result<IntegrationSettings>;
    /// The settings with how many users have sync on (the count the org keeps) and how many
    /// of those are in error: the Connection Settings view, from one read of the org.
    async fn settings_and_counts(
        &self,
        org: &OrgId,
    ) -> Result<(IntegrationSettings, crate::user::SyncCounts)>;
    /// Saves settings and, in the same transaction, the connection change they imply.
    async fn save_settings(
        &self,
        org: &OrgId,
        settings: &IntegrationSettings,
        connection: Option<&Connection>,
        audit: AuditEvent,
    ) -> Result<()>;
    /// [`Connection::none`] when never written.
    async fn connection(&self, org: &OrgId) -> Result<Connection>;
    async fn save_connection(
        &self,
        org: &OrgId,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()>;
    /// What the org keeps out of its archive ([`CapturePolicy::default`] when never set).
    async fn capture_policy(&self, org: &OrgId) -> Result<crate::capture_policy::CapturePolicy>;
    /// Saves the policy, whose version is the stored one plus one (else `Conflict`), with its
    /// audit event.
    async fn save_capture_policy(
        &self,
        org: &OrgId,
        policy: &crate::capture_policy::CapturePolicy,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Deletes every state item of the org — settings, connection, capture policy, users, audit
    /// and run history, the positions and leases of `mailboxes`, its tenant claim — the org
    /// itself last. Idempotent. Its captured mail is the archive's (purge that first).
    async fn erase_org(&self, org: &OrgId, mailboxes: &[Email]) -> Result<()>;
    /// Orgs whose connection has `status` (e.g. every connected org, for the scheduled fan-out).
    async fn orgs_with_connection(
        &self,
        status: ConnectionStatus,
        page: PageRequest,
    ) -> Result<Page<OrgId>>;
}

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn add_user(&self, org: &OrgId, user: &NewUser, audit: AuditEvent) -> Result<User>;
    async fn user(&self, org: &OrgId, email: &Email) -> Result<User>;
    /// What a mailbox run needs of the user, in one read ([`crate::user::SyncSubject`]).
    async fn sync_subject(&self, org: &OrgId, email: &Email) -> Result<crate::user::SyncSubject>;
    async fn list_users(
        &self,
        org: &OrgId,
        state: Option<SyncStateKind>,
        page: PageRequest,
    ) -> Result<Page<User>>;
    /// Refuses to demote the last admin or the Primary user.
    async fn change_role(
        &self,
        org: &OrgId,
        email: &Email,
        role: Role,
        expected_version: u64,
        audit: AuditEvent,
    ) -> Result<User>;
    /// Refuses to remove the last admin or the Primary user.
    async fn remove_user(
        &self,
        org: &OrgId,
        email: &Email,
        expected_version: u64,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Atomically moves Primary to `email`, who must be an admin.
    async fn set_primary(&self, org: &OrgId, email: &Email, audit: AuditEvent) -> Result<()>;
    async fn primary(&self, org: &OrgId) -> Result<Option<Email>>;
    /// All or nothing: every row applies, or none does and each bad row is reported.
    async fn set_sync_enabled(
        &self,
        org: &OrgId,
        changes: &[(Email, bool)],
        audit: AuditEvent,
    ) -> Result<Vec<User>>;
    /// How many users have sync on and how many of those are in error, counted again from the
    /// users; the org's kept count is made exact (the fan-out, once a cycle, so a count a crash
    /// left stale lasts at most one cycle).
    async fn recount_sync(&self, org: &OrgId) -> Result<crate::user::SyncCounts>;
    /// Users whose sync is switched on (for the fan-out).
    async fn sync_enabled_users(&self, org: &OrgId, page: PageRequest) -> Result<Page<Email>>;
    /// Records (or clears) the directory user the email resolved to; leaves `version` alone.
    async fn set_directory_link(
        &self,
        org: &OrgId,
        email: &Email,
        link: Option<&crate::user::DirectoryLink>,
    ) -> Result<()>;
    /// Records a mailbox's sync state (what users see, and the status filter's index) when a run
    /// changed it; leaves `version` alone. A run that ends as it began writes nothing here.
    async fn set_sync_state(&self, org: &OrgId, email: &Email, state: &SyncState) -> Result<()>;
}

#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// One transaction: the request, the connection change it starts, its audit event. A
    /// refused change (e.g. a concurrent activation won) leaves no request behind.
    async fn start_round_trip(
        &self,
        request: &ConsentRequest,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()>;
    /// [`Self::start_round_trip`] that also binds `tenant` to the request's org. A tenant
    /// belongs to at most one org: a claim held by another org whose connection still names
    /// the tenant is [`RuleViolation::TenantInUse`](crate::RuleViolation); a claim left by an
    /// org whose connection moved on is taken over.
    async fn bind_tenant(
        &self,
        tenant: TenantId,
        request: &ConsentRequest,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Consumes the request: a second take of the same nonce, or an expired one, is `NotFound`.
    async fn take_consent_request(
        &self,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<ConsentRequest>;
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// For events that accompany no other write.
    async fn append(&self, event: AuditEvent) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, org: &OrgId, page: PageRequest) -> Result<Page<AuditEvent>>;
}

#[async_trait]
pub trait MailboxStateStore: Send + Sync {
    /// The mailbox's item in one read: lease and folder positions (empty when it has none).
    /// Damaged data is repaired as it is read, so the claims and commits that follow can land:
    /// a last mark that does not decode becomes one that counts every write before it, a claim
    /// that names no run goes, a deadline that is no time is set to 0 (passed). These repairs
    /// are the only writes a read makes.
    async fn mailbox(&self, org: &OrgId, mailbox: &Email) -> Result<MailboxState>;
    /// A folder's position (a convenience over [`Self::mailbox`]).
    async fn cursor(
        &self,
        org: &OrgId,
        mailbox: &Email,
        folder: MailFolder,
    ) -> Result<Option<MailboxCursor>> {
        Ok(self.mailbox(org, mailbox).await?.cursor(folder).cloned())
    }
    /// Claims the mailbox for one run (`claim.run`) before it archives anything, so that two
    /// runs never write one mailbox at once (SQS can deliver a job twice at the same time, and
    /// both deliveries hold its lease). Taken while `claim.holder` holds the lease, the
    /// mailbox's last commit is `claim.follows`, no other run's claim is running and the claim
    /// on the item is still `claim.found_claim`; `false` otherwise. Stores `claim.stopped_runs`
    /// (when not empty) with it. Ended by [`Self::finish_run`] or [`Self::end_claim`]; a crashed
    /// run's claim ends at `until` (past its invocation's end, long before the queue delivers
    /// the job again). [`Self::mailbox`] shows the claim and the stopped runs.
    /// A run that finds nothing to archive never claims: an unchanged mailbox's cycle stays at
    /// two writes.
    async fn claim_run(
        &self,
        org: &OrgId,
        mailbox: &Email,
        claim: &RunClaim,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Ends the run's claim (a run stopped before its finishing write). When it archived
    /// messages after its last commit, the run stays named on the item, so the next run records
    /// where it stopped (`MailboxState::stopped_runs`).
    async fn end_claim(
        &self,
        org: &OrgId,
        mailbox: &Email,
        run: &str,
        archived_since_commit: bool,
    ) -> Result<()>;
    /// Commits positions and their counts in one write while `holder` holds the lease, the
    /// mailbox's last commit is `progress.follows` and no other run's claim is running;
    /// `DomainError::Conflict` otherwise (another job, or another delivery of this one, has
    /// moved the mailbox on). A commit that already landed (a retried request) is a success.
    async fn checkpoint(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        progress: &Checkpoint,
    ) -> Result<()>;
    /// The run's last write: its remaining positions and counts, the time of the run, and the
    /// lease released (kept as the finished holder, so a fan-out that queued the job cannot
    /// lease the mailbox to it after it ran) and the run's claim ended. Under the same
    /// condition as [`Self::checkpoint`]:
    /// when it does not hold, nothing is written and the answer is `DomainError::Conflict` (the
    /// run that moved the mailbox on counts, from its own positions, what this one did not
    /// commit).
    async fn finish_run(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        progress: &Checkpoint,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// Sets a folder's position outside any run (operators, tests).
    async fn save_cursor(&self, cursor: &MailboxCursor) -> Result<()>;
    /// Forgets both folders' positions: the next run reads them from scratch.
    async fn clear_cursors(&self, org: &OrgId, mailbox: &Email) -> Result<()>;
    /// Takes the mailbox's lease unless another holder's lease is still running.
    async fn acquire_lease(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Ends the holder's lease, leaving the holder recorded as finished.
    async fn release_lease(&self, org: &OrgId, mailbox: &Email, holder: &str) -> Result<()>;
    /// The fan-out's lease for a job it has just queued: taken only if no lease runs and the
    /// job has not already run and finished (its worker may have been faster than this write).
    async fn lease_queued_job(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// The mailbox's lease running at `now`, if any (a read: no write).
    async fn lease_holder(
        &self,
        org: &OrgId,
        mailbox: &Email,
        now: OffsetDateTime,
    ) -> Result<Option<crate::mailbox::Lease>>;
}

#[async_trait]
pub trait MessageArchive: Send + Sync {
    /// Idempotent: writing a page twice leaves the same items. A removal applies only if the
    /// stored message still sits in the removal's folder, so a move processed in either order
    /// ends with the message live in its new folder.
    async fn write_page(
        &self,
        org: &OrgId,
        mailbox: &Email,
        messages: &[CapturedMessage],
        removals: &[MessageRemoval],
        stamp: crate::message::WriteStamp,
    ) -> Result<PageWriteSummary>;
    async fn message(
        &self,
        org: &OrgId,
        mailbox: &Email,
        id: &str,
    ) -> Result<Option<StoredMessage>>;
    /// A mailbox's messages matching `query`, newest first, without bodies.
    async fn list_messages(
        &self,
        org: &OrgId,
        mailbox: &Email,
        query: &crate::message::MessageQuery,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>>;
    /// Deletes up to `limit` archived items of a mailbox (tombstones included) and returns how
    /// many it deleted: 0 means the mailbox holds nothing any more. Repeatable and resumable.
    async fn purge_messages(&self, org: &OrgId, mailbox: &Email, limit: usize) -> Result<u64>;
    /// Deletes up to `limit` archived messages (any mailbox of the org) the person index names
    /// for `address`, with their index entries; returns which (mailbox, message id). Empty:
    /// nothing of the person is left.
    async fn erase_person(
        &self,
        org: &OrgId,
        address: &Email,
        limit: usize,
    ) -> Result<Vec<(Email, String)>>;
    /// The live messages of a mailbox with their folder, receipt and write times only (a
    /// resync's reconciliation: read from the listing index, never the bodies).
    async fn live_stamps(
        &self,
        org: &OrgId,
        mailbox: &Email,
        page: PageRequest,
    ) -> Result<Page<crate::message::ArchivedStamp>>;
    /// Which of `ids` the mailbox's archive holds (live or as a tombstone), with the mark each
    /// was first archived under (none on items from before marks), read without bodies — how a
    /// run tells a new message from an update.
    async fn held(
        &self,
        org: &OrgId,
        mailbox: &Email,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Option<crate::mailbox::WriteMark>>>;
    /// One message's stamp read consistently from the table (`None`: not live): the index
    /// behind [`Self::live_stamps`] lags writes, so a message it shows as stale is confirmed
    /// here before it is marked removed.
    async fn live_stamp(
        &self,
        org: &OrgId,
        mailbox: &Email,
        id: &str,
    ) -> Result<Option<crate::message::ArchivedStamp>>;
    /// Every mailbox of the org with archived items, including those of users since removed
    /// (a whole-archive read: for offboarding, not for requests).
    async fn archived_mailboxes(&self, org: &OrgId) -> Result<Vec<Email>>;
    /// Every item of a mailbox, tombstones included.
    async fn all_messages(
        &self,
        org: &OrgId,
        mailbox: &Email,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>>;
}

/// Our app credentials and the key that signs consent state.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn app_credential(
        &self,
        app: AppRegistration,
        freshness: Freshness,
    ) -> Result<AppCredential>;
    async fn state_signing_key(&self, freshness: Freshness) -> Result<Sensitive<Vec<u8>>>;
}

/// "Sync now" for one org.
#[async_trait]
pub trait SyncTrigger: Send + Sync {
    /// Queues a walk of the org's mailboxes for `request` (its jobs and runs carry the id).
    async fn sync_org_now(&self, org: &OrgId, request: &str) -> Result<()>;
}

/// The history of mailbox runs (kept for a while, then expired by TTL).
#[async_trait]
pub trait SyncRunLog: Send + Sync {
    async fn record_run(&self, run: &crate::sync_run::SyncRun) -> Result<()>;
    /// Opens `request` as the org's "sync now" request unless one opened after `joins_after`
    /// is still open; returns the open request's id (`request`, or the one it joins).
    /// `DomainError::NotFound` when the org does not exist.
    async fn open_sync_request(
        &self,
        org: &OrgId,
        request: &str,
        at: OffsetDateTime,
        joins_after: OffsetDateTime,
    ) -> Result<String>;
    /// Withdraws a request that could not be queued (only while it is the open one), so the
    /// next "sync now" is not joined to a walk that never started.
    async fn withdraw_sync_request(&self, org: &OrgId, request: &str) -> Result<()>;
    /// Newest first; only one "sync now" request's runs when `request` is given.
    async fn list_runs(
        &self,
        org: &OrgId,
        request: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<crate::sync_run::SyncRun>>;
}
