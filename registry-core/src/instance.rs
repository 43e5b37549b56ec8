//! The service model: what a provider registers and a consumer discovers.
//!
//! A [`ServiceMetaInfo`] describes one node (one provider process serving one service). Nodes are
//! grouped by their *service key* (`name:version`, plus `:group` when the group is not the
//! default) and stored under a [`KeySpace`] root as JSON, so that any tool (`etcdctl`, `zkCli`,
//! `redis-cli`) shows readable values:
//!
//! ```text
//! /rpc/user-service:1.0/10.0.0.7:8080 -> {"serviceName":"user-service","serviceVersion":"1.0",...}
//! ```
//!
//! ```
//! use registry_core::{KeySpace, ServiceMetaInfo};
//!
//! let node = ServiceMetaInfo::new("user-service", "10.0.0.7", 8080).with_weight(5);
//! assert_eq!(node.service_key(), "user-service:1.0");
//! assert_eq!(node.node_key(), "user-service:1.0/10.0.0.7:8080");
//! let keys = KeySpace::new("/rpc");
//! assert_eq!(keys.node_path(&node), "/rpc/user-service:1.0/10.0.0.7:8080");
//! assert_eq!(keys.service_prefix("user-service:1.0"), "/rpc/user-service:1.0/");
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Default service version.
pub const DEFAULT_VERSION: &str = "1.0";
/// Default service group; it is left out of the service key.
pub const DEFAULT_GROUP: &str = "default";
/// Default weight of a node for weighted load balancing.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Default root under which every node is stored.
pub const DEFAULT_ROOT: &str = "/rpc/";

/// One registered node of a service.
///
/// Serialized as camelCase JSON (the field names of the original Java framework), with the
/// registration time as an RFC 3339 string.
///
/// Built with by-value setters (each returns the changed node, so it must be used):
///
/// ```
/// use registry_core::ServiceMetaInfo;
///
/// let node = ServiceMetaInfo::new("users", "10.0.0.7", 8080)
///     .with_version("2.0")
///     .with_group("canary")
///     .with_weight(3)
///     .with_metadata("zone", "eu-1");
/// assert_eq!(node.service_key(), "users:2.0:canary");
/// assert_eq!(node.address(), "10.0.0.7:8080");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMetaInfo {
    /// Service name, e.g. `user-service`. Must not contain `/` or `:`.
    pub service_name: String,
    /// Service version, default [`DEFAULT_VERSION`].
    #[serde(default = "default_version")]
    pub service_version: String,
    /// Service group, default [`DEFAULT_GROUP`].
    #[serde(default = "default_group")]
    pub service_group: String,
    /// Host the provider listens on.
    pub service_host: String,
    /// Port the provider listens on.
    pub service_port: u16,
    /// Relative weight for load balancing, default [`DEFAULT_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form metadata (zone, protocol, tags, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the node was registered; set by the registry on `register`.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub register_time: Option<SystemTime>,
    /// Whether the node takes traffic (default `true`). An administrator takes a node out of
    /// traffic without stopping it (`registryctl disable`); the override survives the owner's
    /// heartbeats and re-registrations. Every load balancer skips a disabled node.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enabled: bool,
    /// Whether the node is healthy (default `true`). Balancers prefer healthy nodes and use
    /// unhealthy ones only when no healthy one is left.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_yes(value: &bool) -> bool {
    *value
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}
fn default_group() -> String {
    DEFAULT_GROUP.to_owned()
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// Why a [`ServiceMetaInfo`] cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidService {
    /// A field that must be set is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A field contains a character that would break the key layout, or a control character
    /// or whitespace (which would reach operators' terminals raw).
    #[error("`{field}` must not contain {ch:?} (got `{value}`)")]
    ForbiddenChar {
        /// The field.
        field: &'static str,
        /// The offending character.
        ch: char,
        /// The value given (control characters escaped).
        value: String,
    },
    /// Port 0 is not an address a consumer can call.
    #[error("`servicePort` must be from 1 to 65535, got 0")]
    ZeroPort,
}

impl ServiceMetaInfo {
    /// A node of `name` at `host:port` with default version, group and weight.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            service_name: name.into(),
            service_version: default_version(),
            service_group: default_group(),
            service_host: host.into(),
            service_port: port,
            weight: DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            register_time: None,
            enabled: true,
            healthy: true,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = version.into();
        self
    }

    /// Sets the group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.service_group = group.into();
        self
    }

    /// Sets the weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The service key: `name:version`, or `name:version:group` for a non-default group.
    pub fn service_key(&self) -> String {
        service_key(
            &self.service_name,
            &self.service_version,
            &self.service_group,
        )
    }

    /// The node key relative to the root: `serviceKey/host:port`.
    pub fn node_key(&self) -> String {
        format!("{}/{}", self.service_key(), self.address())
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.service_host, self.service_port)
    }

    /// Checks that the node can be stored under the key layout.
    ///
    /// # Errors
    /// [`InvalidService`] naming the field that is empty or contains `/` (or `:` in the name,
    /// version or group, which would make the service key ambiguous), whitespace or a control
    /// character, or a port of 0.
    pub fn validate(&self) -> Result<(), InvalidService> {
        let checks: [(&'static str, &str, &[char]); 4] = [
            ("serviceName", &self.service_name, &['/', ':']),
            ("serviceVersion", &self.service_version, &['/', ':']),
            ("serviceGroup", &self.service_group, &['/', ':']),
            ("serviceHost", &self.service_host, &['/']),
        ];
        for (field, value, forbidden) in checks {
            if value.is_empty() {
                return Err(InvalidService::Empty(field));
            }
            if let Some(ch) = value
                .chars()
                .find(|c| forbidden.contains(c) || c.is_whitespace() || c.is_control())
            {
                return Err(InvalidService::ForbiddenChar {
                    field,
                    ch,
                    value: value.escape_debug().to_string(),
                });
            }
        }
        if self.service_port == 0 {
            return Err(InvalidService::ZeroPort);
        }
        Ok(())
    }
}

/// Builds a service key from its parts: `name:version`, plus `:group` unless `group` is the default.
///
/// ```
/// assert_eq!(registry_core::service_key("orders", "2.0", "default"), "orders:2.0");
/// assert_eq!(registry_core::service_key("orders", "2.0", "canary"), "orders:2.0:canary");
/// ```
pub fn service_key(name: &str, version: &str, group: &str) -> String {
    if group == DEFAULT_GROUP || group.is_empty() {
        format!("{name}:{version}")
    } else {
        format!("{name}:{version}:{group}")
    }
}

/// The layout of keys under a root, e.g. `/rpc/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    root: String,
}

impl Default for KeySpace {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl KeySpace {
    /// A key space under `root`; a leading and a trailing `/` are added when missing.
    pub fn new(root: &str) -> Self {
        let trimmed = root.trim_matches('/');
        let root = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        };
        Self { root }
    }

    /// The root, always starting and ending with `/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The prefix under which every node of `service_key` lives, ending with `/`.
    pub fn service_prefix(&self, service_key: &str) -> String {
        format!("{}{}/", self.root, service_key)
    }

    /// The full path of a node.
    pub fn node_path(&self, node: &ServiceMetaInfo) -> String {
        format!("{}{}", self.root, node.node_key())
    }

    /// Splits a full path into `(service_key, host:port)`, or `None` when the path is not a node
    /// path under this root (an overrides record is not one).
    pub fn split_node_path<'a>(&self, path: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = path.strip_prefix(self.root.as_str())?;
        let (service, address) = rest.split_once('/')?;
        if service.is_empty()
            || address.is_empty()
            || address.contains('/')
            || service == crate::overrides::OVERRIDES_NAME
        {
            return None;
        }
        Some((service, address))
    }

    /// The prefix of the overrides records (see [`crate::overrides`]): `<root>~overrides/`,
    /// beside the services, never under one.
    pub fn overrides_prefix(&self) -> String {
        format!("{}{}/", self.root, crate::overrides::OVERRIDES_NAME)
    }

    /// The path of `service_key`'s overrides record: `<root>~overrides/<service_key>`.
    pub fn overrides_path(&self, service_key: &str) -> String {
        format!("{}{service_key}", self.overrides_prefix())
    }

    /// The service key of an overrides record's path, or `None` when `path` is not one.
    pub fn split_overrides_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(self.root.as_str())?;
        let service = rest
            .strip_prefix(crate::overrides::OVERRIDES_NAME)?
            .strip_prefix('/')?;
        (!service.is_empty() && !service.contains('/')).then_some(service)
    }
}

/// Now, truncated to whole milliseconds (the precision nodes are stored with).
pub(crate) fn now_millis() -> SystemTime {
    let now = SystemTime::now();
    match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
        }
        Err(_) => now,
    }
}

/// Serde helpers for an optional [`SystemTime`] as an RFC 3339 string with milliseconds.
mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            // Epoch milliseconds, as a Java `Date` serialized by many JSON libraries.
            Millis(u64),
        }
        match Option::<Raw>::deserialize(deserializer)? {
            None => Ok(None),
            Some(Raw::Text(s)) => humantime::parse_rfc3339_weak(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(Raw::Millis(ms)) => Ok(Some(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut node = ServiceMetaInfo::new("users", "127.0.0.1", 9000)
            .with_group("canary")
            .with_weight(3)
            .with_metadata("zone", "a");
        node.register_time = Some(t);
        let json = serde_json::to_string(&node).unwrap();
        assert!(json.contains("\"serviceName\":\"users\""), "{json}");
        assert!(
            json.contains("\"registerTime\":\"2023-11-14T22:13:20.123Z\""),
            "{json}"
        );
        let back: ServiceMetaInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, node);
    }

    #[test]
    fn java_style_millis_and_missing_defaults_are_accepted() {
        let json = r#"{"serviceName":"a","serviceHost":"h","servicePort":1,"registerTime":1000}"#;
        let node: ServiceMetaInfo = serde_json::from_str(json).unwrap();
        assert_eq!(node.service_version, "1.0");
        assert_eq!(node.service_group, "default");
        assert_eq!(node.weight, 1);
        assert_eq!(
            node.register_time,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
    }

    #[test]
    fn keys_include_group_only_when_not_default() {
        let node = ServiceMetaInfo::new("a", "h", 1);
        assert_eq!(node.node_key(), "a:1.0/h:1");
        assert_eq!(node.with_group("g").service_key(), "a:1.0:g");
    }

    #[test]
    fn key_space_normalizes_root_and_splits_paths() {
        for root in ["rpc", "/rpc", "rpc/", "/rpc/"] {
            assert_eq!(KeySpace::new(root).root(), "/rpc/");
        }
        let ks = KeySpace::default();
        assert_eq!(ks.split_node_path("/rpc/a:1.0/h:1"), Some(("a:1.0", "h:1")));
        assert_eq!(ks.split_node_path("/rpc/a:1.0/"), None);
        assert_eq!(ks.split_node_path("/rpc/a:1.0/x/y"), None);
        assert_eq!(ks.split_node_path("/other/a/h:1"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let err = ServiceMetaInfo::new("a/b", "h", 1).validate().unwrap_err();
        assert!(err.to_string().contains("serviceName"), "{err}");
        let err = ServiceMetaInfo::new("a", "", 1).validate().unwrap_err();
        assert_eq!(err, InvalidService::Empty("serviceHost"));
        assert!(ServiceMetaInfo::new("a", "::1", 1).validate().is_ok());
        let err = ServiceMetaInfo::new("a\u{1b}[2J", "h", 1)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("\\u{1b}"), "{err}");
        let err = ServiceMetaInfo::new("a", "h\nforged 1.2.3.4:5", 1)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("serviceHost"), "{err}");
        assert_eq!(
            ServiceMetaInfo::new("a", "h", 0).validate(),
            Err(InvalidService::ZeroPort)
        );
    }
}
