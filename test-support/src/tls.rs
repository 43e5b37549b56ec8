//! Certificates generated at test time ([`TestPki`]): a CA, a server certificate for
//! `127.0.0.1` / `localhost`, a client certificate, an expired server certificate and a second,
//! unrelated CA. Nothing is committed: every run makes new keys in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::{io, HarnessError};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A throwaway PKI in a temp dir: a CA, server and client certificates, an expired server
/// certificate and an unrelated CA, all made anew by each run.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA every certificate below is signed by (except [`other_ca`](Self::other_ca)).
    pub ca: PathBuf,
    /// A server certificate for `127.0.0.1`, `::1` and `localhost` (server and client auth).
    pub server: CertFiles,
    /// A client certificate, common name [`CLIENT_CN`].
    pub client: CertFiles,
    /// A server certificate for the same names that expired in 2021.
    pub expired_server: CertFiles,
    /// A client certificate that expired in 2021.
    pub expired_client: CertFiles,
    /// Another CA, that signed nothing here: trusting it is trusting the wrong CA.
    pub other_ca: PathBuf,
    /// A client certificate signed by [`other_ca`](Self::other_ca).
    pub other_client: CertFiles,
}

/// The common name of [`TestPki::client`] (etcd takes it as the user name with
/// `--client-cert-auth` and auth enabled).
pub const CLIENT_CN: &str = "registry-client";

fn rc(doing: &'static str) -> impl FnOnce(rcgen::Error) -> HarnessError {
    move |e| HarnessError::Io {
        doing: doing.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn make_ca(name: &str) -> Result<Ca, HarnessError> {
    let key = KeyPair::generate().map_err(rc("generate a CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA params"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(rc("self-sign the CA"))?;
    Ok(Ca { cert, key })
}

fn leaf(ca: &Ca, cn: &str, server: bool, expired: bool) -> Result<(String, String), HarnessError> {
    let key = KeyPair::generate().map_err(rc("generate a key"))?;
    let names = if server {
        vec!["localhost".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).map_err(rc("certificate params"))?;
    if server {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(rc("sign a certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, HarnessError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
    Ok(path)
}

fn write_pair(dir: &Path, name: &str, pair: (String, String)) -> Result<CertFiles, HarnessError> {
    Ok(CertFiles {
        cert: write(dir, &format!("{name}.pem"), &pair.0)?,
        key: write(dir, &format!("{name}.key"), &pair.1)?,
    })
}

impl TestPki {
    /// Generates the whole PKI (ECDSA P-256 keys, a few milliseconds).
    ///
    /// # Errors
    /// [`HarnessError::Io`] when a file cannot be written.
    pub fn generate() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .map_err(io("create a temp dir"))?;
        let ca = make_ca("registry test CA")?;
        let other = make_ca("some other CA")?;
        let d = dir.path();
        Ok(Self {
            ca: write(d, "ca.pem", &ca.cert.pem())?,
            server: write_pair(d, "server", leaf(&ca, "registry-test-server", true, false)?)?,
            client: write_pair(d, "client", leaf(&ca, CLIENT_CN, false, false)?)?,
            expired_server: write_pair(d, "expired-server", leaf(&ca, "expired", true, true)?)?,
            expired_client: write_pair(d, "expired-client", leaf(&ca, CLIENT_CN, false, true)?)?,
            other_ca: write(d, "other-ca.pem", &other.cert.pem())?,
            other_client: write_pair(d, "other-client", leaf(&other, CLIENT_CN, false, false)?)?,
            dir,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
