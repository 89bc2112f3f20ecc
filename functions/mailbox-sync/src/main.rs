//! mailbox-sync: the scheduled fan-out (EventBridge). Glue only: tracing, configuration,
//! adapters, then settling connections still "verifying" (a slow consent propagation ends
//! without anyone reading the status), the engine's `enqueue_all`, and one EMF metrics line.

use std::time::Instant;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use o365_domain::service::grant::Grants;
use o365_runtime::Env;
use o365_runtime::functions::FanOut;
use o365_sync_engine::{SyncEngine, metrics};

async fn handle(
    grants: &Grants,
    engine: &SyncEngine,
    event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
) -> Result<serde_json::Value, Error> {
    let started = Instant::now();
    tracing::info!(
        request_id = event.context.request_id,
        source = event.payload.source,
        "scheduled fan-out"
    );
    let settled = grants.settle_verifying_connections().await?;
    let report = engine.enqueue_all().await?;
    println!(
        "{}",
        metrics::fanout_line(
            "mailbox-sync",
            &report,
            started.elapsed().as_millis() as u64
        )
    );
    Ok(serde_json::json!({
        "verifying_checked": settled,
        "orgs": report.orgs,
        "enqueued": report.enqueued,
        "skipped_leased": report.skipped_leased,
        "send_failures": report.send_failures,
        "orgs_in_alarm": report.orgs_in_alarm,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    o365_runtime::init_tracing(true);
    let FanOut { grants, engine } = o365_runtime::functions::mailbox_sync(&Env::process()).await?;
    lambda_runtime::run(service_fn(|event| {
        let (grants, engine) = (grants.clone(), engine.clone());
        async move { handle(&grants, &engine, event).await }
    }))
    .await
}
