//! The two SQS-triggered functions' edge: records in as the engine takes them, failures out as
//! Lambda's partial batch response (so a failed or unreadable record comes back, then goes to
//! the dead-letter queue).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use o365_sync_engine::QueueRecord;

pub fn queue_records(event: SqsEvent) -> Vec<QueueRecord> {
    event
        .records
        .into_iter()
        .map(|m| QueueRecord {
            message_id: m.message_id.unwrap_or_default(),
            receipt_handle: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
        })
        .collect()
}

/// `batchItemFailures` naming the records to redeliver.
pub fn batch_failures(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
