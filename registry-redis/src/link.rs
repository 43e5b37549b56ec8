//! Connections that follow the primary.
//!
//! A [`Locator`] knows where the primary is: the one configured server, or the one the
//! Sentinels name (asked once, then again whenever a connection to it fails). A [`Link`] is
//! the client's shared connection for scripts: made on first use, dropped when a request
//! shows it is no good any more (the connection broke or timed out, or the server answers
//! `READONLY`, `MASTERDOWN` or `LOADING`: a primary demoted by a failover, or one not ready),
//! and made again, to wherever the primary is then, by the next request. The core retries
//! the failed request with backoff, so a failover costs the requests of its own duration.
//!
//! With Sentinels, a background task ([`follow_sentinels`]) asks them every second or so
//! which server is the primary: a client whose connections still work can be talking to a
//! server the Sentinels no longer name (an old primary back from a pause before they demote
//! it, or a promoted replica they failed over from again), whose writes are then lost. When
//! the answer changes, the locator's epoch goes up and every connection made before it is
//! made again, to the named primary: the shared one at its next request, the tracking one at
//! the next heartbeat, the change-stream reader at once (its watches relist).
//!
//! Every connection reads the server's replication id (`master_replid` of
//! `INFO replication`) when it is made. A Redis server takes a new one when it starts and
//! when it is promoted, so a new id means this client now talks to another history: a
//! restarted server, or a promoted replica that may lack the last writes its old primary
//! acknowledged (replication is asynchronous). The registrar checks its nodes, watches
//! relist (see the crate docs, *Failover*).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, RedisError, RedisResult};
use registry_core::backend::with_timeout;
use registry_core::BackendError;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::address::{Address, SentinelAddress};
use crate::error::{classify, needs_reconnect};
use crate::NAME;

/// Where the primary is.
pub(crate) struct Locator {
    kind: Kind,
    /// Goes up each time the Sentinels name another primary than the one connected to.
    epoch: AtomicU64,
}

enum Kind {
    Direct(Box<ConnectionInfo>),
    Sentinel(Box<Sentinels>),
}

/// The Sentinels of one primary.
struct Sentinels {
    /// Asks the Sentinels for the primary and checks it (`ROLE`), with the primary's
    /// database, credentials and TLS.
    client: tokio::sync::Mutex<SentinelClient>,
    master: String,
    /// Whether the Sentinels and the data nodes are reached over TLS.
    tls: bool,
    /// The primary the Sentinels named last, until a connection to it fails.
    primary: Mutex<Option<ConnectionInfo>>,
    /// The Sentinels' addresses, for [`Locator::verify`].
    addresses: Vec<ConnectionInfo>,
    /// A connection to one Sentinel (its index), kept for [`Locator::verify`].
    probe: tokio::sync::Mutex<Option<(usize, MultiplexedConnection)>>,
}

impl Locator {
    /// The locator of a parsed address.
    ///
    /// # Errors
    /// The client's error when the Sentinel addresses are unusable.
    pub(crate) fn new(address: Address) -> RedisResult<Self> {
        let kind = match address {
            Address::Direct(info) => Kind::Direct(Box::new(info)),
            Address::Sentinel(SentinelAddress {
                sentinels,
                master,
                node,
                tls,
            }) => Kind::Sentinel(Box::new(Sentinels {
                client: tokio::sync::Mutex::new(sentinel_client(
                    &sentinels,
                    &master,
                    &node,
                    tls.clone(),
                )?),
                tls: tls.is_some(),
                addresses: sentinels,
                master,
                primary: Mutex::new(None),
                probe: tokio::sync::Mutex::new(None),
            })),
        };
        Ok(Locator {
            kind,
            epoch: AtomicU64::new(0),
        })
    }

    /// Whether connections to the primary (and the Sentinels) use TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        match &self.kind {
            Kind::Direct(info) => matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }),
            Kind::Sentinel(sentinels) => sentinels.tls,
        }
    }

    /// Whether the primary is found through Sentinels.
    pub(crate) fn follows_sentinels(&self) -> bool {
        matches!(self.kind, Kind::Sentinel(_))
    }

    /// The epoch: a connection made at an older one is to a server the Sentinels no longer
    /// name, and must be made again. Read it before connecting.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Asks a Sentinel which server is the primary; when it names another one than the
    /// primary this client knows, takes it and moves to the next epoch.
    async fn verify(&self, timeout: Duration) {
        let Kind::Sentinel(sentinels) = &self.kind else {
            return;
        };
        let Some(known) = lock(&sentinels.primary)
            .as_ref()
            .map(|p| p.addr().to_string())
        else {
            // Nothing known: the next connection asks the Sentinels anyway.
            return;
        };
        let Some(named) = sentinels.named(timeout).await else {
            return;
        };
        if named == known {
            return;
        }
        let mut primary = lock(&sentinels.primary);
        if primary
            .as_ref()
            .is_some_and(|p| p.addr().to_string() == known)
        {
            warn!(
                connected = %known, %named, master = %sentinels.master,
                "the Sentinels name another primary than the one this client is connected to: \
                 moving every connection to it"
            );
            *primary = None;
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Where the primary is: the configured server, or the one the Sentinels named last
    /// (asked now when none is known).
    async fn primary(&self) -> RedisResult<ConnectionInfo> {
        match &self.kind {
            Kind::Direct(info) => Ok((**info).clone()),
            Kind::Sentinel(sentinels) => {
                let Sentinels {
                    client,
                    master,
                    primary,
                    ..
                } = &**sentinels;
                if let Some(known) = lock(primary).clone() {
                    return Ok(known);
                }
                // The Sentinels' answer is checked by the client: the server it names
                // must call itself a master (`ROLE`).
                let client = client.lock().await.async_get_client().await?;
                let info = client.get_connection_info().clone();
                debug!(primary = %info.addr(), %master, "the Sentinels name the primary");
                *lock(primary) = Some(info.clone());
                Ok(info)
            }
        }
    }

    /// A connection to `at` failed: ask the Sentinels again next time.
    fn forget(&self, at: &str) {
        if let Kind::Sentinel(sentinels) = &self.kind {
            let mut primary = lock(&sentinels.primary);
            if primary.as_ref().is_some_and(|p| p.addr().to_string() == at) {
                *primary = None;
            }
        }
    }

    /// A new connection to the primary, with `config`; `resp3` for the protocol that carries
    /// pushed messages (client tracking). Returns it with the server's address.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
        resp3: bool,
    ) -> RedisResult<(MultiplexedConnection, String)> {
        let mut info = self.primary().await?;
        if resp3 {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let at = info.addr().to_string();
        let connected = match Client::open(info) {
            Ok(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok(conn) => Ok((conn, at)),
            Err(e) => {
                self.forget(&at);
                Err(e)
            }
        }
    }

    /// A connection to `at` proved unusable (see [`needs_reconnect`]).
    pub(crate) fn failed(&self, at: &str, error: Option<&RedisError>) {
        if error.is_none_or(needs_reconnect) {
            self.forget(at);
        }
    }
}

impl Sentinels {
    /// `host:port` of the primary the first Sentinel that answers names; `None` when none
    /// does (or none knows the master).
    async fn named(&self, timeout: Duration) -> Option<String> {
        let mut probe = self.probe.lock().await;
        let start = probe.as_ref().map_or(0, |(i, _)| *i);
        for n in 0..self.addresses.len() {
            let index = (start + n) % self.addresses.len();
            let mut conn = match probe.take() {
                Some((i, conn)) if i == index => conn,
                _ => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout));
                    let client = match Client::open(self.addresses[index].clone()) {
                        Ok(client) => client,
                        Err(_) => continue,
                    };
                    match client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                    {
                        Ok(conn) => conn,
                        Err(e) => {
                            debug!(sentinel = %self.addresses[index].addr(), error = %e, "a Sentinel did not answer");
                            continue;
                        }
                    }
                }
            };
            let mut command = redis::cmd("SENTINEL");
            command.arg("get-master-addr-by-name").arg(&self.master);
            let asked = command.query_async::<Option<(String, u16)>>(&mut conn);
            match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(answer)) => {
                    *probe = Some((index, conn));
                    return answer.map(|(host, port)| format!("{host}:{port}"));
                }
                Ok(Err(e)) => {
                    debug!(sentinel = %self.addresses[index].addr(), error = %e, "a Sentinel did not answer");
                }
                Err(_) => {
                    debug!(sentinel = %self.addresses[index].addr(), "a Sentinel did not answer in time");
                }
            }
        }
        None
    }
}

/// Asks the Sentinels every `every` which server is the primary (see the module docs), until
/// the locator is dropped.
pub(crate) async fn follow_sentinels(locator: Weak<Locator>, every: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(locator) = locator.upgrade() else {
            return;
        };
        locator.verify(timeout).await;
    }
}

/// The client that asks the Sentinels `sentinels` for the primary `master`, and connects to
/// it with the database and credentials of `node`, both over TLS with `tls`.
fn sentinel_client(
    sentinels: &[ConnectionInfo],
    master: &str,
    node: &redis::RedisConnectionInfo,
    tls: Option<redis::TlsCertificates>,
) -> RedisResult<SentinelClient> {
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|s| s.addr().clone()),
        master,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(node.db());
    if let Some(user) = node.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = node.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(certificates) = tls {
        builder = builder
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_certificates(certificates.clone())
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certificates);
    }
    builder.build()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server's replication id, read once per connection; empty when the server does not
/// tell (`INFO` refused to this user): no failover is noticed then but by the revisions.
pub(crate) async fn replication_id(conn: &mut MultiplexedConnection) -> Arc<str> {
    match redis::cmd("INFO")
        .arg("replication")
        .query_async::<String>(conn)
        .await
    {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("master_replid:"))
            .map(|id| Arc::from(id.trim()))
            .unwrap_or_else(|| Arc::from("")),
        Err(e) => {
            debug!(error = %e, "INFO replication refused: failovers are noticed by the revisions only");
            Arc::from("")
        }
    }
}

/// The shared connection of one client, and what it was made to.
#[derive(Clone)]
pub(crate) struct Live {
    /// The connection (cheap to clone: requests are multiplexed).
    pub(crate) conn: MultiplexedConnection,
    /// The server's replication id when the connection was made.
    pub(crate) replid: Arc<str>,
    serial: u64,
    at: String,
    /// The locator's epoch when the connection was made.
    epoch: u64,
}

/// The client's shared connection, following the primary.
pub(crate) struct Link {
    locator: Arc<Locator>,
    timeout: Duration,
    live: tokio::sync::Mutex<Option<Live>>,
    serial: AtomicU64,
    /// The replication id of the newest connection (kept when it breaks).
    replid: Mutex<Arc<str>>,
}

impl Link {
    pub(crate) fn new(locator: Arc<Locator>, timeout: Duration) -> Self {
        Link {
            locator,
            timeout,
            live: tokio::sync::Mutex::new(None),
            serial: AtomicU64::new(0),
            replid: Mutex::new(Arc::from("")),
        }
    }

    /// Where the primary is.
    pub(crate) fn locator(&self) -> &Arc<Locator> {
        &self.locator
    }

    /// The replication id of the server this client's newest shared connection was made to.
    pub(crate) fn replid(&self) -> Arc<str> {
        Arc::clone(&lock(&self.replid))
    }

    /// The connection, made now if there is none.
    async fn live(&self) -> RedisResult<Live> {
        let mut live = self.live.lock().await;
        let epoch = self.locator.epoch();
        match &*live {
            Some(current) if current.epoch == epoch => return Ok(current.clone()),
            Some(current) => {
                debug!(primary = %current.at, "the Sentinels name another primary: reconnecting");
                *live = None;
            }
            None => {}
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let (mut conn, at) = self.locator.connect(&config, false).await?;
        let replid = replication_id(&mut conn).await;
        let before = std::mem::replace(&mut *lock(&self.replid), Arc::clone(&replid));
        if !before.is_empty() && !replid.is_empty() && before != replid {
            info!(
                primary = %at,
                "connected to a Redis primary with another replication history (a failover \
                 or a restart): watches relist, the heartbeat checks this client's nodes"
            );
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let made = Live {
            conn,
            replid,
            serial,
            at,
            epoch,
        };
        *live = Some(made.clone());
        Ok(made)
    }

    /// Drops connection `serial` (if it is still the current one): the next request makes a
    /// new one, to wherever the primary is then.
    async fn drop_live(&self, serial: u64, error: Option<&RedisError>) {
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_ref().filter(|l| l.serial == serial) {
            debug!(primary = %current.at, error = ?error.map(ToString::to_string), "dropping the connection");
            self.locator.failed(&current.at, error);
            *live = None;
        }
    }

    /// Runs one request on the shared connection within the timeout; see [`run_traced`].
    ///
    /// [`run_traced`]: Self::run_traced
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: impl Fn() -> String,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: FnOnce(MultiplexedConnection, Arc<str>) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_traced(operation, call)
            .await
            .map(|(value, _)| value)
    }

    /// Runs one request on the shared connection (made first if needed) within the timeout,
    /// and returns its answer with the replication id of the server that gave it (which
    /// `call` gets too, for the scripts that take it). A request that shows the connection is
    /// no good drops it (see the module docs).
    ///
    /// # Errors
    /// [`BackendError::Timeout`], or the request's error classified.
    pub(crate) async fn run_traced<T, F, Fut>(
        &self,
        operation: impl Fn() -> String,
        call: F,
    ) -> Result<(T, Arc<str>), BackendError>
    where
        F: FnOnce(MultiplexedConnection, Arc<str>) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let live = with_timeout(NAME, self.timeout, &operation, self.live())
            .await?
            .map_err(|e| classify(e, || format!("{} (connecting)", operation())))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let call = call(live.conn.clone(), Arc::clone(&live.replid));
        match with_timeout(NAME, left, &operation, call).await {
            Ok(Ok(value)) => Ok((value, live.replid)),
            Ok(Err(error)) => {
                if needs_reconnect(&error) {
                    self.drop_live(live.serial, Some(&error)).await;
                }
                Err(classify(error, operation))
            }
            Err(timeout) => {
                self.drop_live(live.serial, None).await;
                Err(timeout)
            }
        }
    }
}
