//! Configuration and the backend factory of the service registry, without the RPC transport.
//!
//! - [`config`]: [`RpcConfig`](config::RpcConfig), the `rpc.*` and `rpc.registryConfig.*` keys of
//!   the original framework, loaded from `rpc.toml` / `rpc.yaml` / `rpc.json` /
//!   `application.properties` plus environment overrides; every error names the key.
//! - [`factory`]: registry backends by name (`memory`, `etcd`, `zookeeper`, `redis`: one cargo
//!   feature each), open to third-party backends; an unknown name lists the known ones.
//! - [`connect`]: a running [`Registry`](registry_core::Registry) from `rpc.registryConfig`.
//!
//! `registryctl`, a console, or any program that only needs the registry depends on this
//! crate; `rpc-runtime` re-exports its modules under the same paths.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_config::config::RpcConfig;
//! use rpc_config::connect::connect_registry;
//!
//! let config = RpcConfig::default(); // the embedded `memory` registry
//! let registry = connect_registry(&config.registry_config).await?;
//! assert_eq!(registry.backend_name(), "memory");
//! # Ok(()) }
//! ```

pub mod config;
pub mod connect;
pub mod factory;
#[cfg(any(feature = "logging", feature = "prometheus"))]
pub mod logging;
