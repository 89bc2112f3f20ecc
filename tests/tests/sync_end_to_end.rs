//! The sync engine end to end: Microsoft simulator + real DynamoDB API (dynoxide) + (one test)
//! real SQS (moto). Every check compares the archive with the simulator's ground truth.

use o365_domain::message::WriteStamp;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ms_sim::*;
use o365_domain::audit::{Actor, AuditAction};
use o365_domain::connection::{AppRegistration, Connection, ConnectionStatus};
use o365_domain::failure::FailureCode;
use o365_domain::ids::{Email, OrgId, TenantId};
use o365_domain::mailbox::{MailFolder, MailboxCursor};
use o365_domain::message::{CapturedMessage, MessageRemoval, PageWriteSummary, StoredMessage};
use o365_domain::microsoft::{DeltaPage, DeltaRequest, MailSource, MicrosoftError};
use o365_domain::page::PageRequest;
use o365_domain::ports::{
    AuditLog, MailboxStateStore, MessageArchive, OrgStore, SyncRunLog, UserStore,
};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_domain::sync_run::{RunOutcome, SyncRun};
use o365_domain::user::{MessageCounters, NewUser, SyncState};
use o365_domain::{DomainError, Result as DResult};
use o365_e2e::{StoreFixture, audit};
use o365_msgraph::{GraphClient, GraphConfig};
use o365_secrets::LocalSecretStore;
use o365_store_dynamodb::DynamoStore;
use o365_sync_engine::{
    FanOutJob, JobOutcome, JobQueue, QueueRecord, Stores, SyncConfig, SyncEngine, SyncJob,
};
use time::OffsetDateTime;

/// Jobs kept in memory (the SQS adapter has its own test against moto).
#[derive(Default)]
struct MemQueue {
    jobs: Mutex<Vec<SyncJob>>,
    walks: Mutex<Vec<FanOutJob>>,
    delayed: Mutex<Vec<(String, Duration)>>,
}

#[async_trait]
impl JobQueue for MemQueue {
    async fn send(&self, jobs: &[SyncJob]) -> DResult<Vec<usize>> {
        self.jobs.lock().unwrap().extend_from_slice(jobs);
        Ok(vec![])
    }
    async fn send_fan_out(&self, job: &FanOutJob) -> DResult<()> {
        self.walks.lock().unwrap().push(job.clone());
        Ok(())
    }
    async fn retry_later(&self, receipt: &str, delay: Duration) -> DResult<()> {
        self.delayed
            .lock()
            .unwrap()
            .push((receipt.to_owned(), delay));
        Ok(())
    }
}

impl MemQueue {
    fn take(&self) -> Vec<SyncJob> {
        std::mem::take(&mut *self.jobs.lock().unwrap())
    }
}

fn records(jobs: &[SyncJob]) -> Vec<QueueRecord> {
    jobs.iter()
        .map(|j| QueueRecord {
            message_id: j.job_id.clone(),
            receipt_handle: format!("rh-{}", j.job_id),
            body: serde_json::to_string(j).unwrap(),
        })
        .collect()
}

struct World {
    sim: Simulator,
    _fixture: StoreFixture,
    store: Arc<DynamoStore>,
    tenant: TenantInfo,
    org: OrgId,
    users: Vec<String>,
    graph: GraphClient,
    queue: Arc<MemQueue>,
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        page_size: 25,
        backfill_days: Some(365),
        ..Default::default()
    }
}

async fn world(mailboxes: usize, inbox: u32, sent: u32) -> World {
    let sim = Simulator::start(SimConfig {
        history_days: 30,
        ..Default::default()
    })
    .await
    .unwrap();
    let ms_sim::ConsentedApp {
        tenant,
        app,
        secret,
    } = sim
        .consented_app("contoso.com", &["Mail.ReadWrite", "User.Read.All"])
        .unwrap();
    let fixture = StoreFixture::dynoxide().await;
    let store = Arc::new(fixture.store.clone());
    let org = o365_e2e::org("acme");
    store
        .create_org(
            &org,
            &NewUser::parse("root@contoso.com", "Root", "admin").unwrap(),
            audit(&org, AuditAction::OrgCreated, "org"),
        )
        .await
        .unwrap();
    connect(&store, &org, tenant.id).await;
    let mut users = Vec::new();
    for i in 0..mailboxes {
        let name = format!("user{i:03}");
        sim.create_user(
            tenant.id,
            UserSpec {
                user_name: name.clone(),
                mailbox: Some(MailboxSpec {
                    inbox,
                    sentitems: sent,
                }),
                ..Default::default()
            },
        )
        .unwrap();
        users.push(format!("{name}@contoso.com"));
    }
    enable(&store, &org, &users).await;
    let cred = AppCredential {
        client_id: app.client_id.to_string(),
        credential: ClientCredential::Secret(Sensitive::new(secret.value.clone())),
    };
    let secrets = Arc::new(LocalSecretStore::new(cred.clone(), cred, vec![1; 32]).unwrap());
    let graph = GraphClient::new(
        GraphConfig {
            authority_url: sim.authority().to_owned(),
            graph_base_url: sim.graph_url(),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        secrets,
    );
    World {
        sim,
        _fixture: fixture,
        store,
        tenant,
        org,
        users,
        graph,
        queue: Arc::new(MemQueue::default()),
    }
}

async fn connect(store: &DynamoStore, org: &OrgId, tenant: uuid::Uuid) {
    let before = store.connection(org).await.unwrap();
    let c = Connection {
        status: ConnectionStatus::Connected,
        tenant_id: Some(TenantId::parse(&tenant.to_string()).unwrap()),
        app: Some(AppRegistration::Default),
        activated_by: Some(Email::parse("root@contoso.com").unwrap()),
        granted_by: Some(o365_domain::connection::MicrosoftAccount {
            object_id: "root".into(),
            user_principal_name: Some("root@contoso.com".into()),
        }),
        granted_at: Some(OffsetDateTime::now_utc()),
        last_verified_at: Some(OffsetDateTime::now_utc()),
        last_error: None,
        attempt: None,
        pending_until: None,
        version: before.version + 1,
    };
    store
        .save_connection(
            org,
            &c,
            audit(org, AuditAction::ConnectionVerified, "connection"),
        )
        .await
        .unwrap();
}

async fn enable(store: &DynamoStore, org: &OrgId, users: &[String]) {
    for u in users {
        store
            .add_user(
                org,
                &NewUser::parse(u, "Someone", "member").unwrap(),
                audit(org, AuditAction::UserAdded, u),
            )
            .await
            .unwrap();
    }
    let changes: Vec<(Email, bool)> = users
        .iter()
        .map(|u| (Email::parse(u).unwrap(), true))
        .collect();
    for chunk in changes.chunks(50) {
        store
            .set_sync_enabled(org, chunk, audit(org, AuditAction::SyncToggled, "users"))
            .await
            .unwrap();
    }
}

impl World {
    fn engine_with(&self, stores: Stores, mail: Arc<dyn MailSource>) -> Arc<SyncEngine> {
        Arc::new(SyncEngine::new(
            stores,
            mail,
            Arc::new(self.graph.clone()),
            self.queue.clone(),
            sync_config(),
        ))
    }
    fn engine(&self) -> Arc<SyncEngine> {
        self.engine_with(
            Stores::single(self.store.clone()),
            Arc::new(self.graph.clone()),
        )
    }

    /// Enqueue every mailbox and run the jobs; jobs that must retry are rerun (same job ids,
    /// as SQS redelivery would) up to `rounds` times. Returns the final outcomes.
    async fn sync_all(&self, engine: &Arc<SyncEngine>, rounds: usize) -> Vec<(String, JobOutcome)> {
        engine.enqueue_all().await.unwrap();
        let mut jobs = self.queue.take();
        let mut done = Vec::new();
        for _ in 0..rounds {
            let mut again = Vec::new();
            for chunk in jobs.chunks(10) {
                let report = engine
                    .handle_batch(records(chunk), Instant::now() + Duration::from_secs(60))
                    .await;
                for (id, outcome) in report.outcomes {
                    let job = chunk.iter().find(|j| j.job_id == id).unwrap().clone();
                    match outcome {
                        JobOutcome::Failed(_) | JobOutcome::RetryAfter(_) | JobOutcome::Busy(_) => {
                            again.push(job)
                        }
                        o => done.push((job.mailbox.key().to_owned(), o)),
                    }
                }
            }
            if again.is_empty() {
                return done;
            }
            jobs = again;
        }
        panic!("{} jobs did not converge", jobs.len());
    }

    /// The archive's live messages equal the simulator's, folder and change key included.
    async fn assert_matches_truth(&self) {
        for u in &self.users {
            let email = Email::parse(u).unwrap();
            let mut truth = BTreeMap::new();
            for (f, folder) in [
                (Folder::Inbox, MailFolder::Inbox),
                (Folder::SentItems, MailFolder::SentItems),
            ] {
                for m in self.sim.live_messages(u, f).unwrap() {
                    assert!(
                        truth
                            .insert(m.immutable_id.clone(), (folder, m.change_key.clone()))
                            .is_none()
                    );
                }
            }
            let mut stored = BTreeMap::new();
            let mut after = None;
            loop {
                let page = self
                    .store
                    .all_messages(&self.org, &email, PageRequest { limit: 200, after })
                    .await
                    .unwrap();
                for item in page.items {
                    if let StoredMessage::Live { message, .. } = item {
                        assert!(
                            stored
                                .insert(
                                    message.id.clone(),
                                    (
                                        message.folder,
                                        message.change_key.clone().unwrap_or_default()
                                    )
                                )
                                .is_none(),
                            "duplicate"
                        );
                    }
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let missing: Vec<_> = truth
                .iter()
                .filter(|(k, _)| !stored.contains_key(*k))
                .collect();
            let extra: Vec<_> = stored
                .iter()
                .filter(|(k, _)| !truth.contains_key(*k))
                .collect();
            assert_eq!(
                stored.len(),
                truth.len(),
                "{u}: live count; missing {missing:?}; extra {extra:?}"
            );
            assert!(stored == truth, "{u}: archive differs from ground truth");
        }
    }

    /// Adds, updates, deletes and moves in every mailbox.
    fn churn(&self, round: u64) {
        for (i, u) in self.users.iter().enumerate() {
            let inbox = self.sim.live_messages(u, Folder::Inbox).unwrap();
            let sent = self.sim.live_messages(u, Folder::SentItems).unwrap();
            let pick = |v: &Vec<TruthMessage>, k: usize| {
                v[(k * 7 + i + round as usize) % v.len()]
                    .immutable_id
                    .clone()
            };
            self.sim.add_messages(u, Folder::Inbox, 3).unwrap();
            self.sim.add_messages(u, Folder::SentItems, 1).unwrap();
            self.sim
                .update_message(
                    &pick(&inbox, 0),
                    MessagePatch {
                        subject: Some(format!("edited {round}")),
                        categories: Some(vec!["Red".into()]),
                        ..Default::default()
                    },
                )
                .unwrap();
            self.sim.delete_message(&pick(&inbox, 1)).unwrap();
            self.sim
                .move_message(&pick(&inbox, 2), Folder::SentItems)
                .unwrap();
            self.sim
                .move_message(&pick(&inbox, 3), Folder::Archive)
                .unwrap();
            self.sim
                .move_message(&pick(&sent, 0), Folder::Inbox)
                .unwrap();
            self.sim.delete_message(&pick(&sent, 1)).unwrap();
        }
    }

    /// The org's recorded runs, newest first.
    async fn runs(&self) -> Vec<SyncRun> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_runs(&self.org, None, PageRequest { limit: 100, after })
                .await
                .unwrap();
            all.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    fn delta_requests(&self) -> u64 {
        self.sim.request_count(Endpoint::GraphDelta, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_backfill_churn_and_idle_runs_match_ground_truth() {
    let w = world(20, 60, 40).await;
    let engine = w.engine();
    let outcomes = w.sync_all(&engine, 3).await;
    assert_eq!(outcomes.len(), 20);
    assert!(
        outcomes.iter().all(|(_, o)| *o == JobOutcome::Synced),
        "{outcomes:?}"
    );
    w.assert_matches_truth().await;
    let user = w
        .store
        .user(&w.org, &Email::parse(&w.users[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(user.state, SyncState::Ok);
    assert_eq!(user.counters.captured, 100);
    // One run recorded per mailbox, with its counters.
    let runs = w.runs().await;
    assert_eq!(runs.len(), 20);
    for r in &runs {
        assert_eq!(r.outcome, RunOutcome::Synced, "{r:?}");
        assert_eq!(
            r.counters,
            MessageCounters {
                captured: 100,
                updated: 0,
                deleted: 0,
                skipped: 0,
            }
        );
        // 60 inbox + 40 sent in pages of 25: 3 + 2 pages.
        assert_eq!(r.pages, 5);
        assert!(r.error.is_none() && r.started_at <= r.finished_at);
    }

    w.churn(1);
    w.sync_all(&engine, 3).await;
    w.assert_matches_truth().await;
    // Per mailbox: 4 new messages; 1 edit and 2 moves between the folders, whichever folder
    // runs first (a move is a message already archived: updated, never captured); 2 deleted
    // (the move to Archive is a removal but no deletion).
    let runs = w.runs().await;
    assert_eq!(runs.len(), 40);
    let churned = runs.iter().find(|r| r.mailbox.key() == w.users[0]).unwrap();
    assert_eq!(
        (churned.outcome, churned.counters),
        (
            RunOutcome::Synced,
            MessageCounters {
                captured: 4,
                updated: 3,
                deleted: 2,
                skipped: 0,
            }
        )
    );
    let user = w
        .store
        .user(&w.org, &Email::parse(&w.users[0]).unwrap())
        .await
        .unwrap();
    assert_eq!((user.counters.captured, user.counters.updated), (104, 3));

    // Nothing changed: exactly one Graph request per folder, and the whole cycle (fan-out and
    // worker) writes twice per mailbox, counted at the DynamoDB API: the fan-out's lease and
    // the worker's one finishing write (both positions, the run's time, the lease released).
    let before = w.delta_requests();
    let calls_before = w._fixture.calls.snapshot();
    w.sync_all(&engine, 1).await;
    assert_eq!(w.delta_requests() - before, 2 * 20);
    let calls = w._fixture.calls.since(&calls_before);
    assert_eq!(
        o365_local_stack::DynamoCalls::writes(&calls),
        2 * 20,
        "an idle cycle's writes: {calls:?}"
    );
    assert_eq!(calls.get("UpdateItem"), Some(&40), "{calls:?}");
    assert_eq!(
        w.runs().await.len(),
        40,
        "an idle run costs no history write"
    );
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
}

/// Fails the Nth call made through it (Graph or DynamoDB), once.
struct Crashy {
    store: Arc<DynamoStore>,
    graph: GraphClient,
    calls: AtomicU64,
    fail_at: AtomicU64,
    /// When set, the next page with messages is written whole, the run then crashes, and
    /// Graph's pages leave `hide_after_crash` of its messages out from then on (`hidden`):
    /// Microsoft replaying the page without them.
    crash_after_archive: AtomicBool,
    hide_after_crash: AtomicUsize,
    hidden: Mutex<Vec<String>>,
}

impl Crashy {
    fn tick(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        n == self.fail_at.load(Ordering::SeqCst)
    }
    fn boom() -> DomainError {
        DomainError::Unavailable("injected crash".into())
    }
}

#[async_trait]
impl MailSource for Crashy {
    async fn delta_page(&self, r: DeltaRequest<'_>) -> Result<DeltaPage, MicrosoftError> {
        if self.tick() {
            return Err(MicrosoftError::Unavailable {
                message: "injected crash".into(),
            });
        }
        let mut page = self.graph.delta_page(r).await;
        if let Ok(page) = &mut page {
            let hidden = self.hidden.lock().unwrap();
            page.messages.retain(|m| !hidden.contains(&m.id));
        }
        // A crash right after Microsoft answered: the page is lost.
        if self.tick() {
            return Err(MicrosoftError::Unavailable {
                message: "injected crash".into(),
            });
        }
        page
    }
}

#[async_trait]
impl MailboxStateStore for Crashy {
    async fn mailbox(&self, o: &OrgId, m: &Email) -> DResult<o365_domain::mailbox::MailboxState> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.mailbox(o, m).await
    }
    async fn claim_run(
        &self,
        o: &OrgId,
        m: &Email,
        c: &o365_domain::mailbox::RunClaim,
        u: OffsetDateTime,
        n: OffsetDateTime,
    ) -> DResult<bool> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.claim_run(o, m, c, u, n).await
    }
    async fn end_claim(&self, o: &OrgId, m: &Email, r: &str, archived: bool) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.end_claim(o, m, r, archived).await
    }
    async fn checkpoint(
        &self,
        o: &OrgId,
        m: &Email,
        h: &str,
        p: &o365_domain::mailbox::Checkpoint,
    ) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.checkpoint(o, m, h, p).await
    }
    async fn finish_run(
        &self,
        o: &OrgId,
        m: &Email,
        h: &str,
        p: &o365_domain::mailbox::Checkpoint,
        at: OffsetDateTime,
    ) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.finish_run(o, m, h, p, at).await
    }
    async fn save_cursor(&self, c: &MailboxCursor) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.save_cursor(c).await
    }
    async fn clear_cursors(&self, o: &OrgId, m: &Email) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.clear_cursors(o, m).await
    }
    async fn acquire_lease(
        &self,
        o: &OrgId,
        m: &Email,
        h: &str,
        u: OffsetDateTime,
        n: OffsetDateTime,
    ) -> DResult<bool> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.acquire_lease(o, m, h, u, n).await
    }
    async fn release_lease(&self, o: &OrgId, m: &Email, h: &str) -> DResult<()> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.release_lease(o, m, h).await
    }
    async fn lease_queued_job(
        &self,
        o: &OrgId,
        m: &Email,
        h: &str,
        u: OffsetDateTime,
        n: OffsetDateTime,
    ) -> DResult<bool> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.lease_queued_job(o, m, h, u, n).await
    }
    async fn lease_holder(
        &self,
        o: &OrgId,
        m: &Email,
        n: OffsetDateTime,
    ) -> DResult<Option<o365_domain::mailbox::Lease>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.lease_holder(o, m, n).await
    }
}

#[async_trait]
impl MessageArchive for Crashy {
    async fn write_page(
        &self,
        o: &OrgId,
        m: &Email,
        msgs: &[CapturedMessage],
        rem: &[MessageRemoval],
        at: WriteStamp,
    ) -> DResult<PageWriteSummary> {
        if self.tick() {
            return Err(Self::boom());
        }
        if !msgs.is_empty() && self.crash_after_archive.swap(false, Ordering::SeqCst) {
            self.store.write_page(o, m, msgs, rem, at).await?;
            let hide = self.hide_after_crash.load(Ordering::SeqCst);
            *self.hidden.lock().unwrap() = msgs.iter().take(hide).map(|m| m.id.clone()).collect();
            return Err(Self::boom());
        }
        // Half a page written, then the crash.
        if self.tick() {
            let half = &msgs[..msgs.len() / 2];
            self.store.write_page(o, m, half, &[], at).await?;
            return Err(Self::boom());
        }
        self.store.write_page(o, m, msgs, rem, at).await
    }
    async fn message(&self, o: &OrgId, m: &Email, id: &str) -> DResult<Option<StoredMessage>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.message(o, m, id).await
    }
    async fn list_messages(
        &self,
        o: &OrgId,
        m: &Email,
        q: &o365_domain::message::MessageQuery,
        p: PageRequest,
    ) -> DResult<o365_domain::page::Page<StoredMessage>> {
        self.store.list_messages(o, m, q, p).await
    }
    async fn purge_messages(&self, o: &OrgId, m: &Email, limit: usize) -> DResult<u64> {
        self.store.purge_messages(o, m, limit).await
    }
    async fn erase_person(
        &self,
        o: &OrgId,
        a: &Email,
        limit: usize,
    ) -> DResult<Vec<(Email, String)>> {
        self.store.erase_person(o, a, limit).await
    }
    async fn live_stamps(
        &self,
        o: &OrgId,
        m: &Email,
        p: PageRequest,
    ) -> DResult<o365_domain::page::Page<o365_domain::message::ArchivedStamp>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.live_stamps(o, m, p).await
    }
    async fn held(
        &self,
        o: &OrgId,
        m: &Email,
        ids: &[String],
    ) -> DResult<std::collections::HashMap<String, Option<o365_domain::mailbox::WriteMark>>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.held(o, m, ids).await
    }
    async fn live_stamp(
        &self,
        o: &OrgId,
        m: &Email,
        id: &str,
    ) -> DResult<Option<o365_domain::message::ArchivedStamp>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.live_stamp(o, m, id).await
    }
    async fn archived_mailboxes(&self, o: &OrgId) -> DResult<Vec<Email>> {
        self.store.archived_mailboxes(o).await
    }
    async fn all_messages(
        &self,
        o: &OrgId,
        m: &Email,
        p: PageRequest,
    ) -> DResult<o365_domain::page::Page<StoredMessage>> {
        if self.tick() {
            return Err(Self::boom());
        }
        self.store.all_messages(o, m, p).await
    }
}

impl World {
    /// `added` new messages in the first user's inbox, and one of its older messages edited.
    fn new_mail_and_one_edit(&self, added: u32) {
        let inbox = self
            .sim
            .live_messages(&self.users[0], Folder::Inbox)
            .unwrap();
        self.sim
            .add_messages(&self.users[0], Folder::Inbox, added)
            .unwrap();
        self.sim
            .update_message(
                &inbox[0].immutable_id,
                MessagePatch {
                    subject: Some("edited".into()),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// The first user's counts of new and updated messages, as its status shows them.
    async fn first_user_counts(&self) -> (u64, u64) {
        let email = Email::parse(&self.users[0]).unwrap();
        let counters = self.store.user(&self.org, &email).await.unwrap().counters;
        (counters.captured, counters.updated)
    }

    /// As if the run leases had timed out: a crash at a run's very end (its lease release) only
    /// keeps the mailbox out of the next fan-outs until the lease expires, which a test cannot
    /// wait for.
    async fn expire_leases(&self) {
        let later = OffsetDateTime::now_utc() + time::Duration::hours(2);
        for u in &self.users {
            let mbx = Email::parse(u).unwrap();
            assert!(
                self.store
                    .acquire_lease(&self.org, &mbx, "test", later, later)
                    .await
                    .unwrap()
            );
            self.store
                .release_lease(&self.org, &mbx, "test")
                .await
                .unwrap();
        }
    }

    fn crashy_engine(&self) -> (Arc<Crashy>, Arc<SyncEngine>) {
        let crashy = Arc::new(Crashy {
            store: self.store.clone(),
            graph: self.graph.clone(),
            calls: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            crash_after_archive: AtomicBool::new(false),
            hide_after_crash: AtomicUsize::new(0),
            hidden: Mutex::default(),
        });
        let stores = Stores {
            orgs: self.store.clone(),
            users: self.store.clone(),
            state: crashy.clone(),
            archive: crashy.clone(),
            runs: self.store.clone(),
        };
        let engine = self.engine_with(stores, crashy.clone());
        (crashy, engine)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_many_points_then_rerun_converges() {
    let w = world(3, 30, 20).await;
    let (crashy, engine) = w.crashy_engine();
    // Deterministic "random" crash points over the first ~80 calls of a run: 56 runs here and
    // 45 in the resync test below make the hundred crash points.
    let mut seed = 0x9E37_79B9u64;
    for round in 0..56u64 {
        if round > 0 {
            w.churn(round);
        }
        // Dead delta links: the crashed run may be in the middle of a resync round.
        if round == 7 {
            w.sim
                .expire_delta_tokens(Some(&w.users[0]), Some(Folder::Inbox))
                .unwrap();
        }
        if round == 11 || round == 30 || round == 45 {
            w.sim.expire_delta_tokens(None, None).unwrap();
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        crashy.calls.store(0, Ordering::SeqCst);
        crashy
            .fail_at
            .store(1 + (seed >> 33) % 80, Ordering::SeqCst);
        // The crashed job is redelivered (same job id) and must finish the work.
        w.expire_leases().await;
        let outcomes = w.sync_all(&engine, 4).await;
        if outcomes.len() < w.users.len() {
            // The crash hit the fan-out itself, so a mailbox was never queued: the next
            // scheduled fan-out is its rerun.
            w.expire_leases().await;
            w.sync_all(&engine, 4).await;
        }
        w.assert_matches_truth().await;
    }
}

/// A 410 and then a crash at every single call of the resync run: the rerun (a redelivery of the
/// same job) resumes the resync round and still removes what vanished while the link was dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_resync_after_410_killed_at_every_point_converges() {
    let w = world(1, 30, 15).await;
    let (crashy, engine) = w.crashy_engine();
    w.sync_all(&engine, 1).await;
    // How many calls one resync run makes here, uncrashed.
    w.churn(1);
    w.sim.expire_delta_tokens(None, None).unwrap();
    crashy.calls.store(0, Ordering::SeqCst);
    crashy.fail_at.store(u64::MAX, Ordering::SeqCst);
    w.expire_leases().await;
    w.sync_all(&engine, 1).await;
    let calls = crashy.calls.load(Ordering::SeqCst);
    assert!(calls > 20, "{calls}");
    let mut crashed = 0;
    let mut points = 0;
    // The first calls are the fan-out's (a crash there enqueues nothing: the next schedule's
    // job); from call 2 on, every other call of the worker's run.
    for fail_at in (2..=calls).step_by(2) {
        points += 1;
        w.churn(fail_at);
        w.sim.expire_delta_tokens(None, None).unwrap();
        crashy.calls.store(0, Ordering::SeqCst);
        crashy.fail_at.store(fail_at, Ordering::SeqCst);
        w.expire_leases().await;
        w.sync_all(&engine, 3).await;
        crashed += u64::from(crashy.calls.load(Ordering::SeqCst) >= fail_at);
        w.assert_matches_truth().await;
    }
    // The crash points fell inside the resync runs, not after them.
    assert!(crashed * 10 >= points * 8, "{crashed} of {points}");
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_survives_a_429_storm_with_503s_and_resets() {
    let w = world(4, 50, 25).await;
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                throttle: Some(FaultRule::probability(0.5).with_retry_after(0.02)),
                unavailable: Some(FaultRule::probability(0.1)),
                gateway_timeout: Some(FaultRule::probability(0.03)),
                reset_mid_body: Some(FaultRule::probability(0.05)),
                truncated_json: Some(FaultRule::probability(0.03)),
                latency_ms: None,
            },
        )
        .unwrap();
    let engine = w.engine();
    w.sync_all(&engine, 10).await;
    w.churn(1);
    w.sync_all(&engine, 10).await;
    w.sim.clear_faults();
    w.assert_matches_truth().await;
    assert!(w.graph.stats().throttled > 10);
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
    for u in &w.users {
        assert!(w.sim.max_in_flight(u).unwrap() <= 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_expired_delta_token_resyncs_the_folder_without_duplicates() {
    let w = world(2, 40, 10).await;
    let engine = w.engine();
    w.sync_all(&engine, 2).await;
    w.churn(1);
    w.sim
        .expire_delta_tokens(Some(&w.users[0]), Some(Folder::Inbox))
        .unwrap();
    w.sim.expire_delta_tokens(Some(&w.users[1]), None).unwrap();
    let before = w.delta_requests();
    let outcomes = w.sync_all(&engine, 2).await;
    assert!(outcomes.iter().all(|(_, o)| *o == JobOutcome::Synced));
    // 410 then a full round of the folder (pages of 25).
    assert!(w.delta_requests() - before > 4);
    w.assert_matches_truth().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_a_throttle_longer_than_the_invocation_goes_back_to_the_queue() {
    let w = world(1, 5, 0).await;
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                throttle: Some(FaultRule::every(1).with_retry_after(120.0)),
                ..Default::default()
            },
        )
        .unwrap();
    let engine = w.engine();
    engine.enqueue_all().await.unwrap();
    let jobs = w.queue.take();
    let report = engine
        .handle_batch(records(&jobs), Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(report.failed, vec![jobs[0].job_id.clone()]);
    let delayed = w.queue.delayed.lock().unwrap().clone();
    assert_eq!(delayed.len(), 1);
    assert!(delayed[0].1 > Duration::from_secs(100), "{delayed:?}");
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].outcome, runs[0].pages, runs[0].error.is_none()),
        (RunOutcome::Deferred, 0, true)
    );
    // The mailbox stays leased by the delayed job: the next fan-out skips it.
    let again = engine.enqueue_org(&w.org).await.unwrap();
    assert_eq!((again.enqueued, again.skipped_leased), (0, 1));
    assert!(w.sim.violations().is_empty());
}

/// A queue whose second send never returns: the fan-out is stopped there, as a killed
/// invocation would be.
#[derive(Default)]
struct StallingQueue {
    sent: Mutex<Vec<SyncJob>>,
}

#[async_trait]
impl JobQueue for StallingQueue {
    async fn send(&self, jobs: &[SyncJob]) -> DResult<Vec<usize>> {
        if !self.sent.lock().unwrap().is_empty() {
            std::future::pending::<()>().await;
        }
        self.sent.lock().unwrap().extend_from_slice(jobs);
        Ok(vec![])
    }
    async fn send_fan_out(&self, _: &FanOutJob) -> DResult<()> {
        Ok(())
    }
    async fn retry_later(&self, _: &str, _: Duration) -> DResult<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_killed_halfway_leaves_no_lease_without_a_job() {
    let w = world(25, 1, 0).await;
    let queue = Arc::new(StallingQueue::default());
    let engine = Arc::new(SyncEngine::new(
        Stores::single(w.store.clone()),
        Arc::new(w.graph.clone()),
        Arc::new(w.graph.clone()),
        queue.clone(),
        sync_config(),
    ));
    let killed = tokio::time::timeout(Duration::from_secs(2), engine.enqueue_org(&w.org)).await;
    assert!(killed.is_err(), "the fan-out was stopped mid-way");
    let sent: Vec<String> = queue
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(sent.len(), 10, "the first chunk went out");
    let mut leased = 0;
    for u in &w.users {
        let mailbox = Email::parse(u).unwrap();
        if let Some(holder) = w
            .store
            .lease_holder(&w.org, &mailbox, OffsetDateTime::now_utc())
            .await
            .unwrap()
        {
            leased += 1;
            assert!(
                sent.contains(&holder.holder),
                "{u} is leased to a job never queued"
            );
        }
    }
    assert_eq!(leased, 10);
    // The next fan-out queues the rest and skips what is already queued.
    let next = w.engine().enqueue_org(&w.org).await.unwrap();
    assert_eq!((next.enqueued, next.skipped_leased), (15, 10));
}

/// A mailbox that needs far longer than one invocation: each invocation stops before the page
/// its deadline would not allow, hands the rest back as a continuation, and the chain of
/// invocations ends with exactly the mailbox (nothing lost, nothing counted twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_longer_than_an_invocation_finishes_over_several() {
    let w = world(1, 150, 100).await;
    // Every Graph request takes 60 ms; an invocation gets 200 ms: a few pages each.
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                latency_ms: Some(60),
                ..Default::default()
            },
        )
        .unwrap();
    let engine = w.engine();
    engine.enqueue_all().await.unwrap();
    let mut jobs = w.queue.take();
    let first_job = jobs[0].job_id.clone();
    let mut invocations = 0;
    while !jobs.is_empty() {
        invocations += 1;
        assert!(invocations < 100, "no progress");
        let report = engine
            .handle_batch(records(&jobs), Instant::now() + Duration::from_millis(200))
            .await;
        assert!(report.failed.is_empty(), "{:?}", report.outcomes);
        jobs = w.queue.take();
        // A continuation is the same job: it keeps the mailbox's lease.
        assert!(jobs.iter().all(|j| j.job_id == first_job));
        if jobs.is_empty() {
            assert_eq!(report.outcomes[0].1, JobOutcome::Synced);
        } else {
            assert_eq!(report.outcomes[0].1, JobOutcome::Continued);
            // Meanwhile the schedule's fan-out leaves the leased mailbox alone.
            assert_eq!(engine.enqueue_org(&w.org).await.unwrap().enqueued, 0);
        }
    }
    assert!(invocations >= 3, "took {invocations} invocations");
    w.assert_matches_truth().await;
    let user = w
        .store
        .user(&w.org, &Email::parse(&w.users[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(user.counters.captured, 250, "each message counted once");
    let runs = w.runs().await;
    // Every hand-back is in the history; the last run too, unless it found nothing left.
    assert_eq!(
        runs.iter()
            .filter(|r| r.outcome == RunOutcome::Continued)
            .count(),
        invocations - 1
    );
    assert!(w.sim.violations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_error_classes_land_on_the_user_or_the_org() {
    let w = world(1, 5, 5).await;
    let t = w.tenant.id;
    w.sim
        .create_user(
            t,
            UserSpec {
                user_name: "unlicensed".into(),
                licensed: false,
                ..Default::default()
            },
        )
        .unwrap();
    w.sim
        .create_user(
            t,
            UserSpec {
                user_name: "excluded".into(),
                access_policy_excluded: true,
                ..Default::default()
            },
        )
        .unwrap();
    let extra = [
        "ghost@contoso.com",
        "unlicensed@contoso.com",
        "excluded@contoso.com",
    ]
    .map(String::from);
    enable(&w.store, &w.org, &extra).await;
    let engine = w.engine();
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    assert_eq!(outcomes["user000@contoso.com"], JobOutcome::Synced);
    let expect = [
        // Not found only after the UPN, mail and alias lookups all missed.
        (
            "ghost@contoso.com",
            FailureCode::UserNotFound,
            "Request_ResourceNotFound",
        ),
        (
            "unlicensed@contoso.com",
            FailureCode::MailboxNotEnabled,
            "MailboxNotEnabledForRESTAPI",
        ),
        (
            "excluded@contoso.com",
            FailureCode::MailboxAccessPolicy,
            "ErrorAccessDenied",
        ),
    ];
    // The ghost was looked up by mail and by alias before it was declared not found; everyone
    // else resolved by UPN.
    assert_eq!(w.sim.request_count(Endpoint::GraphUsersQuery, None), 2);
    let runs = w.runs().await;
    for (email, code, ms) in expect {
        assert_eq!(outcomes[email], JobOutcome::UserError(code));
        let run = runs.iter().find(|r| r.mailbox.key() == email).unwrap();
        assert_eq!(run.outcome, RunOutcome::UserError);
        assert_eq!(
            run.error
                .as_ref()
                .map(|f| (f.code, f.microsoft_code.as_deref())),
            Some((code, Some(ms)))
        );
        let user = w
            .store
            .user(&w.org, &Email::parse(email).unwrap())
            .await
            .unwrap();
        let SyncState::Error { cause } = user.state else {
            panic!("{email}: {:?}", user.state)
        };
        assert_eq!(
            (cause.code, cause.microsoft_code.as_deref()),
            (code, Some(ms))
        );
    }
    assert!(
        FailureCode::UserNotFound
            .remediation(Some("ghost@contoso.com"))
            .starts_with("Unable to find a user matching ghost@contoso.com")
    );
    // 3 of 4 users in error: the org is in alarm.
    let fan = engine.enqueue_org(&w.org).await.unwrap();
    assert!(fan.alarm && fan.users_in_error == 3, "{fan:?}");
    // Those jobs run after the admin removed the enterprise app (token AADSTS7000229).
    let jobs = w.queue.take();
    let apps = w.sim.consents();
    w.sim.revoke_consent(t, apps[0].client_id).unwrap();
    let engine2 = w.engine();
    let outcomes = engine2
        .handle_batch(records(&jobs), Instant::now() + Duration::from_secs(30))
        .await
        .outcomes;
    // The cached token still works at the token endpoint's side; Graph no longer knows the app.
    assert!(
        outcomes
            .iter()
            .any(|(_, o)| *o == JobOutcome::OrgError(FailureCode::AuthorizationIdentityNotFound)),
        "{outcomes:?}"
    );
    assert!(
        w.runs()
            .await
            .iter()
            .any(|r| r.outcome == RunOutcome::OrgError
                && r.error.as_ref().map(|f| f.code)
                    == Some(FailureCode::AuthorizationIdentityNotFound))
    );
    let conn = w.store.connection(&w.org).await.unwrap();
    assert_eq!(conn.status, ConnectionStatus::Error);
    let err = conn.last_error.unwrap();
    assert_eq!(
        (err.code, err.microsoft_code.as_deref()),
        (
            FailureCode::AuthorizationIdentityNotFound,
            Some("Authorization_IdentityNotFound")
        )
    );
    assert!(err.code.remediation(None).contains("Grant admin consent"));
    let audit = w
        .store
        .list_audit(&w.org, PageRequest::first(5))
        .await
        .unwrap();
    let ev = &audit.items[0];
    assert_eq!(
        (ev.action, &ev.actor),
        (AuditAction::ConnectionFailed, &Actor::System("sync".into()))
    );
    // The org's jobs stop: nothing is enqueued for an org in error.
    assert_eq!(engine2.enqueue_org(&w.org).await.unwrap().enqueued, 0);
}

/// Graph's generic "Access is denied" is the app's missing permission only when no mailbox gets
/// through: once another mailbox of the org synced since the grant, it is this mailbox's scope
/// (Exchange RBAC for Applications) and only this user stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_for_one_mailbox_while_others_sync_is_the_users() {
    let w = world(2, 5, 5).await;
    let engine = w.engine();
    w.sync_all(&engine, 2).await;
    w.sim
        .set_user_flags(
            &w.users[1],
            UserFlags {
                rbac_scoped_out: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    w.expire_leases().await;
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    assert_eq!(outcomes[w.users[0].as_str()], JobOutcome::Synced);
    assert_eq!(
        outcomes[w.users[1].as_str()],
        JobOutcome::UserError(FailureCode::MailboxAccessPolicy)
    );
    assert_eq!(
        w.store.connection(&w.org).await.unwrap().status,
        ConnectionStatus::Connected,
        "the org goes on"
    );
    let user = w
        .store
        .user(&w.org, &Email::parse(&w.users[1]).unwrap())
        .await
        .unwrap();
    let SyncState::Error { cause } = user.state else {
        panic!("{:?}", user.state)
    };
    assert_eq!(cause.microsoft_code.as_deref(), Some("ErrorAccessDenied"));
}

/// With no mailbox ever through, the same answer is the app's: the org stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_with_no_mailbox_through_is_the_orgs() {
    let w = world(1, 5, 5).await;
    w.sim
        .set_user_flags(
            &w.users[0],
            UserFlags {
                rbac_scoped_out: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    let outcomes = w.sync_all(&w.engine(), 2).await;
    assert_eq!(
        outcomes[0].1,
        JobOutcome::OrgError(FailureCode::InsufficientPrivileges)
    );
    assert_eq!(
        w.store.connection(&w.org).await.unwrap().status,
        ConnectionStatus::Error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fan_out_runs_through_real_sqs() {
    use o365_queue_sqs::SqsJobQueue;
    let w = world(12, 15, 5).await;
    let sqs = o365_local_stack::sqs_client(&o365_e2e::moto_endpoint());
    let name = format!("jobs-{}", uuid::Uuid::new_v4().simple());
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = Arc::new(SqsJobQueue::new(sqs.clone()).with_jobs(url.clone()));
    let engine = Arc::new(SyncEngine::new(
        Stores::single(w.store.clone()),
        Arc::new(w.graph.clone()),
        Arc::new(w.graph.clone()),
        queue,
        sync_config(),
    ));
    let fan = engine.enqueue_all().await.unwrap();
    assert_eq!((fan.orgs, fan.enqueued), (1, 12));
    // A second fan-out while the jobs wait: every mailbox is still leased.
    let again = engine.enqueue_org(&w.org).await.unwrap();
    assert_eq!((again.enqueued, again.skipped_leased), (0, 12));
    let mut handled = 0;
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            break;
        }
        let recs: Vec<QueueRecord> = msgs
            .iter()
            .map(|m| QueueRecord {
                message_id: m.message_id.clone().unwrap(),
                receipt_handle: m.receipt_handle.clone().unwrap(),
                body: m.body.clone().unwrap(),
            })
            .collect();
        let report = engine
            .handle_batch(recs.clone(), Instant::now() + Duration::from_secs(60))
            .await;
        assert!(report.failed.is_empty(), "{:?}", report.outcomes);
        for r in &recs {
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(&r.receipt_handle)
                .send()
                .await
                .unwrap();
        }
        handled += recs.len();
    }
    assert_eq!(handled, 12);
    w.assert_matches_truth().await;

    // Throttled beyond the invocation: the message's visibility is pushed back.
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                throttle: Some(FaultRule::every(1).with_retry_after(90.0)),
                ..Default::default()
            },
        )
        .unwrap();
    w.sim.add_messages(&w.users[0], Folder::Inbox, 1).unwrap();
    assert_eq!(engine.enqueue_all().await.unwrap().enqueued, 12);
    let out = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let msgs = out.messages.unwrap_or_default();
    let recs: Vec<QueueRecord> = msgs
        .iter()
        .map(|m| QueueRecord {
            message_id: m.message_id.clone().unwrap(),
            receipt_handle: m.receipt_handle.clone().unwrap(),
            body: m.body.clone().unwrap(),
        })
        .collect();
    let report = engine
        .handle_batch(recs.clone(), Instant::now() + Duration::from_secs(2))
        .await;
    assert_eq!(report.failed.len(), recs.len());
    assert!(w.sim.violations().is_empty());
}

/// Live messages archived for `email`, by folder.
async fn archived(w: &World, email: &str) -> (usize, usize) {
    let email = Email::parse(email).unwrap();
    let mut counts = (0, 0);
    let mut after = None;
    loop {
        let page = w
            .store
            .all_messages(&w.org, &email, PageRequest { limit: 200, after })
            .await
            .unwrap();
        for item in page.items {
            if let StoredMessage::Live { message, .. } = item {
                match message.folder {
                    MailFolder::Inbox => counts.0 += 1,
                    MailFolder::SentItems => counts.1 += 1,
                }
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return counts,
        }
    }
}

fn truth_counts(w: &World, upn: &str) -> (usize, usize) {
    (
        w.sim.live_messages(upn, Folder::Inbox).unwrap().len(),
        w.sim.live_messages(upn, Folder::SentItems).unwrap().len(),
    )
}

/// Platform emails that are not the UPN still reach the right mailbox: by `mail`, by alias, a
/// `$` UPN (key form), a user renamed before and after the first sync, and a stored object id
/// Graph no longer knows (looked up again before anything is called "not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_are_resolved_to_directory_ids_and_survive_renames() {
    let w = world(1, 6, 3).await;
    let t = w.tenant.id;
    let mailbox = Some(MailboxSpec {
        inbox: 5,
        sentitems: 2,
    });
    let mk = |name: &str, mail: Option<&str>, aliases: &[&str]| {
        w.sim
            .create_user(
                t,
                UserSpec {
                    user_name: name.into(),
                    mail: mail.map(str::to_owned),
                    proxy_addresses: aliases.iter().map(|a| a.to_string()).collect(),
                    mailbox,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let diego = mk("diego.siciliani", Some("diego@contoso.com"), &[]);
    let nestor = mk("nestor.wilke", None, &["smtp:nestor@contoso.com"]);
    let svc = mk("$svc-sales", None, &[]);
    let megan = mk("megan.bowen", None, &[]);
    let lynne = mk("lynne.robbins", None, &[]);
    let stale = mk("stale.id", None, &[]);
    // Renamed before we ever looked: the old UPN is now an alias.
    w.sim
        .rename_user("lynne.robbins@contoso.com", "lynne.r@contoso.com")
        .unwrap();
    let platform = [
        ("diego@contoso.com", &diego),
        ("nestor@contoso.com", &nestor),
        ("$svc-sales@contoso.com", &svc),
        ("megan.bowen@contoso.com", &megan),
        ("lynne.robbins@contoso.com", &lynne),
        ("stale.id@contoso.com", &stale),
    ];
    let emails: Vec<String> = platform.iter().map(|(e, _)| e.to_string()).collect();
    enable(&w.store, &w.org, &emails).await;
    // A link recorded earlier whose object id Graph does not know (a re-created user).
    w.store
        .set_directory_link(
            &w.org,
            &Email::parse("stale.id@contoso.com").unwrap(),
            Some(&o365_domain::user::DirectoryLink {
                object_id: uuid::Uuid::new_v4().to_string(),
                user_principal_name: "stale.id@contoso.com".into(),
                mail: None,
            }),
        )
        .await
        .unwrap();

    let engine = w.engine();
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    for (email, info) in platform {
        assert_eq!(outcomes[email], JobOutcome::Synced, "{email}");
        let user = w
            .store
            .user(&w.org, &Email::parse(email).unwrap())
            .await
            .unwrap();
        let link = user.directory.expect("resolved");
        assert_eq!(link.object_id, info.id.to_string(), "{email}");
        let upn = w
            .sim
            .user(&info.id.to_string())
            .unwrap()
            .user_principal_name;
        assert_eq!(link.user_principal_name, upn, "{email}");
        assert_eq!(archived(&w, email).await, truth_counts(&w, &upn), "{email}");
    }

    // Renamed after the first sync: mail is read by object id, so nothing breaks and new mail
    // still arrives.
    w.sim
        .rename_user("megan.bowen@contoso.com", "megan.b@contoso.com")
        .unwrap();
    w.sim
        .add_messages("megan.b@contoso.com", Folder::Inbox, 2)
        .unwrap();
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    assert_eq!(outcomes["megan.bowen@contoso.com"], JobOutcome::Synced);
    assert_eq!(
        archived(&w, "megan.bowen@contoso.com").await,
        truth_counts(&w, "megan.b@contoso.com")
    );

    // Stored state naming a user Graph no longer knows (deleted and re-created: the old id in
    // the link and in its delta links): looked up again, the folders start over, all is read.
    let diego_email = Email::parse("diego@contoso.com").unwrap();
    let gone = uuid::Uuid::new_v4().to_string();
    let real = diego.id.to_string();
    w.store
        .set_directory_link(
            &w.org,
            &diego_email,
            Some(&o365_domain::user::DirectoryLink {
                object_id: gone.clone(),
                user_principal_name: "diego.siciliani@contoso.com".into(),
                mail: None,
            }),
        )
        .await
        .unwrap();
    for folder in MailFolder::ALL {
        let mut cursor = w
            .store
            .cursor(&w.org, &diego_email, folder)
            .await
            .unwrap()
            .expect("a cursor after the first sync");
        let url = cursor.link.url().replace(&real, &gone);
        assert_ne!(url, cursor.link.url(), "the link names the user by id");
        cursor.link = o365_domain::mailbox::SyncLink::Delta(url);
        w.store.save_cursor(&cursor).await.unwrap();
    }
    w.sim
        .add_messages("diego.siciliani@contoso.com", Folder::Inbox, 1)
        .unwrap();
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    assert_eq!(outcomes["diego@contoso.com"], JobOutcome::Synced);
    let user = w.store.user(&w.org, &diego_email).await.unwrap();
    assert_eq!(user.directory.unwrap().object_id, real);
    assert_eq!(
        archived(&w, "diego@contoso.com").await,
        truth_counts(&w, "diego.siciliani@contoso.com")
    );
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
}

/// A record nobody can read is reported failed, so SQS's redrive policy moves it to the
/// dead-letter queue instead of it vanishing; the readable records of the batch still run.
/// Jobs still queued when their org was offboarded are dropped, not retried into the
/// dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_an_org_that_is_gone_is_skipped() {
    let w = world(1, 1, 0).await;
    let job = SyncJob {
        org: OrgId::parse("gone").unwrap(),
        mailbox: Email::parse(&w.users[0]).unwrap(),
        job_id: "j-1".into(),
        request: None,
    };
    let report = w
        .engine()
        .handle_batch(records(&[job]), Instant::now() + Duration::from_secs(10))
        .await;
    assert!(report.failed.is_empty(), "{:?}", report.outcomes);
    assert_eq!(report.outcomes[0].1, JobOutcome::Skipped("org not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_job_is_left_for_the_dead_letter_queue() {
    let w = world(1, 2, 1).await;
    let engine = w.engine();
    engine.enqueue_all().await.unwrap();
    let mut batch = records(&w.queue.take());
    batch.push(QueueRecord {
        message_id: "poison".into(),
        receipt_handle: "poison".into(),
        body: "{not a job".into(),
    });
    let report = engine
        .handle_batch(batch, Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(report.failed, vec!["poison".to_owned()]);
    assert!(
        report
            .outcomes
            .iter()
            .all(|(_, o)| *o == JobOutcome::Synced),
        "{:?}",
        report.outcomes
    );
}

/// The org's capture policy keeps mail out of the archive at capture time: any excluded
/// participant (domain or address), and internal-only mail when the org asks; skipped messages
/// are counted, never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_policy_keeps_excluded_mail_out_of_the_archive() {
    use o365_domain::capture_policy::CapturePolicy;
    let w = world(1, 0, 0).await;
    let upn = w.users[0].clone();
    let policy = CapturePolicy::parse(
        &o365_domain::capture_policy::CapturePolicyChange {
            excluded_domains: vec!["lawfirm.com".into()],
            excluded_addresses: vec!["hr@contoso.com".into()],
            skip_internal: true,
            internal_domains: vec!["contoso.com".into()],
            retention_days: Some(30),
        },
        1,
    )
    .unwrap();
    w.store
        .save_capture_policy(
            &w.org,
            &policy,
            audit(&w.org, AuditAction::CapturePolicyChanged, "capture_policy"),
        )
        .await
        .unwrap();
    let who = |a: &str| ms_sim::Recipient {
        name: a.into(),
        address: a.into(),
    };
    let mut kept = Vec::new();
    for (from, to, keep) in [
        ("partner@lawfirm.com", "user000@contoso.com", false),
        ("buyer@fabrikam.com", "hr@contoso.com", false),
        ("alex@contoso.com", "user000@contoso.com", false),
        ("buyer@fabrikam.com", "user000@contoso.com", true),
        ("user000@contoso.com", "partner@notlawfirm.com", true),
    ] {
        let id = w
            .sim
            .add_message(
                &upn,
                Folder::Inbox,
                ms_sim::NewMessage {
                    from: Some(who(from)),
                    to: Some(vec![who(to)]),
                    ..Default::default()
                },
            )
            .unwrap();
        if keep {
            kept.push(id);
        }
    }
    let engine = w.engine();
    let outcomes: HashMap<String, JobOutcome> = w.sync_all(&engine, 2).await.into_iter().collect();
    assert_eq!(outcomes[upn.as_str()], JobOutcome::Synced);
    let mut stored: Vec<String> = Vec::new();
    let page = w
        .store
        .all_messages(&w.org, &Email::parse(&upn).unwrap(), PageRequest::first(50))
        .await
        .unwrap();
    for item in page.items {
        if let StoredMessage::Live { message, .. } = item {
            stored.push(message.id);
        }
    }
    stored.sort();
    kept.sort();
    assert_eq!(stored, kept, "only admitted mail is archived");
    let user = w
        .store
        .user(&w.org, &Email::parse(&upn).unwrap())
        .await
        .unwrap();
    assert_eq!((user.counters.captured, user.counters.skipped), (2, 3));
    // The org keeps mail 30 days: each archived item carries DynamoDB's TTL attribute.
    let item = w
        .store
        .client()
        .get_item()
        .table_name(&w.store.tables().messages)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{}#{}", w.org, upn)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(kept[0].clone()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    let in_30_days = (OffsetDateTime::now_utc() + time::Duration::days(30)).unix_timestamp();
    assert!(
        (expires - in_30_days).abs() < 3600,
        "{expires} vs {in_30_days}"
    );
}

/// "Sync now" does constant work whatever the org's size: one message on the fan-out queue and
/// no DynamoDB call. The fan-out function then walks the org in as many invocations as its time
/// allows, each handing its rest back with the position in the org's users, so every mailbox
/// gets exactly one job, every lease has its job, and every run of the request is listed under
/// its id (idle runs included: someone is following them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_is_one_message_and_the_walk_resumes_where_it_stopped() {
    let w = world(230, 0, 0).await;
    let engine = w.engine();
    let calls = w._fixture.calls.snapshot();
    let request = uuid::Uuid::new_v4().to_string();
    engine.request_sync(&w.org, &request).await.unwrap();
    assert!(
        w._fixture.calls.since(&calls).is_empty(),
        "sync now touches no table: {:?}",
        w._fixture.calls.since(&calls)
    );
    assert!(w.queue.take().is_empty(), "no mailbox job yet");
    let mut walks = std::mem::take(&mut *w.queue.walks.lock().unwrap());
    assert_eq!(
        walks,
        [FanOutJob::whole(w.org.clone(), Some(request.clone()))]
    );

    // Each invocation of the fan-out has no time beyond one page of users (200): the walk
    // goes on from where it stopped.
    let mut invocations = 0;
    while let Some(walk) = walks.pop() {
        invocations += 1;
        let body = serde_json::to_string(&walk).unwrap();
        let record = QueueRecord {
            message_id: format!("walk-{invocations}"),
            receipt_handle: "rh".into(),
            body,
        };
        let (_, failed) = engine
            .handle_fan_out_batch(vec![record], Instant::now())
            .await;
        assert!(failed.is_empty());
        walks.extend(std::mem::take(&mut *w.queue.walks.lock().unwrap()));
    }
    assert_eq!(invocations, 2, "230 users: two pages, two invocations");
    let jobs = w.queue.take();
    assert_eq!(jobs.len(), 230);
    assert_eq!(o365_sync_engine::distinct_mailboxes(&jobs), 230);
    assert!(
        jobs.iter()
            .all(|j| j.request.as_deref() == Some(request.as_str()))
    );
    for u in &w.users {
        let lease = w
            .store
            .lease_holder(&w.org, &Email::parse(u).unwrap(), OffsetDateTime::now_utc())
            .await
            .unwrap()
            .expect("every walked mailbox is leased to its job");
        assert!(jobs.iter().any(|j| j.job_id == lease.holder));
    }

    for chunk in jobs.chunks(10) {
        let report = engine
            .handle_batch(records(chunk), Instant::now() + Duration::from_secs(60))
            .await;
        assert!(report.failed.is_empty(), "{:?}", report.outcomes);
    }
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = w
            .store
            .list_runs(&w.org, Some(&request), PageRequest { limit: 100, after })
            .await
            .unwrap();
        listed += page.items.len();
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        listed, 230,
        "every run of the request is listed under its id"
    );
}

/// Counts are exact across crashes: whichever call of a backfill or of an incremental run
/// fails, the rerun (a new run, as a redelivered job is) counts every message once and as what
/// it is. A message a crashed attempt archived but never counted carries that attempt's mark,
/// which was never committed: the rerun counts it as new, not as an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_across_crashes() {
    for fail_at in (4..40).step_by(5) {
        let w = world(1, 60, 40).await;
        let (crashy, engine) = w.crashy_engine();
        // A first sync that survives, so the crashed run below is an incremental one.
        w.sync_all(&engine, 1).await;
        w.new_mail_and_one_edit(70);
        crashy.calls.store(0, Ordering::SeqCst);
        crashy.fail_at.store(fail_at, Ordering::SeqCst);
        w.expire_leases().await;
        w.sync_all(&engine, 4).await;
        w.assert_matches_truth().await;
        assert_eq!(
            w.first_user_counts().await,
            (100 + 70, 1),
            "crash at call {fail_at}"
        );
    }
}

/// A run archives a page and crashes before counting it. Microsoft's replay of that page
/// leaves some of its messages out (they changed meanwhile); they come back later, changed.
/// They are still new: what a stopped run archived after its last commit was never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_stopped_run_archived_count_as_new_when_they_come_back_later() {
    // Some of the page left out; and the whole of it, so that the rerun archives nothing and
    // never needed a claim for its own writes.
    for (added, left_out) in [(70, 3), (5, 5)] {
        let w = world(1, 60, 40).await;
        let (crashy, engine) = w.crashy_engine();
        w.sync_all(&engine, 1).await;
        w.sim
            .add_messages(&w.users[0], Folder::Inbox, added)
            .unwrap();
        crashy.hide_after_crash.store(left_out, Ordering::SeqCst);
        crashy.crash_after_archive.store(true, Ordering::SeqCst);
        w.expire_leases().await;
        let outcomes = w.sync_all(&engine, 4).await;
        assert_eq!(outcomes.len(), 1, "the redelivery completed: {outcomes:?}");
        let hidden = crashy.hidden.lock().unwrap().clone();
        assert_eq!(
            hidden.len(),
            left_out,
            "the crash came after an archive write"
        );
        assert_eq!(
            w.first_user_counts().await.0,
            100 + u64::from(added) - left_out as u64,
            "the crashed page was counted on replay"
        );
        // They changed and come back in the next round.
        crashy.hidden.lock().unwrap().clear();
        let truth = w.sim.live_messages(&w.users[0], Folder::Inbox).unwrap();
        for id in &hidden {
            let message = truth
                .iter()
                .find(|t| t.id == *id || t.immutable_id == *id)
                .unwrap();
            w.sim
                .update_message(
                    &message.immutable_id,
                    MessagePatch {
                        subject: Some("changed before it was counted".into()),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        w.expire_leases().await;
        w.sync_all(&engine, 4).await;
        w.assert_matches_truth().await;
        assert_eq!(
            w.first_user_counts().await,
            (100 + u64::from(added), 0),
            "{left_out} of {added} left out: each message new exactly once, none updated"
        );
    }
}

/// SQS may hand one job to two workers at once (at-least-once delivery). Both deliveries carry
/// the same job id, so both hold the lease: the lease alone cannot keep them apart. Each run's
/// commits name the mailbox's last commit they follow, so only one delivery's commits stand
/// and every message is counted once, on a backfill and on an incremental run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_delivered_twice_at_once_counts_each_message_once() {
    let w = world(1, 150, 100).await;
    let engine = w.engine();
    for round in 0..2 {
        if round == 1 {
            w.new_mail_and_one_edit(60);
            w.expire_leases().await;
        }
        engine.enqueue_all().await.unwrap();
        let jobs = w.queue.take();
        assert_eq!(jobs.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (a, b) = tokio::join!(
            engine.run_job(&jobs[0], deadline),
            engine.run_job(&jobs[0], deadline)
        );
        let outcomes = [a.0, b.0];
        assert!(
            outcomes.contains(&JobOutcome::Synced),
            "round {round}: one delivery completes: {outcomes:?}"
        );
        // The other found the mailbox claimed (it comes back later) or moved on (it stops).
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                JobOutcome::Synced | JobOutcome::Skipped(_) | JobOutcome::Busy(_)
            )),
            "{outcomes:?}"
        );
    }
    w.assert_matches_truth().await;
    assert_eq!(w.first_user_counts().await, (250 + 60, 1));
}
