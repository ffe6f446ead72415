//! Real infrastructure for tests, started as child processes on free
//! loopback ports in temporary directories, and stopped on drop. Nothing
//! already running on the machine is used or touched.

mod postgres;
mod process;
mod redis;
mod replica;

pub use postgres::{DatabaseRoles, PostgresServer};
pub use process::free_port;
pub use redis::{RedisServer, RedisTls};
pub use replica::{BLINDING_URL_VARIABLE, RANDOMISATION_URL_VARIABLE, Replica, equipoise_binary};
