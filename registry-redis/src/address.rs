//! Where the server is: the configured address, one server or the Sentinels of a primary.
//!
//! - `redis://[user:pass@]host:port[/db]` (or a bare `host:port`): one server.
//! - `redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER_NAME[/db]`: the Sentinels
//!   (port 26379 when none is given) that know the primary named `MASTER_NAME`. The
//!   credentials and the database are the data nodes'; the Sentinels are asked without
//!   credentials.
//!
//! Credentials set in the options (`rpc.registryConfig.username/password`) replace those of
//! the address.
//!
//! TLS files (`rpc.registryConfig.tls.*`) make a bare `host:port` a `rediss://` one; with a
//! Sentinel address they apply to the Sentinels (their `tls-port`) and to the data nodes they
//! name (which must then be their TLS ports: `tls-replication yes` on every node and Sentinel).

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo};
use registry_core::{redact_address, BackendError, ConnectOptions, TlsPem};

use crate::{DEFAULT_ADDRESS, NAME};

/// The scheme of a Sentinel address.
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// The port of a Sentinel given without one.
const SENTINEL_PORT: u16 = 26379;

/// A parsed address.
pub(crate) enum Address {
    /// One server.
    Direct(ConnectionInfo),
    /// A primary found through its Sentinels.
    Sentinel(SentinelAddress),
}

/// The Sentinels of a primary, and how to talk to the data nodes.
pub(crate) struct SentinelAddress {
    /// The Sentinels, in the configured order.
    pub(crate) sentinels: Vec<ConnectionInfo>,
    /// The name the Sentinels monitor the primary under.
    pub(crate) master: String,
    /// Database and credentials for the primary.
    pub(crate) node: RedisConnectionInfo,
    /// TLS to the Sentinels and the data nodes (`rpc.registryConfig.tls.*`): the same CA and
    /// client certificate for both.
    pub(crate) tls: Option<redis::TlsCertificates>,
}

/// The address as configured, made whole: a Sentinel address as it is, otherwise
/// `redis://host:port[/db]`, `rediss://...`, or a bare `host:port` given a scheme; the first of
/// several comma-separated servers (a standalone server: no cluster).
pub(crate) fn url(address: &str) -> String {
    let trimmed = address.trim();
    if trimmed.starts_with(SENTINEL_SCHEME) {
        return trimmed.to_owned();
    }
    let first = trimmed.split(',').map(str::trim).find(|a| !a.is_empty());
    match first {
        None => DEFAULT_ADDRESS.to_owned(),
        Some(a) if a.contains("://") => a.to_owned(),
        Some(a) => format!("redis://{a}"),
    }
}

/// Parses `url` (see [`url`]), the credentials of `options` (when set) replacing those in it,
/// and the TLS files of `options` read (a bare `host:port` becomes `rediss://` with them).
///
/// # Errors
/// [`BackendError::Config`] when `url` is not a Redis or Sentinel address, or TLS files are
/// configured for a plain `redis://` address or with a server name (the client checks the
/// address's host); the message shows the address with its password redacted.
pub(crate) fn parse(url: &str, options: &ConnectOptions) -> Result<Address, BackendError> {
    let config = |reason: String| BackendError::Config {
        backend: NAME,
        reason: format!("`{}` is not a Redis address: {reason}", redact_address(url)),
    };
    let tls_config = |reason: String| BackendError::Config {
        backend: NAME,
        reason: format!("`{}`: {reason}", redact_address(url)),
    };
    let pem = options
        .tls
        .as_ref()
        .map(|t| t.read(NAME, "rpc.registryConfig.tls"))
        .transpose()?;
    if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let mut sentinel = sentinel(rest).map_err(config)?;
        sentinel.node = with_credentials(sentinel.node, options);
        if let Some(pem) = pem {
            let certificates = certificates(pem).map_err(tls_config)?;
            // The files are checked here: a bad one is a configuration error at start.
            for info in &mut sentinel.sentinels {
                *info = with_tls(info, &certificates).map_err(tls_config)?;
            }
            sentinel.tls = Some(certificates);
        }
        return Ok(Address::Sentinel(sentinel));
    }
    let url = match (&pem, url.strip_prefix("redis://")) {
        (Some(_), Some(_)) if options.address.contains("redis://") => {
            return Err(tls_config(
                "TLS is configured (rpc.registryConfig.tls.*) but the address is a plain \
                 redis:// one: use rediss://"
                    .into(),
            ))
        }
        (Some(_), Some(rest)) => format!("rediss://{rest}"),
        _ => url.to_owned(),
    };
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| config(e.to_string()))?;
    let settings = with_credentials(info.redis_settings().clone(), options);
    let info = info.set_redis_settings(settings);
    let Some(pem) = pem else {
        return Ok(Address::Direct(info));
    };
    let certificates = certificates(pem).map_err(tls_config)?;
    let client = redis::Client::build_with_tls(info, certificates).map_err(|e| {
        tls_config(format!(
            "unusable TLS files (rpc.registryConfig.tls.*): {e}"
        ))
    })?;
    Ok(Address::Direct(client.get_connection_info().clone()))
}

/// The client's certificates from the files read; the crypto provider installed.
///
/// # Errors
/// A message when a server name is configured (the client checks the address's host).
fn certificates(pem: TlsPem) -> Result<redis::TlsCertificates, String> {
    if pem.server_name.is_some() {
        return Err(
            "rpc.registryConfig.tls.serverName is not supported with Redis: the server's \
             certificate must carry the address's host"
                .into(),
        );
    }
    install_crypto_provider();
    Ok(redis::TlsCertificates {
        client_tls: pem.identity.map(|(cert, key)| redis::ClientTlsConfig {
            client_cert: cert,
            client_key: key.0,
        }),
        root_cert: pem.ca,
    })
}

/// `info` (a Sentinel's plain address) over TLS with `certificates`.
///
/// # Errors
/// A message when the files are unusable.
fn with_tls(
    info: &ConnectionInfo,
    certificates: &redis::TlsCertificates,
) -> Result<ConnectionInfo, String> {
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Ok(info.clone());
    };
    let addr = ConnectionAddr::TcpTls {
        host: host.clone(),
        port: *port,
        insecure: false,
        tls_params: None,
    };
    let tls = info.clone().set_addr(addr);
    redis::Client::build_with_tls(tls, certificates.clone())
        .map(|client| client.get_connection_info().clone())
        .map_err(|e| format!("unusable TLS files (rpc.registryConfig.tls.*): {e}"))
}

/// Makes rustls's `ring` provider the process default when none is (the client builds its
/// TLS configuration with the default provider; with several compiled in, rustls needs one
/// chosen).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn with_credentials(
    mut settings: RedisConnectionInfo,
    options: &ConnectOptions,
) -> RedisConnectionInfo {
    if let Some(user) = options.username.as_deref().filter(|u| !u.is_empty()) {
        settings = settings.set_username(user);
    }
    if let Some(password) = options.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(password);
    }
    settings
}

/// `[user:pass@]host:port[,host:port...]/MASTER_NAME[/db]`, after the scheme.
fn sentinel(rest: &str) -> Result<SentinelAddress, String> {
    let (authority, path) = rest
        .split_once('/')
        .ok_or("no master name (`redis+sentinel://host:port,.../MASTER_NAME[/db]`)")?;
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let mut node = RedisConnectionInfo::default();
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        let user =
            percent_decode(user).ok_or("the user name is not valid percent-encoded UTF-8")?;
        if !user.is_empty() {
            node = node.set_username(user);
        }
        if let Some(password) = password {
            let password = percent_decode(password)
                .ok_or("the password is not valid percent-encoded UTF-8")?;
            if !password.is_empty() {
                node = node.set_password(password);
            }
        }
    }
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, port) = host_port(host)?;
        let info = (name.as_str(), port)
            .into_connection_info()
            .map_err(|e| format!("Sentinel `{host}`: {e}"))?;
        sentinels.push(info);
    }
    if sentinels.is_empty() {
        return Err("no Sentinel address before the master name".into());
    }
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() || master.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!("`{master}` is not a master name"));
    }
    match (segments.next(), segments.next()) {
        (None | Some(""), None) => {}
        (Some(db), None) => {
            let db: i64 = db
                .parse()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("`{db}` is not a database number"))?;
            node = node.set_db(db);
        }
        _ => return Err("more than `/MASTER_NAME/db` after the Sentinels".into()),
    }
    Ok(SentinelAddress {
        sentinels,
        master: master.to_owned(),
        node,
        tls: None,
    })
}

/// `host:port`, `host` (the Sentinel port) or `[v6]:port`.
fn host_port(host: &str) -> Result<(String, u16), String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (name, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{host}`: no closing `]`"))?;
        (name, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{host}`: `{p}` is not a port"))?,
    };
    if name.is_empty() {
        return Err(format!("`{host}`: no host"));
    }
    Ok((name.to_owned(), port))
}

/// `%XX` sequences decoded; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_a_default() {
        assert_eq!(url(""), DEFAULT_ADDRESS);
        assert_eq!(url("10.0.0.1:6380"), "redis://10.0.0.1:6380");
        assert_eq!(url("rediss://h:1/2"), "rediss://h:1/2");
        assert_eq!(url(" a:1 , b:2"), "redis://a:1");
        assert_eq!(
            url(" redis+sentinel://a:1,b:2/m "),
            "redis+sentinel://a:1,b:2/m"
        );
    }

    fn sentinel_of(address: &str, options: &ConnectOptions) -> SentinelAddress {
        match parse(address, options) {
            Ok(Address::Sentinel(s)) => s,
            Ok(Address::Direct(_)) => panic!("{address}: not a Sentinel address"),
            Err(e) => panic!("{address}: {e}"),
        }
    }

    #[test]
    fn sentinel_addresses() {
        let none = ConnectOptions::default();
        let s = sentinel_of(
            "redis+sentinel://u%40x:p%3Aw@a:1,[::1]:2,c/mymaster/3",
            &none,
        );
        let hosts: Vec<String> = s.sentinels.iter().map(|i| i.addr().to_string()).collect();
        assert_eq!(hosts, ["a:1", "::1:2", "c:26379"]);
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.node.db(), 3);
        assert_eq!(s.node.username(), Some("u@x"));
        assert_eq!(s.node.password(), Some("p:w"));

        let s = sentinel_of("redis+sentinel://a:1/m/", &none);
        assert_eq!((s.node.db(), s.node.password()), (0, None));

        let options = ConnectOptions {
            username: Some("admin".into()),
            password: Some("secret".into()),
            ..ConnectOptions::default()
        };
        let s = sentinel_of("redis+sentinel://:old@a:1/m", &options);
        assert_eq!(s.node.username(), Some("admin"));
        assert_eq!(s.node.password(), Some("secret"));
    }

    #[test]
    fn bad_sentinel_addresses_are_config_errors_without_the_password() {
        let none = ConnectOptions::default();
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel:///m",
            "redis+sentinel://:hunter2@a:0/m",
            "redis+sentinel://a:x/m",
            "redis+sentinel://a:1/m/x",
            "redis+sentinel://a:1/m/1/2",
            "redis+sentinel://[::1/m",
            "redis+sentinel://u:%zz@a:1/m",
        ] {
            match parse(bad, &none) {
                Err(BackendError::Config { reason, .. }) => {
                    assert!(!reason.contains("hunter2"), "{reason}");
                    assert!(reason.contains("is not a Redis address"), "{reason}");
                }
                Err(other) => panic!("{bad}: {other}"),
                Ok(_) => panic!("{bad}: accepted"),
            }
        }
    }

    #[test]
    fn sentinel_addresses_with_tls_files_reach_the_sentinels_over_tls() {
        let pki = registry_test_support::TestPki::generate().unwrap();
        let files = registry_core::TlsFiles::default().with_ca_file(&pki.ca);
        let options = ConnectOptions {
            tls: Some(files.clone()),
            ..ConnectOptions::default()
        };
        let s = sentinel_of("redis+sentinel://a:1,[::1]:2/m", &options);
        assert!(s.tls.is_some());
        for info in &s.sentinels {
            assert!(
                matches!(
                    info.addr(),
                    ConnectionAddr::TcpTls {
                        insecure: false,
                        ..
                    }
                ),
                "{:?}",
                info.addr()
            );
        }
        let named = ConnectOptions {
            tls: Some(files.with_server_name("redis.internal")),
            ..ConnectOptions::default()
        };
        match parse("redis+sentinel://a:1/m", &named) {
            Err(BackendError::Config { reason, .. }) => {
                assert!(reason.contains("serverName is not supported"), "{reason}");
            }
            _ => panic!("a server name with Sentinels must be refused"),
        }
    }

    #[test]
    fn direct_addresses_take_the_options_credentials() {
        let options = ConnectOptions {
            password: Some("secret".into()),
            ..ConnectOptions::default()
        };
        match parse("redis://:old@h:1/2", &options) {
            Ok(Address::Direct(info)) => {
                assert_eq!(info.redis_settings().password(), Some("secret"));
                assert_eq!(info.redis_settings().db(), 2);
            }
            _ => panic!("not a direct address"),
        }
        assert!(matches!(
            parse("redis://h:1:2:3", &ConnectOptions::default()),
            Err(BackendError::Config { .. })
        ));
    }
}
