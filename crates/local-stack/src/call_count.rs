//! DynamoDB calls counted by operation as the SDK sends them: what a piece of work costs,
//! measured at the service API rather than inside our own code (tests and benchmarks).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Operations that write (each is billed in write units).
pub const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

#[derive(Debug, Default, Clone)]
pub struct DynamoCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl DynamoCalls {
    /// Calls so far, by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Calls made since `before`, by operation (operations not called are left out).
    pub fn since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .map(|(op, n)| {
                let d = n - before.get(&op).copied().unwrap_or(0);
                (op, d)
            })
            .filter(|(_, d)| *d > 0)
            .collect()
    }

    pub fn writes(calls: &BTreeMap<String, u64>) -> u64 {
        WRITE_OPERATIONS
            .iter()
            .map(|op| calls.get(*op).copied().unwrap_or(0))
            .sum()
    }

    /// A DynamoDB client for a local endpoint whose calls land in this counter.
    pub fn client(&self, endpoint: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&crate::local_sdk_config(endpoint))
            .interceptor(Counter(self.clone()))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

#[derive(Debug)]
struct Counter(DynamoCalls);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "o365-dynamodb-call-count"
    }

    // Once per operation (retries included in the one call), after the operation's metadata is
    // in the bag.
    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let (Some(op), Ok(mut calls)) = (cfg.load::<Metadata>(), (self.0).0.lock()) {
            *calls.entry(op.name().to_owned()).or_default() += 1;
        }
        Ok(())
    }
}
