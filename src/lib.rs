//! wsgate: browsers talk to gRPC services over WebSocket.
//!
//! # Layout
//! - [`auth`]: JSON Web Tokens: verifying (gateway and server), minting.
//! - [`metrics`]: the Prometheus registry and `/metrics`.
//! - [`proto`]: `proto/chat.proto`'s generated types and its descriptor set.
//! - [`server`]: the gRPC chat service (`server::run`).
//! - [`storage`]: the [`storage::Store`] trait, SQLite, the group-commit writer.
//! - [`proxy`]: the descriptor-driven WebSocket gateway (`proxy::run`).
//! - [`tls`]: TLS on the gRPC leg: the server's certificate (and client CA),
//!   the gateway's connector to a TLS upstream.
//!
//! Entry points take a bound listener and a shutdown token, so callers (the
//! binary, the tests) choose the address, and tests bind port 0.
//! See ARCHITECTURE.md for the path of one message.

pub mod auth;
pub mod metrics;
pub mod proto;
pub mod proxy;
pub mod server;
pub mod storage;
pub mod tls;
