//! The embedded run's scheduler: the sync engine the Lambdas run, with an in-process queue in
//! place of SQS (same retry rules: delayed redelivery on throttling, redelivery of failures up
//! to a dead-letter limit) and a timer in place of EventBridge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use o365_domain::Result;
use o365_domain::ports::{SecretStore, SyncTrigger};
use o365_runtime::{EngineSyncTrigger, Env};
use o365_store_dynamodb::DynamoStore;
use o365_sync_engine::{JobQueue, QueueRecord, Stores, SyncEngine, SyncJob};

/// Like the deployed queue's `maxReceiveCount`.
const MAX_DELIVERIES: u32 = 10;
/// Like the deployed queue's visibility timeout, shortened for a local run.
const REDELIVERY_DELAY: Duration = Duration::from_secs(30);
/// One worker invocation's time budget (the deployed worker has 15 minutes).
const INVOCATION_BUDGET: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Delivery {
    job: SyncJob,
    attempt: u32,
}

/// The receipt of a local delivery carries the delivery itself, so a delayed retry needs no lookup.
fn receipt(d: &Delivery) -> String {
    format!(
        "{}|{}",
        d.attempt,
        serde_json::to_string(&d.job).unwrap_or_default()
    )
}

fn from_receipt(r: &str) -> Option<Delivery> {
    let (attempt, job) = r.split_once('|')?;
    Some(Delivery {
        attempt: attempt.parse().ok()?,
        job: serde_json::from_str(job).ok()?,
    })
}

#[derive(Clone)]
struct LocalQueue {
    tx: mpsc::UnboundedSender<Delivery>,
}

impl LocalQueue {
    fn later(&self, delivery: Delivery, delay: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(delivery);
        });
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn send(&self, jobs: &[SyncJob]) -> Result<Vec<usize>> {
        Ok(jobs
            .iter()
            .enumerate()
            .filter(|(_, job)| {
                self.tx
                    .send(Delivery {
                        job: (*job).clone(),
                        attempt: 1,
                    })
                    .is_err()
            })
            .map(|(i, _)| i)
            .collect())
    }

    async fn retry_later(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        if let Some(d) = from_receipt(receipt_handle) {
            self.later(d, delay);
        }
        Ok(())
    }
}

/// Starts the worker loop and the schedule (which also settles connections still
/// "verifying"); returns "sync now".
pub fn start(
    env: &Env,
    store: DynamoStore,
    secrets: Arc<dyn SecretStore>,
) -> std::result::Result<Arc<dyn SyncTrigger>, o365_runtime::ConfigError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let queue = LocalQueue { tx };
    let grants = o365_runtime::grants(env, Arc::new(store.clone()), secrets.clone())?;
    let mail = Arc::new(o365_msgraph::GraphClient::new(
        o365_runtime::graph_config(env),
        secrets,
    ));
    let engine = Arc::new(SyncEngine::new(
        Stores::single(Arc::new(store)),
        mail.clone(),
        mail,
        Arc::new(queue.clone()),
        o365_runtime::sync_config(env)?,
    ));
    let interval = env.seconds("O365_LOCAL_SYNC_INTERVAL_SECS", 60)?;

    let worker = engine.clone();
    tokio::spawn(async move {
        while let Some(delivery) = rx.recv().await {
            let (engine, queue) = (worker.clone(), queue.clone());
            tokio::spawn(async move {
                let record = QueueRecord {
                    message_id: receipt(&delivery),
                    receipt_handle: receipt(&delivery),
                    body: serde_json::to_string(&delivery.job).unwrap_or_default(),
                };
                let report = engine
                    .handle_batch(vec![record], Instant::now() + INVOCATION_BUDGET)
                    .await;
                // A throttled job was already re-queued by `retry_later`; a failed one comes back
                // after the redelivery delay, until the dead-letter limit.
                let throttled = report.throttled > 0;
                if !report.failed.is_empty() && !throttled {
                    if delivery.attempt < MAX_DELIVERIES {
                        queue.later(
                            Delivery {
                                attempt: delivery.attempt + 1,
                                ..delivery
                            },
                            REDELIVERY_DELAY,
                        );
                    } else {
                        tracing::error!(org = %delivery.job.org, mailbox = %delivery.job.mailbox, "sync job dead-lettered after {MAX_DELIVERIES} deliveries");
                    }
                }
            });
        }
    });

    let schedule = engine.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            // As mailbox-sync does: settle "verifying" connections, then fan out.
            if let Err(e) = grants.settle_verifying_connections().await {
                tracing::warn!(error = %e, "settling verifying connections failed");
            }
            match schedule.enqueue_all().await {
                Ok(report) => tracing::debug!(
                    enqueued = report.enqueued,
                    orgs = report.orgs,
                    "scheduled fan-out"
                ),
                Err(e) => tracing::warn!(error = %e, "scheduled fan-out failed"),
            }
        }
    });
    Ok(Arc::new(EngineSyncTrigger(engine)))
}
