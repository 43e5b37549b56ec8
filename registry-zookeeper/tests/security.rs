//! Access control on a real ZooKeeper: with credentials, the nodes a provider creates carry a
//! digest ACL (all permissions for its identity, read for everyone), so another identity (or
//! an anonymous client) discovers them but cannot delete or overwrite them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use registry_conformance::{addresses, default_options, init_tracing, svc, svc_addresses};
use registry_core::{BackendError, ConnectOptions, Registry, RegistryError};
use registry_test_support::ZkServer;
use registry_zookeeper::ZkBackend;
use zookeeper_client as zk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identity_reads_but_cannot_delete_or_overwrite_a_providers_nodes() {
    init_tracing();
    let server = ZkServer::start().unwrap();
    let registry_options = default_options();
    let root = registry_options.keys.root().to_owned();
    let as_user = |user: Option<(&str, &str)>| ConnectOptions {
        address: server.connect_string(),
        username: user.map(|u| u.0.to_owned()),
        password: user.map(|u| u.1.to_owned()),
        timeout: Duration::from_secs(5),
        ttl: Duration::from_secs(2),
        root: root.clone(),
        ..ConnectOptions::default()
    };
    let alice = Registry::new(
        Arc::new(
            ZkBackend::connect(&as_user(Some(("alice", "alicepw"))))
                .await
                .unwrap(),
        ),
        registry_options.clone(),
    )
    .unwrap();
    alice.register(svc(1)).await.unwrap();

    // An anonymous consumer discovers the node.
    let anonymous = Registry::new(
        Arc::new(ZkBackend::connect(&as_user(None)).await.unwrap()),
        registry_options.clone(),
    )
    .unwrap();
    assert_eq!(addresses(&anonymous, "svc:1.0").await, svc_addresses(&[1]));

    // Another identity cannot delete or overwrite it, through the registry or a raw client...
    let bob = Registry::new(
        Arc::new(
            ZkBackend::connect(&as_user(Some(("bob", "bobpw"))))
                .await
                .unwrap(),
        ),
        registry_options.clone(),
    )
    .unwrap();
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
