//! Where the server is: the configured address as a Redis URL, with credentials.

use registry_core::{BackendError, ConnectOptions};

use crate::{DEFAULT_ADDRESS, NAME};

/// `redis://host:port[/db]`, `rediss://...`, or a bare `host:port`; the first of several
/// comma-separated addresses (a standalone server: no cluster).
pub(crate) fn url(address: &str) -> String {
    let first = address.split(',').map(str::trim).find(|a| !a.is_empty());
    match first {
        None => DEFAULT_ADDRESS.to_owned(),
        Some(a) if a.contains("://") => a.to_owned(),
        Some(a) => format!("redis://{a}"),
    }
}

/// A client for the server `url` names, with the credentials of `options` (when set) in
/// place of any in the URL.
///
/// # Errors
/// [`BackendError::Config`] when `url` is not a Redis address.
pub(crate) fn client(url: &str, options: &ConnectOptions) -> Result<redis::Client, BackendError> {
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| BackendError::Config {
            backend: NAME,
            reason: format!(
                "`{}` is not a Redis address: {e}",
                registry_core::redact_address(url)
            ),
        })?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = options.username.as_deref().filter(|u| !u.is_empty()) {
        settings = settings.set_username(user);
    }
    if let Some(password) = options.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| BackendError::Config {
        backend: NAME,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_a_default() {
        assert_eq!(url(""), DEFAULT_ADDRESS);
        assert_eq!(url("10.0.0.1:6380"), "redis://10.0.0.1:6380");
        assert_eq!(url("rediss://h:1/2"), "rediss://h:1/2");
        assert_eq!(url(" a:1 , b:2"), "redis://a:1");
    }
}
