//! `worker-bench --worker target/release/sync-worker --moto URL [--out FILE]
//!  [--messages N] [--idle N] [--page-size N]`
//!
//! The sync-worker *binary* measured as Lambda runs it (a stand-in Runtime API hands it SQS
//! events), against the Microsoft simulator and dynoxide behind a counting proxy, with Secrets
//! Manager and the jobs queue on moto. Two runs:
//! - a backfill of one mailbox of `--messages` messages (70 % inbox): the worker's user+system
//!   CPU per message, Graph requests beside the floor, DynamoDB requests by operation, peak RSS;
//! - an unchanged cycle of `--idle` mailboxes already synced once: the fan-out (in this process,
//!   its DynamoDB calls through the same proxy) and the worker's runs, per mailbox.
//!
//! - with `--python` and `--peers`, the Python peers (scripts/bench-peers.py) on the same pages.
//!
//! Prints a table with each target beside its figure and writes the figures as JSON.

mod lambda;
mod proxy;
mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ms_sim::Endpoint;
use o365_domain::ids::Email;
use o365_domain::ports::UserStore;
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_msgraph::{GraphClient, GraphConfig};
use o365_store_dynamodb::{DynamoStore, TableNames};
use o365_sync_engine::{FanOutJob, JobQueue, Stores, SyncConfig, SyncEngine, SyncJob};
use serde_json::json;

use lambda::Function;
use world::World;

const WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u32) -> u32 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fan-out's jobs, kept here to hand to the worker binary.
#[derive(Default)]
struct Collected(Mutex<Vec<SyncJob>>);

#[async_trait]
impl JobQueue for Collected {
    async fn send(&self, jobs: &[SyncJob]) -> o365_domain::Result<Vec<usize>> {
        self.0.lock().unwrap().extend_from_slice(jobs);
        Ok(vec![])
    }
    async fn send_fan_out(&self, _: &FanOutJob) -> o365_domain::Result<()> {
        Ok(())
    }
    async fn retry_later(&self, _: &str, _: Duration) -> o365_domain::Result<()> {
        Ok(())
    }
}

fn sqs_event(records: Vec<(String, String, String)>) -> serde_json::Value {
    json!({"Records": records.into_iter().map(|(id, receipt, body)| json!({
        "messageId": id, "receiptHandle": receipt, "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
        "awsRegion": "us-east-1"
    })).collect::<Vec<_>>()})
}

/// Hands `jobs` to the worker ten per event, then every continuation it queued, until the queue
/// is empty. Returns (invocations, records reported failed).
async fn run_jobs(
    worker: &Function,
    jobs: Vec<SyncJob>,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
) -> (u64, u64) {
    let (mut invocations, mut failed) = (0, 0);
    let mut batches: Vec<Vec<(String, String, String)>> = jobs
        .chunks(10)
        .map(|chunk| {
            chunk
                .iter()
                .map(|j| {
                    let id = uuid::Uuid::new_v4().to_string();
                    (id.clone(), id, serde_json::to_string(j).unwrap())
                })
                .collect()
        })
        .collect();
    loop {
        for batch in batches.drain(..) {
            invocations += 1;
            let answer = worker
                .invoke(&sqs_event(batch))
                .await
                .expect("the worker answers");
            failed += answer["batchItemFailures"]
                .as_array()
                .map_or(0, |f| f.len()) as u64;
        }
        // Continuations the worker queued (a mailbox longer than an invocation).
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return (invocations, failed);
        }
        for m in &messages {
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        batches.push(
            messages
                .into_iter()
                .map(|m| {
                    (
                        m.message_id.unwrap_or_default(),
                        m.receipt_handle.unwrap_or_default(),
                        m.body.unwrap_or_default(),
                    )
                })
                .collect(),
        );
    }
}

fn writes(ops: &BTreeMap<String, u64>) -> u64 {
    WRITES
        .iter()
        .map(|w| ops.get(*w).copied().unwrap_or(0))
        .sum()
}

fn row(rows: &mut Vec<[String; 3]>, what: &str, figure: String, target: &str) {
    eprintln!("worker-bench: {what}: {figure}");
    rows.push([what.to_owned(), figure, target.to_owned()]);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let worker_bin = arg("--worker").expect("--worker PATH");
    let moto = arg("--moto").expect("--moto URL");
    let out = arg("--out").unwrap_or_else(|| "target/bench/worker.json".into());
    let messages = number("--messages", 100_000);
    let idle = number("--idle", 1000);
    let page_size = number("--page-size", 1000);
    let (inbox, sent) = (messages * 7 / 10, messages - messages * 7 / 10);

    let world = world::World::start().await;
    let (proxy, counts) = proxy::start(world.dynamo.endpoint()).await;
    let (default_app, read_only_app, queue) =
        world::moto(&moto, &world.client_id, &world.client_secret).await;
    let sqs = aws_sdk_sqs::Client::new(&o365_local_stack::local_sdk_config(&moto));
    let env: Vec<(String, String)> = [
        ("AWS_LAMBDA_FUNCTION_NAME", "sync-worker".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "bench".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", proxy.clone()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.clone()),
        ("AWS_ENDPOINT_URL_SQS", moto.clone()),
        ("O365_STATE_TABLE", TableNames::DEFAULT_STATE.to_owned()),
        (
            "O365_MESSAGES_TABLE",
            TableNames::DEFAULT_MESSAGES.to_owned(),
        ),
        ("O365_DEFAULT_APP_SECRET_ID", default_app),
        ("O365_READ_ONLY_APP_SECRET_ID", read_only_app),
        ("O365_SYNC_QUEUE_URL", queue.clone()),
        ("O365_SYNC_PAGE_SIZE", page_size.to_string()),
        ("O365_SYNC_BACKFILL_DAYS", "0".into()),
        ("O365_AUTHORITY_URL", world.sim.authority().to_owned()),
        ("O365_GRAPH_BASE_URL", world.sim.graph_url()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    std::fs::create_dir_all("target/bench").unwrap();
    let worker = Function::start(
        &worker_bin,
        &env,
        std::path::Path::new("target/bench/worker.log"),
    )
    .await;
    let mut rows = Vec::new();

    // ---- a backfill of one large mailbox --------------------------------------------------
    eprintln!(
        "worker-bench: backfill of {messages} messages ({inbox} inbox + {sent} sent), page size {page_size}"
    );
    let (org, mailboxes) = world.org("big", &["big".to_owned()], inbox, sent).await;
    let (mailbox, user_id) = mailboxes[0].clone();
    let job = SyncJob {
        org: org.clone(),
        mailbox: mailbox.clone(),
        job_id: uuid::Uuid::new_v4().to_string(),
        request: None,
    };
    let (cpu0, dyn0) = (worker.cpu_seconds(), counts.snapshot());
    let graph0 = world
        .sim
        .request_count(Endpoint::GraphDelta, Some(mailbox.as_str()));
    let wall = std::time::Instant::now();
    let (invocations, failed) = run_jobs(&worker, vec![job], &sqs, &queue).await;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = worker.cpu_seconds() - cpu0;
    let graph = world
        .sim
        .request_count(Endpoint::GraphDelta, Some(mailbox.as_str()))
        - graph0;
    let ops = counts.since(&dyn0);
    let user = world.store.user(&org, &mailbox).await.unwrap();
    let stored = user.counters.captured;
    let floor = u64::from(inbox.div_ceil(page_size) + sent.div_ceil(page_size));
    let cpu_per_message = cpu * 1e6 / stored.max(1) as f64;
    let rss = worker.peak_rss_mb();
    row(
        &mut rows,
        "backfill: messages archived",
        format!(
            "{stored} of {messages} ({invocations} invocations, {failed} failed records, {wall:.1} s wall)"
        ),
        "all",
    );
    row(
        &mut rows,
        "backfill: worker CPU per message (user+sys)",
        format!("{cpu_per_message:.1} µs"),
        "≤ 40 µs",
    );
    row(
        &mut rows,
        "backfill: Graph requests",
        format!(
            "{graph} (floor {floor}, {:.2}×)",
            graph as f64 / floor as f64
        ),
        "≤ 1.1× floor",
    );
    row(
        &mut rows,
        "backfill: DynamoDB requests",
        format!("{ops:?}"),
        "—",
    );
    row(
        &mut rows,
        "backfill: worker peak RSS",
        format!("{rss:.1} MB"),
        "≤ 40 MB",
    );

    // ---- an unchanged cycle of many mailboxes ---------------------------------------------
    eprintln!("worker-bench: {idle} mailboxes, synced once, then an unchanged cycle");
    let names: Vec<String> = (0..idle).map(|i| format!("idle{i:05}")).collect();
    let (idle_org, _) = world.org("idle", &names, 3, 2).await;
    let counted = Arc::new(DynamoStore::new(
        o365_local_stack::dynamodb_client(&proxy),
        TableNames::default(),
    ));
    let credential = AppCredential {
        client_id: world.client_id.clone(),
        credential: ClientCredential::Secret(Sensitive::new(world.client_secret.clone())),
    };
    let secrets = Arc::new(
        o365_secrets::LocalSecretStore::new(credential.clone(), credential, vec![1; 32]).unwrap(),
    );
    let graph_client = Arc::new(GraphClient::new(
        GraphConfig {
            authority_url: world.sim.authority().to_owned(),
            graph_base_url: world.sim.graph_url(),
            ..Default::default()
        },
        secrets,
    ));
    let collected = Arc::new(Collected::default());
    let fan_out = SyncEngine::new(
        Stores::single(counted),
        graph_client.clone(),
        graph_client,
        collected.clone(),
        SyncConfig::default(),
    );
    fan_out.enqueue_org(&idle_org).await.unwrap();
    let first = std::mem::take(&mut *collected.0.lock().unwrap());
    run_jobs(&worker, first, &sqs, &queue).await;

    let (cpu0, dyn0) = (worker.cpu_seconds(), counts.snapshot());
    let graph0 = world.sim.request_count(Endpoint::GraphDelta, None);
    let report = fan_out.enqueue_org(&idle_org).await.unwrap();
    let fan_out_ops = counts.since(&dyn0);
    let jobs = std::mem::take(&mut *collected.0.lock().unwrap());
    let (invocations, failed) = run_jobs(&worker, jobs, &sqs, &queue).await;
    let cpu = worker.cpu_seconds() - cpu0;
    let graph = world.sim.request_count(Endpoint::GraphDelta, None) - graph0;
    let ops = counts.since(&dyn0);
    let n = f64::from(idle);
    row(
        &mut rows,
        "idle cycle: mailboxes queued by the fan-out",
        format!(
            "{} ({invocations} worker invocations, {failed} failed records)",
            report.enqueued
        ),
        "all",
    );
    row(
        &mut rows,
        "idle cycle: Graph requests per mailbox",
        format!("{:.2}", graph as f64 / n),
        "2",
    );
    row(
        &mut rows,
        "idle cycle: DynamoDB writes per mailbox (fan-out + worker)",
        format!(
            "{:.2} (fan-out {:.2})",
            writes(&ops) as f64 / n,
            writes(&fan_out_ops) as f64 / n
        ),
        "≤ 2",
    );
    row(
        &mut rows,
        "idle cycle: DynamoDB requests",
        format!("{ops:?}"),
        "—",
    );
    row(
        &mut rows,
        "idle cycle: worker CPU per mailbox",
        format!("{:.0} µs", cpu * 1e6 / n),
        "—",
    );

    // ---- the peers, on the same simulator pages -------------------------------------------
    let mut peers = serde_json::Map::new();
    if let (Some(python), Some(script)) = (arg("--python"), arg("--peers")) {
        let token = world.app_token().await;
        let peer_messages = number("--peer-messages", 10_000).min(inbox);
        // The msgraph-sdk peer's job (fetch + parse, nothing stored) done by the worker's own
        // Graph client, for a like-for-like ratio beside the whole-job one.
        let fetch = ours_fetch_and_parse(&world, &mailbox, user_id, page_size, peer_messages);
        if let Some((per_message, handled)) = fetch {
            row(
                &mut rows,
                "ours: fetch + parse only (the worker's Graph client, graph-fetch), CPU per message",
                format!("{per_message:.1} µs ({handled} messages)"),
                "—",
            );
            peers.insert(
                "ours_fetch_parse".to_owned(),
                json!({"cpu_us_per_message": per_message, "messages": handled}),
            );
        }
        for (mode, what, target) in [
            (
                "plain",
                "plain Python whole job (httpx + json + zstandard + boto3)",
                "ours ≥ 10× lower",
            ),
            (
                "msgraph",
                "msgraph-sdk fetch + parse only",
                "ours ≥ 100× lower",
            ),
        ] {
            eprintln!("worker-bench: peer {mode}: {peer_messages} inbox messages");
            let args = json!({
                "graph_url": world.sim.graph_url(), "token": token, "user_id": user_id.to_string(),
                "folder": "inbox", "page_size": page_size, "messages": peer_messages,
                "dynamodb": world.dynamo.endpoint(), "table": TableNames::DEFAULT_MESSAGES,
                "internal_domain": world::INTERNAL_DOMAIN,
            });
            let output = std::process::Command::new(&python)
                .arg(&script)
                .arg(mode)
                .arg(args.to_string())
                .output()
                .expect("the peer runs");
            let Ok(result) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
                eprintln!(
                    "worker-bench: peer {mode} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                continue;
            };
            let handled = result["messages"].as_f64().unwrap_or(0.0).max(1.0);
            let per_message = result["cpu_seconds"].as_f64().unwrap_or(0.0) * 1e6 / handled;
            let ratio = per_message / cpu_per_message;
            // Against the same job of ours where the peer does less than the whole job.
            let like_for_like = fetch
                .filter(|_| mode == "msgraph")
                .map(|(ours, _)| per_message / ours);
            let also = like_for_like.map_or(String::new(), |r| {
                format!("; ours fetching + parsing only is {r:.0}× lower")
            });
            row(
                &mut rows,
                &format!("peer: {what}, CPU per message"),
                format!(
                    "{per_message:.0} µs ({handled} messages): ours (whole job) is {ratio:.1}× lower{also}"
                ),
                target,
            );
            peers.insert(
                mode.to_owned(),
                json!({"cpu_us_per_message": per_message, "messages": handled, "ratio": ratio,
                       "ratio_fetch_parse": like_for_like}),
            );
        }
    }

    println!("| measure | figure | target |\n|---|---|---|");
    for [what, figure, target] in &rows {
        println!("| {what} | {figure} | {target} |");
    }
    let figures = json!({
        "backfill": {"messages": stored, "cpu_us_per_message": cpu_per_message, "graph_requests": graph,
                      "graph_floor": floor, "dynamodb": ops, "peak_rss_mb": rss, "page_size": page_size},
        "peers": peers,
        "rows": rows,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    eprintln!("worker-bench: {out}");
}

/// CPU per message of `graph-fetch` (next to this binary) paging `peer_messages` inbox messages,
/// and the messages it handled; `None` if it is not built or fails.
fn ours_fetch_and_parse(
    world: &World,
    mailbox: &Email,
    user_id: uuid::Uuid,
    page_size: u32,
    peer_messages: u32,
) -> Option<(f64, f64)> {
    let binary = std::env::current_exe().ok()?.with_file_name("graph-fetch");
    let args = json!({
        "graph_url": world.sim.graph_url(), "authority_url": world.sim.authority(),
        "client_id": world.client_id,
        "tenant": world.tenant.to_string(), "mailbox": mailbox.as_str(),
        "user_id": user_id.to_string(), "folder": "inbox", "page_size": page_size,
        "messages": peer_messages,
    });
    eprintln!("worker-bench: ours, fetch + parse only: {peer_messages} inbox messages");
    let output = std::process::Command::new(&binary)
        .arg(args.to_string())
        .env("GRAPH_FETCH_CLIENT_SECRET", &world.client_secret)
        .output()
        .ok()?;
    let result: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(result) => result,
        Err(_) => {
            eprintln!(
                "worker-bench: graph-fetch failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
    };
    let handled = result["messages"].as_f64()?.max(1.0);
    Some((result["cpu_seconds"].as_f64()? * 1e6 / handled, handled))
}
