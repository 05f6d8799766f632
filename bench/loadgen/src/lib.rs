//! wsgate-bench: the load generator for wsgate and its baselines.
//!
//! Every scenario is a library function taking its arguments and returning
//! a report (serialised as one JSON line by the binary); an `Err` is a
//! setup failure (cannot connect, membership never confirmed). Losses,
//! errors and dropped connections during a measurement are figures of the
//! report, never silent.
//!
//! # Layout
//! - [`cli`]: the command line (the binary is a thin wrapper);
//! - scenarios: [`fanout`], [`pingpong`], [`connections`] (WebSocket, the
//!   contract of bench/README.md), [`ingest`], [`history`] (gRPC, wsgate's
//!   chat server only);
//! - [`swarm`]: the WebSocket clients of the first three (connect, join,
//!   prove membership, publish, account for every delivery);
//! - [`ws`]: connecting, the contract's frames, cheap parsing;
//! - [`ids`]: the process clock and the message ids that carry send time,
//!   publisher and counter;
//! - [`order`]: per receiver per publisher loss/duplicate/order accounting;
//! - [`stats`]: sharded counters, batched HDR histograms, report figures;
//! - [`sys`]: open-file limit, resident memory, CPU time.

pub mod cli;
pub mod connections;
pub mod fanout;
pub mod history;
pub mod ids;
pub mod ingest;
pub mod order;
pub mod pingpong;
pub mod stats;
pub mod swarm;
pub mod sys;
pub mod ws;
