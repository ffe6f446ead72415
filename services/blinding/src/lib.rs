//! The blinding service (docs/architecture.md, "Services").
//!
//! It owns the treatment-code pools (which code belongs to which arm is
//! the blind), the assignment of one code per allocation, every reveal of
//! an arm (preparation, emergency, safety, planned end-of-period), each
//! subject's blinding state and the unblinding notifications, with its own
//! store and audit chain, reached only over `equipoise.blinding.v1`.
//!
//! Layers: `codes` (the treatment-code domain as plain Rust), `store`
//! (SQLite or PostgreSQL), `service` (the application, authorising every
//! caller), `grpc` (the thin tonic layer, with `grpc::randomisation_client`,
//! the port to randomisation over gRPC), `settings` and `server`.

pub mod codes;
pub mod error;
pub mod grpc;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;

pub use service::{BlindingService, RandomisationLookup};
