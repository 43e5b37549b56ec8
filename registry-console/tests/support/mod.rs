//! What the console's tests share: plain HTTP/1.0 requests (the answer streams until the
//! server closes, so server-sent events read as lines), and the event stream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A test's budget for one expected event or state.
pub const WITHIN: Duration = Duration::from_secs(10);

/// One answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(address: SocketAddr, request: String) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("connect to the console");
    stream.write_all(request.as_bytes()).await.unwrap();
    BufReader::new(stream)
}

async fn status_and_headers(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            return status;
        }
    }
}

/// `METHOD path` with extra headers and a body.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str("Host: 127.0.0.1\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut reader = send(address, request).await;
    let status = status_and_headers(&mut reader).await;
    let mut body = String::new();
    tokio::time::timeout(WITHIN, reader.read_to_string(&mut body))
        .await
        .expect("the answer ends")
        .unwrap();
    Answer { status, body }
}

pub async fn get(address: SocketAddr, path: &str) -> Answer {
    request(address, "GET", path, &[], "").await
}

/// `POST /api/services/{key}/nodes/{node}/{action}`, with the token when given.
pub async fn act(
    address: SocketAddr,
    key: &str,
    node: &str,
    action: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let path = format!("/api/services/{key}/nodes/{node}/{action}");
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    request(address, "POST", &path, &headers, body).await
}

/// `GET /api/events`, read event by event.
pub struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    pub async fn open(address: SocketAddr) -> Self {
        let request =
            "GET /api/events HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";
        let mut reader = send(address, request.to_owned()).await;
        assert_eq!(status_and_headers(&mut reader).await, 200);
        Self { reader }
    }

    /// The next event (name, JSON data); keep-alive comments skipped.
    pub async fn next(&mut self) -> (String, Value) {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(WITHIN, self.reader.read_line(&mut line))
                .await
                .expect("an event within the time limit")
                .unwrap();
            assert!(read > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return (name, serde_json::from_str(&data).unwrap());
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Skips events until `pred` holds for one named `name`; returns its data.
    pub async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WITHIN;
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.next()).await;
            let Ok((n, data)) = next else {
                panic!("no matching {name} event within {WITHIN:?}; seen: {seen:#?}");
            };
            if n == name && pred(&data) {
                return data;
            }
            seen.push((n, data));
        }
    }
}

/// Whether a `change` event adds (or updates) `address` of `service` in `field`.
pub fn change_has(data: &Value, service: &str, field: &str, address: &str) -> bool {
    data["change"]["changes"].as_array().is_some_and(|changes| {
        changes.iter().any(|c| {
            c["service"] == service
                && c[field].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n == address || n["address"] == address)
                })
        })
    })
}

/// The node `address` of `service` as `GET /api/services/{service}` shows it.
pub async fn node(address: SocketAddr, service: &str, node: &str) -> Option<Value> {
    let answer = get(address, &format!("/api/services/{service}")).await;
    if answer.status != 200 {
        return None;
    }
    answer.json()["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["address"] == node)
        .cloned()
}
