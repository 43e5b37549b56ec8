//! What the console is started with: where it listens, what it says about the store, and the
//! admin token that unlocks the actions.

use std::net::SocketAddr;
use std::time::Duration;

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8500";
/// The environment variable `registryctl console` reads the admin token from.
pub const TOKEN_ENV: &str = "REGISTRY_CONSOLE_TOKEN";
/// How often the TTLs and the store's health are read while a page is open.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How many node changes the console remembers (the change log).
pub const DEFAULT_LOG_CAPACITY: usize = 1000;

/// The secret that unlocks the actions. Its `Debug` shows nothing of it, and it has no
/// `Display`: it cannot end up in a log line by accident.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token; `None` when it is empty (or only whitespace), which would unlock nothing.
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        if token.trim().is_empty() {
            None
        } else {
            Some(Self(token))
        }
    }

    /// Whether `presented` is this token, compared in constant time (the time depends only on
    /// the token's length, not on where the first difference is).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }

    /// The token's length in bytes (to warn about short ones).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty token cannot be built.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Compares every byte of `secret` whatever `presented` holds; a length mismatch is folded in
/// at the end.
fn constant_time_eq(secret: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != presented.len());
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!*s);
        diff |= std::hint::black_box(s ^ p);
    }
    diff == 0
}

/// How the console runs. Built with by-value setters:
///
/// ```
/// use registry_console::{AdminToken, ConsoleOptions};
///
/// let options = ConsoleOptions::default()
///     .with_listen("127.0.0.1:0".parse().unwrap())
///     .with_store_address("http://127.0.0.1:2379")
///     .with_admin_token(AdminToken::new("s3cret-token-of-some-length"));
/// assert!(options.admin_token.is_some());
/// ```
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// Where to listen ([`DEFAULT_LISTEN`]: loopback).
    pub listen: SocketAddr,
    /// The store's address as shown on the overview (already redacted: no password).
    pub store_address: String,
    /// The admin token; `None`: read-only, every action answers 403.
    pub admin_token: Option<AdminToken>,
    /// How often TTLs and health are read while a page is open
    /// ([`DEFAULT_SAMPLE_INTERVAL`]).
    pub sample_interval: Duration,
    /// How many node changes the change log keeps ([`DEFAULT_LOG_CAPACITY`]).
    pub log_capacity: usize,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8500)),
            store_address: String::new(),
            admin_token: None,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

impl ConsoleOptions {
    /// Sets the listen address.
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the store address shown on the overview (pass it redacted).
    #[must_use]
    pub fn with_store_address(mut self, address: impl Into<String>) -> Self {
        self.store_address = address.into();
        self
    }

    /// Sets (or clears) the admin token.
    #[must_use]
    pub fn with_admin_token(mut self, token: Option<AdminToken>) -> Self {
        self.admin_token = token;
        self
    }

    /// Sets how often TTLs and health are read while a page is open (at least 100 ms).
    #[must_use]
    pub fn with_sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Sets how many node changes the change log keeps.
    #[must_use]
    pub fn with_log_capacity(mut self, capacity: usize) -> Self {
        self.log_capacity = capacity;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = AdminToken::new("abcdef").unwrap_or_else(|| unreachable!());
        assert!(token.matches(b"abcdef"));
        assert!(!token.matches(b"abcdeF"));
        assert!(!token.matches(b"abcde"));
        assert!(!token.matches(b"abcdefg"));
        assert!(!token.matches(b""));
        assert!(AdminToken::new("  ").is_none());
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
    }
}
