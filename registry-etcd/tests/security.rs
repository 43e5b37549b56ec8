//! TLS, mutual TLS, passwords over TLS and RBAC against a real etcd, with certificates
//! generated at test time; every wrong setting fails fast with an error naming the store, the
//! address and the cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_conformance::{addresses, default_options, init_tracing, svc, svc_addresses};
use registry_core::{BackendError, ConnectOptions, Registry, RegistryError, TlsFiles};
use registry_etcd::EtcdBackend;
use registry_test_support::{EtcdServer, TestPki};

/// A wrong setting must fail well within this (the request timeout is longer).
const FAST: Duration = Duration::from_secs(2);

fn options(address: &str, tls: Option<TlsFiles>) -> ConnectOptions {
    ConnectOptions {
        address: address.to_owned(),
        timeout: Duration::from_secs(5),
        ttl: Duration::from_secs(2),
        tls,
        ..ConnectOptions::default()
    }
}

fn ca(path: &std::path::Path) -> TlsFiles {
    TlsFiles::default().with_ca_file(path)
}

fn etcdctl_tls(server: &EtcdServer, pki: &TestPki, args: &[&str]) {
    let ca = pki.ca.display().to_string();
    let cert = pki.client.cert.display().to_string();
    let key = pki.client.key.display().to_string();
    let mut all = vec!["--cacert", &ca, "--cert", &cert, "--key", &key];
    all.extend_from_slice(args);
    let out = server.etcdctl(&all);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn connect_err(options: &ConnectOptions) -> BackendError {
    let start = Instant::now();
    let result = EtcdBackend::connect(options).await;
    let took = start.elapsed();
    let err = result.expect_err("must fail");
    assert!(took < FAST, "took {took:?}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_password_and_every_wrong_setting() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let etcd = EtcdServer::start_tls(&pki, &pki.server, true, &[]).unwrap();
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // Users, then auth on (over mutual TLS, with etcdctl).
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        etcdctl_tls(&etcd, &pki, args);
    }
    let mtls = ca(&pki.ca).with_identity(&pki.client.cert, &pki.client.key);
    let with_password = |password: &str, tls: TlsFiles| ConnectOptions {
        username: Some("root".into()),
        password: Some(password.into()),
        ..options(&endpoint, Some(tls))
    };

    // The right CA, client certificate and password: registers and discovers.
    let backend = EtcdBackend::connect(&with_password("rootpw", mtls.clone()))
        .await
        .unwrap();
    let registry = Registry::new(Arc::new(backend), default_options()).unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));
    // A bare host:port with TLS configured is https://.
    let bare = endpoint.trim_start_matches("https://").to_owned();
    EtcdBackend::connect(&ConnectOptions {
        address: bare,
        ..with_password("rootpw", mtls.clone())
    })
    .await
    .unwrap();

    // Wrong password over TLS.
    let err = connect_err(&with_password("wrong", mtls.clone())).await;
    assert!(matches!(err, BackendError::Auth { .. }), "{err:?}");

    // Every TLS failure names the store and the address.
    let tls_failure = |err: &BackendError, cause: &str| {
        assert!(matches!(err, BackendError::Tls { .. }), "{err:?}");
        let chain = registry_core::error_chain(err);
        assert!(chain.contains("etcd"), "{chain}");
        assert!(chain.contains(&etcd.port().to_string()), "{chain}");
        assert!(chain.to_lowercase().contains(cause), "{chain}");
    };
    // The wrong CA.
    let wrong_ca = ca(&pki.other_ca).with_identity(&pki.client.cert, &pki.client.key);
    let err = connect_err(&with_password("rootpw", wrong_ca)).await;
    tls_failure(&err, "unknownissuer");
    // No client certificate for a server that asks for one.
    let err = connect_err(&with_password("rootpw", ca(&pki.ca))).await;
    tls_failure(&err, "certificate");
    // An expired client certificate.
    let expired = ca(&pki.ca).with_identity(&pki.expired_client.cert, &pki.expired_client.key);
    let err = connect_err(&with_password("rootpw", expired)).await;
    tls_failure(&err, "certificate");
    // A server name the certificate does not carry.
    let misnamed = mtls.clone().with_server_name("etcd.elsewhere");
    let err = connect_err(&with_password("rootpw", misnamed)).await;
    tls_failure(&err, "notvalidforname");
    // A plain client against the TLS server.
    let plain = endpoint.replace("https://", "http://");
    let err = connect_err(&options(&plain, None)).await;
    assert!(
        matches!(err, BackendError::Tls { .. } | BackendError::Connect { .. }),
        "{err:?}"
    );
    assert!(registry_core::error_chain(&err).contains(&plain), "{err}");
    // TLS configured with an http:// endpoint: a configuration error.
    let err = connect_err(&options(&plain, Some(mtls.clone()))).await;
    assert!(matches!(err, BackendError::Config { .. }), "{err:?}");
    // A missing CA file: a configuration error naming the key.
    let err = connect_err(&options(&endpoint, Some(ca(&pki.dir().join("nope.pem"))))).await;
    assert!(
        err.to_string().contains("rpc.registryConfig.tls.caFile"),
        "{err}"
    );
    registry.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_and_tls_against_a_plain_server_fail_fast() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let expired = EtcdServer::start_tls(&pki, &pki.expired_server, false, &[]).unwrap();
    let err = connect_err(&options(&expired.endpoint(), Some(ca(&pki.ca)))).await;
    assert!(matches!(err, BackendError::Tls { .. }), "{err:?}");
    assert!(
        registry_core::error_chain(&err)
            .to_lowercase()
            .contains("expired"),
        "{}",
        registry_core::error_chain(&err)
    );

    let plain = EtcdServer::start().unwrap();
    let https = plain.endpoint().replace("http://", "https://");
    let err = connect_err(&options(&https, Some(ca(&pki.ca)))).await;
    assert!(matches!(err, BackendError::Tls { .. }), "{err:?}");
    assert!(registry_core::error_chain(&err).contains(&https), "{err}");
}

/// The roles of the README's access-control section: a provider reads and writes under the
/// root, a consumer only reads; the consumer discovers but cannot register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_consumer_discovers_but_cannot_register() {
    init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let registry_options = default_options();
    let root = registry_options.keys.root().to_owned();
    let overrides = registry_options.keys.overrides_prefix();
    let run = |args: &[&str]| {
        let out = etcd.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["user", "add", "root:rootpw"]);
    run(&["user", "grant-role", "root", "root"]);
    // The provider role: read and write under the root, read the overrides.
    run(&["role", "add", "registry-provider"]);
    run(&[
        "role",
        "grant-permission",
        "registry-provider",
        "--prefix=true",
        "readwrite",
        &root,
    ]);
    run(&[
        "role",
        "grant-permission",
        "registry-provider",
        "--prefix=true",
        "read",
        &overrides,
    ]);
    // The consumer role: read only.
    run(&["role", "add", "registry-consumer"]);
    run(&[
        "role",
        "grant-permission",
        "registry-consumer",
        "--prefix=true",
        "read",
        &root,
    ]);
    run(&[
        "role",
        "grant-permission",
        "registry-consumer",
        "--prefix=true",
        "read",
        &overrides,
    ]);
    run(&["user", "add", "provider:provpw"]);
    run(&["user", "grant-role", "provider", "registry-provider"]);
    run(&["user", "add", "consumer:conspw"]);
    run(&["user", "grant-role", "consumer", "registry-consumer"]);
    run(&["auth", "enable"]);

    let target = support::target(&etcd.endpoint());
    let provider = target
        .registry_as("provider", "provpw", registry_options.clone())
        .await;
    provider.register(svc(1)).await.unwrap();

    let consumer = target
        .registry_as("consumer", "conspw", registry_options.clone())
        .await;
    assert_eq!(addresses(&consumer, "svc:1.0").await, svc_addresses(&[1]));
    let start = Instant::now();
    let err = consumer.register(svc(2)).await.unwrap_err();
    assert!(start.elapsed() < FAST, "{err}");
    match &err {
        RegistryError::Store { source, .. } => {
            assert!(matches!(source, BackendError::Denied { .. }), "{source:?}");
            assert!(source.is_config_error());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        registry_core::error_chain(&err).contains("permission denied"),
        "{err}"
    );
    // Nor outside its root for the provider.
    let elsewhere = target
        .registry_as("provider", "provpw", default_options())
        .await;
    assert!(elsewhere.register(svc(3)).await.is_err());
    consumer.unregister(&svc(2)).await.ok();
    provider.shutdown().await.unwrap();
}
