//! Turning SDK failures into domain outcomes.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use o365_domain::DomainError;

/// An infrastructure failure: not the caller's fault, reported without internals.
pub fn unavailable(e: impl std::fmt::Debug + std::fmt::Display) -> DomainError {
    let text = e.to_string();
    tracing::warn!(error = %text, "dynamodb call failed");
    DomainError::Unavailable("the state store did not answer; try again shortly".into())
}

pub fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    DisplayErrorContext(e).to_string()
}

/// Is this the failure of a `ConditionExpression`?
pub fn is_conditional_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// How a transaction ended when it did not commit.
pub enum TransactionFailure {
    /// Per item, in request order: `None` where the item was fine, or its reason code
    /// (`ConditionalCheckFailed`, `TransactionConflict`, …).
    Cancelled(Vec<Option<String>>),
    Other(DomainError),
}

pub fn transaction_failure<R: std::fmt::Debug>(
    e: SdkError<TransactWriteItemsError, R>,
) -> TransactionFailure {
    if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
        let reasons = c
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().filter(|code| *code != "None").map(str::to_owned))
            .collect();
        return TransactionFailure::Cancelled(reasons);
    }
    TransactionFailure::Other(unavailable(DisplayErrorContext(&e)))
}
