//! chatstream's shared vocabulary: the protobuf events and gateway API
//! (generated from `proto/`), the log codec, event ids, and the JSON mapping
//! spoken on the WebSocket.

pub mod codec;
pub mod event;
pub mod ids;
pub mod ws;

/// Generated protobuf types, nested like their packages.
pub mod pb {
    pub mod chatstream {
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("chatstream.events.v1");
            }
        }
        pub mod gateway {
            pub mod v1 {
                tonic::include_proto!("chatstream.gateway.v1");
            }
        }
    }
    pub use chatstream::events::v1 as events;
    pub use chatstream::gateway::v1 as gateway;

    /// Encoded `FileDescriptorSet` of every chatstream proto, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("chatstream_descriptor");
}

pub use pb::events::Event;
