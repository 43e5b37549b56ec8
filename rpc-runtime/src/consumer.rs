//! The consumer: what a typed client calls through.
//!
//! Per call: the nodes come from the registry's cache (the store is read on first use and by
//! the watch only), the balancer picks one, the call runs under the retry strategy, and the
//! tolerant strategy decides what a failure leads to (see [`fault`](crate::fault)). A node
//! that refuses the connection or breaks it is evicted from this consumer's cache at once
//! (the registry relists the service) and the call moves to another node; so does one that
//! accepts the connection only to refuse it with a go-away (at its connection limit), and
//! since the request certainly did not run there, it moves on whatever the tolerant
//! strategy. A request that crosses the go-away of an idle connection the node closes is
//! sent again on a new connection. With no node
//! left, the error is [`CallError::NoProvider`], naming the service and the registry.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_runtime::config::RpcConfig;
//! use rpc_runtime::consumer::Consumer;
//!
//! let config = RpcConfig::load()?;
//! let consumer = Consumer::connect(&config).await?;
//! let n: i32 = consumer.call("UserService:1.0", "get_number", &()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use registry_core::{Node, Origin, Registry, RegistryError, DEFAULT_GROUP};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, warn};

use crate::balance::{self, LoadBalancer};
use crate::config::{LoadBalancerKind, RpcConfig};
use crate::connect::{connect_registry, SetupError};
use crate::fault::{RetryStrategy, TolerantStrategy};
use crate::protocol::{Frame, Status, DEFAULT_MAX_FRAME};
use crate::serializer::{SerializeError, Serializer};
use crate::service::ServiceError;
use crate::tls::{wants_tls, ClientTls};
use crate::transport::{Pool, Target, TransportError};

/// Default per-call timeout (one attempt on one node, dialing included).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `rpc_client_calls_total{service, method, outcome}`: calls made, by outcome (`ok` or a
/// [`CallError::kind`]).
pub const CALLS_TOTAL: &str = "rpc_client_calls_total";
/// `rpc_client_call_duration_seconds{service, method}`: the time of a call, retries and
/// failover included.
pub const CALL_DURATION_SECONDS: &str = "rpc_client_call_duration_seconds";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No node serves the service (none registered, or every one failed).
    #[error("no provider for service {service} (registry: {registry})")]
    NoProvider {
        /// The service key.
        service: String,
        /// The registry backend's name.
        registry: &'static str,
    },
    /// The registry could not be read (first discovery of a service during an outage).
    #[error("service discovery failed")]
    Registry(#[source] RegistryError),
    /// Talking to the node failed (after retries).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node does not serve this service (a stale registration, a version mismatch).
    #[error("{node} does not serve {service}: {message}")]
    UnknownService {
        /// The service key.
        service: String,
        /// The node.
        node: String,
        /// The server's message.
        message: String,
    },
    /// The service has no such method.
    #[error("{service} has no method `{method}`")]
    UnknownMethod {
        /// The service key.
        service: String,
        /// The method.
        method: String,
    },
    /// The server could not decode the arguments (client and server types differ).
    #[error("the server rejected the arguments of `{method}`: {message}")]
    BadRequest {
        /// The method.
        method: String,
        /// The server's message.
        message: String,
    },
    /// The handler returned an error: the typed error itself.
    #[error("the service returned an error: {0}")]
    Service(ServiceError),
    /// The server failed (a handler panicked, the result could not be encoded).
    #[error("server error on {node}: {message}")]
    Server {
        /// The node.
        node: String,
        /// The server's message.
        message: String,
    },
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments")]
    Encode(#[source] SerializeError),
    /// The result could not be decoded (client and server types differ).
    #[error("cannot decode the result")]
    Decode(#[source] SerializeError),
}

impl CallError {
    /// A short name of the kind of failure, for metrics and logs: `no_provider`, `registry`,
    /// `transport`, `unknown_service`, `unknown_method`, `bad_request`, `service_error`,
    /// `server_error`, `encode`, `decode`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoProvider { .. } => "no_provider",
            CallError::Registry(_) => "registry",
            CallError::Transport(_) => "transport",
            CallError::UnknownService { .. } => "unknown_service",
            CallError::UnknownMethod { .. } => "unknown_method",
            CallError::BadRequest { .. } => "bad_request",
            CallError::Service(_) => "service_error",
            CallError::Server { .. } => "server_error",
            CallError::Encode(_) => "encode",
            CallError::Decode(_) => "decode",
        }
    }

    fn transport(&self) -> Option<&TransportError> {
        match self {
            CallError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

/// One finished call, for observers ([`ConsumerOptions::with_observer`]).
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// The service key.
    pub service: String,
    /// The method.
    pub method: String,
    /// The node that answered (or the last one tried).
    pub node: Option<String>,
    /// Where the node list came from: the store (first use) or this consumer's cache.
    pub origin: Option<Origin>,
    /// Attempts made, on every node.
    pub attempts: u32,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// Whether it succeeded (a `failSafe` default counts as a failure).
    pub ok: bool,
}

/// Called after every call.
pub type CallObserver = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// Consumer settings (`rpc.*` keys, see [`ConsumerOptions::from_config`]).
#[derive(Clone)]
pub struct ConsumerOptions {
    /// The version of the services called (`rpc.version`).
    pub version: String,
    /// The body format (`rpc.serializer`).
    pub serializer: Serializer,
    /// `rpc.loadBalancer`.
    pub load_balancer: LoadBalancerKind,
    /// `rpc.warmup`: newly registered nodes get their full weight over this long.
    pub warmup: Duration,
    /// `rpc.retryStrategy`.
    pub retry: RetryStrategy,
    /// `rpc.tolerantStrategy`.
    pub tolerant: TolerantStrategy,
    /// Limit of one attempt on one node, dialing included.
    pub timeout: Duration,
    /// Largest accepted frame body.
    pub max_frame: usize,
    /// Called after every call.
    pub observer: Option<CallObserver>,
    /// TLS for nodes registered with `tls=true` (`rpc.tls.caFile` and the client
    /// certificate); `None`: such nodes are skipped with
    /// [`TransportError::TlsNotConfigured`]. Plain nodes are dialed in plain TCP either way.
    pub tls: Option<ClientTls>,
}

impl std::fmt::Debug for ConsumerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerOptions")
            .field("version", &self.version)
            .field("serializer", &self.serializer)
            .field("load_balancer", &self.load_balancer)
            .field("warmup", &self.warmup)
            .field("retry", &self.retry)
            .field("tolerant", &self.tolerant)
            .field("timeout", &self.timeout)
            .field("max_frame", &self.max_frame)
            .field("observer", &self.observer.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            version: registry_core::DEFAULT_VERSION.to_owned(),
            serializer: Serializer::Json,
            load_balancer: LoadBalancerKind::RoundRobin,
            warmup: Duration::ZERO,
            retry: RetryStrategy::No,
            tolerant: TolerantStrategy::FailFast,
            timeout: DEFAULT_CALL_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            observer: None,
            tls: None,
        }
    }
}

impl ConsumerOptions {
    /// The options `config` describes (`rpc.version`, `rpc.serializer`, `rpc.loadBalancer`,
    /// `rpc.retryStrategy`, `rpc.tolerantStrategy`; names were checked while loading). TLS
    /// files are not read here: see [`with_tls`](Self::with_tls) and
    /// [`Consumer::connect`], which reads `rpc.tls.*`.
    pub fn from_config(config: &RpcConfig) -> Self {
        ConsumerOptions {
            version: config.version.clone(),
            serializer: config.serializer.into(),
            load_balancer: config.load_balancer,
            warmup: config.warmup,
            retry: config.retry_strategy.into(),
            tolerant: config.tolerant_strategy.into(),
            ..ConsumerOptions::default()
        }
    }

    /// Sets the per-attempt timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the serializer.
    #[must_use]
    pub fn with_serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// Sets the tolerant strategy.
    #[must_use]
    pub fn with_tolerant(mut self, tolerant: TolerantStrategy) -> Self {
        self.tolerant = tolerant;
        self
    }

    /// Sets the retry strategy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryStrategy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the load balancer.
    #[must_use]
    pub fn with_load_balancer(mut self, kind: LoadBalancerKind) -> Self {
        self.load_balancer = kind;
        self
    }

    /// Calls nodes registered with `tls=true` in TLS (see [`crate::tls`]).
    #[must_use]
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Calls `observer` after every call.
    #[must_use]
    pub fn with_observer(mut self, observer: impl Fn(&CallRecord) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }
}

/// Calls services through the registry. Cheap to clone; clones share connections, cache and
/// balancer state.
#[derive(Clone, Debug)]
pub struct Consumer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    pool: Pool,
    balancer: Box<dyn LoadBalancer>,
    options: ConsumerOptions,
    metrics: CallMetrics,
}

/// The metric handles of successful calls, by service and method: registered once each, so a
/// call neither builds labels nor asks the recorder (failures, rare, register as they come).
/// Read without a lock (a read-write lock's reader count is written by every call, from every
/// thread); a new service or method copies the map.
#[derive(Debug, Default)]
struct CallMetrics(arc_swap::ArcSwap<Handles>);

/// Service -> method -> (calls with outcome `ok`, call duration).
/// (Looked up on every call, by names this process chose: a fast hasher will do.)
type Handles = HashMap<String, Methods, foldhash::fast::RandomState>;
type Methods = HashMap<String, (metrics::Counter, metrics::Histogram), foldhash::fast::RandomState>;

impl CallMetrics {
    fn record(&self, service: &str, method: &str, outcome: &'static str, elapsed: Duration) {
        if outcome != "ok" {
            metrics::counter!(
                CALLS_TOTAL,
                "service" => service.to_owned(),
                "method" => method.to_owned(),
                "outcome" => outcome,
            )
            .increment(1);
            Self::histogram(service, method).record(elapsed.as_secs_f64());
            return;
        }
        let read = |map: &Handles| {
            map.get(service).and_then(|m| m.get(method)).map(|(c, h)| {
                c.increment(1);
                h.record(elapsed.as_secs_f64());
            })
        };
        if read(&self.0.load()).is_some() {
            return;
        }
        self.0.rcu(|map| {
            let mut map = Handles::clone(map);
            map.entry(service.to_owned())
                .or_default()
                .entry(method.to_owned())
                .or_insert_with(|| {
                    let ok = metrics::counter!(
                        CALLS_TOTAL,
                        "service" => service.to_owned(),
                        "method" => method.to_owned(),
                        "outcome" => "ok",
                    );
                    (ok, Self::histogram(service, method))
                });
            map
        });
        read(&self.0.load());
    }

    fn histogram(service: &str, method: &str) -> metrics::Histogram {
        metrics::histogram!(
            CALL_DURATION_SECONDS,
            "service" => service.to_owned(),
            "method" => method.to_owned(),
        )
    }
}

/// What one call did, kept cheaply; made a [`CallRecord`] only for an observer.
#[derive(Default)]
struct Trace {
    node: Option<Node>,
    origin: Option<Origin>,
    attempts: u32,
}

impl Consumer {
    /// A consumer of `registry` with `options`.
    pub fn new(registry: Registry, options: ConsumerOptions) -> Self {
        Consumer {
            inner: Arc::new(Inner {
                registry,
                pool: Pool::new(options.max_frame, options.tls.clone()),
                balancer: balance::with_warmup(options.load_balancer, options.warmup),
                options,
                metrics: CallMetrics::default(),
            }),
        }
    }

    /// Connects the registry `config` names and builds a consumer with its options and its
    /// `rpc.tls.*` client settings.
    ///
    /// # Errors
    /// [`SetupError`]: a registry that cannot be set up, an unusable `rpc.tls.*` file
    /// ([`SetupError::Config`], naming the key).
    pub async fn connect(config: &RpcConfig) -> Result<Self, SetupError> {
        let mut options = ConsumerOptions::from_config(config);
        options.tls = ClientTls::from_config(&config.tls)?;
        let registry = connect_registry(&config.registry_config).await?;
        Ok(Consumer::new(registry, options))
    }

    /// The registry this consumer discovers through.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The options.
    pub fn options(&self) -> &ConsumerOptions {
        &self.inner.options
    }

    /// The service key of `service_name` at this consumer's version.
    pub fn service_key(&self, service_name: &str) -> String {
        registry_core::service_key(service_name, &self.inner.options.version, DEFAULT_GROUP)
    }

    /// Calls `method` of `service_key` with `args` (a tuple of the method's parameters).
    ///
    /// # Errors
    /// [`CallError`]; under `failSafe`, errors are logged and `R::default()` is returned.
    pub async fn call<A, R>(
        &self,
        service_key: &str,
        method: &str,
        args: &A,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Default,
    {
        let started = Instant::now();
        let mut trace = Trace::default();
        let result = self.call_inner(service_key, method, args, &mut trace).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.inner
            .metrics
            .record(service_key, method, outcome, elapsed);
        if let Some(observer) = &self.inner.options.observer {
            observer(&CallRecord {
                service: service_key.to_owned(),
                method: method.to_owned(),
                node: trace.node.map(|n| n.address()),
                origin: trace.origin,
                attempts: trace.attempts,
                elapsed,
                ok: result.is_ok(),
            });
        }
        match result {
            Err(error) if self.inner.options.tolerant == TolerantStrategy::FailSafe => {
                warn!(service = service_key, method, error = %registry_core::error_chain(&error), "call failed, failSafe returns the default value");
                Ok(R::default())
            }
            other => other,
        }
    }

    async fn call_inner<A, R>(
        &self,
        service_key: &str,
        method: &str,
        args: &A,
        trace: &mut Trace,
    ) -> Result<R, CallError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let inner = &*self.inner;
        let serializer = inner.options.serializer;
        // The body is built once, the arguments encoded into it, and shared by every attempt.
        let mut body = Frame::request_body(service_key, method, 64);
        let names = body.len();
        serializer
            .encode_into(args, &mut body)
            .map_err(CallError::Encode)?;
        let body = body.freeze();
        let key = if inner.balancer.uses_key() {
            balance::request_key(method, &body[names..])
        } else {
            0
        };
        let mut failed: Vec<Node> = Vec::new();
        let mut last_error: Option<CallError> = None;
        loop {
            let nodes = match inner.registry.discover(service_key).await {
                Ok(nodes) => nodes,
                Err(RegistryError::NoProvider { service, registry }) => {
                    return Err(CallError::NoProvider { service, registry })
                }
                Err(e) => return Err(CallError::Registry(e)),
            };
            trace.origin = Some(nodes.origin());
            let skip = |n: &Node| failed.iter().any(|f| same_node(f, n));
            // Borrowed from the list: a node's reference count is shared by every caller on
            // every thread, so it is cloned only when kept (an observer, a failure).
            let Some(node) = balance::choose(&*inner.balancer, nodes.nodes(), key, &skip) else {
                // Every node failed this call, or an administrator disabled the rest.
                return Err(last_error.unwrap_or_else(|| self.no_provider(service_key)));
            };
            if inner.options.observer.is_some() {
                trace.node = Some(node.clone());
            }
            // (No address formatted on the way: a failure does it.)
            let target = Target {
                host: &node.service_host,
                port: node.service_port,
                tls: wants_tls(&node.metadata),
            };
            let result = self
                .attempt_with_retry(target, service_key, method, &body, trace)
                .await;
            let error = match result {
                Ok(frame) => return serializer.decode(&frame.body).map_err(CallError::Decode),
                Err(error) => error,
            };
            let transport = error.transport();
            let address = target.address();
            if transport.is_some_and(TransportError::node_unreachable) {
                inner.registry.evict(service_key, &address);
                inner.pool.forget(target);
            }
            let elsewhere = match inner.options.tolerant {
                // Only what certainly never ran moves on.
                TolerantStrategy::FailFast | TolerantStrategy::FailSafe => {
                    transport.is_some_and(TransportError::never_sent)
                }
                TolerantStrategy::FailOver => transport.is_some(),
            };
            if !elsewhere {
                return Err(error);
            }
            debug!(service = service_key, method, node = %address, error = %error, "trying another node");
            failed.push(node.clone());
            last_error = Some(error);
        }
    }

    async fn attempt_with_retry(
        &self,
        target: Target<'_>,
        service_key: &str,
        method: &str,
        body: &Bytes,
        trace: &mut Trace,
    ) -> Result<Frame, CallError> {
        let mut delays = self.inner.options.retry.delays();
        loop {
            trace.attempts += 1;
            match self.attempt(target, service_key, method, body).await {
                Ok(frame) => return Ok(frame),
                Err(CallError::Transport(e)) if e.is_retryable() => match delays.next() {
                    Some(delay) => {
                        debug!(node = %target.address(), error = %e, ?delay, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(CallError::Transport(e)),
                },
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        target: Target<'_>,
        service_key: &str,
        method: &str,
        body: &Bytes,
    ) -> Result<Frame, CallError> {
        let options = &self.inner.options;
        let connection = self.inner.pool.get(target, options.timeout).await?;
        let serializer = options.serializer;
        let build = |id| Frame::request_with_body(id, serializer, body.clone());
        let frame = match connection.call(build).await {
            // The node closed this pooled connection (idle) as the request was on its way: it
            // was not run. Once more, on a new connection.
            Err(TransportError::GoAway { .. }) => {
                let connection = self.inner.pool.get(target, options.timeout).await?;
                connection.call(build).await?
            }
            other => other?,
        };
        let text = || String::from_utf8_lossy(&frame.body).into_owned();
        match frame.status {
            Status::Ok => Ok(frame),
            Status::HandlerError => match frame.serializer.decode::<ServiceError>(&frame.body) {
                Ok(e) => Err(CallError::Service(e)),
                Err(e) => Err(CallError::Decode(e)),
            },
            Status::UnknownService => Err(CallError::UnknownService {
                service: service_key.to_owned(),
                node: target.address(),
                message: text(),
            }),
            Status::UnknownMethod => Err(CallError::UnknownMethod {
                service: service_key.to_owned(),
                method: method.to_owned(),
            }),
            Status::BadRequest => Err(CallError::BadRequest {
                method: method.to_owned(),
                message: text(),
            }),
            // The server is stopping and did not run the call: like a refused connection.
            Status::Unavailable => Err(CallError::Transport(TransportError::Refused {
                address: target.address(),
                source: std::io::Error::other(text()),
            })),
            Status::ServerError => Err(CallError::Server {
                node: target.address(),
                message: text(),
            }),
        }
    }

    fn no_provider(&self, service_key: &str) -> CallError {
        CallError::NoProvider {
            service: service_key.to_owned(),
            registry: self.inner.registry.backend_name(),
        }
    }
}

fn same_node(a: &Node, b: &Node) -> bool {
    a.service_port == b.service_port && a.service_host == b.service_host
}
