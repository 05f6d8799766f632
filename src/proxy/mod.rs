//! The WebSocket → gRPC gateway.
//!
//! Everything here is derived from a service descriptor, never from the names
//! of `chat.proto`: adding an RPC to the proto needs no gateway code.
//!
//! - `gateway`: the action tables a [`gateway::Gateway`] derives from a
//!   service (unary methods, the bidirectional stream and its oneof).
//! - `transcode`: WebSocket text frame ⇄ `DynamicMessage`, and the JSON of
//!   replies, stream events and errors.
//! - `codec`: a tonic codec for `DynamicMessage`, to call any method by path.

pub mod codec;
pub mod gateway;
pub mod transcode;
