//! The tonic greeter (`proto/greeter.proto`, compiled at build time): a plain tonic server
//! registered through [`Registry::register_guard`](registry_core::Registry::register_guard),
//! and clients calling it through a [`registry_tonic`] channel. Shared by the
//! `greeter_server` and `greeter_client` binaries, their tests and the benchmarks.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use registry_core::{Registration, Registry, RegistryError, ServiceMetaInfo};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Generated tonic code for `greeter.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("greeter");
}

/// The service name registered: the gRPC service's full name.
pub const SERVICE_NAME: &str = "greeter.Greeter";
/// The service key clients ask for (version `1.0`, the default group).
pub const SERVICE_KEY: &str = "greeter.Greeter:1.0";

/// The greeter: answers with a greeting and its own port.
#[derive(Debug, Clone)]
pub struct GreeterImpl {
    port: u16,
    served: Arc<AtomicU64>,
}

impl GreeterImpl {
    /// A greeter answering with `port`.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            served: Arc::default(),
        }
    }

    /// Calls served so far (shared by clones).
    pub fn served(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.served)
    }
}

#[tonic::async_trait]
impl pb::greeter_server::Greeter for GreeterImpl {
    async fn say_hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let name = request.into_inner().name;
        Ok(Response::new(pb::HelloReply {
            message: format!("hello, {name}"),
            port: u32::from(self.port),
        }))
    }
}

/// Serves `greeter` on `listener` until `shutdown` resolves, then stops accepting and
/// finishes the calls in flight (tonic's graceful shutdown).
///
/// # Errors
/// tonic's transport error when serving fails.
pub async fn serve(
    listener: TcpListener,
    greeter: GreeterImpl,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(pb::greeter_server::GreeterServer::new(greeter))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

/// Registers the greeter listening on `host:port` in `registry` as [`SERVICE_NAME`]
/// (version `1.0`), returning the guard that deregisters it.
///
/// # Errors
/// As [`Registry::register_guard`].
pub async fn register(
    registry: &Registry,
    host: &str,
    port: u16,
) -> Result<Registration, RegistryError> {
    registry
        .register_guard(ServiceMetaInfo::new(SERVICE_NAME, host, port))
        .await
}
