//! Where configuration comes from: defaults, one file, the environment; and how the flat keys
//! become an [`RpcConfig`].

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry_core::options::{MAX_TIMEOUT, MAX_TTL, MIN_HEARTBEAT_INTERVAL, MIN_TTL};
use tracing::{debug, warn};

use super::parse::{parse, parse_count, parse_duration, Flat, Raw, Unit, MAX_FILE_BYTES};
use super::*;

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
    ("rpc.warmup", "RPC_WARMUP"),
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
    (
        "rpc.registryConfig.protectThreshold",
        "RPC_REGISTRY_CONFIG_PROTECT_THRESHOLD",
    ),
    (
        "rpc.registryConfig.snapshotDir",
        "RPC_REGISTRY_CONFIG_SNAPSHOT_DIR",
    ),
    (
        "rpc.registryConfig.tls.caFile",
        "RPC_REGISTRY_CONFIG_TLS_CA_FILE",
    ),
    (
        "rpc.registryConfig.tls.certFile",
        "RPC_REGISTRY_CONFIG_TLS_CERT_FILE",
    ),
    (
        "rpc.registryConfig.tls.keyFile",
        "RPC_REGISTRY_CONFIG_TLS_KEY_FILE",
    ),
    (
        "rpc.registryConfig.tls.serverName",
        "RPC_REGISTRY_CONFIG_TLS_SERVER_NAME",
    ),
    ("rpc.tls.certFile", "RPC_TLS_CERT_FILE"),
    ("rpc.tls.keyFile", "RPC_TLS_KEY_FILE"),
    ("rpc.tls.clientCaFile", "RPC_TLS_CLIENT_CA_FILE"),
    ("rpc.tls.caFile", "RPC_TLS_CA_FILE"),
    ("rpc.tls.clientCertFile", "RPC_TLS_CLIENT_CERT_FILE"),
    ("rpc.tls.clientKeyFile", "RPC_TLS_CLIENT_KEY_FILE"),
    ("rpc.tls.serverName", "RPC_TLS_SERVER_NAME"),
    ("rpc.server.maxConnections", "RPC_SERVER_MAX_CONNECTIONS"),
    ("rpc.server.idleTimeout", "RPC_SERVER_IDLE_TIMEOUT"),
    ("rpc.server.frameTimeout", "RPC_SERVER_FRAME_TIMEOUT"),
    (
        "rpc.server.maxBufferedBytes",
        "RPC_SERVER_MAX_BUFFERED_BYTES",
    ),
];

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
            flat = parse(&read_bounded(path)?, format, path)?;
        }
        for (key, var) in KEYS {
            if let Some(value) = env(var) {
                flat.insert(key.to_lowercase(), ((*var).to_owned(), Raw::Text(value)));
            }
        }
        if !flat.contains_key("rpc.registryconfig.registry") {
            warn!(
                "no registry configured (rpc.registryConfig.registry, or RPC_REGISTRY_CONFIG_REGISTRY): \
                 using the embedded `memory` registry, which only this process sees"
            );
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
        let duration = |key: &str,
                        default: Duration,
                        unit: Unit,
                        (min, max): (Duration, Duration)|
         -> Result<Duration, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some((_, raw)) => parse_duration(key, raw, unit, min, max),
            }
        };
        let count = |key: &str| -> Result<Option<usize>, ConfigError> {
            get(key).map(|(_, raw)| parse_count(key, raw)).transpose()
        };
        let choice = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(get(key).map(|(_, v)| v.text().trim().to_owned()))
        };
        fn named<T: std::str::FromStr<Err = UnknownChoice> + Default>(
            key: &str,
            value: Option<String>,
        ) -> Result<T, ConfigError> {
            match value {
                None => Ok(T::default()),
                Some(text) => text
                    .parse()
                    .map_err(|e: UnknownChoice| ConfigError::InvalidValue {
                        key: key.to_owned(),
                        value: text,
                        expected: format!("one of {}", e.known),
                    }),
            }
        }
        let path = |key: &str| optional(key).map(PathBuf::from);
        let any = Duration::from_millis(1);
        let store_tls = TlsFiles {
            ca_file: path("rpc.registryConfig.tls.caFile"),
            cert_file: path("rpc.registryConfig.tls.certFile"),
            key_file: path("rpc.registryConfig.tls.keyFile"),
            server_name: optional("rpc.registryConfig.tls.serverName"),
        };
        let day = Duration::from_secs(24 * 3600);
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
            serializer: named("rpc.serializer", choice("rpc.serializer")?)?,
            load_balancer: named("rpc.loadBalancer", choice("rpc.loadBalancer")?)?,
            retry_strategy: named("rpc.retryStrategy", choice("rpc.retryStrategy")?)?,
            tolerant_strategy: named("rpc.tolerantStrategy", choice("rpc.tolerantStrategy")?)?,
            warmup: duration(
                "rpc.warmup",
                Duration::ZERO,
                Unit::Seconds,
                (Duration::ZERO, day),
            )?,
            registry_config: RegistryConfig {
                registry: string("rpc.registryConfig.registry", DEFAULT_REGISTRY),
                address: string("rpc.registryConfig.address", ""),
                username: optional("rpc.registryConfig.username"),
                password: optional("rpc.registryConfig.password"),
                timeout: duration(
                    "rpc.registryConfig.timeout",
                    DEFAULT_TIMEOUT,
                    Unit::Millis,
                    (any, MAX_TIMEOUT),
                )?,
                ttl: duration(
                    "rpc.registryConfig.ttl",
                    DEFAULT_TTL,
                    Unit::Seconds,
                    (MIN_TTL, MAX_TTL),
                )?,
                heartbeat_interval: duration(
                    "rpc.registryConfig.heartbeatInterval",
                    DEFAULT_HEARTBEAT_INTERVAL,
                    Unit::Seconds,
                    (MIN_HEARTBEAT_INTERVAL, MAX_TTL),
                )?,
                root: string("rpc.registryConfig.root", DEFAULT_ROOT),
                tls: (store_tls != TlsFiles::default()).then_some(store_tls),
                snapshot_dir: optional("rpc.registryConfig.snapshotDir")
                    .map(std::path::PathBuf::from),
                protect_threshold: match get("rpc.registryConfig.protectThreshold") {
                    None => None,
                    Some((_, raw)) => {
                        let text = raw.text();
                        match text.trim().parse::<f64>() {
                            Ok(0.0) => None,
                            Ok(t) if t > 0.0 && t < 1.0 => Some(t),
                            _ => {
                                return Err(ConfigError::InvalidValue {
                                    key: "rpc.registryConfig.protectThreshold".into(),
                                    value: text,
                                    expected: "a share between 0 (off) and 1, e.g. 0.5".into(),
                                })
                            }
                        }
                    }
                },
            },
            server: ServerConfig {
                max_connections: count("rpc.server.maxConnections")?,
                idle_timeout: duration(
                    "rpc.server.idleTimeout",
                    DEFAULT_IDLE_TIMEOUT,
                    Unit::Seconds,
                    (any, day),
                )?,
                frame_timeout: duration(
                    "rpc.server.frameTimeout",
                    DEFAULT_FRAME_TIMEOUT,
                    Unit::Seconds,
                    (any, MAX_TIMEOUT),
                )?,
                max_buffered_bytes: count("rpc.server.maxBufferedBytes")?
                    .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES),
            },
            tls: RpcTlsConfig {
                cert_file: path("rpc.tls.certFile"),
                key_file: path("rpc.tls.keyFile"),
                client_ca_file: path("rpc.tls.clientCaFile"),
                ca_file: path("rpc.tls.caFile"),
                client_cert_file: path("rpc.tls.clientCertFile"),
                client_key_file: path("rpc.tls.clientKeyFile"),
                server_name: optional("rpc.tls.serverName"),
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

/// Reads `path`, refusing files above [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            reason: format!("it is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(text)
}
