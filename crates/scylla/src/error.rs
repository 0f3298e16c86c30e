//! Driver errors as `StoreError`s: what a retry may fix (no node reachable,
//! timeouts, overload) is `Unavailable`; what it cannot (bad statement,
//! missing table, a value that does not fit) is `Storage`.
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextPageError, NextRowError, PagerExecutionError,
    PrepareError, RequestAttemptError, RequestError,
};

use chatstream_core::store::StoreError;

/// `what` names the operation, e.g. "read history".
pub(crate) fn execution(what: &str, error: ExecutionError) -> StoreError {
    let retryable = match &error {
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => true,
        ExecutionError::LastAttemptError(attempt) => attempt_is_retryable(attempt),
        ExecutionError::PrepareError(prepare) => prepare_is_retryable(prepare),
        _ => false,
    };
    classify(retryable, format!("{what}: {error}"))
}

pub(crate) fn pager(what: &str, error: PagerExecutionError) -> StoreError {
    let retryable = match &error {
        PagerExecutionError::NextPageError(page) => next_page_is_retryable(page),
        PagerExecutionError::PrepareError(prepare) => prepare_is_retryable(prepare),
        PagerExecutionError::SchemaAgreementError(_) | PagerExecutionError::MetadataError(_) => {
            true
        }
        _ => false,
    };
    classify(retryable, format!("{what}: {error}"))
}

pub(crate) fn next_row(what: &str, error: NextRowError) -> StoreError {
    match error {
        NextRowError::NextPageError(page) => classify(
            next_page_is_retryable(&page),
            format!("{what}: next page: {page}"),
        ),
        NextRowError::RowDeserializationError(error) => {
            StoreError::Corrupt(format!("{what}: a row does not match the schema: {error}"))
        }
        other => StoreError::Storage(format!("{what}: {other}")),
    }
}

pub(crate) fn prepare(what: &str, error: PrepareError) -> StoreError {
    let hint = match &error {
        PrepareError::AllAttemptsFailed { first_attempt } if is_missing_schema(first_attempt) => {
            " (is the schema applied? run `chatstream schema apply`)"
        }
        _ => "",
    };
    classify(
        prepare_is_retryable(&error),
        format!("prepare {what}: {error}{hint}"),
    )
}

pub(crate) fn new_session(known_nodes: &[String], error: NewSessionError) -> StoreError {
    let nodes = known_nodes.join(",");
    match error {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            StoreError::Storage(format!("cannot connect to ScyllaDB at {nodes}: {error}"))
        }
        other => StoreError::Unavailable(format!("cannot connect to ScyllaDB at {nodes}: {other}")),
    }
}

fn classify(retryable: bool, message: String) -> StoreError {
    if retryable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Storage(message)
    }
}

fn next_page_is_retryable(error: &NextPageError) -> bool {
    match error {
        NextPageError::RequestFailure(request) => request_is_retryable(request),
        _ => false,
    }
}

fn request_is_retryable(error: &RequestError) -> bool {
    match error {
        RequestError::EmptyPlan
        | RequestError::ConnectionPoolError(_)
        | RequestError::RequestTimeout(_) => true,
        RequestError::LastAttemptError(attempt) => attempt_is_retryable(attempt),
        _ => false,
    }
}

fn prepare_is_retryable(error: &PrepareError) -> bool {
    match error {
        PrepareError::ConnectionPoolError(_) => true,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_is_retryable(first_attempt),
        _ => false,
    }
}

fn attempt_is_retryable(error: &RequestAttemptError) -> bool {
    match error {
        RequestAttemptError::UnableToAllocStreamId
        | RequestAttemptError::BrokenConnectionError(_) => true,
        RequestAttemptError::DbError(db_error, _) => matches!(
            db_error,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
                | DbError::RateLimitReached { .. }
        ),
        _ => false,
    }
}

fn is_missing_schema(error: &RequestAttemptError) -> bool {
    matches!(error, RequestAttemptError::DbError(DbError::Invalid, message)
        if message.contains("unconfigured table")
            || message.contains("does not exist")
            || message.contains("Keyspace"))
}
