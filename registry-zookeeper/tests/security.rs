//! Access control on a real ZooKeeper: with credentials, the nodes a provider creates carry a
//! digest ACL (all permissions for its identity, read for everyone), so another identity (or
//! an anonymous client) discovers them but cannot delete or overwrite them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use registry_conformance::{addresses, default_options, init_tracing, svc, svc_addresses};
use registry_core::{BackendError, ConnectOptions, Registry, RegistryError, TlsFiles};
use registry_test_support::{TestPki, ZkServer};
use registry_zookeeper::ZkBackend;
use zookeeper_client as zk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identity_reads_but_cannot_delete_or_overwrite_a_providers_nodes() {
    init_tracing();
    let server = ZkServer::start().unwrap();
    let registry_options = default_options();
    let root = registry_options.keys.root().to_owned();
    let target = support::target(&server.connect_string());
    let alice = target
        .registry_as("alice", "alicepw", registry_options.clone())
        .await;
    alice.register(svc(1)).await.unwrap();

    // An anonymous consumer discovers the node.
    let anonymous = target.registry(registry_options.clone()).await;
    assert_eq!(addresses(&anonymous, "svc:1.0").await, svc_addresses(&[1]));

    // Another identity cannot delete or overwrite it, through the registry or a raw client...
    let bob = target
        .registry_as("bob", "bobpw", registry_options.clone())
        .await;
    assert_eq!(addresses(&bob, "svc:1.0").await, svc_addresses(&[1]));
    match bob.force_deregister("svc:1.0", "127.0.0.1:1").await {
        Err(RegistryError::Store { source, .. }) => {
            assert!(matches!(source, BackendError::Denied { .. }), "{source:?}")
        }
        other => panic!("bob deleted alice's node: {other:?}"),
    }
    let node = format!("{root}svc:1.0/127.0.0.1:1");
    let raw = zk::Client::connector()
        .with_auth("digest", b"bob:bobpw")
        .connect(&server.connect_string())
        .await
        .unwrap();
    assert_eq!(raw.delete(&node, None).await, Err(zk::Error::NoAuth));
    assert_eq!(
        raw.set_data(&node, b"junk", None).await.map(|_| ()),
        Err(zk::Error::NoAuth)
    );
    let (acl, _) = raw.get_acl(&node).await.unwrap();
    assert!(
        acl.iter()
            .any(|a| a.scheme() == "digest" && a.id().starts_with("alice:")),
        "{acl:?}"
    );
    // ...but may register its own node of the same service. ZooKeeper asks for the delete
    // permission on the directory, which only alice's identity has: bob's node leaves with
    // his session (documented: give every provider of one service the same identity).
    bob.register(svc(2)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = addresses(&anonymous, "svc:1.0").await;
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, svc_addresses(&[1, 2]));
    assert!(bob.unregister(&svc(2)).await.is_err());
    bob.shutdown().await.unwrap();
    drop(bob);
    // At the latest when bob's session times out (the TTL).
    for _ in 0..300 {
        seen = addresses(&alice, "svc:1.0").await;
        if seen.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, svc_addresses(&[1]));

    // The owner still deregisters its own node.
    alice.unregister(&svc(1)).await.unwrap();
    drop(raw);
    for registry in [alice, anonymous] {
        registry.shutdown().await.unwrap();
    }
}

fn tls_options(address: String, tls: TlsFiles) -> ConnectOptions {
    ConnectOptions {
        address,
        timeout: Duration::from_secs(3),
        ttl: Duration::from_secs(2),
        tls: Some(tls),
        ..ConnectOptions::default()
    }
}

/// Connects, expecting a TLS error naming ZooKeeper and the secure address, within the
/// timeout; returns the whole error chain.
async fn tls_refused(options: &ConnectOptions, address: &str) -> String {
    let started = std::time::Instant::now();
    let err = ZkBackend::connect(options)
        .await
        .expect_err("connected despite a TLS problem");
    let chain = registry_core::error_chain(&err);
    eprintln!("{chain} (after {:?})", started.elapsed());
    assert!(
        matches!(
            err,
            BackendError::Tls {
                backend: "zookeeper",
                ..
            }
        ),
        "{chain}"
    );
    assert!(
        chain.contains(&format!(
            "TLS with zookeeper at `tcp+tls://{address}` failed"
        )),
        "{chain}"
    );
    assert!(
        started.elapsed() < options.timeout,
        "{:?}",
        started.elapsed()
    );
    chain
}

/// TLS to a secure client port with a client certificate (`ssl.clientAuth=need`): the
/// registry works; a wrong CA, no client certificate or a plain port fail at once with a TLS
/// error naming the store, the address and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_secure_client_port_with_a_client_certificate() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let server = ZkServer::start_tls(&pki, &pki.server, true).unwrap();
    let secure = server.secure_connect_string().unwrap();
    let mtls = TlsFiles::default()
        .with_ca_file(&pki.ca)
        .with_identity(&pki.client.cert, &pki.client.key);

    let registry_options = default_options();
    let registry = Registry::new(
        Arc::new(
            ZkBackend::connect(&ConnectOptions {
                root: registry_options.keys.root().to_owned(),
                ..tls_options(secure.clone(), mtls.clone())
            })
            .await
            .unwrap(),
        ),
        registry_options,
    )
    .unwrap();
    registry.register(svc(1)).await.unwrap();
    assert_eq!(addresses(&registry, "svc:1.0").await, svc_addresses(&[1]));
    registry.shutdown().await.unwrap();

    // The CA that signed nothing here: the server's certificate is not trusted.
    let wrong_ca = TlsFiles::default()
        .with_ca_file(&pki.other_ca)
        .with_identity(&pki.client.cert, &pki.client.key);
    let chain = tls_refused(&tls_options(secure.clone(), wrong_ca), &secure).await;
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // No client certificate: the server refuses the connection after the handshake.
    let no_identity = TlsFiles::default().with_ca_file(&pki.ca);
    let chain = tls_refused(&tls_options(secure.clone(), no_identity), &secure).await;
    assert!(chain.contains("client's certificate"), "{chain}");

    // A client certificate from another CA.
    let foreign = TlsFiles::default()
        .with_ca_file(&pki.ca)
        .with_identity(&pki.other_client.cert, &pki.other_client.key);
    let chain = tls_refused(&tls_options(secure.clone(), foreign), &secure).await;
    assert!(chain.contains("client's certificate"), "{chain}");

    // TLS to the plain client port.
    let plain = server.connect_string();
    let chain = tls_refused(&tls_options(plain.clone(), mtls.clone()), &plain).await;
    assert!(chain.contains("TLS"), "{chain}");
}

/// Settings the ZooKeeper client cannot honour are configuration errors, before any
/// connection: a server name (the client checks the address's host), no CA file (it has no
/// system trust store), a plain `tcp://` server among TLS ones.
#[tokio::test]
async fn tls_settings_zookeeper_cannot_honour_are_configuration_errors() {
    let pki = TestPki::generate().unwrap();
    let ca = TlsFiles::default().with_ca_file(&pki.ca);
    for (address, tls, expected) in [
        (
            "127.0.0.1:1",
            ca.clone().with_server_name("zk.internal"),
            "serverName is not supported",
        ),
        (
            "127.0.0.1:1",
            TlsFiles::default().with_identity(&pki.client.cert, &pki.client.key),
            "needs rpc.registryConfig.tls.caFile",
        ),
        ("127.0.0.1:1,tcp://127.0.0.1:2", ca.clone(), "plain tcp://"),
    ] {
        let err = ZkBackend::connect(&tls_options(address.into(), tls))
            .await
            .expect_err("accepted");
        let chain = registry_core::error_chain(&err);
        assert!(matches!(err, BackendError::Config { .. }), "{chain}");
        assert!(chain.contains(expected), "{chain}");
    }
}

/// A server certificate that expired: refused at once, the cause named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_server_with_an_expired_certificate_fails_at_once() {
    init_tracing();
    let pki = TestPki::generate().unwrap();
    let server = ZkServer::start_tls(&pki, &pki.expired_server, false).unwrap();
    let secure = server.secure_connect_string().unwrap();
    let chain = tls_refused(
        &tls_options(secure.clone(), TlsFiles::default().with_ca_file(&pki.ca)),
        &secure,
    )
    .await;
    assert!(chain.contains("expired"), "{chain}");
}
