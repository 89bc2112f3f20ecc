//! Backfill benchmark: N mailboxes × M messages (half inbox, half sent items) through the real
//! engine, against the Microsoft simulator and an in-process dynoxide; then churn and an
//! incremental run. Prints throughput, Graph requests, DynamoDB item writes, wall time, peak RSS
//! and whether the archive equals the simulator's ground truth. Not part of the tests.
//!
//! `cargo bench -p o365-sync-engine --bench backfill -- [MAILBOXES] [MESSAGES] [--bodies]`
//! (defaults 1000 × 1000, no bodies).

use o365_domain::message::WriteStamp;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ms_sim::*;
use o365_domain::Result as DResult;
use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::connection::{AppRegistration, Connection, ConnectionStatus};
use o365_domain::ids::{Email, OrgId, TenantId};
use o365_domain::mailbox::{MailFolder, MailboxCursor};
use o365_domain::message::{CapturedMessage, MessageRemoval, PageWriteSummary, StoredMessage};
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::{MailboxStateStore, MessageArchive, OrgStore, UserStore};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_domain::user::NewUser;
use o365_msgraph::{GraphClient, GraphConfig};
use o365_secrets::LocalSecretStore;
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};
use o365_sync_engine::{
    JobOutcome, JobQueue, QueueRecord, Stores, SyncConfig, SyncEngine, SyncJob,
};
use time::OffsetDateTime;

#[derive(Default)]
struct MemQueue(Mutex<Vec<SyncJob>>);

#[async_trait]
impl JobQueue for MemQueue {
    async fn send(&self, jobs: &[SyncJob]) -> DResult<Vec<usize>> {
        self.0.lock().unwrap().extend_from_slice(jobs);
        Ok(vec![])
    }
    async fn send_fan_out(&self, _: &o365_sync_engine::FanOutJob) -> DResult<()> {
        Ok(())
    }
    async fn retry_later(&self, _: &str, _: Duration) -> DResult<()> {
        Ok(())
    }
}

/// Counts the DynamoDB items the engine writes through the two hot ports (messages, tombstones,
/// cursors, leases); user status and run records add two items per mailbox run.
struct Counting {
    store: Arc<DynamoStore>,
    writes: AtomicU64,
}

#[async_trait]
impl MessageArchive for Counting {
    async fn write_page(
        &self,
        o: &OrgId,
        m: &Email,
        msgs: &[CapturedMessage],
        rem: &[MessageRemoval],
        at: WriteStamp,
    ) -> DResult<PageWriteSummary> {
        self.writes
            .fetch_add((msgs.len() + rem.len()) as u64, Ordering::Relaxed);
        self.store.write_page(o, m, msgs, rem, at).await
    }
    async fn message(&self, o: &OrgId, m: &Email, id: &str) -> DResult<Option<StoredMessage>> {
        self.store.message(o, m, id).await
    }
    async fn list_messages(
        &self,
        o: &OrgId,
        m: &Email,
        q: &o365_domain::message::MessageQuery,
        p: PageRequest,
    ) -> DResult<Page<StoredMessage>> {
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
        self.store.live_stamps(o, m, p).await
    }
    async fn held(
        &self,
        o: &OrgId,
        m: &Email,
        ids: &[String],
    ) -> DResult<std::collections::HashMap<String, Option<o365_domain::mailbox::WriteMark>>> {
        self.store.held(o, m, ids).await
    }
    async fn live_stamp(
        &self,
        o: &OrgId,
        m: &Email,
        id: &str,
    ) -> DResult<Option<o365_domain::message::ArchivedStamp>> {
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
    ) -> DResult<Page<StoredMessage>> {
        self.store.all_messages(o, m, p).await
    }
}

#[async_trait]
impl MailboxStateStore for Counting {
    async fn mailbox(&self, o: &OrgId, m: &Email) -> DResult<o365_domain::mailbox::MailboxState> {
        self.store.mailbox(o, m).await
    }
    async fn checkpoint(
        &self,
        o: &OrgId,
        m: &Email,
        h: &str,
        p: &o365_domain::mailbox::Checkpoint,
    ) -> DResult<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.store.finish_run(o, m, h, p, at).await
    }
    async fn save_cursor(&self, c: &MailboxCursor) -> DResult<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.store.save_cursor(c).await
    }
    async fn clear_cursors(&self, o: &OrgId, m: &Email) -> DResult<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.store.acquire_lease(o, m, h, u, n).await
    }
    async fn release_lease(&self, o: &OrgId, m: &Email, h: &str) -> DResult<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
        self.store.lease_queued_job(o, m, h, u, n).await
    }
    async fn lease_holder(
        &self,
        o: &OrgId,
        m: &Email,
        n: OffsetDateTime,
    ) -> DResult<Option<o365_domain::mailbox::Lease>> {
        self.store.lease_holder(o, m, n).await
    }
}

fn audit(org: &OrgId, action: AuditAction, object: &str) -> AuditEvent {
    AuditEvent::new(
        org,
        OffsetDateTime::now_utc(),
        Actor::System("bench".into()),
        action,
        object,
    )
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    wall: Duration,
    captured: u64,
    updated: u64,
    deleted: u64,
    failed_attempts: u64,
}

/// Fan-out, then every job until it settles (failed or throttled jobs run again).
async fn run_all(engine: &Arc<SyncEngine>, queue: &MemQueue) -> Run {
    let started = Instant::now();
    engine.enqueue_all().await.expect("fan-out");
    let mut jobs = std::mem::take(&mut *queue.0.lock().unwrap());
    let mut run = Run {
        wall: Duration::ZERO,
        captured: 0,
        updated: 0,
        deleted: 0,
        failed_attempts: 0,
    };
    for _ in 0..20 {
        let mut again = Vec::new();
        // Like SQS batches of 10 handled by several workers at once.
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in jobs.chunks(10) {
            let (engine, chunk) = (engine.clone(), chunk.to_vec());
            tasks.spawn(async move {
                let records = chunk
                    .iter()
                    .map(|j| QueueRecord {
                        message_id: j.job_id.clone(),
                        receipt_handle: j.job_id.clone(),
                        body: serde_json::to_string(j).unwrap(),
                    })
                    .collect();
                let report = engine
                    .handle_batch(records, Instant::now() + Duration::from_secs(600))
                    .await;
                (chunk, report)
            });
            if tasks.len() >= 8 {
                collect(tasks.join_next().await, &mut run, &mut again);
            }
        }
        while let Some(done) = tasks.join_next().await {
            collect(Some(done), &mut run, &mut again);
        }
        if again.is_empty() {
            break;
        }
        jobs = again;
    }
    run.wall = started.elapsed();
    run
}

fn collect(
    done: Option<Result<(Vec<SyncJob>, o365_sync_engine::BatchReport), tokio::task::JoinError>>,
    run: &mut Run,
    again: &mut Vec<SyncJob>,
) {
    let Some(Ok((chunk, report))) = done else {
        panic!("a batch task failed")
    };
    run.captured += report.totals.counters.captured;
    run.updated += report.totals.counters.updated;
    run.deleted += report.totals.counters.deleted;
    for (id, outcome) in report.outcomes {
        if matches!(outcome, JobOutcome::Failed(_) | JobOutcome::RetryAfter(_)) {
            run.failed_attempts += 1;
            again.push(chunk.iter().find(|j| j.job_id == id).unwrap().clone());
        }
    }
}

/// Live messages per mailbox: archive vs simulator. Returns (archive, truth, mismatched mailboxes).
async fn verify(
    sim: &Simulator,
    store: &DynamoStore,
    org: &OrgId,
    users: &[String],
) -> (u64, u64, u64) {
    let (mut archive_n, mut truth_n, mut bad) = (0, 0, 0);
    for u in users {
        let mut truth = BTreeMap::new();
        for (f, folder) in [
            (Folder::Inbox, MailFolder::Inbox),
            (Folder::SentItems, MailFolder::SentItems),
        ] {
            for m in sim.live_messages(u, f).unwrap() {
                truth.insert(m.immutable_id.clone(), (folder, m.change_key.clone()));
            }
        }
        let mut stored = BTreeMap::new();
        let email = Email::parse(u).unwrap();
        let mut after = None;
        loop {
            let page = store
                .all_messages(org, &email, PageRequest { limit: 500, after })
                .await
                .unwrap();
            for item in page.items {
                if let StoredMessage::Live { message, .. } = item {
                    stored.insert(
                        message.id,
                        (message.folder, message.change_key.unwrap_or_default()),
                    );
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        archive_n += stored.len() as u64;
        truth_n += truth.len() as u64;
        bad += u64::from(stored != truth);
    }
    (archive_n, truth_n, bad)
}

fn churn(sim: &Simulator, users: &[String]) -> u64 {
    let mut changes = 0;
    for (i, u) in users.iter().enumerate() {
        let inbox = sim.live_messages(u, Folder::Inbox).unwrap();
        let sent = sim.live_messages(u, Folder::SentItems).unwrap();
        if inbox.len() < 8 || sent.len() < 4 {
            continue;
        }
        let pick = |v: &Vec<TruthMessage>, k: usize| v[(k * 7 + i) % v.len()].immutable_id.clone();
        sim.add_messages(u, Folder::Inbox, 5).unwrap();
        sim.add_messages(u, Folder::SentItems, 2).unwrap();
        sim.update_message(
            &pick(&inbox, 0),
            MessagePatch {
                subject: Some("edited".into()),
                ..Default::default()
            },
        )
        .unwrap();
        sim.delete_message(&pick(&inbox, 1)).unwrap();
        sim.move_message(&pick(&inbox, 2), Folder::SentItems)
            .unwrap();
        sim.move_message(&pick(&inbox, 3), Folder::Archive).unwrap();
        sim.move_message(&pick(&sent, 0), Folder::Inbox).unwrap();
        sim.delete_message(&pick(&sent, 1)).unwrap();
        changes += 13;
    }
    changes
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let bodies = args.iter().any(|a| a == "--bodies");
    let numbers: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mailboxes = numbers.first().copied().unwrap_or(1000) as usize;
    let messages = numbers.get(1).copied().unwrap_or(1000);
    let (inbox, sent) = (messages - messages / 2, messages / 2);
    println!(
        "backfill bench: {mailboxes} mailboxes x {messages} messages ({inbox} inbox + {sent} sentitems), bodies: {bodies}"
    );

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

    let dynamo = o365_local_stack::EmbeddedDynamo::in_memory()
        .await
        .expect("dynoxide starts");
    let client = o365_local_stack::dynamodb_client(dynamo.endpoint());
    let tables = TableNames::default();
    ensure_tables(&client, &tables).await.expect("tables");
    let store = Arc::new(DynamoStore::new(client, tables));

    let org = OrgId::parse("bench").unwrap();
    store
        .create_org(
            &org,
            &NewUser::parse("root@contoso.com", "Root", "admin").unwrap(),
            audit(&org, AuditAction::OrgCreated, "org"),
        )
        .await
        .unwrap();
    let before = store.connection(&org).await.unwrap();
    let connection = Connection {
        status: ConnectionStatus::Connected,
        tenant_id: Some(TenantId::parse(&tenant.id.to_string()).unwrap()),
        app: Some(AppRegistration::Default),
        activated_by: Some(Email::parse("root@contoso.com").unwrap()),
        granted_by: None,
        granted_at: Some(OffsetDateTime::now_utc()),
        last_verified_at: Some(OffsetDateTime::now_utc()),
        last_error: None,
        attempt: None,
        pending_until: None,
        version: before.version + 1,
    };
    store
        .save_connection(
            &org,
            &connection,
            audit(&org, AuditAction::ConnectionVerified, "connection"),
        )
        .await
        .unwrap();
    let setup = Instant::now();
    let mut users = Vec::with_capacity(mailboxes);
    for i in 0..mailboxes {
        let name = format!("user{i:05}");
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
        let email = format!("{name}@contoso.com");
        store
            .add_user(
                &org,
                &NewUser::parse(&email, "Someone", "member").unwrap(),
                audit(&org, AuditAction::UserAdded, &email),
            )
            .await
            .unwrap();
        users.push(email);
    }
    let toggles: Vec<(Email, bool)> = users
        .iter()
        .map(|u| (Email::parse(u).unwrap(), true))
        .collect();
    for chunk in toggles.chunks(50) {
        store
            .set_sync_enabled(&org, chunk, audit(&org, AuditAction::SyncToggled, "users"))
            .await
            .unwrap();
    }
    println!("setup: {:.1} s", setup.elapsed().as_secs_f64());

    let cred = AppCredential {
        client_id: app.client_id.to_string(),
        credential: ClientCredential::Secret(Sensitive::new(secret.value.clone())),
    };
    let secrets = Arc::new(LocalSecretStore::new(cred.clone(), cred, vec![1; 32]).unwrap());
    let graph = GraphClient::new(
        GraphConfig {
            authority_url: sim.authority().to_owned(),
            graph_base_url: sim.graph_url(),
            ..Default::default()
        },
        secrets,
    );
    let counting = Arc::new(Counting {
        store: store.clone(),
        writes: AtomicU64::new(0),
    });
    let stores = Stores {
        orgs: store.clone(),
        users: store.clone(),
        state: counting.clone(),
        archive: counting.clone(),
        runs: store.clone(),
    };
    let queue = Arc::new(MemQueue::default());
    let graph = Arc::new(graph);
    let engine = Arc::new(SyncEngine::new(
        stores,
        graph.clone(),
        graph,
        queue.clone(),
        SyncConfig {
            backfill_days: None,
            include_bodies: bodies,
            ..Default::default()
        },
    ));

    let graph_requests = || {
        sim.request_counts()
            .iter()
            .filter(|c| c.endpoint != Endpoint::AdminConsent)
            .map(|c| c.count)
            .sum::<u64>()
    };
    let report = |label: &str, run: &Run, requests: u64, writes: u64| {
        let total = run.captured + run.updated + run.deleted;
        println!(
            "{label}: {:.1} s wall, {} captured / {} updated / {} deleted, {:.0} messages/s, {} Graph requests, {} DynamoDB item writes (+2 per mailbox run: user status, run record), {} failed attempts rerun, peak RSS {} MB",
            run.wall.as_secs_f64(),
            run.captured,
            run.updated,
            run.deleted,
            total as f64 / run.wall.as_secs_f64().max(1e-9),
            requests,
            writes,
            run.failed_attempts,
            peak_rss_kb() / 1024
        );
    };

    let (r0, w0) = (graph_requests(), counting.writes.load(Ordering::Relaxed));
    let backfill = run_all(&engine, &queue).await;
    let (r1, w1) = (graph_requests(), counting.writes.load(Ordering::Relaxed));
    report("backfill", &backfill, r1 - r0, w1 - w0);
    let (a, t, bad) = verify(&sim, &store, &org, &users).await;
    println!(
        "after backfill: {} (archive {a} live, truth {t}, {bad} mailboxes differ)",
        if bad == 0 && a == t { "OK" } else { "MISMATCH" }
    );

    let changes = churn(&sim, &users);
    println!("churn: {changes} changes");
    let incremental = run_all(&engine, &queue).await;
    let (r2, w2) = (graph_requests(), counting.writes.load(Ordering::Relaxed));
    report("incremental", &incremental, r2 - r1, w2 - w1);
    let (a, t, bad) = verify(&sim, &store, &org, &users).await;
    println!(
        "after churn: {} (archive {a} live, truth {t}, {bad} mailboxes differ)",
        if bad == 0 && a == t { "OK" } else { "MISMATCH" }
    );
    println!(
        "peak RSS (VmHWM, whole process: simulator + dynoxide + engine): {} MB",
        peak_rss_kb() / 1024
    );
}
