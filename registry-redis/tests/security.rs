//! TLS (`rediss://`), client certificates, passwords and ACL users against a real Redis, with
//! certificates generated at test time; every wrong setting fails fast with an error naming
//! the store, the address and the cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_conformance::{addresses, default_options, init_tracing, svc, svc_addresses};
use registry_core::{BackendError, ConnectOptions, Registry, RegistryError, TlsFiles};
use registry_redis::RedisBackend;
use registry_test_support::{RedisSentinel, RedisServer, TestPki};

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

async fn connect_err(options: &ConnectOptions) -> BackendError {
    eprintln!("connecting to {} with {:?}", options.address, options.tls);
    let start = Instant::now();
    let result = RedisBackend::connect(options).await;
    let took = start.elapsed();
    let err = result.expect_err("must fail");
    assert!(
        took < FAST,
        "took {took:?}: {}",
        registry_core::error_chain(&err)
    );
    err
}

fn tls_failure(err: &BackendError, port: u16) {
    let chain = registry_core::error_chain(err);
    assert!(matches!(err, BackendError::Tls { .. }), "{chain}");
    assert!(chain.contains("redis"), "{chain}");
    assert!(chain.contains(&port.to_string()), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_with_a_password_and_every_wrong_setting() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let redis =
        RedisServer::start_tls(&pki, &pki.server, true, &["--requirepass", "s3cret"]).unwrap();
    let url = redis.tls_url().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mtls = ca(&pki.ca).with_identity(&pki.client.cert, &pki.client.key);
    let with = |password: &str, tls: TlsFiles| ConnectOptions {
        password: Some(password.into()),
        ..options(&url, Some(tls))
    };

    let backend = RedisBackend::connect(&with("s3cret", mtls.clone()))
        .await
        .unwrap();
    let registry = Registry::new(Arc::new(backend), default_options()).unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));
    // A bare host:port with TLS configured is rediss://.
    let bare = url.trim_start_matches("rediss://").to_owned();
    RedisBackend::connect(&ConnectOptions {
        address: bare,
        ..with("s3cret", mtls.clone())
    })
    .await
    .unwrap();

    // Wrong password over TLS.
    let err = connect_err(&with("wrong", mtls.clone())).await;
    assert!(matches!(err, BackendError::Auth { .. }), "{err:?}");
    // The wrong CA.
    let err = connect_err(&with(
        "s3cret",
        ca(&pki.other_ca).with_identity(&pki.client.cert, &pki.client.key),
    ))
    .await;
    tls_failure(&err, port);
    assert!(
        registry_core::error_chain(&err).contains("UnknownIssuer"),
        "{err}"
    );
    // No client certificate, an expired one, one from another CA.
    for tls in [
        ca(&pki.ca),
        ca(&pki.ca).with_identity(&pki.expired_client.cert, &pki.expired_client.key),
        ca(&pki.ca).with_identity(&pki.other_client.cert, &pki.other_client.key),
    ] {
        let err = connect_err(&with("s3cret", tls.clone())).await;
        let chain = registry_core::error_chain(&err);
        assert!(
            matches!(err, BackendError::Tls { .. } | BackendError::Connect { .. }),
            "{tls:?}: {chain}"
        );
        assert!(chain.contains(&port.to_string()), "{chain}");
    }
    // A plain client against the TLS port.
    let plain = url.replace("rediss://", "redis://");
    let err = connect_err(&options(&plain, None)).await;
    assert!(
        registry_core::error_chain(&err).contains(&port.to_string()),
        "{}",
        registry_core::error_chain(&err)
    );
    // A TLS client against the plain port: a plain Redis port waits for a line the TLS hello
    // never ends, so this one is bounded by the timeout (1 s here).
    let to_plain = format!("rediss://127.0.0.1:{}", redis.port());
    let err = connect_err(&ConnectOptions {
        timeout: Duration::from_secs(1),
        ..options(&to_plain, Some(mtls.clone()))
    })
    .await;
    let chain = registry_core::error_chain(&err);
    assert!(matches!(err, BackendError::Connect { .. }), "{chain}");
    assert!(chain.contains("may not speak TLS"), "{chain}");
    assert!(chain.contains(&redis.port().to_string()), "{chain}");
    // TLS files with a plain redis:// address: a configuration error.
    let err = connect_err(&options(&plain, Some(mtls.clone()))).await;
    assert!(matches!(err, BackendError::Config { .. }), "{err:?}");
    registry.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_fails_fast() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start_tls(&pki, &pki.expired_server, false, &[]).unwrap();
    let url = redis.tls_url().unwrap();
    let err = connect_err(&options(&url, Some(ca(&pki.ca)))).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    tls_failure(&err, port);
    assert!(
        registry_core::error_chain(&err).contains("expired"),
        "{}",
        registry_core::error_chain(&err)
    );
}

/// The README's `ACL SETUSER` line is enough to register, discover and reap; a user without
/// it is refused with a permission error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_user_is_enough_and_a_lesser_one_is_denied() {
    init_tracing();
    let redis = RedisServer::start().unwrap();
    let registry_options = default_options();
    let root = registry_options.keys.root().to_owned();
    let line = format!(
        "ACL SETUSER registry on >regpw {}",
        registry_redis::acl_rules(&root)
    );
    assert_eq!(redis.command(&line).as_deref(), Some("+OK\r\n"), "{line}");
    let lesser = "ACL SETUSER lesser on >lesspw -@all +ping +hello +auth +info";
    assert_eq!(redis.command(lesser).as_deref(), Some("+OK\r\n"));
    assert_eq!(
        redis.command("ACL SETUSER default off").as_deref(),
        Some("+OK\r\n")
    );

    let target = support::target(&redis.url());
    let provider = target
        .registry_as("registry", "regpw", registry_options.clone())
        .await;
    provider.register(svc(1)).await.unwrap();
    let consumer = target
        .registry_as("registry", "regpw", registry_options.clone())
        .await;
    assert_eq!(addresses(&consumer, "svc:1.0").await, svc_addresses(&[1]));
    // Expiry is reaped by the consumer under the same ACL.
    provider.register(svc(2)).await.unwrap();
    consumer.shutdown().await.unwrap();

    let lesser = target
        .registry_as("lesser", "lesspw", registry_options.clone())
        .await;
    let start = Instant::now();
    let err = lesser.register(svc(3)).await.unwrap_err();
    assert!(start.elapsed() < FAST, "{err}");
    match &err {
        RegistryError::Store { source, .. } => {
            assert!(matches!(source, BackendError::Denied { .. }), "{source:?}")
        }
        other => panic!("{other:?}"),
    }
    let err = connect_err(&ConnectOptions {
        username: Some("registry".into()),
        password: Some("wrong".into()),
        ..target.connect_options(&registry_options)
    })
    .await;
    assert!(matches!(err, BackendError::Auth { .. }), "{err:?}");
    lesser.unregister(&svc(3)).await.ok();
    provider.shutdown().await.unwrap();
}

/// `redis+sentinel://` with TLS: the Sentinels on their TLS ports, the primary they name on
/// its TLS port (`tls-replication yes` everywhere), client certificates required. The
/// registry works, follows a failover to the promoted replica over TLS, and a wrong CA or a
/// missing client certificate fails at once with a TLS error naming the Sentinel address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_through_sentinels_and_to_the_primary_they_name() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let mut setup = RedisSentinel::start_tls(&pki, true).unwrap_or_else(|e| panic!("{e}"));
    let address = setup.address();
    let mtls = ca(&pki.ca).with_identity(&pki.client.cert, &pki.client.key);
    let registry_options = default_options();
    let registry = Registry::new(
        Arc::new(
            RedisBackend::connect(&ConnectOptions {
                root: registry_options.keys.root().to_owned(),
                ..options(&address, Some(mtls.clone()))
            })
            .await
            .unwrap(),
        ),
        registry_options,
    )
    .unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));

    // A failover: the Sentinels name the replica's TLS port; the registry follows.
    let killed = setup.kill_primary().unwrap_or_else(|e| panic!("{e}"));
    let promoted = setup
        .wait_for_primary(Some(killed), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let tls_port = setup.node(promoted).tls_port().unwrap();
    // The test's Sentinel named the new primary; the one our client asks may not yet (on a
    // loaded machine it answers "master not found" for a moment). A registration that fails
    // meanwhile returns its error and is written by the registrar in the background, as
    // documented: what must hold is that the node reaches the new primary over TLS.
    match tokio::time::timeout(Duration::from_secs(20), registry.register(svc(2)))
        .await
        .expect("register after the failover returns")
    {
        Ok(_) => {}
        Err(RegistryError::Store { source, .. }) => {
            eprintln!("register during the failover: {source} (retried in the background)");
        }
        Err(e) => panic!("{e}"),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses(&registry, "svc:1.0").await != svc_addresses(&[1, 2]) {
        assert!(Instant::now() < deadline, "both nodes after the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = setup.node(promoted).command("DBSIZE").unwrap_or_default();
    eprintln!("failover to node {promoted} (TLS port {tls_port}): DBSIZE {keys}");
    registry.shutdown().await.unwrap();

    let first_sentinel = address
        .trim_start_matches("redis+sentinel://")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let port: u16 = first_sentinel.rsplit_once(':').unwrap().1.parse().unwrap();
    // The wrong CA: no Sentinel is trusted.
    let wrong_ca = ca(&pki.other_ca).with_identity(&pki.client.cert, &pki.client.key);
    let err = connect_err(&options(&address, Some(wrong_ca))).await;
    let chain = registry_core::error_chain(&err);
    eprintln!("{chain}");
    tls_failure(&err, port);
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // No client certificate: the Sentinels refuse it.
    let err = connect_err(&options(&address, Some(ca(&pki.ca)))).await;
    eprintln!("{}", registry_core::error_chain(&err));
    assert!(
        matches!(err, BackendError::Tls { .. } | BackendError::Connect { .. }),
        "{}",
        registry_core::error_chain(&err)
    );
}
