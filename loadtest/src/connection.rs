//! A connection over whichever transport the run uses, and the session on
//! it: authenticated, with its own conversation, subscribed to it (unless
//! only acks are measured) so that no reply token is missed.
use std::time::Duration;

use crate::grpc_client::GrpcConnection;
use crate::kafka_client::KafkaConnection;
use crate::openai_client::OpenAiConnection;
use crate::protocol::{Incoming, Outgoing, TransportError};
use crate::run_config::{RunConfig, Transport};
use crate::ws_client::WsConnection;

pub enum Connection {
    Ws(WsConnection),
    // Boxed: a tonic stream is large, and sessions move between tasks.
    Grpc(Box<GrpcConnection>),
    OpenAi(OpenAiConnection),
    Kafka(KafkaConnection),
}

impl Connection {
    async fn connect(
        config: &RunConfig,
        index: u32,
        api_key: &str,
    ) -> Result<Self, TransportError> {
        Ok(match config.transport {
            Transport::Ws => Connection::Ws(WsConnection::connect(&config.target, api_key).await?),
            Transport::Grpc => Connection::Grpc(Box::new(
                GrpcConnection::connect(&config.target, api_key).await?,
            )),
            Transport::Openai => Connection::OpenAi(
                OpenAiConnection::connect(
                    &config.target,
                    &config.openai_model,
                    api_key,
                    config.ack_only,
                    config.timeout,
                )
                .await?,
            ),
            Transport::Kafka => {
                let target = config.kafka.as_ref().ok_or_else(|| {
                    TransportError::Connect("--transport kafka needs --kafka-topic".into())
                })?;
                Connection::Kafka(KafkaConnection::connect(target, index).await?)
            }
        })
    }

    /// Queues a frame; never waits for the network.
    pub fn send(&mut self, frame: Outgoing) -> Result<(), TransportError> {
        match self {
            Connection::Ws(ws) => ws.send(frame),
            Connection::Grpc(grpc) => grpc.send(frame),
            Connection::OpenAi(openai) => openai.send(frame),
            Connection::Kafka(kafka) => kafka.send(frame),
        }
    }

    /// The next frame from the server. Cancel-safe, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        match self {
            Connection::Ws(ws) => ws.recv().await,
            Connection::Grpc(grpc) => grpc.recv().await,
            Connection::OpenAi(openai) => openai.recv().await,
            Connection::Kafka(kafka) => kafka.recv().await,
        }
    }
}

pub struct Session {
    pub connection: Connection,
    pub conversation_id: String,
}

impl Session {
    /// Connects, opens a conversation and subscribes to it, all within `timeout`.
    pub async fn establish(
        config: &RunConfig,
        index: u32,
        api_key: &str,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let target = &config.target;
        let setup = async {
            let mut connection = Connection::connect(config, index, api_key).await?;
            connection.send(Outgoing::Open {
                request_id: "open".into(),
            })?;
            let conversation_id = loop {
                match connection.recv().await {
                    Ok(Incoming::Opened {
                        conversation_id, ..
                    }) => break conversation_id,
                    Ok(Incoming::Error { code, message, .. }) => {
                        return Err(TransportError::Connect(format!(
                            "{target}: opening a conversation failed: {code}: {message}"
                        )));
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        return Err(TransportError::Connect(format!("{target}: {error}")));
                    }
                }
            };
            if !config.ack_only {
                connection.send(Outgoing::Subscribe {
                    request_id: "subscribe".into(),
                    conversation_id: conversation_id.clone(),
                })?;
                loop {
                    match connection.recv().await {
                        Ok(Incoming::Subscribed) => break,
                        Ok(Incoming::Error { code, message, .. }) => {
                            return Err(TransportError::Connect(format!(
                                "{target}: subscribing failed: {code}: {message}"
                            )));
                        }
                        Ok(_) => continue,
                        Err(error) => {
                            return Err(TransportError::Connect(format!("{target}: {error}")));
                        }
                    }
                }
            }
            Ok(Session {
                connection,
                conversation_id,
            })
        };
        tokio::time::timeout(timeout, setup)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Connect(format!(
                    "{target}: no answer within {timeout:?} while connecting"
                )))
            })
    }
}
