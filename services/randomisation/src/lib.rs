//! The randomisation service. Everything but [`grpc`] is plain Rust with no
//! gRPC types, so the domain can be tested without a server.

pub mod definition;
pub mod methods;
pub mod stream;
pub mod simulation;
pub mod seal;
pub mod store;
pub mod error;
pub mod lock;
pub mod service;
pub mod grpc;
pub mod server;
