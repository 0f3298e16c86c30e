//! The `mock-provider` binary's parts: reading an OpenAI Chat Completions
//! request (`request`) and producing its answer on a known schedule
//! (`answer`). The binary wires them to HTTP routes.
pub mod answer;
pub mod request;
