//! The client's shared connection, following the primary.
//!
//! A [`Link`] is the client's shared connection for scripts: made on first use, to where the
//! [`Locator`] says the primary is; dropped when a request shows it is no good any more (the
//! connection broke or timed out, or the server answers `READONLY`, `MASTERDOWN` or
//! `LOADING`: a primary demoted by a failover, or one not ready), or when the locator's epoch
//! moved (the Sentinels name another primary); and made again by the next request. The core
//! retries the failed request with backoff, so a failover costs the requests of its own
//! duration.
//!
//! Every connection reads the server's replication id (`master_replid` of
//! `INFO replication`) when it is made. A Redis server takes a new one when it starts and
//! when it is promoted, so a new id means this client now talks to another history: a
//! restarted server, or a promoted replica that may lack the last writes its old primary
//! acknowledged (replication is asynchronous). The registrar checks its nodes, watches
//! relist (see the crate docs, *Failover*).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult};
use registry_core::backend::with_timeout;
use registry_core::BackendError;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::error::{classify, needs_reconnect};
use crate::locator::Locator;
use crate::NAME;

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
