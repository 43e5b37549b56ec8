//! A tonic [`Channel`] balanced over the nodes of one service and kept in sync with the
//! registry: one call, and every generated tonic client works through the registry.
//!
//! [`channel`] (or [`RegistryChannel`] for settings) builds a channel with
//! [`Channel::balance_channel`] and feeds it from a
//! [`RegistryDiscover`] of the service: a node registered
//! becomes an [`Endpoint`] inserted into the channel's balancer, a node deregistered (or expired)
//! is removed, so new calls stop going to it as soon as the consumer's watch sees it go.
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use registry_tonic::RegistryChannel;
//!
//! // Every node of `greeter.Greeter:1.0`, a 2 s timeout per call unless a node says otherwise.
//! let channel = RegistryChannel::new(registry.clone(), "greeter.Greeter:1.0")
//!     .with_timeout(Duration::from_secs(2))
//!     .connect()
//!     .await?;
//! // let mut client = GreeterClient::new(channel);  // any tonic client
//! # let _ = channel;
//! # Ok(()) }
//! ```
//!
//! # Per-node settings
//! Each node's [`Endpoint`] is `http://host:port` with the channel's defaults
//! ([`with_timeout`](RegistryChannel::with_timeout),
//! [`with_connect_timeout`](RegistryChannel::with_connect_timeout)), overridden by the node's
//! metadata:
//!
//! | metadata key | value | effect |
//! |---|---|---|
//! | [`META_TIMEOUT`] (`timeout`) | `1500ms`, `2s`, or milliseconds | [`Endpoint::timeout`] |
//! | [`META_CONNECT_TIMEOUT`] (`connectTimeout`) | same | [`Endpoint::connect_timeout`] |
//! | [`META_TLS`] (`tls`) | `true` / `false` | `https://host:port`, configured by [`with_tls`](RegistryChannel::with_tls) |
//!
//! A value that does not parse is ignored with a warning (the channel's default applies). A
//! node registered again at the same address is replaced in the balancer (`Remove` +
//! `Insert`, a new connection) only when its endpoint settings change; a new weight or other
//! metadata keeps its connection. tonic's balancer (power of two choices over pending
//! requests) does not use weights.
//!
//! # TLS
//! This crate does not compile TLS in (tonic's `tls-*` features are off). A node whose
//! metadata says `tls=true` is used only when a TLS configurator is set with
//! [`with_tls`](RegistryChannel::with_tls): enable a tonic TLS feature in your own crate and
//! call `Endpoint::tls_config` there (it exists only with those features). Without one, such a node is **skipped with a
//! warning** (never called in plain text), and so is a node whose configurator fails.
//!
//! # Failure
//! - **No node**: a call waits in the channel until a node appears; bound calls with a
//!   deadline (`tokio::time::timeout`, or a `tower::timeout::Timeout` around the channel).
//! - **A node deregistered gracefully** (e.g. through
//!   [`Registration`](registry_core::Registration)): removed from the balancer when the watch
//!   tells; calls already sent finish on their connection.
//! - **A node killed**: its calls fail (`Unavailable`) until the registry drops it (its TTL;
//!   tonic's channel does not tell which node failed, so it is not evicted early). Retry
//!   `Unavailable` calls: the balancer picks again.
//! - **A store outage**: the channel keeps its endpoints (see
//!   [`registry_tower`](registry_tower#failure)); after [`Registry::shutdown`] it keeps its last
//!   endpoints for good.
//!
//! The feeding task ends when every clone of the channel is dropped or the registry shuts down.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use registry_core::{Registry, RegistryError, ServiceMetaInfo};
use registry_tower::{Change, MakeNodeService, RegistryDiscover};
use tonic::transport::channel::Change as TonicChange;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

/// Metadata key: the per-call timeout of the node's endpoint (`1500ms`, `2s`, or milliseconds).
pub const META_TIMEOUT: &str = "timeout";
/// Metadata key: the connect timeout of the node's endpoint (`1500ms`, `2s`, or milliseconds).
pub const META_CONNECT_TIMEOUT: &str = "connectTimeout";
/// Metadata key: `true` when the node serves over TLS (`https`).
pub const META_TLS: &str = "tls";
/// Default capacity of the channel of changes between the registry and tonic's balancer.
pub const DEFAULT_CAPACITY: usize = 64;

/// Configures TLS on a node's endpoint (see the [crate docs](crate#tls)).
type TlsFn =
    dyn Fn(Endpoint, &ServiceMetaInfo) -> Result<Endpoint, tonic::transport::Error> + Send + Sync;
/// Any other endpoint setting.
type ConfigureFn = dyn Fn(Endpoint, &ServiceMetaInfo) -> Endpoint + Send + Sync;

/// Why a registry channel could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// tonic's balancer runs on Tokio: build the channel inside a runtime.
    #[error("a registry channel must be built inside a Tokio runtime")]
    NoRuntime,
    /// The first listing of the service failed ([`RegistryChannel::connect`]).
    #[error("watching service {service} failed")]
    Watch {
        /// The service key.
        service: String,
        /// Cause.
        #[source]
        source: RegistryError,
    },
}

/// A tonic [`Channel`] over the nodes of `service_key`, with default settings:
/// [`RegistryChannel::connect`] in one call.
///
/// # Errors
/// As [`RegistryChannel::connect`].
pub async fn channel(registry: &Registry, service_key: &str) -> Result<Channel, ChannelError> {
    RegistryChannel::new(registry.clone(), service_key)
        .connect()
        .await
}

/// Builds a tonic [`Channel`] over the nodes of one service; see the [crate docs](crate).
#[must_use = "a builder does nothing until connected"]
pub struct RegistryChannel {
    registry: Registry,
    service_key: String,
    capacity: usize,
    maker: EndpointMaker,
}

impl std::fmt::Debug for RegistryChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryChannel")
            .field("service_key", &self.service_key)
            .field("capacity", &self.capacity)
            .field("maker", &self.maker)
            .finish_non_exhaustive()
    }
}

impl RegistryChannel {
    /// A channel over the nodes of `service_key` in `registry`.
    pub fn new(registry: Registry, service_key: impl Into<String>) -> Self {
        Self {
            registry,
            service_key: service_key.into(),
            capacity: DEFAULT_CAPACITY,
            maker: EndpointMaker::default(),
        }
    }

    /// The per-call timeout of every endpoint, unless a node's [`META_TIMEOUT`] says
    /// otherwise (default: none).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.maker.timeout = Some(timeout);
        self
    }

    /// The connect timeout of every endpoint, unless a node's [`META_CONNECT_TIMEOUT`] says
    /// otherwise (default: none).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.maker.connect_timeout = Some(timeout);
        self
    }

    /// Configures TLS on the endpoint of a node whose metadata says `tls=true` (its URI is
    /// `https://host:port`), e.g. `|e, _| e.tls_config(ClientTlsConfig::new())` with a tonic
    /// TLS feature enabled. Without it such nodes are skipped with a warning; when it fails,
    /// the node is skipped with a warning.
    pub fn with_tls<F>(mut self, configure: F) -> Self
    where
        F: Fn(Endpoint, &ServiceMetaInfo) -> Result<Endpoint, tonic::transport::Error>
            + Send
            + Sync
            + 'static,
    {
        self.maker.tls = Some(Arc::new(configure));
        self
    }

    /// Any other endpoint setting, applied to every node's endpoint after the timeouts and
    /// TLS. With it, a node registered again with any change but its registration time gets a
    /// new endpoint (this crate cannot tell what the function reads).
    pub fn with_endpoint<F>(mut self, configure: F) -> Self
    where
        F: Fn(Endpoint, &ServiceMetaInfo) -> Endpoint + Send + Sync + 'static,
    {
        self.maker.configure = Some(Arc::new(configure));
        self
    }

    /// The capacity of the channel of changes between the registry and tonic's balancer
    /// (default [`DEFAULT_CAPACITY`]).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Lists the service (the registry's cache entry and its watch), then returns the channel,
    /// fed by a background task: its endpoints are the service's nodes, a moment after the
    /// return for the current ones (a call made meanwhile waits for them).
    ///
    /// # Errors
    /// [`ChannelError::Watch`] when the first listing failed (or the registry is shut down),
    /// [`ChannelError::NoRuntime`] outside a Tokio runtime.
    pub async fn connect(self) -> Result<Channel, ChannelError> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::NoRuntime)?;
        let watch = self
            .registry
            .watch(&self.service_key)
            .await
            .map_err(|source| ChannelError::Watch {
                service: self.service_key.clone(),
                source,
            })?;
        let discover = RegistryDiscover::from_watch(watch, self.maker);
        Ok(spawn(discover, self.capacity))
    }

    /// Returns the channel at once; the background task lists the service (retrying with
    /// backoff while the store cannot be listed) and feeds the channel. Calls wait until a
    /// node is known.
    ///
    /// # Errors
    /// [`ChannelError::NoRuntime`] outside a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Channel, ChannelError> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::NoRuntime)?;
        let discover = RegistryDiscover::new(self.registry, self.service_key, self.maker);
        Ok(spawn(discover, self.capacity))
    }
}

/// Builds the balanced channel and spawns the task that feeds it from `discover`.
fn spawn(mut discover: RegistryDiscover<EndpointMaker>, capacity: usize) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(capacity);
    tokio::spawn(async move {
        let service = discover.service_key().to_owned();
        loop {
            let next = tokio::select! {
                () = changes.closed() => {
                    debug!(%service, "registry channel dropped: no more endpoint changes");
                    return;
                }
                next = discover.next() => next,
            };
            let Some(Ok(change)) = next else {
                debug!(%service, "registry shut down: the channel keeps its last endpoints");
                return;
            };
            let change = match change {
                Change::Insert(address, endpoint) => {
                    debug!(%service, %address, "endpoint inserted");
                    TonicChange::Insert(address, endpoint)
                }
                Change::Remove(address) => {
                    debug!(%service, %address, "endpoint removed");
                    TonicChange::Remove(address)
                }
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    });
    channel
}

/// What a node's endpoint depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointSettings {
    uri: String,
    tls: bool,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

/// Makes the endpoint of a node: a [`MakeNodeService`] for the tonic balancer.
#[derive(Clone, Default)]
struct EndpointMaker {
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: Option<Arc<TlsFn>>,
    configure: Option<Arc<ConfigureFn>>,
}

impl std::fmt::Debug for EndpointMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMaker")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

/// A duration from metadata: `1500ms`, `2s`, or a bare number of milliseconds.
fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(value).ok(),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl EndpointMaker {
    /// The settings of `node`'s endpoint; with `warn`, says which metadata it ignored.
    fn settings(&self, node: &ServiceMetaInfo, warn_bad: bool) -> EndpointSettings {
        let bad = |key: &str, value: &str| {
            if warn_bad {
                warn!(node = %node.node_key(), key, value = %value.escape_debug(), "metadata value not understood, using the channel's default");
            }
        };
        let duration = |key: &str, default: Option<Duration>| match node.metadata.get(key) {
            None => default,
            Some(value) => parse_duration(value).or_else(|| {
                bad(key, value);
                default
            }),
        };
        let tls = match node.metadata.get(META_TLS) {
            None => false,
            Some(value) => parse_bool(value).unwrap_or_else(|| {
                bad(META_TLS, value);
                false
            }),
        };
        let host = &node.service_host;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        EndpointSettings {
            uri: format!(
                "{}://{host}:{}",
                if tls { "https" } else { "http" },
                node.service_port
            ),
            tls,
            timeout: duration(META_TIMEOUT, self.timeout),
            connect_timeout: duration(META_CONNECT_TIMEOUT, self.connect_timeout),
        }
    }
}

impl MakeNodeService for EndpointMaker {
    type Service = Endpoint;

    fn make(&self, node: &ServiceMetaInfo) -> Option<Endpoint> {
        let settings = self.settings(node, true);
        let mut endpoint = match Endpoint::from_shared(settings.uri.clone()) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                warn!(node = %node.node_key(), uri = %settings.uri, %error, "node skipped: its address is not a valid URI");
                return None;
            }
        };
        if let Some(timeout) = settings.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some(timeout) = settings.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        if settings.tls {
            let Some(tls) = &self.tls else {
                warn!(node = %node.node_key(), "node skipped: its metadata asks for TLS and no TLS configurator is set (RegistryChannel::with_tls; TLS is not compiled into registry-tonic)");
                return None;
            };
            endpoint = match tls(endpoint, node) {
                Ok(endpoint) => endpoint,
                Err(error) => {
                    warn!(node = %node.node_key(), error = %registry_core::error_chain(&error), "node skipped: configuring TLS failed");
                    return None;
                }
            };
        }
        if let Some(configure) = &self.configure {
            endpoint = configure(endpoint, node);
        }
        Some(endpoint)
    }

    fn must_rebuild(&self, old: &ServiceMetaInfo, new: &ServiceMetaInfo) -> bool {
        if self.configure.is_some() {
            return registry_tower::registration_changed(old, new);
        }
        self.settings(old, false) != self.settings(new, false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node() -> ServiceMetaInfo {
        ServiceMetaInfo::new("greeter", "10.0.0.1", 7001)
    }

    #[test]
    fn endpoints_take_the_channel_defaults_overridden_by_metadata() {
        let maker = EndpointMaker {
            timeout: Some(Duration::from_secs(2)),
            ..EndpointMaker::default()
        };
        let plain = maker.settings(&node(), true);
        assert_eq!(
            plain,
            EndpointSettings {
                uri: "http://10.0.0.1:7001".into(),
                tls: false,
                timeout: Some(Duration::from_secs(2)),
                connect_timeout: None,
            }
        );
        let tuned = node()
            .with_metadata(META_TIMEOUT, "1500ms")
            .with_metadata(META_CONNECT_TIMEOUT, "250");
        let tuned = maker.settings(&tuned, true);
        assert_eq!(tuned.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(tuned.connect_timeout, Some(Duration::from_millis(250)));
        // Junk is ignored: the default applies.
        let junk = node()
            .with_metadata(META_TIMEOUT, "soon")
            .with_metadata(META_TLS, "maybe");
        assert_eq!(maker.settings(&junk, true), plain);
        let v6 = ServiceMetaInfo::new("greeter", "::1", 7001);
        assert_eq!(maker.settings(&v6, true).uri, "http://[::1]:7001");
        assert!(maker.make(&v6).is_some());
    }

    #[test]
    fn a_tls_node_without_a_configurator_is_skipped() {
        let tls = node().with_metadata(META_TLS, "true");
        let maker = EndpointMaker::default();
        assert_eq!(maker.settings(&tls, true).uri, "https://10.0.0.1:7001");
        assert!(maker.make(&tls).is_none());
        let configured = EndpointMaker {
            tls: Some(Arc::new(|endpoint, _| Ok(endpoint))),
            ..EndpointMaker::default()
        };
        let endpoint = configured.make(&tls).unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("https"));
    }

    #[test]
    fn only_endpoint_settings_rebuild_a_node() {
        let maker = EndpointMaker::default();
        let old = node();
        assert!(!maker.must_rebuild(&old, &old.clone().with_weight(7)));
        assert!(!maker.must_rebuild(&old, &old.clone().with_metadata("zone", "b")));
        assert!(maker.must_rebuild(&old, &old.clone().with_metadata(META_TIMEOUT, "1s")));
        assert!(maker.must_rebuild(&old, &old.clone().with_metadata(META_TLS, "true")));
        let custom = EndpointMaker {
            configure: Some(Arc::new(|endpoint, _| endpoint)),
            ..EndpointMaker::default()
        };
        assert!(custom.must_rebuild(&old, &old.clone().with_weight(7)));
    }

    #[tokio::test]
    async fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let registry = Registry::new(
            Arc::new(registry_core::MemoryBackend::new(
                registry_core::MemoryStore::new(),
            )),
            registry_core::RegistryOptions::default(),
        )
        .unwrap();
        let builder = RegistryChannel::new(registry.clone(), "greeter:1.0");
        let result = std::thread::spawn(move || builder.connect_lazy().map(|_| ()))
            .join()
            .unwrap();
        assert!(matches!(result, Err(ChannelError::NoRuntime)));
        registry.shutdown().await.unwrap();
    }
}
