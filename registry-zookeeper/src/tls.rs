//! TLS to a server's secure client port (`secureClientPort`).
//!
//! The client library (`zookeeper-client`, feature `tls`) makes the connections; this module
//! turns `rpc.registryConfig.tls.*` into its options and checks them first with a handshake
//! of its own. The library retries a failed handshake until its deadline and then reports only
//! that no server answered; the check names the cause (an untrusted or expired certificate, a
//! plain port, a client certificate the server refused) at once.
//!
//! The library builds its rustls configuration with the process-default crypto provider and
//! brings the `aws-lc-rs` one along; [`install_crypto_provider`] makes `ring` the default, as
//! for the other stores.

use std::sync::Arc;
use std::time::Duration;

use registry_core::{BackendError, TlsPem};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;
use zookeeper_client as zk;

use crate::NAME;

/// How long the check waits, after a completed handshake, for the server to refuse this
/// client's certificate (with TLS 1.3 the server judges it after the client's last flight).
const REFUSAL_WAIT: Duration = Duration::from_millis(250);

/// The TLS settings of a client: the library's options and the same trust as a rustls
/// configuration for [`check`].
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) options: zk::TlsOptions,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn config_error(reason: impl Into<String>) -> BackendError {
    BackendError::Config {
        backend: NAME,
        reason: reason.into(),
    }
}

/// Makes rustls's `ring` provider the process default when none is.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl Tls {
    /// The settings of `pem` (read from `rpc.registryConfig.tls.*`).
    ///
    /// # Errors
    /// [`BackendError::Config`] without a CA file (the client library has no system trust
    /// store), with a server name (the library checks the address's host), or when the files
    /// hold no usable certificate or key.
    pub(crate) fn new(pem: &TlsPem) -> Result<Self, BackendError> {
        if pem.server_name.is_some() {
            return Err(config_error(
                "rpc.registryConfig.tls.serverName is not supported with ZooKeeper: the server's \
                 certificate must carry the address's host",
            ));
        }
        let Some(ca) = pem.ca.as_deref() else {
            return Err(config_error(
                "TLS to ZooKeeper needs rpc.registryConfig.tls.caFile (the client library has no \
                 system trust store)",
            ));
        };
        install_crypto_provider();
        let unusable = |what: &str, e: &dyn std::fmt::Display| {
            config_error(format!("rpc.registryConfig.tls.{what}: {e}"))
        };
        let ca_text = std::str::from_utf8(ca).map_err(|e| unusable("caFile", &e))?;
        let mut options = zk::TlsOptions::new()
            .with_pem_ca(ca_text)
            .map_err(|e| unusable("caFile", &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| unusable("caFile", &e))?;
            roots.add(cert).map_err(|e| unusable("caFile", &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable("caFile", &e))?
            .with_root_certificates(roots);
        let config = match &pem.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let cert_text = std::str::from_utf8(cert).map_err(|e| unusable("certFile", &e))?;
                let key_text =
                    std::str::from_utf8(key.expose()).map_err(|e| unusable("keyFile", &e))?;
                options = options
                    .with_pem_identity(cert_text, key_text)
                    .map_err(|e| unusable("certFile/keyFile", &e))?;
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| unusable("certFile", &e))?;
                let key = PrivateKeyDer::from_pem_slice(key.expose())
                    .map_err(|e| unusable("keyFile", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| unusable("certFile/keyFile", &e))?
            }
        };
        Ok(Tls {
            options,
            config: Arc::new(config),
        })
    }
}

/// The `(host, port)` of each server of a connect string (`host:port,...[/chroot]`, a
/// `tcp+tls://` prefix allowed).
///
/// # Errors
/// A message when a server is given with `tcp://` (plain) or an invalid port.
pub(crate) fn servers(address: &str) -> Result<Vec<(String, u16)>, String> {
    let mut servers = Vec::new();
    for host in address.split(',').map(str::trim) {
        if host.starts_with("tcp://") {
            return Err(format!(
                "TLS is configured (rpc.registryConfig.tls.*) but `{host}` is a plain tcp:// \
                 server: remove the prefix"
            ));
        }
        let host = host.trim_start_matches("tcp+tls://");
        // The chroot follows the last server.
        let host = host.split('/').next().unwrap_or_default();
        if host.is_empty() {
            continue;
        }
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') => (name, port),
            _ => (host, "2181"),
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{host}`: `{port}` is not a port"))?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        servers.push((name.to_owned(), port));
    }
    Ok(servers)
}

/// What a check of one server found.
pub(crate) enum Checked {
    /// The handshake completed and the server kept the connection.
    Fine,
    /// The server could not be reached (a TCP matter: the library's error will say).
    Unreachable,
    /// The TLS handshake failed, or the server closed the connection right after it.
    Failed(String),
}

/// A TLS handshake with `host:port` within `timeout`, then a short wait for the server to
/// refuse this client's certificate.
pub(crate) async fn check(tls: &Tls, host: &str, port: u16, timeout: Duration) -> Checked {
    let name = match ServerName::try_from(host.to_owned()) {
        Ok(name) => name,
        Err(e) => return Checked::Failed(format!("`{host}` is not a valid server name: {e}")),
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(%host, port, error = %e, "ZooKeeper server unreachable for the TLS check");
            return Checked::Unreachable;
        }
        Err(_) => return Checked::Unreachable,
    };
    let connector = TlsConnector::from(Arc::clone(&tls.config));
    let mut stream = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Checked::Failed(describe(&e, "during")),
        Err(_) => {
            return Checked::Failed(format!(
                "no answer to the TLS handshake within {timeout:?} (rpc.registryConfig.timeout): \
                 the server may not speak TLS on this port"
            ))
        }
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(REFUSAL_WAIT.min(timeout), stream.read(&mut byte)).await {
        // ZooKeeper speaks only when spoken to: silence is a kept connection.
        Err(_) => Checked::Fine,
        Ok(Ok(0)) => Checked::Failed(
            "the server closed the connection right after the TLS handshake: it refused this \
             client's certificate (or its absence; see rpc.registryConfig.tls.certFile)"
                .into(),
        ),
        Ok(Ok(_)) => Checked::Fine,
        Ok(Err(e)) => Checked::Failed(describe(&e, "right after")),
    }
}

/// The cause of a failed handshake, in words.
fn describe(e: &std::io::Error, when: &str) -> String {
    if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::AlertReceived(alert) => format!(
                "the server sent the TLS alert {alert:?} {when} the handshake: it refused this \
                 client's certificate (or its absence; see rpc.registryConfig.tls.certFile)"
            ),
            other => other.to_string(),
        };
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => format!(
            "the server closed the connection {when} the TLS handshake: it does not speak TLS on \
             this port, or refused this client's certificate (or its absence; see \
             rpc.registryConfig.tls.certFile): {e}"
        ),
        _ => e.to_string(),
    }
}

/// Checks every server of `address` in turn: the first one that completes a handshake ends
/// the check; a failed handshake is an error at once. Unreachable servers are left to the
/// client library.
///
/// # Errors
/// [`BackendError::Tls`] naming the server and the cause; [`BackendError::Config`] for a
/// plain `tcp://` server in the address.
pub(crate) async fn check_servers(
    tls: &Tls,
    address: &str,
    timeout: Duration,
) -> Result<(), BackendError> {
    let servers = servers(address).map_err(config_error)?;
    for (host, port) in servers {
        match check(tls, &host, port, timeout).await {
            Checked::Fine => return Ok(()),
            Checked::Unreachable => continue,
            Checked::Failed(cause) => {
                return Err(BackendError::Tls {
                    backend: NAME,
                    address: format!("tcp+tls://{host}:{port}"),
                    source: cause.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn servers_of_a_connect_string() {
        assert_eq!(
            servers("a:1,tcp+tls://b:2, c/chroot/x").unwrap(),
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), 2),
                ("c".to_owned(), 2181)
            ]
        );
        assert_eq!(servers("[::1]:3").unwrap(), [("::1".to_owned(), 3)]);
        assert!(servers("a:1,tcp://b:2").unwrap_err().contains("tcp://b:2"));
        assert!(servers("a:x").is_err());
    }
}
