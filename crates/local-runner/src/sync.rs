//! The embedded run's scheduler: the sync engine the Lambdas run, with an in-process queue in
//! place of SQS (same retry rules: delayed redelivery on throttling, redelivery of failures up
//! to a dead-letter limit) and a timer in place of EventBridge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use o365_domain::Result;
use o365_domain::ports::{SecretStore, SyncTrigger};
use o365_runtime::{Env, QueuedSyncTrigger};
use o365_store_dynamodb::DynamoStore;
use o365_sync_engine::{FanOutJob, JobQueue, QueueRecord, Stores, SyncEngine, SyncJob};

/// Like the deployed queue's `maxReceiveCount`.
const MAX_DELIVERIES: u32 = 10;
/// Like the deployed queue's visibility timeout, shortened for a local run.
const REDELIVERY_DELAY: Duration = Duration::from_secs(30);
/// One worker invocation's time budget (the deployed worker has 15 minutes).
const INVOCATION_BUDGET: Duration = Duration::from_secs(300);

/// What travels on the local queue: the two queues of the deployment in one channel.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Work {
    /// A mailbox job (the jobs queue, read by sync-worker).
    Mailbox(SyncJob),
    /// An org's walk (the fan-out queue, read by mailbox-sync).
    Org(FanOutJob),
}

#[derive(Clone)]
struct Delivery {
    work: Work,
    attempt: u32,
}

impl Delivery {
    fn body(&self) -> String {
        match &self.work {
            Work::Mailbox(job) => serde_json::to_string(job),
            Work::Org(job) => serde_json::to_string(job),
        }
        .unwrap_or_default()
    }
}

/// The receipt of a local delivery carries the delivery itself, so a delayed retry needs no lookup.
fn receipt(d: &Delivery) -> String {
    format!(
        "{}|{}",
        d.attempt,
        serde_json::to_string(&d.work).unwrap_or_default()
    )
}

fn from_receipt(r: &str) -> Option<Delivery> {
    let (attempt, work) = r.split_once('|')?;
    Some(Delivery {
        attempt: attempt.parse().ok()?,
        work: serde_json::from_str(work).ok()?,
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
                        work: Work::Mailbox((*job).clone()),
                        attempt: 1,
                    })
                    .is_err()
            })
            .map(|(i, _)| i)
            .collect())
    }

    async fn send_fan_out(&self, job: &FanOutJob) -> Result<()> {
        self.tx
            .send(Delivery {
                work: Work::Org(job.clone()),
                attempt: 1,
            })
            .map_err(|_| o365_domain::DomainError::Unavailable("the local queue stopped".into()))
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
    let queue_for_trigger = queue.clone();
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
                    body: delivery.body(),
                };
                let deadline = Instant::now() + INVOCATION_BUDGET;
                let (failed, throttled) = match &delivery.work {
                    Work::Mailbox(_) => {
                        let report = engine.handle_batch(vec![record], deadline).await;
                        // Busy jobs are re-queued by `retry_later` too.
                        let requeued = report.throttled + report.busy > 0;
                        (!report.failed.is_empty(), requeued)
                    }
                    Work::Org(_) => {
                        let (_, failed) = engine.handle_fan_out_batch(vec![record], deadline).await;
                        (!failed.is_empty(), false)
                    }
                };
                // A throttled job was already re-queued by `retry_later`; a failed one comes back
                // after the redelivery delay, until the dead-letter limit.
                if failed && !throttled {
                    if delivery.attempt < MAX_DELIVERIES {
                        queue.later(
                            Delivery {
                                attempt: delivery.attempt + 1,
                                ..delivery
                            },
                            REDELIVERY_DELAY,
                        );
                    } else {
                        tracing::error!(
                            job = delivery.body(),
                            "sync job dead-lettered after {MAX_DELIVERIES} deliveries"
                        );
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
    Ok(Arc::new(QueuedSyncTrigger(Arc::new(queue_for_trigger))))
}
