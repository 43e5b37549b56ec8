//! TLS settings shared by every backend: [`TlsFiles`], the PEM files a
//! client or server uses, and [`TlsPem`], their content once read.
//!
//! The files are read when a connection is set up; a missing or unreadable file, or one that
//! holds no PEM block of the expected kind, is a configuration error naming the key and the
//! file (never a panic, never the file's content). A private key's bytes never appear in
//! `Debug` output or in logs.

use std::fmt;
use std::path::{Path, PathBuf};

use super::BackendError;

/// Where TLS material is: the trusted CA certificates, this side's certificate chain and key,
/// and the name to check the server's certificate against.
///
/// The configuration keys are `rpc.registryConfig.tls.caFile`, `...certFile`, `...keyFile` and
/// `...serverName`.
///
/// ```
/// use registry_core::TlsFiles;
///
/// let tls = TlsFiles::default()
///     .with_ca_file("/etc/registry/ca.pem")
///     .with_identity("/etc/registry/client.pem", "/etc/registry/client.key")
///     .with_server_name("etcd.internal");
/// assert!(tls.has_identity());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA certificate(s) that sign the server's certificate (`caFile`).
    /// `None`: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this side's certificate chain (`certFile`): a client certificate for mutual
    /// TLS, or a server's certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the private key of `cert_file` (`keyFile`).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (`serverName`); `None`: the host of the
    /// address. Not every store client can override it (see each backend's docs).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// Sets the CA file.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the certificate chain and key files.
    #[must_use]
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Sets the server name to verify.
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Whether a certificate and key are configured.
    pub fn has_identity(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Reads the files, checking that each holds PEM blocks of the right kind.
    ///
    /// `prefix` is the configuration prefix named in errors (`rpc.registryConfig.tls`).
    ///
    /// # Errors
    /// [`BackendError::Config`] naming the key and the file: unreadable, no certificate or
    /// no private key in it, or only one of `certFile` and `keyFile` given.
    pub fn read(&self, backend: &'static str, prefix: &str) -> Result<TlsPem, BackendError> {
        let config = |reason: String| BackendError::Config { backend, reason };
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(config(format!(
                "{prefix}.certFile and {prefix}.keyFile go together: set both or neither"
            )));
        }
        let read = |key: &str, path: &Path, marker: &str, kind: &str| {
            let bytes = std::fs::read(path).map_err(|e| {
                config(format!(
                    "{prefix}.{key}: cannot read `{}`: {e}",
                    path.display()
                ))
            })?;
            if !contains(&bytes, marker.as_bytes()) {
                return Err(config(format!(
                    "{prefix}.{key}: `{}` holds no PEM {kind}",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        let ca = self
            .ca_file
            .as_deref()
            .map(|p| read("caFile", p, "-----BEGIN CERTIFICATE-----", "certificate"))
            .transpose()?;
        let cert = self
            .cert_file
            .as_deref()
            .map(|p| read("certFile", p, "-----BEGIN CERTIFICATE-----", "certificate"))
            .transpose()?;
        let key = self
            .key_file
            .as_deref()
            .map(|p| read("keyFile", p, "PRIVATE KEY-----", "private key"))
            .transpose()?;
        Ok(TlsPem {
            ca,
            identity: cert.zip(key).map(|(cert, key)| (cert, SecretBytes(key))),
            server_name: self.server_name.clone(),
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The content of [`TlsFiles`], as PEM.
#[derive(Clone, Debug, Default)]
pub struct TlsPem {
    /// The CA certificates (PEM), `None`: the system's trust store.
    pub ca: Option<Vec<u8>>,
    /// This side's certificate chain and private key (PEM).
    pub identity: Option<(Vec<u8>, SecretBytes)>,
    /// The name to verify the server's certificate against.
    pub server_name: Option<String>,
}

/// Secret bytes (a private key): `Debug` prints only their length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl SecretBytes {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_are_checked_and_keys_never_printed() {
        let dir = std::env::temp_dir().join(format!("tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("c.pem");
        let key = dir.join("k.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let pem = TlsFiles::default()
            .with_identity(&cert, &key)
            .read("x", "p")
            .unwrap();
        let shown = format!("{pem:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");

        let err = TlsFiles::default()
            .with_ca_file(&key)
            .read("x", "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.caFile") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = TlsFiles::default()
            .with_ca_file(dir.join("missing.pem"))
            .read("x", "p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        let half = TlsFiles {
            cert_file: Some(cert),
            ..TlsFiles::default()
        };
        assert!(half
            .read("x", "p")
            .unwrap_err()
            .to_string()
            .contains("go together"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
