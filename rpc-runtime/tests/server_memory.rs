//! Provider memory under hostile clients, measured on a server in a child process.
//!
//! The child is this test binary run again with `SERVER_MEMORY_CHILD` set: the ignored test
//! `memory_server_process` then serves an echo service on a free loopback port, prints
//! `READY <port>`, and exits when its stdin closes (when the test ends, or dies). The parent
//! attacks it and reads the child's peak resident set (`VmHWM` in `/proc/<pid>/status`), so
//! the figure is the server's alone, whatever else the test run does meanwhile.
//!
//! The bound asserted is the one the `rpc_runtime::server` module docs state for the default
//! options: `max_buffered_bytes` + 64 MiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_runtime::protocol::{Frame, FrameCodec, Status, DEFAULT_MAX_FRAME};
use rpc_runtime::rpc_service;
use rpc_runtime::serializer::Serializer;
use rpc_runtime::server::{Server, ServerOptions, DEFAULT_MAX_BUFFERED_BYTES};
use rpc_runtime::service::ServiceError;
use tokio_util::codec::{Decoder, Encoder};

const MIB: u64 = 1024 * 1024;

rpc_service! {
    /// Echo.
    pub trait Echo {
        /// Returns its argument.
        async fn echo(&self, text: String) -> Result<String, ServiceError>;
    }
    server = EchoServer;
    client = EchoClient;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> Result<String, ServiceError> {
        Ok(text)
    }
}

/// Not a test: the body of the server child process (see the module docs).
#[test]
#[ignore = "run as a child process by the memory tests"]
fn memory_server_process() {
    if std::env::var_os("SERVER_MEMORY_CHILD").is_none() {
        return;
    }
    let mut options = ServerOptions::default();
    if let Ok(ms) = std::env::var("SERVER_MEMORY_FRAME_TIMEOUT_MS") {
        options = options.with_frame_timeout(Duration::from_millis(ms.parse().unwrap()));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut server = Server::new(options);
        server.add("1.0", Arc::new(EchoServer::new(EchoImpl)));
        let running = server.bind("127.0.0.1:0").await.unwrap();
        println!("READY {}", running.local_addr().port());
        std::io::stdout().flush().unwrap();
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        running.shutdown().await;
    });
}

struct ServerProcess {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl ServerProcess {
    /// A server with the default options, plus `env`.
    fn spawn(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "memory_server_process",
                "--ignored",
                "--nocapture",
            ])
            .env("SERVER_MEMORY_CHILD", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("the server printed READY").unwrap();
            if let Some(port) = line.strip_prefix("READY ") {
                break port.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        ServerProcess {
            child,
            _stdin: stdin,
            port,
        }
    }

    /// A `VmXXX:` figure of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let kib: u64 = line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// Waits until the resident set stops growing (no change above 2 MiB over 600 ms), up to
    /// `cap`: the server has taken in all it is going to.
    fn settle(&self, cap: Duration) {
        let deadline = Instant::now() + cap;
        let mut last = self.rss();
        let mut stable = 0;
        while stable < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.rss();
            if now.abs_diff(last) < 2 * MIB {
                stable += 1;
            } else {
                stable = 0;
            }
            last = now;
        }
    }

    /// One echo call on a fresh connection, answered within `within`.
    fn assert_serves(&self, within: Duration) {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(within)).unwrap();
        s.write_all(&echo_request(1, Serializer::Json, "still serving"))
            .unwrap();
        let frame = read_frame(&mut s).expect("an answer");
        assert_eq!(frame.status, Status::Ok);
        assert_eq!(&frame.body[..], b"\"still serving\"");
        assert!(started.elapsed() < within, "{:?}", started.elapsed());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_request(id: u64, serializer: Serializer, text: &str) -> Vec<u8> {
    let args = serializer.encode(&(text,)).unwrap();
    let mut buf = bytes::BytesMut::new();
    FrameCodec::default()
        .encode(
            Frame::request(id, serializer, "Echo:1.0", "echo", &args),
            &mut buf,
        )
        .unwrap();
    buf.to_vec()
}

/// A valid request header announcing a body of `len` bytes.
fn request_header(id: u64, len: usize) -> Vec<u8> {
    let mut header = vec![0x52, 0x50, 1, Serializer::Json.id(), 1, 0];
    header.extend_from_slice(&id.to_be_bytes());
    header.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    header
}

/// Writes `len` bytes of body, or less when the server stops reading for the write timeout.
fn write_body(s: &mut TcpStream, len: usize) {
    let chunk = vec![b'x'; 256 * 1024];
    let mut left = len;
    while left > 0 {
        match s.write(&chunk[..left.min(chunk.len())]) {
            Ok(n) => left -= n,
            Err(_) => break,
        }
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
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

/// The documented bound for the default options (see the `server` module docs).
fn bound() -> u64 {
    DEFAULT_MAX_BUFFERED_BYTES as u64 + 64 * MIB
}

#[test]
fn two_hundred_nearly_complete_4_mib_frames_stay_within_the_budget() {
    let server = ServerProcess::spawn(&[]);
    let baseline = server.rss();
    let body_len = DEFAULT_MAX_FRAME;
    let sent = body_len - 1024;
    let attackers: Vec<_> = (0..200u64)
        .map(|i| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                // A valid request header announcing a 4 MiB body, then all of it but 1 KiB.
                if s.write_all(&request_header(i, body_len)).is_ok() {
                    write_body(&mut s, sent);
                }
                s
            })
        })
        .collect();
    let streams: Vec<TcpStream> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    server.settle(Duration::from_secs(10));
    let peak = server.peak_rss();
    println!(
        "200 x 4 MiB partial frames: baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline / MIB,
        peak / MIB,
        bound() / MIB
    );
    assert!(
        peak < bound(),
        "peak RSS {} MiB above the bound {} MiB",
        peak / MIB,
        bound() / MIB
    );
    // The attackers hang up: the server gives their budget back and serves again.
    drop(streams);
    server.assert_serves(Duration::from_secs(5));
}

#[test]
fn a_client_pipelining_large_calls_and_never_reading_stays_within_the_budget() {
    let server = ServerProcess::spawn(&[]);
    let baseline = server.rss();
    let text = "x".repeat(2 * MIB as usize);
    let port = server.port;
    let attacker = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        // 300 echo calls of 2 MiB (600 MiB of answers), pipelined; the answers are never read.
        let mut sent = 0u64;
        for id in 1..=300 {
            if s.write_all(&echo_request(id, Serializer::Bincode, &text))
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        (s, sent)
    });
    let (stream, sent) = attacker.join().unwrap();
    server.settle(Duration::from_secs(10));
    let peak = server.peak_rss();
    println!(
        "one connection, {sent} pipelined 2 MiB echo calls never read: baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline / MIB,
        peak / MIB,
        bound() / MIB
    );
    assert!(
        peak < bound(),
        "peak RSS {} MiB above the bound {} MiB",
        peak / MIB,
        bound() / MIB
    );
    drop(stream);
    server.assert_serves(Duration::from_secs(5));
}

/// Attackers that keep coming back: the server drops their stalled frames at the frame
/// timeout and reads the next ones. What it holds stays within the budget; so does the
/// resident set when the allocator gives freed memory back (glibc with a fixed mmap
/// threshold: with its default dynamic one, freed bodies stay in per-thread arenas, see the
/// `server` module docs).
#[test]
fn attackers_reconnecting_past_the_frame_timeout_stay_within_the_budget() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = ServerProcess::spawn(&[
        ("SERVER_MEMORY_FRAME_TIMEOUT_MS", "500"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ]);
    let stop = Instant::now() + Duration::from_secs(4);
    let dropped = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..200u64)
        .map(|i| {
            let (port, dropped) = (server.port, Arc::clone(&dropped));
            std::thread::spawn(move || {
                while Instant::now() < stop {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_write_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    if s.write_all(&request_header(i, DEFAULT_MAX_FRAME)).is_ok() {
                        write_body(&mut s, DEFAULT_MAX_FRAME - 1024);
                    }
                    // Stall until the server drops the frame.
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    if matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_)) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for attacker in attackers {
        attacker.join().unwrap();
    }
    let peak = server.peak_rss();
    let dropped = dropped.load(Ordering::Relaxed);
    println!(
        "200 attackers for 4 s, {dropped} stalled frames dropped: peak {} MiB, bound {} MiB",
        peak / MIB,
        bound() / MIB
    );
    assert!(dropped > 200, "the attackers came back: {dropped}");
    assert!(
        peak < bound(),
        "peak RSS {} MiB above the bound {} MiB",
        peak / MIB,
        bound() / MIB
    );
    server.assert_serves(Duration::from_secs(5));
}
