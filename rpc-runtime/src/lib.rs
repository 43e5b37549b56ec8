//! RPC runtime on top of the service registry.
//!
//! - [`config`]: `RpcConfig`, loaded from `rpc.toml` / `rpc.yaml` / `rpc.json` / `application.properties`
//!   plus environment overrides.
//! - [`connect`]: a running `Registry` from `rpc.registryConfig`.
//! - [`factory`]: registry backends by name (`memory`, `etcd`, ...), open to third-party backends.

pub mod config;
pub mod connect;
pub mod factory;
