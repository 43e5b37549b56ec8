//! A web console for the service registry: which services exist, how many nodes each has,
//! their TTLs counting down, and what just changed, live in a browser, on any backend.
//!
//! [`Console::start`] serves a small web application (plain HTML, CSS and JavaScript embedded
//! in the binary: no CDN, no build step) and the JSON API behind it over one
//! [`Registry`]:
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/overview` | store kind, address and health; numbers of services and nodes; last change |
//! | `GET /api/services[?q=TEXT]` | every service: key, name, version, group, nodes, enabled, healthy |
//! | `GET /api/services/{key}` | its nodes (address, weight, flags, metadata, registration time, expiry) and change log |
//! | `GET /api/events` | server-sent events: a `snapshot`, then `change`, `ttl`, `health` |
//! | `POST /api/services/{key}/nodes/{node}/disable` | take the node out of traffic (an override) |
//! | `POST .../enable` | put it back |
//! | `POST .../weight` | body `{"weight": N}` or `{"weight": null}` |
//! | `POST .../deregister` | delete it from the store (its owner, if alive, registers it again) |
//!
//! # How it stays live
//! One root subscription ([`Registry::watch_all`]) feeds the console's model; every change is
//! applied once and broadcast to the open pages as one pre-rendered event. A page starts with
//! a full snapshot (and so does a page that reconnects or falls behind). What no watch
//! delivers is read while a page is open: the TTLs left (one `Backend::ttls` request per
//! interval) and the store's health. Memory: the model holds every node under the root (an
//! `Arc` of what the cache holds already), its TTL deadline, and the last
//! [`ConsoleOptions::log_capacity`] changes.
//!
//! # Security
//! Listens on loopback unless told otherwise, and then answers only requests for
//! `localhost`/`127.0.0.1`/`[::1]` (a page of another site rebound to 127.0.0.1 is refused).
//! Reading needs nothing. The actions need the [`AdminToken`] in an
//! `Authorization: Bearer` header, compared in constant time: 401 without it or with another
//! one, 403 when the console has no token (read-only). The token is never logged; each
//! action is (service, node, action, peer). Pages may load nothing from elsewhere (CSP).
//!
//! ```no_run
//! use std::sync::Arc;
//! use registry_console::{AdminToken, Console, ConsoleOptions};
//! use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::named("default");
//! let registry = Registry::new(Arc::new(MemoryBackend::new(store)), RegistryOptions::default())?;
//! registry.register(ServiceMetaInfo::new("users", "127.0.0.1", 8080)).await?;
//! let options = ConsoleOptions::default()
//!     .with_store_address("in-process")
//!     .with_admin_token(AdminToken::new(std::env::var("REGISTRY_CONSOLE_TOKEN").unwrap_or_default()));
//! let console = Console::start(registry.clone(), options).await?;
//! println!("console at {}", console.url());
//! registry_core::signal::shutdown_signal().await;
//! console.stop().await?;
//! registry.shutdown().await?;
//! # Ok(()) }
//! ```

mod actions;
mod assets;
mod error;
mod events;
mod feed;
mod hub;
mod model;
pub mod options;
mod routes;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry_core::Registry;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use error::ConsoleError;
pub use options::{AdminToken, ConsoleOptions, DEFAULT_LISTEN, TOKEN_ENV};

use crate::hub::Hub;

/// How long [`Console::stop`] waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running console: its server and its two background tasks. Dropping it stops them
/// (without waiting); [`stop`](Self::stop) waits. The registry is the caller's: the console
/// never shuts it down.
#[derive(Debug)]
pub struct Console {
    address: SocketAddr,
    hub: Arc<Hub>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("registry", &self.registry)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// Binds `options.listen` and serves the console over `registry`. The store need not
    /// answer yet: the console shows it down and follows it once it does.
    ///
    /// # Errors
    /// [`ConsoleError::Bind`] when the address cannot be bound.
    pub async fn start(registry: Registry, options: ConsoleOptions) -> Result<Self, ConsoleError> {
        let listen = options.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ConsoleError::Bind {
                address: listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| ConsoleError::Bind {
            address: listen,
            source,
        })?;
        if !listen.ip().is_loopback() {
            warn!(
                %address,
                "the console listens beyond loopback, over plain HTTP: anyone who reaches it reads the registry, and the admin token travels in clear (put it behind a TLS proxy)"
            );
        }
        if options.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            warn!("the console's admin token is shorter than 16 bytes");
        }
        let actions = options.admin_token.is_some();
        let hub = Arc::new(Hub::new(registry, options));
        tokio::spawn(feed::follow(hub.clone(), hub.stop.clone()));
        tokio::spawn(feed::sample(hub.clone(), hub.stop.clone()));
        let app = routes::router(hub.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let stop = hub.stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        info!(%address, actions, "console serving");
        Ok(Self {
            address,
            hub,
            server: Some(server),
        })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS/`, the page.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Stops serving: open streams end, requests in flight get a few seconds to finish.
    ///
    /// # Errors
    /// [`ConsoleError::Serve`] when the server had failed.
    pub async fn stop(mut self) -> Result<(), ConsoleError> {
        self.hub.stop.cancel();
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_GRACE, server).await {
            Ok(Ok(result)) => result.map_err(|source| ConsoleError::Serve { source }),
            Ok(Err(join)) => Err(ConsoleError::Serve {
                source: std::io::Error::other(join.to_string()),
            }),
            Err(_) => {
                warn!(grace = ?STOP_GRACE, "console requests still in flight at stop; dropped");
                Ok(())
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.hub.stop.cancel();
    }
}
