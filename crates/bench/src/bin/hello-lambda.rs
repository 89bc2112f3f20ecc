//! The peer for init time: a `lambda_runtime` function that does nothing, built with the same
//! profile as ours. `scripts/bench` compares each function's start (exec → first poll of the
//! Runtime API) with this one's.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
