//! `RpcConfig`: the runtime's configuration, with the original framework's key names.
//!
//! # Sources
//! Later sources win:
//! 1. defaults (below);
//! 2. one file: [`RpcConfig::load`] takes the first of `rpc.toml`, `rpc.yaml`, `rpc.yml`,
//!    `rpc.json`, `application.properties` found in the working directory (none is fine), and
//!    [`RpcConfig::load_file`] an explicit file, its format chosen by its extension. TOML, YAML
//!    and JSON files nest (`[rpc.registryConfig]`), a Java-style `.properties` file uses dotted
//!    keys (`rpc.registryConfig.registry=etcd`);
//! 3. environment variables (table below).
//!
//! # Reference
//!
//! | key | type, unit | default | environment variable | accepted |
//! |---|---|---|---|---|
//! | `rpc.name` | string | `rpc` | `RPC_NAME` | non-empty |
//! | `rpc.version` | string | `1.0` | `RPC_VERSION` | non-empty |
//! | `rpc.serverHost` | string | `127.0.0.1` | `RPC_SERVER_HOST` | non-empty |
//! | `rpc.serverPort` | integer | `8080` | `RPC_SERVER_PORT` | 0 – 65535 (0: any free port) |
//! | `rpc.serializer` | string | `json` | `RPC_SERIALIZER` | [`SerializerKind`] |
//! | `rpc.loadBalancer` | string | `roundRobin` | `RPC_LOAD_BALANCER` | [`LoadBalancerKind`] |
//! | `rpc.retryStrategy` | string | `no` | `RPC_RETRY_STRATEGY` | [`RetryStrategyKind`] |
//! | `rpc.tolerantStrategy` | string | `failFast` | `RPC_TOLERANT_STRATEGY` | [`TolerantStrategyKind`] |
//! | `rpc.warmup` | duration, bare number = **seconds** | `0` (off) | `RPC_WARMUP` | 0 – 24 h: a node's weight grows from a hundredth to all of it over this long after it registered (`roundRobin`, `random`) |
//! | `rpc.registryConfig.registry` | string | `memory` | `RPC_REGISTRY_CONFIG_REGISTRY` | a backend name known to the factory |
//! | `rpc.registryConfig.address` | string | (backend default) | `RPC_REGISTRY_CONFIG_ADDRESS` | endpoints, comma-separated |
//! | `rpc.registryConfig.username` | string | none | `RPC_REGISTRY_CONFIG_USERNAME` | |
//! | `rpc.registryConfig.password` | string | none | `RPC_REGISTRY_CONFIG_PASSWORD` | |
//! | `rpc.registryConfig.timeout` | duration, bare number = **milliseconds** | `10000` | `RPC_REGISTRY_CONFIG_TIMEOUT` | 1 ms – 1 h, e.g. `3000`, `1500ms`, `2s` |
//! | `rpc.registryConfig.ttl` | duration, bare number = **seconds** | `30` | `RPC_REGISTRY_CONFIG_TTL` | 100 ms – 24 h (etcd: at least 1 s), e.g. `30`, `30s`, `1m` |
//! | `rpc.registryConfig.heartbeatInterval` | duration, bare number = **seconds** | `10` | `RPC_REGISTRY_CONFIG_HEARTBEAT_INTERVAL` | at least 10 ms and less than half of `ttl` |
//! | `rpc.registryConfig.protectThreshold` | number | `0` (off) | `RPC_REGISTRY_CONFIG_PROTECT_THRESHOLD` | between 0 and 1: a resync taking away a larger share of a service's nodes keeps serving them (stale) for one TTL |
//! | `rpc.registryConfig.snapshotDir` | path | none (off) | `RPC_REGISTRY_CONFIG_SNAPSHOT_DIR` | a writable directory: each service's nodes are kept there, and a process that starts while the store is down serves them (stale) until it answers |
//! | `rpc.registryConfig.root` | string | `/rpc/` | `RPC_REGISTRY_CONFIG_ROOT` | `/`-separated names, no `.` or `..`, no spaces or control characters |
//! | `rpc.registryConfig.tls.caFile` | path | none (system trust store; ZooKeeper requires it) | `RPC_REGISTRY_CONFIG_TLS_CA_FILE` | PEM CA certificate(s) the store's certificate must chain to; setting any `tls.*` key turns TLS on |
//! | `rpc.registryConfig.tls.certFile` | path | none | `RPC_REGISTRY_CONFIG_TLS_CERT_FILE` | PEM client certificate chain (mutual TLS), with `keyFile` |
//! | `rpc.registryConfig.tls.keyFile` | path | none | `RPC_REGISTRY_CONFIG_TLS_KEY_FILE` | PEM private key of `certFile` (never logged) |
//! | `rpc.registryConfig.tls.serverName` | string | the address's host | `RPC_REGISTRY_CONFIG_TLS_SERVER_NAME` | the name the store's certificate must carry (etcd; Redis and ZooKeeper check the address's host and refuse this key; ZooKeeper also needs `caFile`) |
//! | `rpc.tls.certFile` | path | none (plain TCP) | `RPC_TLS_CERT_FILE` | PEM certificate chain of the provider's server, with `keyFile`: setting both turns the provider's listener to TLS and registers its nodes with the metadata `tls=true` |
//! | `rpc.tls.keyFile` | path | none | `RPC_TLS_KEY_FILE` | PEM private key of `certFile` (never logged) |
//! | `rpc.tls.clientCaFile` | path | none (no client certificate asked) | `RPC_TLS_CLIENT_CA_FILE` | provider: PEM CA certificate(s); every client must present a certificate signed by one of them (mutual TLS); needs `certFile` |
//! | `rpc.tls.caFile` | path | none | `RPC_TLS_CA_FILE` | consumer: PEM CA certificate(s) the certificates of nodes marked `tls=true` must chain to (no system trust store: without it such nodes are skipped with an error) |
//! | `rpc.tls.clientCertFile` | path | none | `RPC_TLS_CLIENT_CERT_FILE` | consumer: PEM client certificate chain for mutual TLS, with `clientKeyFile`; needs `caFile` |
//! | `rpc.tls.clientKeyFile` | path | none | `RPC_TLS_CLIENT_KEY_FILE` | consumer: PEM private key of `clientCertFile` (never logged) |
//! | `rpc.tls.serverName` | string | the node's host | `RPC_TLS_SERVER_NAME` | consumer: the name every TLS node's certificate must carry (a DNS name or an IP address) |
//! | `rpc.server.maxConnections` | integer | ¾ of the open-files soft limit, at most 10000 | `RPC_SERVER_MAX_CONNECTIONS` | ≥ 1 |
//! | `rpc.server.idleTimeout` | duration, bare number = **seconds** | `60` | `RPC_SERVER_IDLE_TIMEOUT` | 1 ms – 24 h |
//! | `rpc.server.frameTimeout` | duration, bare number = **seconds** | `10` | `RPC_SERVER_FRAME_TIMEOUT` | 1 ms – 1 h |
//! | `rpc.server.maxBufferedBytes` | integer, bytes | `134217728` (128 MiB) | `RPC_SERVER_MAX_BUFFERED_BYTES` | ≥ 1 |
//!
//! The `rpc.server.*` keys are the provider's limits against hostile or too many clients (see
//! `rpc_runtime::server` for what each one does).
//!
//! A bad value is an error naming the key and what it accepts, durations included (bounds
//! above: a huge or tiny value is refused, never a panic). Unknown keys under `rpc.` are
//! reported with a warning and otherwise ignored. A file above 1 MiB, or a YAML file whose
//! aliases would expand beyond 100,000 nodes, is refused before it is expanded. Loading
//! without any source naming `rpc.registryConfig.registry` warns that the embedded `memory`
//! registry (seen by this process only) is used.
//!
//! ```
//! use std::time::Duration;
//! use rpc_config::config::{Format, RpcConfig};
//!
//! let config = RpcConfig::from_str_with_format(
//!     "rpc.serverPort=8081\nrpc.registryConfig.registry=etcd\nrpc.registryConfig.timeout=1500",
//!     Format::Properties,
//! )?;
//! assert_eq!(config.server_port, 8081);
//! assert_eq!(config.registry_config.registry, "etcd");
//! assert_eq!(config.registry_config.timeout, Duration::from_millis(1500));
//! assert_eq!(config.registry_config.ttl, Duration::from_secs(30));
//! assert_eq!(config.load_balancer, rpc_config::config::LoadBalancerKind::RoundRobin);
//! # Ok::<(), rpc_config::config::ConfigError>(())
//! ```

mod choice;
mod load;
mod parse;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use choice::{
    LoadBalancerKind, RetryStrategyKind, SerializerKind, TolerantStrategyKind, UnknownChoice,
};
pub use load::{find_config_file, CONFIG_FILES};
pub use parse::{MAX_FILE_BYTES, MAX_YAML_NODES};
pub use registry_core::instance::{DEFAULT_ROOT, DEFAULT_VERSION};
pub use registry_core::options::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_TTL};
pub use registry_core::TlsFiles;

/// Default `rpc.name`.
pub const DEFAULT_NAME: &str = "rpc";
/// Default `rpc.serverHost`.
pub const DEFAULT_SERVER_HOST: &str = "127.0.0.1";
/// Default `rpc.serverPort`.
pub const DEFAULT_SERVER_PORT: u16 = 8080;
/// Default `rpc.registryConfig.registry`: the embedded in-memory registry.
pub const DEFAULT_REGISTRY: &str = "memory";
/// Default `rpc.server.idleTimeout`: a connection with nothing running and nothing received for
/// that long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `rpc.server.frameTimeout`: the time a frame may take to arrive once its first byte
/// has, and a batch of answers to be written.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `rpc.server.maxBufferedBytes`: the budget of frame bytes held by the whole server,
/// 128 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 128 * 1024 * 1024;

/// Accepted `rpc.serializer` values.
pub const SERIALIZERS: &[&str] = SerializerKind::NAMES;
/// Accepted `rpc.loadBalancer` values.
pub const LOAD_BALANCERS: &[&str] = LoadBalancerKind::NAMES;
/// Accepted `rpc.retryStrategy` values.
pub const RETRY_STRATEGIES: &[&str] = RetryStrategyKind::NAMES;
/// Accepted `rpc.tolerantStrategy` values.
pub const TOLERANT_STRATEGIES: &[&str] = TolerantStrategyKind::NAMES;

/// A configuration error; every variant names the file or the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid in its format.
    #[error("cannot parse config file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A line of a `.properties` file is not `key=value`.
    #[error("{}:{line}: expected `key=value`, got `{text}`", path.display())]
    PropertiesLine {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// The file's extension names no supported format.
    #[error("unsupported config file {}: use .toml, .yaml, .yml, .json or .properties", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file is too large, or would expand too much (YAML aliases).
    #[error("config file {} is refused: {reason}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What is too large.
        reason: String,
    },
    /// A value is not acceptable for its key.
    #[error("invalid value `{value}` for `{key}`: expected {expected}")]
    InvalidValue {
        /// The full key, e.g. `rpc.registryConfig.ttl`.
        key: String,
        /// The value given.
        value: String,
        /// What the key accepts.
        expected: String,
    },
}

/// A file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// Java-style properties with dotted keys.
    Properties,
}

impl Format {
    /// The format of a file, by its extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "properties" => Some(Format::Properties),
            _ => None,
        }
    }
}

/// The registry part of the configuration: `rpc.registryConfig`.
#[derive(Clone, PartialEq)]
pub struct RegistryConfig {
    /// Backend name (`rpc.registryConfig.registry`).
    pub registry: String,
    /// Store address(es); empty means the backend's default.
    pub address: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Timeout of one store request.
    pub timeout: Duration,
    /// Time a node outlives its owner's last heartbeat.
    pub ttl: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Root of the key layout.
    pub root: String,
    /// `rpc.registryConfig.protectThreshold`: the largest share of a service's nodes one resync
    /// may take away (`None`: off). See `RegistryOptions::protect_threshold`.
    pub protect_threshold: Option<f64>,
    /// `rpc.registryConfig.snapshotDir`: where the cache keeps a disk snapshot of each
    /// service's nodes (`None`: no snapshot). See `RegistryOptions::snapshot_dir`.
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// `rpc.registryConfig.tls.*`: TLS to the store (`None`: plain, unless the address's
    /// scheme asks for TLS: `https://`, `rediss://`).
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("registry", &self.registry)
            .field("address", &registry_core::redact_address(&self.address))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("root", &self.root)
            .field("protect_threshold", &self.protect_threshold)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            registry: DEFAULT_REGISTRY.to_owned(),
            address: String::new(),
            username: None,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            ttl: DEFAULT_TTL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            root: DEFAULT_ROOT.to_owned(),
            protect_threshold: None,
            snapshot_dir: None,
            tls: None,
        }
    }
}

impl RegistryConfig {
    /// The address with any password redacted, for printing.
    pub fn display_address(&self) -> std::borrow::Cow<'_, str> {
        registry_core::redact_address(&self.address)
    }
}

/// TLS on the RPC transport: `rpc.tls`. The provider's side (`certFile`, `keyFile`,
/// `clientCaFile`) and the consumer's (`caFile`, `clientCertFile`, `clientKeyFile`,
/// `serverName`) are independent: one process may set both. Only paths are held here; the
/// files are read by `rpc-runtime` when a server or consumer is built (errors name the key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcTlsConfig {
    /// `rpc.tls.certFile`: the provider's certificate chain (PEM). With `key_file`, the
    /// provider listens in TLS.
    pub cert_file: Option<PathBuf>,
    /// `rpc.tls.keyFile`: its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `rpc.tls.clientCaFile`: the provider requires client certificates signed by these CAs.
    pub client_ca_file: Option<PathBuf>,
    /// `rpc.tls.caFile`: the CAs a consumer trusts for nodes marked `tls=true`.
    pub ca_file: Option<PathBuf>,
    /// `rpc.tls.clientCertFile`: the consumer's certificate chain for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// `rpc.tls.clientKeyFile`: its private key.
    pub client_key_file: Option<PathBuf>,
    /// `rpc.tls.serverName`: the name a node's certificate must carry; `None`: the node's host.
    pub server_name: Option<String>,
}

impl RpcTlsConfig {
    /// Whether the provider's listener speaks TLS (`certFile` and `keyFile` set).
    pub fn serves_tls(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Whether the consumer can call TLS nodes (`caFile` set).
    pub fn calls_tls(&self) -> bool {
        self.ca_file.is_some()
    }
}

/// The provider's limits: `rpc.server`. See `rpc_runtime::server` for what each does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// `rpc.server.maxConnections`; `None`: the server's default, which follows the
    /// open-files limit (`rpc_runtime::server::default_max_connections`).
    pub max_connections: Option<usize>,
    /// `rpc.server.idleTimeout`.
    pub idle_timeout: Duration,
    /// `rpc.server.frameTimeout`.
    pub frame_timeout: Duration,
    /// `rpc.server.maxBufferedBytes`.
    pub max_buffered_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// The runtime configuration. See the [module docs](self) for keys, defaults and sources.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcConfig {
    /// `rpc.name`.
    pub name: String,
    /// `rpc.version`.
    pub version: String,
    /// `rpc.serverHost`.
    pub server_host: String,
    /// `rpc.serverPort`.
    pub server_port: u16,
    /// `rpc.serializer`.
    pub serializer: SerializerKind,
    /// `rpc.loadBalancer`.
    pub load_balancer: LoadBalancerKind,
    /// `rpc.retryStrategy`.
    pub retry_strategy: RetryStrategyKind,
    /// `rpc.tolerantStrategy`.
    pub tolerant_strategy: TolerantStrategyKind,
    /// `rpc.warmup`: how long a newly registered node takes to get its full weight (zero:
    /// at once).
    pub warmup: Duration,
    /// `rpc.registryConfig`.
    pub registry_config: RegistryConfig,
    /// `rpc.server`.
    pub server: ServerConfig,
    /// `rpc.tls`: TLS on the RPC transport (all `None`: plain TCP).
    pub tls: RpcTlsConfig,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            server_host: DEFAULT_SERVER_HOST.to_owned(),
            server_port: DEFAULT_SERVER_PORT,
            serializer: SerializerKind::default(),
            load_balancer: LoadBalancerKind::default(),
            retry_strategy: RetryStrategyKind::default(),
            tolerant_strategy: TolerantStrategyKind::default(),
            warmup: Duration::ZERO,
            registry_config: RegistryConfig::default(),
            server: ServerConfig::default(),
            tls: RpcTlsConfig::default(),
        }
    }
}

impl RpcConfig {
    /// Sets `rpc.registryConfig.registry`.
    #[must_use]
    pub fn with_registry(mut self, name: impl Into<String>) -> Self {
        self.registry_config.registry = name.into();
        self
    }

    /// Sets `rpc.registryConfig.address`.
    #[must_use]
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.registry_config.address = address.into();
        self
    }

    /// Sets `rpc.serverPort`.
    #[must_use]
    pub fn with_server_port(mut self, port: u16) -> Self {
        self.server_port = port;
        self
    }

    /// Sets `rpc.serverHost`.
    #[must_use]
    pub fn with_server_host(mut self, host: impl Into<String>) -> Self {
        self.server_host = host.into();
        self
    }

    /// Checks the cross-key rules (the per-key ones are checked while loading).
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.registry_config;
        let invalid = |key: &str, value: String, expected: String| ConfigError::InvalidValue {
            key: key.to_owned(),
            value,
            expected,
        };
        for (key, value) in [
            ("rpc.name", &self.name),
            ("rpc.version", &self.version),
            ("rpc.serverHost", &self.server_host),
            ("rpc.registryConfig.registry", &r.registry),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(key, value.clone(), "a non-empty string".into()));
            }
        }
        for (key, value) in [
            ("rpc.server.maxConnections", self.server.max_connections),
            (
                "rpc.server.maxBufferedBytes",
                Some(self.server.max_buffered_bytes),
            ),
        ] {
            if value == Some(0) {
                return Err(invalid(key, "0".into(), "an integer of at least 1".into()));
            }
        }
        let store = r.tls.clone().unwrap_or_default();
        let t = &self.tls;
        let pairs = [
            (
                "rpc.registryConfig.tls",
                &store.cert_file,
                &store.key_file,
                "certFile",
                "keyFile",
            ),
            ("rpc.tls", &t.cert_file, &t.key_file, "certFile", "keyFile"),
            (
                "rpc.tls",
                &t.client_cert_file,
                &t.client_key_file,
                "clientCertFile",
                "clientKeyFile",
            ),
        ];
        for (prefix, cert_file, key_file, cert, key) in pairs {
            match (cert_file, key_file) {
                (Some(path), None) => {
                    return Err(invalid(
                        &format!("{prefix}.{cert}"),
                        path.display().to_string(),
                        format!("a certificate file together with {prefix}.{key}"),
                    ))
                }
                (None, Some(path)) => {
                    return Err(invalid(
                        &format!("{prefix}.{key}"),
                        path.display().to_string(),
                        format!("a key file together with {prefix}.{cert}"),
                    ))
                }
                _ => {}
            }
        }
        if let (Some(path), false) = (&t.client_ca_file, t.serves_tls()) {
            return Err(invalid(
                "rpc.tls.clientCaFile",
                path.display().to_string(),
                "a CA file together with rpc.tls.certFile and rpc.tls.keyFile (client \
                 certificates are asked only by a TLS listener)"
                    .into(),
            ));
        }
        if let (Some(path), false) = (&t.client_cert_file, t.calls_tls()) {
            return Err(invalid(
                "rpc.tls.clientCertFile",
                path.display().to_string(),
                "a client certificate together with rpc.tls.caFile (it is sent only over TLS)"
                    .into(),
            ));
        }
        if let Some(name) = &t.server_name {
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "rpc.tls.serverName",
                    name.escape_debug().to_string(),
                    "a DNS name or an IP address".into(),
                ));
            }
        }
        // The registry's own rules, named as configuration keys.
        crate::connect::registry_options(r)
            .validate()
            .map_err(|e| match e {
                registry_core::RegistryError::InvalidOptions { key, reason } => {
                    let value = match key {
                        "ttl" => format!("{:?}", r.ttl),
                        "timeout" => format!("{:?}", r.timeout),
                        "heartbeatInterval" => format!("{:?}", r.heartbeat_interval),
                        "root" => r.root.clone(),
                        _ => String::new(),
                    };
                    // The registry names its options; here they are configuration keys.
                    let expected = reason
                        .trim_start_matches("must be ")
                        .replace("half of ttl", "half of rpc.registryConfig.ttl");
                    invalid(&format!("rpc.registryConfig.{key}"), value, expected)
                }
                other => invalid("rpc.registryConfig", String::new(), other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::ConfigError>();
    }
}
