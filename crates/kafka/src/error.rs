//! Turning librdkafka's errors into `LogError`s that say what failed and
//! where, and running librdkafka's blocking calls off the async workers.
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use chatstream_core::log::LogError;

/// `error` from `action` (e.g. "fetching the watermarks of events/3"),
/// classified: the cluster cannot be reached or is failing over →
/// `Unavailable` naming `bootstrap_servers`; anything else → `Storage`.
pub(super) fn log_error(bootstrap_servers: &str, action: &str, error: &KafkaError) -> LogError {
    if error.rdkafka_error_code().is_some_and(is_unavailable) {
        LogError::Unavailable(format!(
            "Kafka at {bootstrap_servers} did not answer while {action}: {error}"
        ))
    } else {
        LogError::Storage(format!("Kafka failed while {action}: {error}"))
    }
}

/// Errors that say the cluster (or the leader we need) is not reachable
/// right now, as opposed to a request it refused.
fn is_unavailable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | OperationTimedOut
            | RequestTimedOut
            | MessageTimedOut
            | TimedOutQueue
            | NetworkException
            | LeaderNotAvailable
            | NotLeaderForPartition
            | CoordinatorNotAvailable
            | NotCoordinator
            | CoordinatorLoadInProgress
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | ISRInsufficient
            | WaitingForCoordinator
    )
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| LogError::Unavailable(format!("Kafka client task failed: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_cluster_is_unavailable_and_named() {
        let error = log_error(
            "10.0.0.1:9092",
            "fetching metadata",
            &KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
        );
        match error {
            LogError::Unavailable(message) => assert!(message.contains("10.0.0.1:9092")),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_request_is_a_storage_error() {
        let error = log_error(
            "127.0.0.1:9092",
            "producing",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(matches!(error, LogError::Storage(_)), "{error:?}");
    }
}
