//! Where the primary is.
//!
//! A [`Locator`] knows where the primary is: the one configured server, or the one the
//! Sentinels name (asked once, then again whenever a connection to it fails).
//!
//! With Sentinels, a background task ([`follow_sentinels`]) asks them every second or so
//! which server is the primary: a client whose connections still work can be talking to a
//! server the Sentinels no longer name (an old primary back from a pause before they demote
//! it, or a promoted replica they failed over from again), whose writes are then lost. When
//! the answer changes, the locator's epoch goes up and every connection made before it is
//! made again, to the named primary: the shared one at its next request (see `link`), the
//! tracking one at the next heartbeat, the change-stream reader at once (its watches relist).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, RedisError, RedisResult};
use tracing::{debug, warn};

use crate::address::{Address, SentinelAddress};
use crate::error::needs_reconnect;

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
