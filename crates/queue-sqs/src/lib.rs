//! The SQS adapter of [`JobQueue`]: `SendMessageBatch` of 10, `ChangeMessageVisibility`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use o365_domain::DomainError;

use o365_sync_engine::{JobQueue, SyncJob};

/// SQS allows at most 10 entries per batch and a visibility timeout of 12 hours.
pub const SQS_BATCH: usize = 10;
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

#[derive(Clone)]
pub struct SqsJobQueue {
    client: Client,
    queue_url: String,
}

impl SqsJobQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send(&self, jobs: &[SyncJob]) -> o365_domain::Result<Vec<usize>> {
        let mut failed = Vec::new();
        for (chunk_no, chunk) in jobs.chunks(SQS_BATCH).enumerate() {
            let base = chunk_no * SQS_BATCH;
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, job) in chunk.iter().enumerate() {
                let body = serde_json::to_string(job)
                    .map_err(|e| DomainError::Unavailable(format!("job not serialisable: {e}")))?;
                entries.push(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| DomainError::Unavailable(e.to_string()))?,
                );
            }
            match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for f in out.failed() {
                        tracing::warn!(
                            code = f.code(),
                            sender_fault = f.sender_fault(),
                            "SQS refused a job"
                        );
                        if let Ok(i) = f.id().parse::<usize>() {
                            failed.push(base + i);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %DisplayErrorContext(&e), "SendMessageBatch failed");
                    failed.extend(base..base + chunk.len());
                }
            }
        }
        Ok(failed)
    }

    async fn retry_later(&self, receipt: &str, delay: Duration) -> o365_domain::Result<()> {
        let secs = delay.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs.max(1))
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %DisplayErrorContext(&e), "ChangeMessageVisibility failed");
                DomainError::Unavailable("SQS did not accept the visibility change".into())
            })?;
        Ok(())
    }
}
