//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and generates
//! prost messages plus tonic service code. The descriptor set is kept for gRPC reflection.
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        proto_root.join("chatstream/events/v1/events.proto"),
        proto_root.join("chatstream/gateway/v1/chat.proto"),
        proto_root.join("chatstream/gateway/v1/analytics.proto"),
    ];
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("chatstream_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tool-call payloads carry a whole request: boxed, so every `Event`
        // stays as small as before.
        .boxed(".chatstream.events.v1.Event.payload.tool_call_requested")
        .boxed(".chatstream.events.v1.Event.payload.tool_call_completed")
        .boxed(".chatstream.events.v1.Event.payload.tool_call_approval_requested")
        .boxed(".chatstream.events.v1.Event.payload.tool_call_approval_decided")
        // The router's routing and usage payloads are larger than the
        // chat ones; boxed, so every `Event` stays as small as before.
        .boxed(".chatstream.events.v1.Event.payload.model_routing_decided")
        .boxed(".chatstream.events.v1.Event.payload.model_attempt_failed")
        .boxed(".chatstream.events.v1.Event.payload.model_usage_recorded")
        // A user message may carry the conversation sent along with it.
        .boxed(".chatstream.events.v1.Event.payload.user_message_sent")
        // A committed event is the largest server frame by far; frames are
        // made to be sent at once, so a copy of its bytes costs less than
        // an allocation per frame would.
        .enum_attribute(
            ".chatstream.gateway.v1.ServerFrame.frame",
            "#[allow(clippy::large_enum_variant)]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
