//! chime-gateway: an authenticating, ACL-enforcing reverse proxy for Chime's
//! reporting API.
//!
//! The request path is composed in [`stack`]; each concern is one module
//! named after the step it performs. [`server::Gateway`] binds the public and
//! admin listeners; [`simulator`] is a built-in Chime used by `demo`, tests
//! and benchmarks.

// The library has no unsafe code at all (the binary sets one allocator option).
#![forbid(unsafe_code)]

pub mod acl;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod fuzz;
pub mod gate;
pub mod header_number;
pub mod keystore;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod observe;
pub mod percent;
pub mod probe;
pub mod proxy;
pub mod ratelimit;
pub mod readiness;
pub mod request;
pub mod request_id;
pub mod route;
pub mod server;
pub mod simulator;
mod split;
pub mod stack;
pub mod state;
pub mod tls;
pub mod trace_context;
pub mod unwind;
pub mod workers;

/// The error type every layer returns; [`error::classify`] turns it into a response.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, `Send` future: the proxy's, and authentication's and the rate
/// limit's when they must wait for a remote store.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
