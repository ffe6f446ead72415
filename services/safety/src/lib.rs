//! The safety service (docs/architecture.md, "Services"): SAE cases and
//! their versions, seriousness, causality and expectedness, SUSAR
//! classification through the blinding service's safety reveal, regulatory
//! clocks and submissions, and DSMB summaries.
//!
//! Layers: `clocks` and `e2b` (plain Rust rules: calendar-day deadlines in
//! the sponsor's time zone, and the ICH E2B(R3) message), `store` (SQLite
//! or PostgreSQL), `service` (the application, authorising every caller),
//! `grpc` (the thin tonic layer, with the client of the blinding service),
//! `settings` and `server`.

pub mod clocks;
pub mod e2b;
pub mod error;
pub mod service;
pub mod store;

pub use service::{Blinding, SafetyService, TrialDefinitions};
pub mod grpc;
pub mod server;
pub mod settings;
