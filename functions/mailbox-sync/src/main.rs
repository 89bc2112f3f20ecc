//! mailbox-sync: the fan-out. Two triggers, one engine:
//! - the EventBridge schedule: settle connections still "verifying" (a slow consent propagation
//!   ends without anyone reading the status), then walk every connected org until the
//!   invocation's time is nearly up, handing what is left to the fan-out queue;
//! - the fan-out queue (SQS): org walks — "sync now" requests and the rest of walks that ran
//!   out of time — reporting unreadable or failed records in `batchItemFailures`.
//!
//! Glue only: tracing, configuration, adapters, the engine, and one EMF metrics line.

use std::time::{Duration, Instant};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use o365_domain::service::grant::Grants;
use o365_runtime::functions::FanOut;
use o365_runtime::{Env, sqs_event};
use o365_sync_engine::{FanOutReport, SyncEngine, metrics};

/// Time kept back from the invocation's deadline to queue the rest of a walk and answer.
const SAFETY_MARGIN: Duration = Duration::from_secs(15);

async fn scheduled(
    grants: &Grants,
    engine: &SyncEngine,
    event: EventBridgeEvent<serde_json::Value>,
    deadline: Instant,
) -> Result<(FanOutReport, serde_json::Value), Error> {
    tracing::info!(source = event.source, "scheduled fan-out");
    let settled = grants.settle_verifying_connections().await?;
    let report = engine.enqueue_all_by(deadline).await?;
    let answer = serde_json::json!({
        "verifying_checked": settled,
        "orgs": report.orgs,
        "orgs_queued": report.orgs_queued,
        "enqueued": report.enqueued,
        "skipped_leased": report.skipped_leased,
        "send_failures": report.send_failures,
        "orgs_in_alarm": report.orgs_in_alarm,
    });
    Ok((report, answer))
}

async fn queued(
    engine: &SyncEngine,
    event: SqsEvent,
    deadline: Instant,
) -> Result<(FanOutReport, serde_json::Value), Error> {
    let (report, failed) = engine
        .handle_fan_out_batch(sqs_event::queue_records(event), deadline)
        .await;
    let response = sqs_event::batch_failures(failed);
    Ok((report, serde_json::to_value(response)?))
}

async fn handle(
    grants: &Grants,
    engine: &SyncEngine,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let started = Instant::now();
    let deadline = o365_runtime::invocation_deadline(event.context.deadline, SAFETY_MARGIN);
    let span = tracing::info_span!("invocation", requestId = %event.context.request_id);
    // An SQS event is a list of `Records`; anything else is the schedule's event.
    let work = async {
        if event.payload.get("Records").is_some() {
            queued(engine, serde_json::from_value(event.payload)?, deadline).await
        } else {
            scheduled(
                grants,
                engine,
                serde_json::from_value(event.payload)?,
                deadline,
            )
            .await
        }
    };
    let (report, answer) = tracing::Instrument::instrument(work, span).await?;
    println!(
        "{}",
        metrics::fanout_line(
            "mailbox-sync",
            &report,
            started.elapsed().as_millis() as u64
        )
    );
    Ok(answer)
}

// One invocation at a time, waiting on the network: a thread is all it needs (worker threads
// were a tenth of its start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    o365_runtime::init_tracing(true);
    let FanOut { grants, engine } = o365_runtime::functions::mailbox_sync(&Env::process()).await?;
    lambda_runtime::run(service_fn(|event| {
        let (grants, engine) = (grants.clone(), engine.clone());
        async move { handle(&grants, &engine, event).await }
    }))
    .await
}
