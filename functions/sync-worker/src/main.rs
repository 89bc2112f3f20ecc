//! sync-worker: one SQS batch (up to 10 mailbox jobs) per invocation, reporting
//! `batchItemFailures`. Glue only: tracing, configuration, adapters, the engine, and EMF lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use o365_msgraph::GraphClient;
use o365_runtime::functions::Worker;
use o365_runtime::{Env, sqs_event};
use o365_sync_engine::{SyncEngine, metrics};

/// Time kept back from the invocation's deadline to save state and answer.
const SAFETY_MARGIN: Duration = Duration::from_secs(15);

async fn handle(
    engine: &Arc<SyncEngine>,
    graph: &GraphClient,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let started = Instant::now();
    let before = graph.stats();
    let deadline = o365_runtime::invocation_deadline(event.context.deadline, SAFETY_MARGIN);
    // Every line of this invocation, the mailbox tasks' included, carries its ids.
    let span = tracing::info_span!(
        "invocation",
        requestId = %event.context.request_id,
        xrayTraceId = event.context.xray_trace_id.as_deref().unwrap_or("")
    );
    let records = sqs_event::queue_records(event.payload);
    let report =
        tracing::Instrument::instrument(engine.handle_batch(records, deadline), span).await;
    let used = graph.stats().since(&before);
    for line in metrics::worker_lines(
        "sync-worker",
        &report,
        used.graph_requests,
        used.throttled,
        started.elapsed().as_millis() as u64,
    ) {
        println!("{line}");
    }
    Ok(sqs_event::batch_failures(report.failed))
}

/// glibc's allocator with one arena: each worker thread otherwise grows an arena of its own to
/// a page's high-water mark. At page size 1000 this took the peak RSS from 115 to 68 MB for no
/// measurable CPU (scripts/bench; a fixed mmap threshold saved 6 MB more but cost 10 % CPU).
#[cfg(target_env = "gnu")]
fn bounded_heap() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(target_env = "gnu"))]
fn bounded_heap() {}

/// One thread: at the worker's memory size Lambda gives it a fraction of one vCPU, so more
/// threads add start-up and wake-ups, not parallel CPU (CPU per message measured the same on
/// two cores; init 0.1× of hello-world less).
fn main() -> Result<(), Error> {
    bounded_heap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Error> {
    o365_runtime::init_tracing(true);
    let Worker { engine, graph } = o365_runtime::functions::sync_worker(&Env::process()).await?;
    lambda_runtime::run(service_fn(|event| {
        let (engine, graph) = (engine.clone(), graph.clone());
        async move { handle(&engine, &graph, event).await }
    }))
    .await
}
