//! consent-callback: the public route Microsoft's admin-consent redirect lands on. Glue only:
//! tracing, configuration, adapters, then the shared axum router.

// One invocation at a time, waiting on the network: a thread is all it needs (worker threads
// were a tenth of its start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    o365_runtime::init_tracing(true);
    let state = o365_runtime::functions::consent_callback(&o365_runtime::Env::process()).await?;
    lambda_http::run(o365_http_api::consent_callback(state)).await
}
