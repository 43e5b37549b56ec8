//! Noticing a node key deleted behind the registry's back (a bare `DEL`, an eviction, a
//! `FLUSHALL`) without asking about every node at every heartbeat: Redis client tracking.
//!
//! A registering client keeps one more connection, in RESP3 with `CLIENT TRACKING ON`, and
//! reads its node keys on it once (`MGET`): from then on Redis pushes an `invalidate` message
//! on that connection when one of those keys is modified or deleted, by anyone. The next
//! heartbeat reads the invalidated keys again (which arms the tracking for them again) and
//! reports those without a value as missing, so the core puts them back. The steady state
//! costs nothing: no command while no node key changes. After the connection is made again
//! (a broken connection, a failover, a server restart) every node key is read again.
//!
//! A server that refuses RESP3 or tracking (Redis before 6, a proxy) gets one warning; such
//! deletions are then noticed only by a relist.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, PushInfo, PushKind, RedisError, Value};
use registry_core::backend::with_timeout;
use tracing::{debug, warn};

use crate::error::needs_reconnect;
use crate::locator::Locator;
use crate::scripts::CHECK_BATCH;
use crate::NAME;

/// What Redis pushed since the last check.
#[derive(Default)]
struct Pushed {
    /// Keys invalidated, or written by this client and not read on the connection since.
    keys: HashSet<String>,
    /// Every key must be read again (no connection yet, a new one, a flushed database).
    all: bool,
    /// The serial of the connection now in use (0: none).
    serial: u64,
    /// That connection was closed.
    broken: bool,
}

impl Pushed {
    /// No usable connection: the next one tracks nothing until every key is read on it.
    fn must_start_over(&self) -> bool {
        self.all || self.broken || self.serial == 0
    }
}

/// The tracking connection of one client.
pub(crate) struct Tracker {
    locator: Arc<Locator>,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<(MultiplexedConnection, String)>>,
    pushed: Arc<Mutex<Pushed>>,
    serials: AtomicU64,
    unsupported: AtomicBool,
    /// The locator's epoch when the tracking connection was made.
    epoch: AtomicU64,
}

fn lock(pushed: &Mutex<Pushed>) -> std::sync::MutexGuard<'_, Pushed> {
    pushed.lock().unwrap_or_else(PoisonError::into_inner)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl Tracker {
    pub(crate) fn new(locator: Arc<Locator>, timeout: Duration) -> Self {
        Tracker {
            locator,
            timeout,
            conn: tokio::sync::Mutex::new(None),
            pushed: Arc::new(Mutex::new(Pushed::default())),
            serials: AtomicU64::new(0),
            unsupported: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    /// `key` was just written by this client: read it at the next check (which starts
    /// tracking it).
    pub(crate) fn written(&self, key: &str) {
        lock(&self.pushed).keys.insert(key.to_owned());
    }

    /// The keys to read at this check, among `held`: those pushed or written since the last
    /// one, or all of `held` when the tracking must start over.
    pub(crate) fn due(&self, held: &HashSet<String>) -> Vec<String> {
        if self.unsupported.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut pushed = lock(&self.pushed);
        if self.epoch.load(Ordering::Acquire) != self.locator.epoch() {
            // The Sentinels name another primary: track there, from scratch.
            pushed.broken = true;
            pushed.all = true;
        }
        if pushed.must_start_over() {
            pushed.all = false;
            pushed.keys.clear();
            return held.iter().cloned().collect();
        }
        let keys = std::mem::take(&mut pushed.keys);
        keys.into_iter().filter(|k| held.contains(k)).collect()
    }

    /// Reads `keys` on the tracking connection (made first if needed) and returns those
    /// without a value. Never fails: on a failure the keys are read again at the next check.
    pub(crate) async fn missing(&self, keys: Vec<String>) -> Vec<String> {
        if keys.is_empty() {
            return Vec::new();
        }
        let read = with_timeout(
            NAME,
            self.timeout,
            || "read node keys".into(),
            self.read(&keys),
        );
        match read.await {
            Ok(Ok(missing)) => missing,
            Ok(Err(error)) => {
                self.retry_later(keys);
                if self.refused(&error) {
                    warn!(
                        error = %error,
                        "Redis refused client tracking (RESP3 and CLIENT TRACKING need Redis 6 or \
                         later): a node key deleted outside the registry is noticed only by a relist"
                    );
                    self.unsupported.store(true, Ordering::Relaxed);
                } else {
                    debug!(error = %error, "reading node keys for tracking failed, reading them again at the next heartbeat");
                }
                Vec::new()
            }
            Err(_) => {
                debug!("reading node keys for tracking timed out, reading them again at the next heartbeat");
                self.retry_later(keys);
                self.conn.lock().await.take();
                lock(&self.pushed).serial = 0;
                Vec::new()
            }
        }
    }

    fn retry_later(&self, keys: Vec<String>) {
        lock(&self.pushed).keys.extend(keys);
    }

    /// Whether `error` says the server will not track (rather than it being unreachable).
    fn refused(&self, error: &RedisError) -> bool {
        error.kind() == ErrorKind::RESP3NotSupported
            || (error.code().is_some() && !needs_reconnect(error) && error.code() != Some("NOAUTH"))
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<String>, RedisError> {
        let mut slot = self.conn.lock().await;
        let broken = lock(&self.pushed).broken;
        if broken {
            *slot = None;
        }
        let (mut conn, at) = match slot.take() {
            Some(live) => live,
            None => self.connect().await?,
        };
        let mut missing = Vec::new();
        for chunk in keys.chunks(CHECK_BATCH) {
            let values: Vec<Option<Vec<u8>>> =
                match redis::cmd("MGET").arg(chunk).query_async(&mut conn).await {
                    Ok(values) => values,
                    Err(e) => {
                        if needs_reconnect(&e) {
                            self.locator.failed(&at, Some(&e));
                            lock(&self.pushed).serial = 0;
                        } else {
                            *slot = Some((conn, at));
                        }
                        return Err(e);
                    }
                };
            missing.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.clone()),
            );
        }
        *slot = Some((conn, at));
        Ok(missing)
    }

    /// A new tracking connection; every key is read again at the next check.
    async fn connect(&self) -> Result<(MultiplexedConnection, String), RedisError> {
        let serial = self.serials.fetch_add(1, Ordering::Relaxed) + 1;
        let pushed = Arc::clone(&self.pushed);
        let sender = move |info: PushInfo| -> Result<(), Infallible> {
            let mut pushed = lock(&pushed);
            match info.kind {
                PushKind::Invalidate => match info.data.first() {
                    Some(Value::Array(keys)) => pushed.keys.extend(keys.iter().filter_map(text)),
                    // A flushed database: no key list.
                    _ => pushed.all = true,
                },
                PushKind::Disconnection if pushed.serial == serial => {
                    pushed.broken = true;
                    pushed.all = true;
                }
                _ => {}
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(sender);
        let epoch = self.locator.epoch();
        let (mut conn, at) = self.locator.connect(&config, true).await?;
        self.epoch.store(epoch, Ordering::Release);
        if let Err(e) = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async::<()>(&mut conn)
            .await
        {
            self.locator.failed(&at, Some(&e));
            return Err(e);
        }
        {
            // Only a check that reads every key makes a connection (see `due`).
            let mut pushed = lock(&self.pushed);
            pushed.serial = serial;
            pushed.broken = false;
        }
        debug!(server = %at, "client tracking on");
        Ok((conn, at))
    }
}
