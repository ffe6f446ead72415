//! Plumbing shared by the Equipoise services. Nothing here knows a trial's
//! arms: it authenticates callers, chains and stores audit records, opens
//! and migrates databases, and serves gRPC.

pub mod audit;
pub mod auth;
pub mod bounds;
pub mod crypto;
pub mod error;
pub mod grpc;
pub mod logging;
pub mod serve;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
