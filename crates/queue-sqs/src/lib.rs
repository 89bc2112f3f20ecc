//! The SQS adapter of [`JobQueue`]: mailbox jobs on the jobs queue (`SendMessageBatch` of 10,
//! `ChangeMessageVisibility`), org walks on the fan-out queue (`SendMessage`). A function is
//! given only the queues it uses.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use o365_domain::DomainError;

use o365_sync_engine::{FanOutJob, JobQueue, SyncJob};

/// SQS allows at most 10 entries per batch and a visibility timeout of 12 hours.
pub const SQS_BATCH: usize = 10;
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

#[derive(Clone)]
pub struct SqsJobQueue {
    client: Client,
    jobs_url: Option<String>,
    fan_out_url: Option<String>,
}

impl SqsJobQueue {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            jobs_url: None,
            fan_out_url: None,
        }
    }

    /// The queue the workers read (mailbox jobs).
    pub fn with_jobs(mut self, url: impl Into<String>) -> Self {
        self.jobs_url = Some(url.into());
        self
    }

    /// The queue the fan-out function reads (org walks).
    pub fn with_fan_out(mut self, url: impl Into<String>) -> Self {
        self.fan_out_url = Some(url.into());
        self
    }

    fn jobs_url(&self) -> o365_domain::Result<&str> {
        self.jobs_url
            .as_deref()
            .ok_or_else(|| DomainError::Unavailable("this function has no jobs queue".into()))
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
                .queue_url(self.jobs_url()?)
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
            .queue_url(self.jobs_url()?)
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

    async fn send_fan_out(&self, job: &FanOutJob) -> o365_domain::Result<()> {
        let url = self
            .fan_out_url
            .as_deref()
            .ok_or_else(|| DomainError::Unavailable("this function has no fan-out queue".into()))?;
        let body = serde_json::to_string(job)
            .map_err(|e| DomainError::Unavailable(format!("job not serialisable: {e}")))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %DisplayErrorContext(&e), "SendMessage failed");
                DomainError::Unavailable("SQS did not accept the fan-out job".into())
            })?;
        Ok(())
    }
}
