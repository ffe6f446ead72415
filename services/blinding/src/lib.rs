//! The blinding service (docs/architecture.md, "Services").
//!
//! It will own the treatment-code pools (which code belongs to which arm is
//! the blind), the assignment of one code per allocation, and every reveal of
//! an arm, each with its own store and audit chain, reached only over
//! `equipoise.blinding.v1`. So far this crate holds the treatment-code domain
//! as plain Rust: generating pools from a trial's sealed seed, checking
//! uploaded pools, and the rule that warns before a pool runs out; and its
//! store: pools kept once per trial, one code per allocation, and the
//! service's audit chain, on SQLite or PostgreSQL.

pub mod codes;
pub mod store;
