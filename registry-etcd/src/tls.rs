//! TLS to etcd: the client's TLS options from the configured PEM material, and the failure of
//! a member that closes the connection at the handshake, named as a TLS error.

use std::time::Duration;

use registry_core::BackendError;

/// The client's TLS settings from the configured PEM material: the CA file's certificates
/// (else the system's trust store), a client certificate for mutual TLS, the server name.
pub(crate) fn tls_options(
    pem: registry_core::TlsPem,
    handshake: Duration,
) -> etcd_client::TlsOptions {
    let mut tls = etcd_client::TlsOptions::new().timeout(handshake);
    tls = match pem.ca {
        Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(ca)),
        None => tls.with_native_roots(),
    };
    if let Some((cert, key)) = pem.identity {
        tls = tls.identity(etcd_client::Identity::from_pem(cert, key.expose()));
    }
    if let Some(name) = pem.server_name {
        tls = tls.domain_name(name);
    }
    tls
}

/// A member that took the TCP connection over TLS and closed it at once did not accept this
/// client's TLS (it does not speak TLS, or refused our certificate or its absence, which TLS
/// 1.3 reports only after the handshake): reported as [`BackendError::Tls`], with that hint.
pub(crate) fn closed_at_handshake(error: BackendError) -> BackendError {
    let BackendError::Connect {
        backend,
        address,
        source,
    } = error
    else {
        return error;
    };
    let closed = source
        .downcast_ref::<etcd_client::Error>()
        .is_some_and(crate::error::closed_early);
    if !closed {
        return BackendError::Connect {
            backend,
            address,
            source,
        };
    }
    BackendError::Tls {
        backend,
        address,
        source: format!(
            "the server closed the connection during or right after the TLS handshake: it does \
             not speak TLS on this port, or refused this client's certificate (or its absence; \
             see rpc.registryConfig.tls.certFile): {}",
            registry_core::error_chain(&*source)
        )
        .into(),
    }
}
