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
//! | `rpc.serializer` | string | `json` | `RPC_SERIALIZER` | [`SERIALIZERS`] |
//! | `rpc.loadBalancer` | string | `roundRobin` | `RPC_LOAD_BALANCER` | [`LOAD_BALANCERS`] |
//! | `rpc.retryStrategy` | string | `no` | `RPC_RETRY_STRATEGY` | [`RETRY_STRATEGIES`] |
//! | `rpc.tolerantStrategy` | string | `failFast` | `RPC_TOLERANT_STRATEGY` | [`TOLERANT_STRATEGIES`] |
//! | `rpc.registryConfig.registry` | string | `memory` | `RPC_REGISTRY_CONFIG_REGISTRY` | a backend name known to the factory |
//! | `rpc.registryConfig.address` | string | (backend default) | `RPC_REGISTRY_CONFIG_ADDRESS` | endpoints, comma-separated |
//! | `rpc.registryConfig.username` | string | none | `RPC_REGISTRY_CONFIG_USERNAME` | |
//! | `rpc.registryConfig.password` | string | none | `RPC_REGISTRY_CONFIG_PASSWORD` | |
//! | `rpc.registryConfig.timeout` | duration, bare number = **milliseconds** | `10000` | `RPC_REGISTRY_CONFIG_TIMEOUT` | > 0, e.g. `3000`, `1500ms`, `2s` |
//! | `rpc.registryConfig.ttl` | duration, bare number = **seconds** | `30` | `RPC_REGISTRY_CONFIG_TTL` | > 0, e.g. `30`, `30s`, `1m` |
//! | `rpc.registryConfig.heartbeatInterval` | duration, bare number = **seconds** | `10` | `RPC_REGISTRY_CONFIG_HEARTBEAT_INTERVAL` | > 0 and less than half of `ttl` |
//! | `rpc.registryConfig.root` | string | `/rpc/` | `RPC_REGISTRY_CONFIG_ROOT` | |
//! | `rpc.server.maxConnections` | integer | ¾ of the open-files soft limit, at most 10000 | `RPC_SERVER_MAX_CONNECTIONS` | ≥ 1 |
//! | `rpc.server.idleTimeout` | duration, bare number = **seconds** | `60` | `RPC_SERVER_IDLE_TIMEOUT` | > 0 |
//! | `rpc.server.frameTimeout` | duration, bare number = **seconds** | `10` | `RPC_SERVER_FRAME_TIMEOUT` | > 0 |
//! | `rpc.server.maxBufferedBytes` | integer, bytes | `134217728` (128 MiB) | `RPC_SERVER_MAX_BUFFERED_BYTES` | ≥ 1 |
//!
//! The `rpc.server.*` keys are the provider's limits against hostile or too many clients (see
//! `rpc_runtime::server` for what each one does).
//!
//! A bad value is an error naming the key and what it accepts. Unknown keys under `rpc.` are
//! reported with a warning and otherwise ignored.
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
//! # Ok::<(), rpc_config::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, warn};

/// Default `rpc.name`.
pub const DEFAULT_NAME: &str = "rpc";
/// Default `rpc.version`.
pub const DEFAULT_VERSION: &str = "1.0";
/// Default `rpc.serverHost`.
pub const DEFAULT_SERVER_HOST: &str = "127.0.0.1";
/// Default `rpc.serverPort`.
pub const DEFAULT_SERVER_PORT: u16 = 8080;
/// Default `rpc.serializer`.
pub const DEFAULT_SERIALIZER: &str = "json";
/// Default `rpc.loadBalancer`.
pub const DEFAULT_LOAD_BALANCER: &str = "roundRobin";
/// Default `rpc.retryStrategy`.
pub const DEFAULT_RETRY_STRATEGY: &str = "no";
/// Default `rpc.tolerantStrategy`.
pub const DEFAULT_TOLERANT_STRATEGY: &str = "failFast";
/// Default `rpc.registryConfig.registry`: the embedded in-memory registry.
pub const DEFAULT_REGISTRY: &str = "memory";
/// Default `rpc.registryConfig.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `rpc.registryConfig.ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default `rpc.registryConfig.heartbeatInterval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default `rpc.registryConfig.root`.
pub const DEFAULT_ROOT: &str = "/rpc/";
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
pub const SERIALIZERS: &[&str] = &["json", "bincode"];
/// Accepted `rpc.loadBalancer` values.
pub const LOAD_BALANCERS: &[&str] = &["roundRobin", "random", "consistentHash"];
/// Accepted `rpc.retryStrategy` values.
pub const RETRY_STRATEGIES: &[&str] = &["no", "fixedInterval", "exponentialBackoff"];
/// Accepted `rpc.tolerantStrategy` values.
pub const TOLERANT_STRATEGIES: &[&str] = &["failFast", "failOver", "failSafe"];

/// Config files looked for by [`RpcConfig::load`], in order.
pub const CONFIG_FILES: &[&str] = &[
    "rpc.toml",
    "rpc.yaml",
    "rpc.yml",
    "rpc.json",
    "application.properties",
];

/// Every key, its environment variable.
const KEYS: &[(&str, &str)] = &[
    ("rpc.name", "RPC_NAME"),
    ("rpc.version", "RPC_VERSION"),
    ("rpc.serverHost", "RPC_SERVER_HOST"),
    ("rpc.serverPort", "RPC_SERVER_PORT"),
    ("rpc.serializer", "RPC_SERIALIZER"),
    ("rpc.loadBalancer", "RPC_LOAD_BALANCER"),
    ("rpc.retryStrategy", "RPC_RETRY_STRATEGY"),
    ("rpc.tolerantStrategy", "RPC_TOLERANT_STRATEGY"),
    (
        "rpc.registryConfig.registry",
        "RPC_REGISTRY_CONFIG_REGISTRY",
    ),
    ("rpc.registryConfig.address", "RPC_REGISTRY_CONFIG_ADDRESS"),
    (
        "rpc.registryConfig.username",
        "RPC_REGISTRY_CONFIG_USERNAME",
    ),
    (
        "rpc.registryConfig.password",
        "RPC_REGISTRY_CONFIG_PASSWORD",
    ),
    ("rpc.registryConfig.timeout", "RPC_REGISTRY_CONFIG_TIMEOUT"),
    ("rpc.registryConfig.ttl", "RPC_REGISTRY_CONFIG_TTL"),
    (
        "rpc.registryConfig.heartbeatInterval",
        "RPC_REGISTRY_CONFIG_HEARTBEAT_INTERVAL",
    ),
    ("rpc.registryConfig.root", "RPC_REGISTRY_CONFIG_ROOT"),
    ("rpc.server.maxConnections", "RPC_SERVER_MAX_CONNECTIONS"),
    ("rpc.server.idleTimeout", "RPC_SERVER_IDLE_TIMEOUT"),
    ("rpc.server.frameTimeout", "RPC_SERVER_FRAME_TIMEOUT"),
    (
        "rpc.server.maxBufferedBytes",
        "RPC_SERVER_MAX_BUFFERED_BYTES",
    ),
];

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
#[derive(Clone, PartialEq, Eq)]
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
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("registry", &self.registry)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("root", &self.root)
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
        }
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub serializer: String,
    /// `rpc.loadBalancer`.
    pub load_balancer: String,
    /// `rpc.retryStrategy`.
    pub retry_strategy: String,
    /// `rpc.tolerantStrategy`.
    pub tolerant_strategy: String,
    /// `rpc.registryConfig`.
    pub registry_config: RegistryConfig,
    /// `rpc.server`.
    pub server: ServerConfig,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            server_host: DEFAULT_SERVER_HOST.to_owned(),
            server_port: DEFAULT_SERVER_PORT,
            serializer: DEFAULT_SERIALIZER.to_owned(),
            load_balancer: DEFAULT_LOAD_BALANCER.to_owned(),
            retry_strategy: DEFAULT_RETRY_STRATEGY.to_owned(),
            tolerant_strategy: DEFAULT_TOLERANT_STRATEGY.to_owned(),
            registry_config: RegistryConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// One raw value with the place it came from.
#[derive(Clone, Debug)]
enum Raw {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Raw {
    fn text(&self) -> String {
        match self {
            Raw::Text(s) => s.clone(),
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Bool(b) => b.to_string(),
        }
    }
}

/// Flat map: lowercased dotted key -> (key as written, value).
type Flat = BTreeMap<String, (String, Raw)>;

impl RpcConfig {
    /// The first config file of [`CONFIG_FILES`] in the working directory (if any), then the
    /// process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load() -> Result<Self, ConfigError> {
        let dir = std::env::current_dir().map_err(|source| ConfigError::Read {
            path: PathBuf::from("."),
            source,
        })?;
        Self::load_from_dir(&dir)
    }

    /// The first config file of [`CONFIG_FILES`] in `dir` (if any), then the process
    /// environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load_from_dir(dir: &Path) -> Result<Self, ConfigError> {
        Self::load_sources(find_config_file(dir).as_deref(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// `path` (format by extension), then the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load_sources(Some(path), &|name| std::env::var(name).ok())
    }

    /// Defaults, then `file` when given, then the variables `env` returns (by name).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    pub fn load_sources(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut flat = Flat::new();
        if let Some(path) = file {
            debug!(file = %path.display(), "loading configuration");
            let format = Format::of(path).ok_or_else(|| ConfigError::UnsupportedFormat {
                path: path.to_owned(),
            })?;
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            flat = parse(&text, format, path)?;
        }
        for (key, var) in KEYS {
            if let Some(value) = env(var) {
                flat.insert(key.to_lowercase(), ((*var).to_owned(), Raw::Text(value)));
            }
        }
        Self::from_flat(&flat)
    }

    /// Parses configuration text (defaults for what it leaves out; no environment).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_str_with_format(text: &str, format: Format) -> Result<Self, ConfigError> {
        Self::from_flat(&parse(text, format, Path::new("<string>"))?)
    }

    /// Sets `rpc.registryConfig.registry`.
    pub fn with_registry(mut self, name: impl Into<String>) -> Self {
        self.registry_config.registry = name.into();
        self
    }

    /// Sets `rpc.registryConfig.address`.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.registry_config.address = address.into();
        self
    }

    /// Sets `rpc.serverPort`.
    pub fn with_server_port(mut self, port: u16) -> Self {
        self.server_port = port;
        self
    }

    /// Sets `rpc.serverHost`.
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
        for (key, value, accepted) in [
            ("rpc.serializer", &self.serializer, SERIALIZERS),
            ("rpc.loadBalancer", &self.load_balancer, LOAD_BALANCERS),
            ("rpc.retryStrategy", &self.retry_strategy, RETRY_STRATEGIES),
            (
                "rpc.tolerantStrategy",
                &self.tolerant_strategy,
                TOLERANT_STRATEGIES,
            ),
        ] {
            if !accepted.contains(&value.as_str()) {
                return Err(invalid(
                    key,
                    value.clone(),
                    format!("one of {}", accepted.join(", ")),
                ));
            }
        }
        for (key, value) in [
            ("rpc.registryConfig.timeout", r.timeout),
            ("rpc.registryConfig.ttl", r.ttl),
            ("rpc.registryConfig.heartbeatInterval", r.heartbeat_interval),
            ("rpc.server.idleTimeout", self.server.idle_timeout),
            ("rpc.server.frameTimeout", self.server.frame_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "0".into(), "a duration greater than 0".into()));
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
        if r.heartbeat_interval * 2 >= r.ttl {
            return Err(invalid(
                "rpc.registryConfig.heartbeatInterval",
                format!("{:?}", r.heartbeat_interval),
                format!(
                    "less than half of rpc.registryConfig.ttl ({:?}), so a node survives one missed heartbeat",
                    r.ttl
                ),
            ));
        }
        Ok(())
    }

    fn from_flat(flat: &Flat) -> Result<Self, ConfigError> {
        for (lower, (written, _)) in flat {
            let known = KEYS.iter().any(|(k, _)| k.to_lowercase() == *lower);
            if !known && lower.starts_with("rpc.") {
                warn!(key = %written, "unknown configuration key, ignored");
            }
        }
        let get = |key: &str| flat.get(&key.to_lowercase());
        let string = |key: &str, default: &str| -> String {
            get(key).map_or_else(|| default.to_owned(), |(_, v)| v.text().trim().to_owned())
        };
        let optional = |key: &str| -> Option<String> {
            get(key)
                .map(|(_, v)| v.text().trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let duration =
            |key: &str, default: Duration, unit: Unit| -> Result<Duration, ConfigError> {
                match get(key) {
                    None => Ok(default),
                    Some((_, raw)) => parse_duration(key, raw, unit),
                }
            };
        let count = |key: &str| -> Result<Option<usize>, ConfigError> {
            let Some((_, raw)) = get(key) else {
                return Ok(None);
            };
            let text = raw.text();
            match text.trim().parse::<usize>() {
                Ok(n) if n >= 1 && !matches!(raw, Raw::Float(_) | Raw::Bool(_)) => Ok(Some(n)),
                _ => Err(ConfigError::InvalidValue {
                    key: key.to_owned(),
                    value: text,
                    expected: "an integer of at least 1".into(),
                }),
            }
        };
        let port = match get("rpc.serverPort") {
            None => DEFAULT_SERVER_PORT,
            Some((_, raw)) => {
                let text = raw.text();
                text.trim()
                    .parse::<u16>()
                    .map_err(|_| ConfigError::InvalidValue {
                        key: "rpc.serverPort".into(),
                        value: text,
                        expected: "a port number from 0 to 65535".into(),
                    })?
            }
        };
        let config = RpcConfig {
            name: string("rpc.name", DEFAULT_NAME),
            version: string("rpc.version", DEFAULT_VERSION),
            server_host: string("rpc.serverHost", DEFAULT_SERVER_HOST),
            server_port: port,
            serializer: string("rpc.serializer", DEFAULT_SERIALIZER),
            load_balancer: string("rpc.loadBalancer", DEFAULT_LOAD_BALANCER),
            retry_strategy: string("rpc.retryStrategy", DEFAULT_RETRY_STRATEGY),
            tolerant_strategy: string("rpc.tolerantStrategy", DEFAULT_TOLERANT_STRATEGY),
            registry_config: RegistryConfig {
                registry: string("rpc.registryConfig.registry", DEFAULT_REGISTRY),
                address: string("rpc.registryConfig.address", ""),
                username: optional("rpc.registryConfig.username"),
                password: optional("rpc.registryConfig.password"),
                timeout: duration("rpc.registryConfig.timeout", DEFAULT_TIMEOUT, Unit::Millis)?,
                ttl: duration("rpc.registryConfig.ttl", DEFAULT_TTL, Unit::Seconds)?,
                heartbeat_interval: duration(
                    "rpc.registryConfig.heartbeatInterval",
                    DEFAULT_HEARTBEAT_INTERVAL,
                    Unit::Seconds,
                )?,
                root: string("rpc.registryConfig.root", DEFAULT_ROOT),
            },
            server: ServerConfig {
                max_connections: count("rpc.server.maxConnections")?,
                idle_timeout: duration(
                    "rpc.server.idleTimeout",
                    DEFAULT_IDLE_TIMEOUT,
                    Unit::Seconds,
                )?,
                frame_timeout: duration(
                    "rpc.server.frameTimeout",
                    DEFAULT_FRAME_TIMEOUT,
                    Unit::Seconds,
                )?,
                max_buffered_bytes: count("rpc.server.maxBufferedBytes")?
                    .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// The first of [`CONFIG_FILES`] present in `dir`.
pub fn find_config_file(dir: &Path) -> Option<PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

fn parse_duration(key: &str, raw: &Raw, unit: Unit) -> Result<Duration, ConfigError> {
    let (unit_name, scale) = match unit {
        Unit::Seconds => ("seconds", 1.0),
        Unit::Millis => ("milliseconds", 0.001),
    };
    let invalid = || ConfigError::InvalidValue {
        key: key.to_owned(),
        value: raw.text(),
        expected: format!(
            "a number of {unit_name}, or a duration with a unit such as `1500ms`, `2s`, `1m`"
        ),
    };
    let number = match raw {
        Raw::Int(i) => Some(*i as f64),
        Raw::Float(f) => Some(*f),
        Raw::Text(s) => s.trim().parse::<f64>().ok(),
        Raw::Bool(_) => return Err(invalid()),
    };
    let duration = match number {
        Some(n) if n.is_finite() && n >= 0.0 => Duration::from_secs_f64(n * scale),
        Some(_) => return Err(invalid()),
        None => humantime::parse_duration(raw.text().trim()).map_err(|_| invalid())?,
    };
    if duration.is_zero() {
        return Err(ConfigError::InvalidValue {
            key: key.to_owned(),
            value: raw.text(),
            expected: "a duration greater than 0".into(),
        });
    }
    Ok(duration)
}

fn parse(text: &str, format: Format, path: &Path) -> Result<Flat, ConfigError> {
    match format {
        Format::Properties => parse_properties(text, path),
        Format::Toml | Format::Yaml | Format::Json => {
            let file_format = match format {
                Format::Toml => config::FileFormat::Toml,
                Format::Yaml => config::FileFormat::Yaml,
                _ => config::FileFormat::Json,
            };
            let parse_error = |e: config::ConfigError| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(e),
            };
            let table: config::Map<String, config::Value> = config::Config::builder()
                .add_source(config::File::from_str(text, file_format))
                .build()
                .and_then(config::Config::try_deserialize)
                .map_err(parse_error)?;
            let mut flat = Flat::new();
            for (key, value) in table {
                flatten(&key, value, &mut flat);
            }
            Ok(flat)
        }
    }
}

fn flatten(prefix: &str, value: config::Value, out: &mut Flat) {
    use config::ValueKind;
    let raw = match value.kind {
        ValueKind::Table(table) => {
            for (key, value) in table {
                flatten(&format!("{prefix}.{key}"), value, out);
            }
            return;
        }
        ValueKind::String(s) => Raw::Text(s),
        ValueKind::I64(i) => Raw::Int(i),
        ValueKind::I128(i) => Raw::Text(i.to_string()),
        ValueKind::U64(u) => Raw::Text(u.to_string()),
        ValueKind::U128(u) => Raw::Text(u.to_string()),
        ValueKind::Float(f) => Raw::Float(f),
        ValueKind::Boolean(b) => Raw::Bool(b),
        ValueKind::Nil => return,
        ValueKind::Array(items) => Raw::Text(
            items
                .into_iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    out.insert(prefix.to_lowercase(), (prefix.to_owned(), raw));
}

/// Java `.properties`: `key=value`, `key: value` or `key value`; `#` and `!` comments.
fn parse_properties(text: &str, path: &Path) -> Result<Flat, ConfigError> {
    let mut flat = Flat::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split_at = line
            .find(['=', ':'])
            .or_else(|| line.find(char::is_whitespace));
        let (key, value) = match split_at {
            Some(at) => (line[..at].trim(), line[at + 1..].trim()),
            None => (line, ""),
        };
        if key.is_empty() || split_at.is_none() {
            return Err(ConfigError::PropertiesLine {
                path: path.to_owned(),
                line: index + 1,
                text: line.to_owned(),
            });
        }
        flat.insert(
            key.to_lowercase(),
            (key.to_owned(), Raw::Text(value.to_owned())),
        );
    }
    Ok(flat)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ConfigError>();
    }

    #[test]
    fn properties_accept_java_separators_and_comments() {
        let c = RpcConfig::from_str_with_format(
            "# comment\n! also comment\n\nrpc.name = users\nrpc.version: 2.0\nrpc.serverHost 10.0.0.1\n",
            Format::Properties,
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.version.as_str()), ("users", "2.0"));
        assert_eq!(c.server_host, "10.0.0.1");
    }

    #[test]
    fn durations_take_the_key_unit_or_an_explicit_one() {
        let raw = |s: &str| Raw::Text(s.into());
        assert_eq!(
            parse_duration("k", &raw("30"), Unit::Seconds).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_duration("k", &raw("1500"), Unit::Millis).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("k", &raw("1500ms"), Unit::Seconds).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("k", &raw("2s"), Unit::Millis).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_duration("k", &Raw::Float(0.5), Unit::Seconds).unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("k", &raw("-3"), Unit::Seconds).is_err());
        assert!(parse_duration("k", &raw("0"), Unit::Seconds).is_err());
        assert!(parse_duration("k", &Raw::Bool(true), Unit::Seconds).is_err());
    }
}
