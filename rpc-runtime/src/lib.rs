//! RPC runtime on top of the service registry.
//!
//! - [`config`]: `RpcConfig`, loaded from `rpc.toml` / `rpc.yaml` / `rpc.json` / `application.properties`
//!   plus environment overrides.
//! - [`connect`]: a running `Registry` from `rpc.registryConfig`.
//! - [`factory`]: registry backends by name (`memory`, `etcd`, ...), open to third-party backends.
//! - [`protocol`]: the wire format (fixed header + body) and its codec.
//! - [`serializer`]: `json` and `bincode` bodies.
//! - [`service`]: [`rpc_service!`] turns a trait into a server dispatcher and a typed client.
//! - [`server`] and [`provider`]: serving services and registering them (graceful shutdown).
//! - [`transport`], [`balance`], [`fault`] and [`consumer`]: calling them (multiplexed
//!   connections, load balancing, retry, failover).

pub mod balance;
mod budget;
pub mod config;
pub mod connect;
pub mod consumer;
pub mod factory;
pub mod fault;
pub mod protocol;
pub mod provider;
pub mod serializer;
pub mod server;
pub mod service;
pub mod transport;

#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
}
