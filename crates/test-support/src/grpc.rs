//! The gateway's gRPC API as a test calls it: a client, requests that
//! carry an API key, and the calls several tests make the same way.
use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::pb::gateway::chat_service_client::ChatServiceClient;
use chatstream_schemas::ws::EventJson;
use tonic::transport::Channel;

pub type GrpcClient = ChatServiceClient<Channel>;

pub async fn grpc_client(addr: &str) -> GrpcClient {
    ChatServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc connects")
}

/// A gRPC request carrying an API key.
pub fn authed<T>(message: T, api_key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {api_key}").parse().unwrap(),
    );
    request
}

/// `GetConversation` from the start, with the server's default page size.
pub async fn get_conversation(
    client: &mut GrpcClient,
    api_key: &str,
    conversation_id: &str,
) -> Result<pb::GetConversationResponse, tonic::Status> {
    let request = pb::GetConversationRequest {
        conversation_id: conversation_id.to_owned(),
        ..Default::default()
    };
    client
        .get_conversation(authed(request, api_key))
        .await
        .map(tonic::Response::into_inner)
}

/// `SendMessage` of `text` into a conversation, with no client message id.
pub async fn send_message(
    client: &mut GrpcClient,
    api_key: &str,
    conversation_id: &str,
    text: &str,
) -> Result<pb::MessageAck, tonic::Status> {
    let request = pb::SendMessageRequest {
        conversation_id: conversation_id.to_owned(),
        text: text.to_owned(),
        ..Default::default()
    };
    client
        .send_message(authed(request, api_key))
        .await
        .map(tonic::Response::into_inner)
}

/// A conversation's whole committed history, as `GetConversation` returns it.
pub async fn conversation_events(
    client: &mut GrpcClient,
    api_key: &str,
    conversation_id: &str,
) -> Vec<EventJson> {
    let request = pb::GetConversationRequest {
        conversation_id: conversation_id.to_owned(),
        after_position: None,
        page_size: 1000,
    };
    client
        .get_conversation(authed(request, api_key))
        .await
        .expect("GetConversation")
        .into_inner()
        .events
        .iter()
        .map(|committed| {
            let event = committed.event.as_ref().expect("an event");
            EventJson::from_event(event).expect("a known payload")
        })
        .collect()
}
