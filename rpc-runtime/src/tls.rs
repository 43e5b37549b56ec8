//! TLS on the RPC transport (rustls with the `ring` provider: no cmake, no system library).
//!
//! A provider with `rpc.tls.certFile` and `rpc.tls.keyFile` listens in TLS and registers its
//! nodes with the metadata [`TLS_METADATA_KEY`]` = "true"`; with `rpc.tls.clientCaFile` it
//! also requires a client certificate signed by that CA (mutual TLS). A consumer dials a node
//! whose metadata says `tls=true` in TLS, verifying its certificate against `rpc.tls.caFile`
//! (no system trust store) for the name `rpc.tls.serverName` or else the node's host, and
//! presents `rpc.tls.clientCertFile` when set; every other node is dialed in plain TCP, so
//! plain and TLS nodes of one service serve the same consumers.
//!
//! The framing, limits, timeouts and byte budgets are the same code on both kinds of
//! connection (the server and the client are generic over the stream). The server's TLS
//! handshake must end within the frame timeout (`rpc.server.frameTimeout`) and holds a
//! connection slot meanwhile; a TLS listener at its connection limit closes a new connection
//! without a handshake (a plain one sends a go-away first).
//!
//! # Errors
//! Files are read when a server or consumer is built: a missing or unreadable file, one that
//! holds no PEM block of the right kind, or a key that does not fit is a
//! [`ConfigError::InvalidValue`] naming the key (never a key's bytes: `Debug` of
//! [`ServerTls`] and [`ClientTls`] prints no material). A failed handshake is a
//! [`TransportError::Tls`](crate::transport::TransportError::Tls) naming the node address and
//! the cause (untrusted or expired certificate, client certificate refused, not TLS on that
//! port); a TLS node met by a consumer without `rpc.tls.caFile` is
//! [`TransportError::TlsNotConfigured`](crate::transport::TransportError::TlsNotConfigured).
//! Both certainly did not run the request, so the call moves on to another node.
//!
//! ```no_run
//! use rpc_runtime::config::RpcTlsConfig;
//! use rpc_runtime::tls::{ClientTls, ServerTls};
//!
//! let tls = RpcTlsConfig {
//!     cert_file: Some("/etc/rpc/server.pem".into()),
//!     key_file: Some("/etc/rpc/server.key".into()),
//!     ca_file: Some("/etc/rpc/ca.pem".into()),
//!     ..RpcTlsConfig::default()
//! };
//! let server = ServerTls::from_config(&tls)?; // Some: the provider listens in TLS
//! let client = ClientTls::from_config(&tls)?; // Some: this consumer can call TLS nodes
//! assert!(server.is_some() && client.is_some());
//! # Ok::<(), rpc_runtime::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ConfigError, RpcTlsConfig};

/// The node metadata key a TLS provider registers (value `"true"`); consumers dial such nodes
/// in TLS.
pub const TLS_METADATA_KEY: &str = "tls";

/// Whether a node's metadata asks for TLS (`tls=true`).
pub fn wants_tls(metadata: &BTreeMap<String, String>) -> bool {
    metadata
        .get(TLS_METADATA_KEY)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The server side of TLS: the provider's certificate and key, and the CA its clients'
/// certificates must chain to (mutual TLS) when set.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_certificates_required", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server side `rpc.tls` describes: `None` without `certFile` and `keyFile`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] naming the key whose file is unreadable or unusable.
    pub fn from_config(config: &RpcTlsConfig) -> Result<Option<Self>, ConfigError> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let chain = certificates("rpc.tls.certFile", cert)?;
        let key = private_key("rpc.tls.keyFile", key)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                invalid(
                    "rpc.tls.certFile",
                    cert,
                    format!("a usable TLS setup ({e})"),
                )
            })?;
        let builder = match &config.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = roots("rpc.tls.clientCaFile", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            invalid(
                                "rpc.tls.clientCaFile",
                                ca,
                                format!("usable CA certificates ({e})"),
                            )
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let server = builder.with_single_cert(chain, key).map_err(|e| {
            invalid(
                "rpc.tls.keyFile",
                config.key_file.as_deref().unwrap_or(cert),
                format!("the private key of rpc.tls.certFile ({e})"),
            )
        })?;
        Ok(Some(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            mutual: config.client_ca_file.is_some(),
        }))
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.mutual
    }
}

/// The client side of TLS: the CAs node certificates must chain to, an optional client
/// certificate, and an optional fixed server name.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    identity: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The client side `rpc.tls` describes: `None` without `caFile`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] naming the key whose file or value is unusable.
    pub fn from_config(config: &RpcTlsConfig) -> Result<Option<Self>, ConfigError> {
        let Some(ca) = &config.ca_file else {
            return Ok(None);
        };
        let roots = roots("rpc.tls.caFile", ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("rpc.tls.caFile", ca, format!("a usable TLS setup ({e})")))?
            .with_root_certificates(roots);
        let client = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates("rpc.tls.clientCertFile", cert)?;
                let key_der = private_key("rpc.tls.clientKeyFile", key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    invalid(
                        "rpc.tls.clientKeyFile",
                        key,
                        format!("the private key of rpc.tls.clientCertFile ({e})"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name =
            match &config.server_name {
                None => None,
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    ConfigError::InvalidValue {
                        key: "rpc.tls.serverName".into(),
                        value: name.escape_debug().to_string(),
                        expected: "a DNS name or an IP address".into(),
                    }
                })?),
            };
        Ok(Some(ClientTls {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
            identity: config.client_cert_file.is_some(),
        }))
    }

    /// The name to verify `host`'s certificate against: `rpc.tls.serverName`, else `host`.
    pub(crate) fn server_name(&self, host: &str) -> Option<ServerName<'static>> {
        match &self.server_name {
            Some(name) => Some(name.clone()),
            None => ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).ok(),
        }
    }
}

/// A stream the shared framing code runs over, split into halves its reader and writer tasks
/// own: plain TCP (split without a lock) or TLS.
pub(crate) trait Split: Send + 'static {
    /// The reading half.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream.
    fn split(self) -> (Self::Read, Self::Write);
}

impl Split for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Split for tokio_rustls::client::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl Split for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// What went wrong in a TLS exchange, for an operator: a hint naming the keys to check, or
/// `None` when `error` is no TLS failure.
pub(crate) fn failure_hint(error: &std::io::Error, handshaking: bool) -> Option<&'static str> {
    use std::io::ErrorKind;
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => Some(
            "the node's certificate is not accepted: check rpc.tls.caFile, rpc.tls.serverName \
             and the certificate's validity",
        ),
        Some(rustls::Error::AlertReceived(_)) => Some(
            "the node refused the handshake: it may require a client certificate signed by its \
             rpc.tls.clientCaFile (see this consumer's rpc.tls.clientCertFile)",
        ),
        Some(_) => Some("the TLS exchange failed"),
        None if handshaking
            && matches!(
                error.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            Some(
                "the node closed the connection during the handshake: it may not speak TLS on \
                 this port (a plain node registered with tls=true), or be at its connection limit",
            )
        }
        None => None,
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(key: &str, path: &Path, expected: String) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: path.display().to_string(),
        expected,
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, path, format!("a readable file ({e})")))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(key, path, format!("PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(key, path, "a file holding PEM certificates".into()));
    }
    Ok(certs)
}

fn roots(key: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(key, path, format!("CA certificates ({e})")))?;
    }
    Ok(roots)
}

fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = Zeroing(read(key, path)?);
    // The parser's error is not printed: only that no key was found, never the bytes.
    PrivateKeyDer::from_pem_slice(&bytes.0)
        .map_err(|_| invalid(key, path, "a file holding a PEM private key".into()))
}

/// The key file's bytes, overwritten when dropped.
struct Zeroing(Vec<u8>);

impl Drop for Zeroing {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_flag_is_read_from_the_metadata() {
        let mut m = BTreeMap::new();
        assert!(!wants_tls(&m));
        m.insert("tls".to_owned(), "true".to_owned());
        assert!(wants_tls(&m));
        m.insert("tls".to_owned(), "false".to_owned());
        assert!(!wants_tls(&m));
    }

    #[test]
    fn bad_files_name_the_key_and_never_the_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "SECRET-KEY-MATERIAL").unwrap();
        let config = RpcTlsConfig {
            cert_file: Some(junk.clone()),
            key_file: Some(junk.clone()),
            ..RpcTlsConfig::default()
        };
        let e = ServerTls::from_config(&config).unwrap_err().to_string();
        assert!(e.contains("rpc.tls.certFile") && e.contains("PEM"), "{e}");
        let config = RpcTlsConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..RpcTlsConfig::default()
        };
        let e = ClientTls::from_config(&config).unwrap_err().to_string();
        assert!(
            e.contains("rpc.tls.caFile") && e.contains("readable"),
            "{e}"
        );
        assert!(ClientTls::from_config(&RpcTlsConfig::default())
            .unwrap()
            .is_none());
        assert!(ServerTls::from_config(&RpcTlsConfig::default())
            .unwrap()
            .is_none());
    }
}
