//! RPC runtime on top of the service registry.
//!
//! - [`config`], [`connect`], [`factory`]: re-exported from `rpc-config` (configuration and the
//!   backend factory, usable without the transport): `RpcConfig` loaded from `rpc.toml` /
//!   `rpc.yaml` / `rpc.json` / `application.properties` plus environment overrides, a running
//!   `Registry` from `rpc.registryConfig`, registry backends by name.
//! - [`protocol`]: the wire format (fixed header + body) and its codec.
//! - [`serializer`]: `json` and `bincode` bodies.
//! - [`service`]: [`rpc_service!`] turns a trait into a server dispatcher and a typed client.
//! - [`server`] and [`provider`]: serving services and registering them (graceful shutdown).
//! - [`transport`], [`balance`], [`fault`] and [`consumer`]: calling them (multiplexed
//!   connections, load balancing, retry, failover).
//! - [`tls`]: TLS on the transport (`rpc.tls.*`), chosen per node by its `tls=true` metadata.

pub mod balance;
mod budget;
pub mod consumer;
pub mod fault;
pub mod protocol;
pub mod provider;
pub mod serializer;
pub mod server;
pub mod service;
pub mod tls;
pub mod transport;

// Configuration and the backend factory live in `rpc-config` (usable without the transport);
// re-exported here so user code keeps its paths.
pub use rpc_config::{config, connect, factory};

#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
}
