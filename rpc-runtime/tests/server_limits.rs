//! Connection limit, idle and frame timeouts: idle or slow connections cannot lock a provider
//! out, and consumers move on at once from a provider that cannot take them. Real TCP, real
//! providers on the memory registry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions};
use rpc_runtime::config::RpcConfig;
use rpc_runtime::consumer::{CallError, CallRecord, Consumer, ConsumerOptions};
use rpc_runtime::protocol::{Frame, FrameCodec, Status};
use rpc_runtime::provider::{Provider, RunningProvider};
use rpc_runtime::rpc_service;
use rpc_runtime::serializer::Serializer;
use rpc_runtime::server::ServerOptions;
use rpc_runtime::service::ServiceError;
use tokio_util::codec::{Decoder, Encoder};

rpc_service! {
    /// A test service.
    pub trait Echo {
        /// Returns its argument.
        async fn echo(&self, text: String) -> Result<String, ServiceError>;
        /// The port of the provider that served the call.
        async fn whoami(&self) -> Result<u16, ServiceError>;
        /// Sleeps, then answers.
        async fn slow(&self, ms: u64) -> Result<u64, ServiceError>;
    }
    server = EchoServer;
    client = EchoClient;
}

struct EchoImpl {
    port: Arc<Mutex<u16>>,
}

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> Result<String, ServiceError> {
        Ok(text)
    }
    async fn whoami(&self) -> Result<u16, ServiceError> {
        Ok(*self.port.lock().unwrap())
    }
    async fn slow(&self, ms: u64) -> Result<u64, ServiceError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

fn memory_registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_secs(1));
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

async fn provider(store: &Arc<MemoryStore>, options: ServerOptions) -> RunningProvider {
    let port = Arc::new(Mutex::new(0));
    let service = EchoImpl {
        port: Arc::clone(&port),
    };
    let running = Provider::new(RpcConfig::default().with_server_port(0))
        .with_registry(memory_registry(store))
        .with_service(EchoServer::new(service))
        .with_server_options(options)
        .start()
        .await
        .unwrap();
    *port.lock().unwrap() = running.local_addr().port();
    running
}

fn recorded(options: ConsumerOptions) -> (ConsumerOptions, Arc<Mutex<Vec<CallRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&records);
    (
        options.with_observer(move |r| sink.lock().unwrap().push(r.clone())),
        records,
    )
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    FrameCodec::default().encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

fn whoami_request(id: u64) -> Vec<u8> {
    encode(Frame::request(
        id,
        Serializer::Json,
        "Echo:1.0",
        "whoami",
        b"null",
    ))
}

/// The next frame on a blocking socket; `None` when it closes first.
fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(frame) = FrameCodec::default().decode(&mut buf).unwrap() {
            return Some(frame);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until the server closes the connection; what it sent before, and when it closed.
fn until_closed(s: &mut TcpStream, started: Instant) -> (Vec<Frame>, Duration) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = read_frame(s) {
        frames.push(frame);
    }
    (frames, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_full_of_idle_connections_refuses_at_once_and_consumers_fail_over() {
    let store = MemoryStore::new();
    let limit = 20;
    let locked = provider(&store, ServerOptions::default().with_max_connections(limit)).await;
    let other = provider(&store, ServerOptions::default()).await;
    let locked_port = locked.local_addr().port();

    // Fill the locked provider with idle connections; one more is refused with a go-away.
    let idle = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..limit)
            .map(|_| TcpStream::connect(("127.0.0.1", locked_port)).unwrap())
            .collect();
        let mut extra = TcpStream::connect(("127.0.0.1", locked_port)).unwrap();
        let (frames, _) = until_closed(&mut extra, Instant::now());
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].is_go_away());
        assert_eq!(&frames[0].body[..], b"too many connections");
        idle
    })
    .await
    .unwrap();

    // The default tolerant strategy, failFast: the refused request never ran, so it moves on.
    let (options, records) = recorded(ConsumerOptions::default());
    let consumer = Consumer::new(memory_registry(&store), options);
    let timeout = consumer.options().timeout;
    let client = EchoClient::new(consumer.clone());
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(client.whoami().await.unwrap(), other.local_addr().port());
        assert!(
            started.elapsed() < timeout / 3,
            "a call took {:?}",
            started.elapsed()
        );
    }
    let records = records.lock().unwrap().clone();
    assert!(
        records.iter().any(|r| r.attempts == 2),
        "a call tried the locked provider first: {records:?}"
    );
    let cached = consumer.registry().cached("Echo:1.0").unwrap();
    assert_eq!(
        cached
            .nodes()
            .iter()
            .map(|n| n.service_port)
            .collect::<Vec<_>>(),
        [other.local_addr().port()],
        "the refusing provider left the consumer's cache"
    );

    // Once the idle connections are gone, the locked provider serves again.
    drop(idle);
    let served = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = TcpStream::connect(("127.0.0.1", locked_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&whoami_request(1)).unwrap();
            match read_frame(&mut s) {
                Some(frame) if !frame.is_go_away() => return frame,
                _ => {
                    assert!(Instant::now() < deadline, "still refusing");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(served.status, Status::Ok);
    assert_eq!(served.body, locked_port.to_string().as_bytes());
    locked.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// A consumer refused by the only node (at its connection limit) evicts it at once, and the
/// call ends at once. (The refused connection itself: `transport`'s unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_its_calls_at_once_as_not_run() {
    let store = MemoryStore::new();
    let full = provider(&store, ServerOptions::default().with_max_connections(1)).await;
    let address = full.local_addr().to_string();
    // The holder is accepted first, so the next connection is refused.
    let _hold = TcpStream::connect(&address).unwrap();
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (options, records) = recorded(ConsumerOptions::default().with_timeout(timeout));
    let consumer = Consumer::new(memory_registry(&store), options);
    match EchoClient::new(consumer).whoami().await {
        Err(CallError::NoProvider { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    // It was the node's refusal: the call tried it once.
    let records = records.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].node.as_deref(), Some(address.as_str()));
    assert_eq!(records[0].attempts, 1, "{records:?}");
    full.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_not_while_a_call_runs() {
    let store = MemoryStore::new();
    let idle_timeout = Duration::from_millis(300);
    let provider = provider(
        &store,
        ServerOptions::default().with_idle_timeout(idle_timeout),
    )
    .await;
    let port = provider.local_addr().port();

    // A connection that never sends anything: a go-away, then closed.
    let (frames, after) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        until_closed(&mut s, started)
    })
    .await
    .unwrap();
    assert!(after >= idle_timeout, "closed after {after:?}");
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(frames.len(), 1);
    assert!(frames[0].is_go_away());
    assert_eq!(&frames[0].body[..], b"idle");

    // A call running for three idle timeouts is not cut, and a consumer whose connection
    // was closed as idle meanwhile just dials again.
    let (options, records) = recorded(ConsumerOptions::default());
    let client = EchoClient::new(Consumer::new(memory_registry(&store), options));
    assert_eq!(client.slow(900).await.unwrap(), 900);
    tokio::time::sleep(idle_timeout * 2).await;
    assert_eq!(client.echo("again".into()).await.unwrap(), "again");
    let records = records.lock().unwrap().clone();
    assert!(
        records.iter().all(|r| r.ok && r.attempts == 1),
        "{records:?}"
    );
    provider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_frames_are_closed_after_the_frame_timeout() {
    let store = MemoryStore::new();
    let frame_timeout = Duration::from_millis(300);
    let idle_timeout = Duration::from_secs(30);
    let provider = provider(
        &store,
        ServerOptions::default()
            .with_frame_timeout(frame_timeout)
            .with_idle_timeout(idle_timeout),
    )
    .await;
    let port = provider.local_addr().port();
    let client = EchoClient::new(Consumer::new(
        memory_registry(&store),
        ConsumerOptions::default(),
    ));
    client.echo("warm".into()).await.unwrap();

    let request = whoami_request(7);
    let mut announced = request[..18].to_vec();
    announced[14..18].copy_from_slice(&1000u32.to_be_bytes());
    announced.extend_from_slice(&[b'x'; 500]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("half a header", request[..9].to_vec(), false),
        ("a header and half the body", announced, false),
        ("one byte every 100 ms", request.clone(), true),
    ];
    let slow = cases.into_iter().map(|(name, bytes, dribble)| {
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if dribble {
                // Keeps sending, so the connection is never idle; the frame never completes.
                let writer = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut writer = writer;
                    for byte in bytes.iter().cycle() {
                        if writer.write_all(&[*byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            } else {
                s.write_all(&bytes).unwrap();
            }
            let (frames, after) = until_closed(&mut s, started);
            (name, frames, after)
        })
    });
    let results: Vec<_> = slow.collect();
    // Meanwhile, a well-behaved consumer is served.
    for _ in 0..20 {
        assert_eq!(client.echo("fine".into()).await.unwrap(), "fine");
    }
    for result in results {
        let (name, frames, after) = tokio::task::spawn_blocking(move || result.join().unwrap())
            .await
            .unwrap();
        assert!(frames.is_empty(), "{name}: {frames:?}");
        assert!(after >= frame_timeout, "{name}: closed after {after:?}");
        assert!(after < idle_timeout / 3, "{name}: closed after {after:?}");
    }
    provider.shutdown().await.unwrap();
}

/// A node that answers the first call on a connection, then answers the next request with a
/// go-away instead (as a server closing the connection as idle just as the request arrives).
fn node_closing_after_one_answer() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut answered = false;
                while let Some(request) = read_frame(&mut s) {
                    if answered {
                        let _ = s.write_all(&encode(Frame::go_away("idle")));
                        return;
                    }
                    let answer = Frame::response(
                        request.request_id,
                        request.serializer,
                        Status::Ok,
                        bytes::Bytes::from(port.to_string()),
                    );
                    s.write_all(&encode(answer)).unwrap();
                    answered = true;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_request_crossing_an_idle_close_is_sent_again_on_a_new_connection() {
    let store = MemoryStore::new();
    let port = node_closing_after_one_answer();
    let registry = memory_registry(&store);
    registry
        .register(registry_core::ServiceMetaInfo::new(
            "Echo",
            "127.0.0.1",
            port,
        ))
        .await
        .unwrap();
    let (options, records) = recorded(ConsumerOptions::default());
    let consumer = Consumer::new(memory_registry(&store), options);
    let client = EchoClient::new(consumer.clone());
    for _ in 0..3 {
        assert_eq!(client.whoami().await.unwrap(), port);
    }
    let records = records.lock().unwrap().clone();
    assert!(
        records.iter().all(|r| r.ok && r.attempts == 1),
        "{records:?}"
    );
    assert_eq!(
        consumer.registry().cached("Echo:1.0").unwrap().len(),
        1,
        "the node was not evicted"
    );
}

/// Log lines, collected.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn reaching_the_connection_limit_is_logged_once() {
    use rpc_runtime::server::Server;
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // This thread only: the server runs on a current-thread runtime here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut server = Server::new(ServerOptions::default().with_max_connections(2));
        let service = EchoImpl {
            port: Arc::new(Mutex::new(0)),
        };
        server.add("1.0", Arc::new(EchoServer::new(service)));
        let server = server.bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().port();
        tokio::task::spawn_blocking(move || {
            let _held: Vec<TcpStream> = (0..2)
                .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
                .collect();
            for _ in 0..10 {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let (frames, _) = until_closed(&mut s, Instant::now());
                assert!(frames[0].is_go_away());
            }
        })
        .await
        .unwrap();
        server.shutdown().await;
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("connection limit reached"), 1, "{text}");
    assert_eq!(count(" WARN "), 1, "{text}");
    assert_eq!(
        count("connection refused: at the connection limit"),
        9,
        "{text}"
    );
}

/// A call for a service the provider does not serve is answered "unknown service" without
/// the list of the services it does serve (nothing to learn for a prober).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_answered_without_the_list_of_services() {
    let store = MemoryStore::new();
    let running = provider(&store, ServerOptions::default()).await;
    let address = running.local_addr();
    let frame = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(&encode(Frame::request(
            7,
            Serializer::Json,
            "Secret:1.0",
            "x",
            b"null",
        )))
        .unwrap();
        read_frame(&mut s)
    })
    .await
    .unwrap()
    .expect("an answer");
    assert_eq!(frame.status, Status::UnknownService);
    let text = String::from_utf8_lossy(&frame.body).to_string();
    assert!(text.contains("Secret:1.0"), "{text}");
    assert!(!text.contains("Echo"), "the served services leak: {text}");
    running.shutdown().await.unwrap();
}

/// Requests that arrive together run together (one task per group, or one each): a slow one
/// read with quick ones does not hold them up. One write of eight requests, a 300 ms one first:
/// it is answered last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_read_together_do_not_wait_for_each_other() {
    for group in [ServerOptions::default().max_group, 1] {
        let store = MemoryStore::new();
        let running = provider(&store, ServerOptions::default().with_max_group(group)).await;
        let addr = running.local_addr();
        let answers = tokio::task::spawn_blocking(move || {
            let request = |id, method, args: &[u8]| {
                encode(Frame::request(
                    id,
                    Serializer::Json,
                    "Echo:1.0",
                    method,
                    args,
                ))
            };
            let mut bytes = request(1, "slow", b"[300]");
            for id in 2..=8 {
                bytes.extend(request(id, "echo", b"[\"hi\"]"));
            }
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&bytes).unwrap();
            let mut buf = bytes::BytesMut::new();
            let mut chunk = [0u8; 1024];
            let mut answers = Vec::new();
            while answers.len() < 8 {
                while let Some(frame) = FrameCodec::default().decode(&mut buf).unwrap() {
                    answers.push((frame.request_id, frame.status));
                }
                if answers.len() < 8 {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "closed after {answers:?}");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            answers
        })
        .await
        .unwrap();
        assert!(
            answers.iter().all(|(_, status)| *status == Status::Ok),
            "{answers:?}"
        );
        assert_eq!(
            answers.last().map(|(id, _)| *id),
            Some(1),
            "group {group}: {answers:?}"
        );
        running.shutdown().await.unwrap();
    }
}
