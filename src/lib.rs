//! wsgate: browsers talk to gRPC services over WebSocket.
pub mod proto;
pub mod storage;
