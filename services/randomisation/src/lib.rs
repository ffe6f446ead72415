//! The randomisation service. Everything but [`grpc`] is plain Rust with no
//! gRPC types, so the domain can be tested without a server.

pub mod error;
pub mod grpc;
pub mod lock;
pub mod methods;
pub mod seal;
pub mod server;
pub mod service;
pub mod settings;
pub mod simulation;
pub mod store;
