//! TLS on the RPC transport: real TCP on loopback, the memory registry, certificates made at
//! test time ([`TestPki`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_core::{error_chain, MemoryBackend, MemoryStore, Registry, RegistryOptions};
use registry_test_support::TestPki;
use rpc_runtime::config::{RpcConfig, RpcTlsConfig};
use rpc_runtime::consumer::{CallError, Consumer, ConsumerOptions};
use rpc_runtime::provider::{Provider, RunningProvider};
use rpc_runtime::rpc_service;
use rpc_runtime::service::ServiceError;
use rpc_runtime::tls::{ClientTls, ServerTls};
use rpc_runtime::transport::TransportError;

rpc_service! {
    /// A test service.
    pub trait Echo {
        /// Returns its argument.
        async fn echo(&self, text: String) -> Result<String, ServiceError>;
        /// The port of the provider that served the call.
        async fn whoami(&self) -> Result<u16, ServiceError>;
    }
    server = EchoServer;
    client = EchoClient;
}

struct EchoImpl {
    port: Arc<std::sync::Mutex<u16>>,
}

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> Result<String, ServiceError> {
        Ok(text)
    }
    async fn whoami(&self) -> Result<u16, ServiceError> {
        Ok(*self.port.lock().unwrap())
    }
}

fn registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_secs(1));
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

/// A provider of `Echo` with `tls` (all `None`: plain TCP).
async fn provider(store: &Arc<MemoryStore>, tls: RpcTlsConfig) -> RunningProvider {
    let mut config = RpcConfig::default().with_server_port(0);
    config.tls = tls;
    config.server.frame_timeout = Duration::from_millis(500);
    let port = Arc::new(std::sync::Mutex::new(0));
    let running = Provider::new(config)
        .with_registry(registry(store))
        .with_service(EchoServer::new(EchoImpl {
            port: Arc::clone(&port),
        }))
        .start()
        .await
        .unwrap();
    *port.lock().unwrap() = running.local_addr().port();
    running
}

fn server_tls(pki: &TestPki) -> RpcTlsConfig {
    RpcTlsConfig {
        cert_file: Some(pki.server.cert.clone()),
        key_file: Some(pki.server.key.clone()),
        ..RpcTlsConfig::default()
    }
}

fn mutual_server_tls(pki: &TestPki) -> RpcTlsConfig {
    RpcTlsConfig {
        client_ca_file: Some(pki.ca.clone()),
        ..server_tls(pki)
    }
}

fn client_tls(ca: &std::path::Path) -> RpcTlsConfig {
    RpcTlsConfig {
        ca_file: Some(ca.to_owned()),
        ..RpcTlsConfig::default()
    }
}

fn consumer(store: &Arc<MemoryStore>, tls: &RpcTlsConfig) -> EchoClient {
    let mut options = ConsumerOptions::default().with_timeout(Duration::from_secs(3));
    if let Some(tls) = ClientTls::from_config(tls).unwrap() {
        options = options.with_tls(tls);
    }
    EchoClient::new(Consumer::new(registry(store), options))
}

/// Calls `echo` once; the error and how long it took.
async fn failing_call(client: &EchoClient) -> (CallError, Duration) {
    let started = Instant::now();
    let error = client.echo("hi".into()).await.unwrap_err();
    (error, started.elapsed())
}

fn tls_error(error: &CallError) -> &TransportError {
    match error {
        CallError::Transport(e @ TransportError::Tls { .. }) => e,
        other => panic!("expected a TLS error, got {}", error_chain(other)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_provider_serves_a_tls_consumer_and_advertises_tls() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let provider = provider(&store, server_tls(&pki)).await;
    assert_eq!(
        provider.nodes()[0].metadata.get("tls").map(String::as_str),
        Some("true")
    );
    let client = consumer(&store, &client_tls(&pki.ca));
    assert_eq!(client.echo("over tls".into()).await.unwrap(), "over tls");
    assert_eq!(client.whoami().await.unwrap(), provider.local_addr().port());
    // Many calls multiplexed on the one TLS connection.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move { client.echo(format!("{i}")).await.unwrap() }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers.len(), 200);
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_right_ca() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let provider = provider(&store, mutual_server_tls(&pki)).await;
    let address = provider.local_addr().to_string();

    let with_cert = RpcTlsConfig {
        client_cert_file: Some(pki.client.cert.clone()),
        client_key_file: Some(pki.client.key.clone()),
        ..client_tls(&pki.ca)
    };
    assert_eq!(
        consumer(&store, &with_cert).echo("m".into()).await.unwrap(),
        "m"
    );

    // No client certificate: a clear error naming the node, fast.
    let (error, took) = failing_call(&consumer(&store, &client_tls(&pki.ca))).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    tls_error(&error);
    assert!(chain.contains(&address), "{chain}");
    assert!(chain.contains("rpc.tls.clientCertFile"), "{chain}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A certificate signed by another CA.
    let foreign = RpcTlsConfig {
        client_cert_file: Some(pki.other_client.cert.clone()),
        client_key_file: Some(pki.other_client.key.clone()),
        ..client_tls(&pki.ca)
    };
    let (error, took) = failing_call(&consumer(&store, &foreign)).await;
    tls_error(&error);
    assert!(took < Duration::from_secs(2), "{took:?}");
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_an_expired_certificate_fails_fast_naming_the_node() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let provider = provider(&store, server_tls(&pki)).await;
    let address = provider.local_addr().to_string();
    let (error, took) = failing_call(&consumer(&store, &client_tls(&pki.other_ca))).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    tls_error(&error);
    assert!(
        chain.contains(&address) && chain.contains("UnknownIssuer"),
        "{chain}"
    );
    assert!(chain.contains("rpc.tls.caFile"), "{chain}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The node stays in the cache (a settings problem, not a dead node).
    provider.shutdown().await.unwrap();

    let expired = RpcTlsConfig {
        cert_file: Some(pki.expired_server.cert.clone()),
        key_file: Some(pki.expired_server.key.clone()),
        ..RpcTlsConfig::default()
    };
    let store = MemoryStore::new();
    let provider = provider_with(&store, expired).await;
    let (error, took) = failing_call(&consumer(&store, &client_tls(&pki.ca))).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    tls_error(&error);
    assert!(chain.contains("expired"), "{chain}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    provider.shutdown().await.unwrap();
}

async fn provider_with(store: &Arc<MemoryStore>, tls: RpcTlsConfig) -> RunningProvider {
    provider(store, tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_a_ca_skips_tls_nodes_and_a_tls_consumer_calls_plain_nodes() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let tls_node = provider(&store, server_tls(&pki)).await;
    // A plain consumer meets only a TLS node: a clear error, without dialing.
    let (error, took) = failing_call(&consumer(&store, &RpcTlsConfig::default())).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    assert!(
        matches!(
            error,
            CallError::Transport(TransportError::TlsNotConfigured { .. })
        ),
        "{chain}"
    );
    assert!(
        chain.contains(&tls_node.local_addr().to_string()) && chain.contains("rpc.tls.caFile"),
        "{chain}"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    tls_node.shutdown().await.unwrap();

    // A consumer configured for TLS calls a plain node in plain TCP.
    let store = MemoryStore::new();
    let plain = provider(&store, RpcTlsConfig::default()).await;
    assert!(!plain.nodes()[0].metadata.contains_key("tls"));
    let client = consumer(&store, &client_tls(&pki.ca));
    assert_eq!(client.whoami().await.unwrap(), plain.local_addr().port());
    plain.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_service_serves_tls_and_plain_consumers() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let tls_node = provider(&store, server_tls(&pki)).await;
    let plain_node = provider(&store, RpcTlsConfig::default()).await;
    let both: BTreeSet<u16> = [tls_node.local_addr().port(), plain_node.local_addr().port()].into();

    let tls_client = consumer(&store, &client_tls(&pki.ca));
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(tls_client.whoami().await.unwrap());
    }
    assert_eq!(seen, both, "the TLS consumer reaches both nodes");

    // The plain consumer skips the TLS node and every call succeeds on the plain one.
    let plain_client = consumer(&store, &RpcTlsConfig::default());
    for _ in 0..10 {
        assert_eq!(
            plain_client.whoami().await.unwrap(),
            plain_node.local_addr().port()
        );
    }
    tls_node.shutdown().await.unwrap();
    plain_node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_against_a_plain_port_and_plain_against_a_tls_port_fail_fast() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    // A plain provider, and a wrong registration saying it serves TLS.
    let plain = provider(&store, RpcTlsConfig::default()).await;
    let liar = registry(&store);
    let mut node =
        registry_core::ServiceMetaInfo::new("Echo", "127.0.0.1", plain.local_addr().port());
    node.metadata.insert("tls".into(), "true".into());
    let wrong = registry_core::ServiceMetaInfo::new("Echo", "127.0.0.1", plain.local_addr().port());
    plain.registry().unregister(&wrong).await.unwrap();
    liar.register(node).await.unwrap();
    let (error, took) = failing_call(&consumer(&store, &client_tls(&pki.ca))).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    tls_error(&error);
    assert!(
        chain.contains(&plain.local_addr().to_string())
            && chain.contains("may not speak TLS on this port"),
        "{chain}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    liar.shutdown().await.unwrap();
    plain.shutdown().await.unwrap();

    // A TLS provider, registered without the flag: a plain consumer dials it in plain TCP.
    let store = MemoryStore::new();
    let tls_node = provider(&store, server_tls(&pki)).await;
    let flagged = tls_node.nodes()[0].clone();
    tls_node.registry().unregister(&flagged).await.unwrap();
    let liar = registry(&store);
    liar.register(registry_core::ServiceMetaInfo::new(
        "Echo",
        "127.0.0.1",
        tls_node.local_addr().port(),
    ))
    .await
    .unwrap();
    let (error, took) = failing_call(&consumer(&store, &RpcTlsConfig::default())).await;
    let chain = error_chain(&error);
    eprintln!("{chain}");
    assert!(
        matches!(
            error,
            CallError::Transport(TransportError::Tls { .. } | TransportError::Broken { .. })
        ),
        "{chain}"
    );
    assert!(
        chain.contains(&tls_node.local_addr().to_string()),
        "{chain}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    liar.shutdown().await.unwrap();
    tls_node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_handshakes_loses_its_slot_after_the_frame_timeout() {
    let pki = TestPki::generate().unwrap();
    let store = MemoryStore::new();
    let mut config = RpcConfig::default().with_server_port(0);
    config.tls = server_tls(&pki);
    config.server.frame_timeout = Duration::from_millis(300);
    config.server.max_connections = Some(1);
    let provider = Provider::new(config)
        .with_registry(registry(&store))
        .with_service(EchoServer::new(EchoImpl {
            port: Arc::default(),
        }))
        .start()
        .await
        .unwrap();
    let address = provider.local_addr();
    // Takes the only slot and sends nothing.
    let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("the server closes a connection that never handshakes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // The slot is free again: a TLS consumer is served.
    let client = consumer(&store, &client_tls(&pki.ca));
    assert_eq!(client.echo("after".into()).await.unwrap(), "after");
    provider.shutdown().await.unwrap();
}

#[test]
fn tls_settings_never_print_key_bytes() {
    let pki = TestPki::generate().unwrap();
    let key = std::fs::read_to_string(&pki.server.key).unwrap();
    let secret_line = key.lines().nth(1).unwrap().to_owned();
    let config = RpcTlsConfig {
        ca_file: Some(pki.ca.clone()),
        client_cert_file: Some(pki.client.cert.clone()),
        client_key_file: Some(pki.client.key.clone()),
        ..mutual_server_tls(&pki)
    };
    let server = ServerTls::from_config(&config).unwrap().unwrap();
    let client = ClientTls::from_config(&config).unwrap().unwrap();
    let options = ConsumerOptions::default().with_tls(client.clone());
    for shown in [
        format!("{config:?}"),
        format!("{server:?}"),
        format!("{client:?}"),
        format!("{options:?}"),
    ] {
        assert!(!shown.contains(&secret_line), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
    assert!(server.requires_client_certificates());
}

#[test]
fn unusable_tls_files_are_configuration_errors_naming_the_key() {
    let pki = TestPki::generate().unwrap();
    // The key of another certificate.
    let mismatched = RpcTlsConfig {
        cert_file: Some(pki.server.cert.clone()),
        key_file: Some(pki.client.key.clone()),
        ..RpcTlsConfig::default()
    };
    let e = ServerTls::from_config(&mismatched).unwrap_err().to_string();
    assert!(e.contains("rpc.tls.keyFile"), "{e}");
    // A key where the CA should be.
    let e = ClientTls::from_config(&client_tls(&pki.server.key))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rpc.tls.caFile"), "{e}");
    assert!(!e.contains("PRIVATE"), "{e}");
}
