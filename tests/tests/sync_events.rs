//! The sample events of the two sync functions deserialise into the types their handlers take.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use o365_sync_engine::{FanOutJob, SyncJob};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/");

#[test]
fn sync_sample_events_deserialise() {
    let schedule = std::fs::read_to_string(format!("{ROOT}mailbox-sync-schedule.json")).unwrap();
    let e: EventBridgeEvent<serde_json::Value> = serde_json::from_str(&schedule).unwrap();
    assert_eq!(e.detail_type, "Scheduled Event");

    let batch = std::fs::read_to_string(format!("{ROOT}sync-worker-batch.json")).unwrap();
    let e: SqsEvent = serde_json::from_str(&batch).unwrap();
    assert_eq!(e.records.len(), 2);
    for r in e.records {
        let job: SyncJob = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(job.org.as_str(), "acme");
        assert!(r.message_id.is_some() && r.receipt_handle.is_some());
    }

    let walk = std::fs::read_to_string(format!("{ROOT}mailbox-sync-walk.json")).unwrap();
    let e: SqsEvent = serde_json::from_str(&walk).unwrap();
    let job: FanOutJob = serde_json::from_str(e.records[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        (job.org.as_str(), job.request.is_some(), job.after),
        ("acme", true, None)
    );
}
