//! Redis backend for `registry-core`: deadlines instead of sessions, and a change stream with
//! revisions, so consumers can watch "from a revision" as on etcd.
//!
//! # Layout
//!
//! Every node is a plain string key holding its JSON (`GET /rpc/users:1.0/10.0.0.7:8080` is
//! readable with `redis-cli`). Four bookkeeping keys sit next to them:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rpc-registry:revision` | string | a counter, incremented by every change |
//! | `rpc-registry:changes` | stream | one entry per change, id `<revision>-<n>` (`op`, `key`, `value`) |
//! | `rpc-registry:index` | sorted set | every node key (listing a prefix is a lexicographic range) |
//! | `rpc-registry:deadlines` | sorted set | node key -> time (ms, server clock) its liveness ends |
//! | `rpc-registry:owners` | hash | node key -> id of the client that holds it |
//!
//! Every write is one Lua script, so a change and its stream entry are atomic.
//!
//! # Ownership
//!
//! Each client has a random id. A put takes a node only when nobody holds it, this client
//! does, or the holder's deadline passed; a node another client holds alive is reported
//! [`BackendError::Held`] and left as it is. Deletes and the graceful shutdown remove only
//! nodes this client holds (or nobody does).
//!
//! # Liveness without sessions
//!
//! A node lives until its deadline; a heartbeat pushes the deadlines of all of this client's
//! nodes in **one** script call, whatever their number, and reports the nodes Redis no longer
//! holds (deleted behind our back, or a server restarted without its data) so the core puts
//! them back. Expiry needs no server setting (keyspace notifications are off by default and
//! lossy): every watching client *reaps* (a script that deletes the nodes whose deadline passed
//! and records each removal in the change stream) a few times per TTL, so a dead provider
//! disappears for every consumer within its TTL plus one reaping period. The node key also
//! gets a Redis expiry well after its deadline, so nothing outlives a registry nobody runs.
//!
//! # Watching
//!
//! A watch reads the change stream with `XREAD BLOCK` from `revision + 1` on its own
//! connection and keeps the changes under its prefix. The stream is capped (about 100,000
//! entries): a watcher that falls further behind, or a server that lost its data (the
//! revision went back), gets [`BackendError::HistoryLost`] and the core relists.
//!
//! Keys written outside these scripts (a bare `SET` under the root) are not in the index and
//! stay invisible to the registry. Redis Cluster is not supported (the scripts touch keys of
//! several slots); a standalone server or a Sentinel-managed primary is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use registry_core::{
    Backend, BackendError, ConnectOptions, KeyValue, Listing, Liveness, Revision, WatchEvent,
    WatchStream,
};
use tracing::{debug, warn};

const NAME: &str = "redis";
/// The address used when none is configured.
pub const DEFAULT_ADDRESS: &str = "redis://127.0.0.1:6379";

const REVISION: &str = "rpc-registry:revision";
const CHANGES: &str = "rpc-registry:changes";
const INDEX: &str = "rpc-registry:index";
const DEADLINES: &str = "rpc-registry:deadlines";
const OWNERS: &str = "rpc-registry:owners";
/// Approximate cap of the change stream.
const MAX_CHANGES: u64 = 100_000;
/// Nodes reaped per script call (more are reaped by the next call).
const REAP_BATCH: u64 = 1000;
/// Entries read per `XREAD`.
const READ_BATCH: u64 = 1000;

/// Lua helpers shared by the scripts: the server clock in ms, and "remove a node, record it".
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function remove(k, rev, n, maxlen)
  local existed = redis.call('DEL', k)
  local indexed = redis.call('ZREM', KEYS[3], k)
  redis.call('ZREM', KEYS[4], k)
  redis.call('HDEL', KEYS[5], k)
  if existed == 1 or indexed == 1 then
    if rev == nil then rev = redis.call('INCR', KEYS[1]) end
    n = n + 1
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, rev .. '-' .. n, 'op', 'del', 'key', k)
  end
  return rev, n
end
local function alive(k, now)
  local d = redis.call('ZSCORE', KEYS[4], k)
  return d and tonumber(d) > now and redis.call('EXISTS', k) == 1
end
";

/// KEYS: revision, changes, index, deadlines, owners, node. ARGV: value, ttl ms, maxlen, owner.
/// Returns { 'ok' } when written (or unchanged), { 'held', holder } when another client's live
/// node is there (left as it is).
const PUT: &str = r"
local now = now_ms()
local ttl = tonumber(ARGV[2])
local holder = redis.call('HGET', KEYS[5], KEYS[6])
if holder and holder ~= ARGV[4] and alive(KEYS[6], now) then
  return { 'held', holder }
end
redis.call('HSET', KEYS[5], KEYS[6], ARGV[4])
local old = redis.call('GET', KEYS[6])
redis.call('SET', KEYS[6], ARGV[1], 'PX', ttl * 3 + 60000)
redis.call('ZADD', KEYS[4], now + ttl, KEYS[6])
local added = redis.call('ZADD', KEYS[3], 0, KEYS[6])
if old == ARGV[1] and added == 0 then
  return { 'ok' }
end
local rev = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], rev .. '-1', 'op', 'put', 'key', KEYS[6], 'value', ARGV[1])
return { 'ok' }
";

/// KEYS: revision, changes, index, deadlines, owners, nodes... ARGV: maxlen, owner.
/// Deletes the nodes this client holds, or nobody does (no holder, or expired).
const DELETE: &str = r"
local now = now_ms()
local rev, n = nil, 0
for i = 6, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if (not holder) or holder == ARGV[2] or not alive(k, now) then
    rev, n = remove(k, rev, n, ARGV[1])
  end
end
return n
";

/// KEYS: revision, changes, index, deadlines, owners. ARGV: maxlen, batch.
/// Returns { current revision, first revision still in the stream (0: empty), reaped }.
const REAP: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local rev, n = nil, 0
for _, k in ipairs(expired) do rev, n = remove(k, rev, n, ARGV[1]) end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_rev = 0
if #first > 0 then first_rev = tonumber(string.match(first[1][1], '^(%d+)')) end
return { tonumber(redis.call('GET', KEYS[1]) or '0'), first_rev, n }
";

/// KEYS: revision, changes, index, deadlines, owners, nodes... ARGV: ttl ms, maxlen, owner.
/// Pushes the deadline of every node this client still holds; a node the store lost is
/// cleaned up (its removal recorded, so watchers see it) and returned, to be put again, as is
/// a node another client holds now (left as it is: the put will wait for it).
const KEEP_ALIVE: &str = r"
local now = now_ms()
local ttl = tonumber(ARGV[1])
local missing = {}
local rev, n = nil, 0
for i = 6, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if holder == ARGV[3] and redis.call('EXISTS', k) == 1 and redis.call('ZSCORE', KEYS[4], k) then
    redis.call('ZADD', KEYS[4], now + ttl, k)
    redis.call('PEXPIRE', k, ttl * 3 + 60000)
  else
    if (not holder) or holder == ARGV[3] then rev, n = remove(k, rev, n, ARGV[2]) end
    table.insert(missing, k)
  end
end
return missing
";

/// KEYS: revision, index, deadlines. ARGV: prefix.
/// Returns { revision, key1, value1, key2, value2, ... } for live nodes under the prefix.
const LIST: &str = r"
local now = now_ms()
local out = { redis.call('GET', KEYS[1]) or '0' }
local keys = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local d = redis.call('ZSCORE', KEYS[3], k)
  if d and tonumber(d) > now then
    local v = redis.call('GET', k)
    if v then
      table.insert(out, k)
      table.insert(out, v)
    end
  end
end
return out
";

/// KEYS: deadlines. ARGV: node. Returns ms left, or -1.
const TTL: &str = r"
local d = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not d then return -1 end
local left = tonumber(d) - now_ms()
if left < 0 then return 0 end
return left
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

struct Scripts {
    put: Script,
    delete: Script,
    reap: Script,
    keep_alive: Script,
    list: Script,
    ttl: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            put: script(PUT),
            delete: script(DELETE),
            reap: script(REAP),
            keep_alive: script(KEEP_ALIVE),
            list: script(LIST),
            ttl: script(TTL),
        }
    }
}

/// The Redis [`Backend`].
pub struct RedisBackend {
    client: Client,
    conn: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
    timeout: Duration,
    /// How often a watching client reaps expired nodes.
    reap_every: Duration,
    /// When this client last reaped, shared by its watches (one reaper per client, not one
    /// per watched service).
    last_reap: std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>,
    /// The store's revision as the last reap saw it (`u64::MAX` before the first).
    store_revision: std::sync::Arc<AtomicU64>,
    address: String,
    /// This client's id in `rpc-registry:owners`.
    owner: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `redis://host:port[/db]`, `rediss://...`, or a bare `host:port`; the first of several
/// comma-separated addresses (a standalone server: no cluster).
fn url(address: &str) -> String {
    let first = address.split(',').map(str::trim).find(|a| !a.is_empty());
    match first {
        None => DEFAULT_ADDRESS.to_owned(),
        Some(a) if a.contains("://") => a.to_owned(),
        Some(a) => format!("redis://{a}"),
    }
}

fn classify(error: redis::RedisError, operation: impl FnOnce() -> String) -> BackendError {
    if error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        return BackendError::Auth {
            backend: NAME,
            source: Box::new(error),
        };
    }
    BackendError::request(NAME, operation(), error)
}

impl RedisBackend {
    /// Connects to the server `options.address` names (default [`DEFAULT_ADDRESS`]) and checks
    /// that it answers and accepts the credentials.
    ///
    /// # Errors
    /// [`BackendError::Config`] for an unusable address, [`BackendError::Auth`] for refused
    /// credentials, [`BackendError::Connect`] when the server cannot be reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, BackendError> {
        let address = url(&options.address);
        let mut info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(address.as_str()).map_err(|e| {
                BackendError::Config {
                    backend: NAME,
                    reason: format!("`{address}` is not a Redis address: {e}"),
                }
            })?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = options.username.as_deref().filter(|u| !u.is_empty()) {
            settings = settings.set_username(user);
        }
        if let Some(password) = options.password.as_deref().filter(|p| !p.is_empty()) {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let client = Client::open(info).map_err(|e| BackendError::Config {
            backend: NAME,
            reason: e.to_string(),
        })?;
        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            options.timeout
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connecting = client.get_connection_manager_with_config(config);
        let mut conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(match classify(e, String::new) {
                    auth @ BackendError::Auth { .. } => auth,
                    other => BackendError::Connect {
                        backend: NAME,
                        address: address.clone(),
                        source: Box::new(other),
                    },
                })
            }
            Err(_) => {
                return Err(BackendError::Connect {
                    backend: NAME,
                    address: address.clone(),
                    source: format!("no answer within {timeout:?}").into(),
                })
            }
        };
        // Credentials are checked by the first command when the server requires them.
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        if let Err(e) = pong {
            return Err(match classify(e, || "PING".into()) {
                auth @ BackendError::Auth { .. } => auth,
                other => BackendError::Connect {
                    backend: NAME,
                    address,
                    source: Box::new(other),
                },
            });
        }
        let ttl = if options.ttl.is_zero() {
            Duration::from_secs(30)
        } else {
            options.ttl
        };
        Ok(RedisBackend {
            client,
            conn,
            scripts: std::sync::Arc::new(Scripts::new()),
            timeout,
            reap_every: (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(3)),
            last_reap: std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())),
            store_revision: std::sync::Arc::new(AtomicU64::new(u64::MAX)),
            address,
            owner: format!("{:016x}", rand::random::<u64>()),
        })
    }

    async fn run<T, F>(
        &self,
        operation: impl FnOnce() -> String,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, operation)),
            Err(_) => Err(BackendError::Timeout {
                backend: NAME,
                operation: operation(),
                timeout: self.timeout,
            }),
        }
    }
}

fn meta_keys(invocation: &mut redis::ScriptInvocation<'_>) {
    invocation
        .key(REVISION)
        .key(CHANGES)
        .key(INDEX)
        .key(DEADLINES)
        .key(OWNERS);
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.put.prepare_invoke();
        meta_keys(&mut invocation);
        invocation
            .key(key)
            .arg(value)
            .arg(ttl.as_millis() as u64)
            .arg(MAX_CHANGES)
            .arg(&self.owner);
        let reply: Vec<String> = self
            .run(|| format!("put {key}"), invocation.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [status, holder] if status == "held" => Err(BackendError::Held {
                backend: NAME,
                key: key.to_owned(),
                holder: format!("client {holder}"),
            }),
            _ => Ok(()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete.prepare_invoke();
        meta_keys(&mut invocation);
        invocation.key(key).arg(MAX_CHANGES).arg(&self.owner);
        let _: i64 = self
            .run(
                || format!("delete {key}"),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.list.prepare_invoke();
        invocation
            .key(REVISION)
            .key(INDEX)
            .key(DEADLINES)
            .arg(prefix);
        let reply: Vec<Vec<u8>> = self
            .run(
                || format!("list {prefix}"),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        let mut items = reply.into_iter();
        let revision = items
            .next()
            .and_then(|r| std::str::from_utf8(&r).ok()?.parse::<Revision>().ok())
            .unwrap_or(0);
        let mut entries = Vec::new();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            match String::from_utf8(key) {
                Ok(key) => entries.push(KeyValue { key, value }),
                Err(_) => warn!("skipping a Redis key that is not UTF-8"),
            }
        }
        Ok(Listing { entries, revision })
    }

    fn watch(&self, prefix: &str, after: Revision) -> WatchStream {
        let state = WatchState::Start {
            ctx: WatchContext {
                client: self.client.clone(),
                reaper: self.conn.clone(),
                scripts: std::sync::Arc::clone(&self.scripts),
                prefix: prefix.to_owned(),
                timeout: self.timeout,
                reap_every: self.reap_every,
                last_reap: std::sync::Arc::clone(&self.last_reap),
                store_revision: std::sync::Arc::clone(&self.store_revision),
            },
            after,
        };
        stream::unfold(state, next_watch_item).boxed()
    }

    async fn keep_alive(&self, keys: &[String], ttl: Duration) -> Result<Liveness, BackendError> {
        if keys.is_empty() {
            return Ok(Liveness::Alive {
                missing: Vec::new(),
            });
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.keep_alive.prepare_invoke();
        meta_keys(&mut invocation);
        for key in keys {
            invocation.key(key.as_str());
        }
        invocation
            .arg(ttl.as_millis() as u64)
            .arg(MAX_CHANGES)
            .arg(&self.owner);
        let missing: Vec<String> = self
            .run(
                || format!("keep-alive of {} nodes", keys.len()),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        if !missing.is_empty() {
            debug!(
                missing = missing.len(),
                "nodes lost by the store, putting them back"
            );
        }
        Ok(Liveness::Alive { missing })
    }

    async fn ttl_remaining(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.ttl.prepare_invoke();
        invocation.key(DEADLINES).arg(key);
        let left: i64 = self
            .run(|| format!("ttl {key}"), invocation.invoke_async(&mut conn))
            .await?;
        Ok(u64::try_from(left).ok().map(Duration::from_millis))
    }

    async fn health(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .run(|| "PING".into(), redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn close(&self, keys: &[String]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete.prepare_invoke();
        meta_keys(&mut invocation);
        for key in keys {
            invocation.key(key.as_str());
        }
        invocation.arg(MAX_CHANGES).arg(&self.owner);
        let _: i64 = self
            .run(
                || format!("delete {} nodes", keys.len()),
                invocation.invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }
}

struct WatchContext {
    client: Client,
    reaper: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
    prefix: String,
    timeout: Duration,
    reap_every: Duration,
    last_reap: std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>,
    store_revision: std::sync::Arc<AtomicU64>,
}

impl WatchContext {
    /// True (and the shared clock reset) when this client's reaping is due.
    fn reap_due(&self) -> bool {
        let mut last = self
            .last_reap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() >= self.reap_every {
            *last = tokio::time::Instant::now();
            true
        } else {
            false
        }
    }
}

enum WatchState {
    Start {
        ctx: WatchContext,
        after: Revision,
    },
    Reading {
        ctx: WatchContext,
        conn: MultiplexedConnection,
        /// Stream id to read after.
        cursor: String,
        /// The highest revision delivered (or the starting point).
        seen: Revision,
        pending: std::collections::VecDeque<WatchEvent>,
        last_reap: tokio::time::Instant,
    },
    Done,
}

type Item = Result<WatchEvent, BackendError>;

async fn next_watch_item(state: WatchState) -> Option<(Item, WatchState)> {
    let mut state = state;
    loop {
        match state {
            WatchState::Done => return None,
            WatchState::Start { ctx, after } => {
                // Blocking reads get their own connection, with no response timeout of the
                // client's (the block itself bounds each read).
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(ctx.timeout))
                    .set_response_timeout(None);
                let connecting = ctx
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                let conn = match tokio::time::timeout(ctx.timeout, connecting).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        return Some((Err(classify(e, || "watch".into())), WatchState::Done))
                    }
                    Err(_) => {
                        let error = BackendError::Timeout {
                            backend: NAME,
                            operation: "watch".into(),
                            timeout: ctx.timeout,
                        };
                        return Some((Err(error), WatchState::Done));
                    }
                };
                // Check the history first: the reap step verifies `after` is still covered.
                let mut reaper = ctx.reaper.clone();
                if let Err(e) = reap(&ctx, &mut reaper, after).await {
                    return Some((Err(e), WatchState::Done));
                }
                state = WatchState::Reading {
                    ctx,
                    conn,
                    cursor: format!("{after}-{}", u64::MAX),
                    seen: after,
                    pending: std::collections::VecDeque::new(),
                    last_reap: tokio::time::Instant::now(),
                };
            }
            WatchState::Reading {
                ctx,
                mut conn,
                mut cursor,
                mut seen,
                mut pending,
                mut last_reap,
            } => {
                if let Some(event) = pending.pop_front() {
                    return Some((
                        Ok(event),
                        WatchState::Reading {
                            ctx,
                            conn,
                            cursor,
                            seen,
                            pending,
                            last_reap,
                        },
                    ));
                }
                // One stream per client reaps in a given period; every stream checks the
                // store's revision the reaper last saw against its own.
                if last_reap.elapsed() >= ctx.reap_every {
                    if ctx.reap_due() {
                        let mut reaper = ctx.reaper.clone();
                        if let Err(e) = reap(&ctx, &mut reaper, seen).await {
                            return Some((Err(e), WatchState::Done));
                        }
                    }
                    let store = ctx.store_revision.load(Ordering::Acquire);
                    if store < seen {
                        return Some((Err(went_back(seen, store)), WatchState::Done));
                    }
                    last_reap = tokio::time::Instant::now();
                }
                let block = ctx.reap_every.as_millis().max(1) as u64;
                let mut command = redis::cmd("XREAD");
                command
                    .arg("COUNT")
                    .arg(READ_BATCH)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(CHANGES)
                    .arg(&cursor);
                let read = command.query_async::<Value>(&mut conn);
                let reply = match tokio::time::timeout(ctx.timeout + ctx.reap_every, read).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => {
                        return Some((Err(classify(e, || "watch".into())), WatchState::Done))
                    }
                    Err(_) => {
                        let error = BackendError::Timeout {
                            backend: NAME,
                            operation: "watch".into(),
                            timeout: ctx.timeout,
                        };
                        return Some((Err(error), WatchState::Done));
                    }
                };
                for (id, fields) in stream_entries(reply) {
                    let revision = id
                        .split('-')
                        .next()
                        .and_then(|r| r.parse::<Revision>().ok())
                        .unwrap_or(0);
                    if revision > seen + 1 {
                        // Every revision has entries: a gap means the stream was trimmed past us.
                        let error = BackendError::HistoryLost {
                            reason: format!(
                                "changes between revisions {seen} and {revision} were trimmed from the stream"
                            ),
                        };
                        return Some((Err(error), WatchState::Done));
                    }
                    cursor = id;
                    seen = seen.max(revision);
                    match parse_change(&fields, revision) {
                        Some(event) if event.key().starts_with(ctx.prefix.as_str()) => {
                            pending.push_back(event);
                        }
                        Some(_) => {}
                        None => warn!(revision, "skipping a malformed entry of the change stream"),
                    }
                }
                state = WatchState::Reading {
                    ctx,
                    conn,
                    cursor,
                    seen,
                    pending,
                    last_reap,
                };
            }
        }
    }
}

/// Reaps expired nodes and checks that the history after `after` is still available.
async fn reap(
    ctx: &WatchContext,
    conn: &mut ConnectionManager,
    after: Revision,
) -> Result<(), BackendError> {
    let mut invocation = ctx.scripts.reap.prepare_invoke();
    meta_keys(&mut invocation);
    invocation.arg(MAX_CHANGES).arg(REAP_BATCH);
    let call = invocation.invoke_async::<(u64, u64, u64)>(conn);
    let (current, first, reaped) = match tokio::time::timeout(ctx.timeout, call).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(classify(e, || "reap expired nodes".into())),
        Err(_) => {
            return Err(BackendError::Timeout {
                backend: NAME,
                operation: "reap expired nodes".into(),
                timeout: ctx.timeout,
            })
        }
    };
    if reaped > 0 {
        debug!(reaped, "removed nodes whose deadline passed");
    }
    ctx.store_revision.store(current, Ordering::Release);
    if current < after {
        return Err(went_back(after, current));
    }
    if first > after + 1 {
        return Err(BackendError::HistoryLost {
            reason: format!("changes after revision {after} were trimmed from the stream"),
        });
    }
    Ok(())
}

fn went_back(seen: Revision, current: Revision) -> BackendError {
    BackendError::HistoryLost {
        reason: format!(
            "the Redis revision went back from {seen} to {current}: the server lost its data"
        ),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `XREAD` reply -> (id, field/value pairs) of the one stream read. Nil (timeout) -> nothing.
/// One entry of the change stream: its id and its field/value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

fn stream_entries(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let Value::Array(entries) = parts.remove(1) else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut entry) = entry else {
                continue;
            };
            if entry.len() != 2 {
                continue;
            }
            let fields = entry.remove(1);
            let Some(id) = text(&entry[0]) else { continue };
            let mut pairs = Vec::new();
            if let Value::Array(flat) = fields {
                let mut flat = flat.into_iter();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    let value = match v {
                        Value::BulkString(b) => b,
                        Value::SimpleString(s) => s.into_bytes(),
                        _ => continue,
                    };
                    if let Some(k) = text(&k) {
                        pairs.push((k, value));
                    }
                }
            }
            out.push((id, pairs));
        }
    }
    out
}

fn parse_change(fields: &[(String, Vec<u8>)], revision: Revision) -> Option<WatchEvent> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let key = String::from_utf8(get("key")?.clone()).ok()?;
    match get("op")?.as_slice() {
        b"put" => Some(WatchEvent::Put {
            kv: KeyValue {
                key,
                value: get("value")?.clone(),
            },
            revision,
        }),
        b"del" => Some(WatchEvent::Delete { key, revision }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_a_default() {
        assert_eq!(url(""), DEFAULT_ADDRESS);
        assert_eq!(url("10.0.0.1:6380"), "redis://10.0.0.1:6380");
        assert_eq!(url("rediss://h:1/2"), "rediss://h:1/2");
        assert_eq!(url(" a:1 , b:2"), "redis://a:1");
    }

    #[test]
    fn xread_replies_are_parsed_and_junk_entries_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                bulk(id),
                Value::Array(fields.iter().map(|f| bulk(f)).collect()),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(CHANGES),
            Value::Array(vec![
                entry(
                    "7-1",
                    &["op", "put", "key", "/rpc/a:1.0/h:1", "value", "{}"],
                ),
                entry("8-1", &["op", "del", "key", "/rpc/a:1.0/h:1"]),
                entry("8-2", &["op", "frobnicate", "key", "x"]),
                entry("9-1", &["op", "put"]),
            ]),
        ])]);
        let entries = stream_entries(reply);
        assert_eq!(entries.len(), 4);
        let events: Vec<Option<WatchEvent>> = entries
            .iter()
            .map(|(id, f)| parse_change(f, id.split('-').next().unwrap().parse().unwrap()))
            .collect();
        assert_eq!(
            events[0],
            Some(WatchEvent::Put {
                kv: KeyValue {
                    key: "/rpc/a:1.0/h:1".into(),
                    value: b"{}".to_vec()
                },
                revision: 7
            })
        );
        assert_eq!(
            events[1],
            Some(WatchEvent::Delete {
                key: "/rpc/a:1.0/h:1".into(),
                revision: 8
            })
        );
        assert_eq!(events[2], None);
        assert_eq!(events[3], None);
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
