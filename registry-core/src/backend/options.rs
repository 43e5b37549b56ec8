//! How to reach a store: [`ConnectOptions`].

use std::fmt;
use std::time::Duration;

use super::TlsFiles;
use crate::instance::{KeySpace, DEFAULT_ROOT};
use crate::options::{RegistryOptions, DEFAULT_TIMEOUT, DEFAULT_TTL};

/// How to reach a store: the backend-neutral part of the registry configuration.
///
/// The default is the backend's default address, no credentials, and the registry defaults
/// ([`DEFAULT_TIMEOUT`], [`DEFAULT_TTL`], [`DEFAULT_ROOT`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Address(es): backend specific, several endpoints comma-separated. Empty means the
    /// backend's default.
    pub address: String,
    /// User name, for stores with authentication.
    pub username: Option<String>,
    /// Password, for stores with authentication.
    pub password: Option<String>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Time to live of a node whose owner stopped heart-beating.
    pub ttl: Duration,
    /// The key root the registry uses (as in [`KeySpace`](crate::KeySpace)), so a backend can
    /// check it at start and knows where node keys are.
    pub root: String,
    /// TLS to the store (`rpc.registryConfig.tls.*`); `None`: plain TCP unless the address
    /// asks for TLS (`https://`, `rediss://`).
    pub tls: Option<TlsFiles>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            address: String::new(),
            username: None,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            ttl: DEFAULT_TTL,
            root: DEFAULT_ROOT.to_owned(),
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// Options for the store at `address`, with the timeout, TTL and root of `options`: what a
    /// [`Registry`](crate::Registry) built with the same `options` expects.
    pub fn for_registry(address: impl Into<String>, options: &RegistryOptions) -> Self {
        Self {
            address: address.into(),
            timeout: options.timeout,
            ttl: options.ttl,
            root: options.keys.root().to_owned(),
            ..Self::default()
        }
    }

    /// The root as a [`KeySpace`](crate::KeySpace) (normalised: leading and trailing `/`).
    pub fn keys(&self) -> KeySpace {
        KeySpace::new(&self.root)
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("root", &self.root)
            .field("tls", &self.tls)
            .finish()
    }
}
