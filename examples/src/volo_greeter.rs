//! The same greeter for volo-grpc (`proto/greeter.proto`, compiled at build time by
//! `volo-build`): a volo server registered through
//! [`Registry::register_guard`](registry_core::Registry::register_guard), and volo clients
//! finding their servers through a [`VoloDiscover`]. Shared by the `volo_greeter_server`
//! and `volo_greeter_client` binaries and their tests.

use std::future::Future;
use std::time::Duration;

use registry_core::Registry;
use registry_volo::VoloDiscover;
use tokio::net::TcpListener;

/// Generated volo-grpc code for `greeter.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod gen {
    include!(concat!(env!("OUT_DIR"), "/volo_gen.rs"));
}

use gen::volo_gen::greeter::{
    Greeter, GreeterClient, GreeterClientBuilder, GreeterServer, HelloReply, HelloRequest,
};

/// The volo service name (its gRPC name), registered as [`SERVICE_NAME`](crate::greeter::SERVICE_NAME).
pub const VOLO_SERVICE_NAME: &str = crate::greeter::SERVICE_NAME;

/// The greeter: answers with a greeting and its own port.
#[derive(Debug, Clone)]
pub struct VoloGreeter {
    port: u16,
}

impl VoloGreeter {
    /// A greeter answering with `port`.
    pub fn new(port: u16) -> Self {
        Self { port }
    }
}

impl Greeter for VoloGreeter {
    async fn say_hello(
        &self,
        request: volo_grpc::Request<HelloRequest>,
    ) -> Result<volo_grpc::Response<HelloReply>, volo_grpc::Status> {
        let name = request.into_inner().name;
        Ok(volo_grpc::Response::new(HelloReply {
            message: format!("hello, {name}").into(),
            port: u32::from(self.port),
        }))
    }
}

/// Serves `greeter` on `listener` until `shutdown` resolves, then lets the connections
/// finish (volo's graceful shutdown).
///
/// # Errors
/// volo's error when serving fails.
pub async fn serve(
    listener: TcpListener,
    greeter: VoloGreeter,
    shutdown: impl Future<Output = ()>,
) -> Result<(), volo_grpc::BoxError> {
    volo_grpc::server::Server::new()
        .add_service(volo_grpc::server::ServiceBuilder::new(GreeterServer::new(greeter)).build())
        .run_with_shutdown(
            volo::net::incoming::DefaultIncoming::from(listener),
            async {
                shutdown.await;
                Ok(())
            },
        )
        .await
}

/// A volo-grpc client of the greeter whose servers are found through `registry` (a call times
/// out after `timeout`).
pub fn client(registry: &Registry, timeout: Duration) -> GreeterClient {
    GreeterClientBuilder::new(VOLO_SERVICE_NAME)
        .discover(VoloDiscover::new(registry.clone()))
        .rpc_timeout(Some(timeout))
        .build()
}

/// One call: the port of the server that answered.
///
/// # Errors
/// The call's gRPC status.
pub async fn say_hello(client: &GreeterClient, name: &str) -> Result<u16, volo_grpc::Status> {
    let reply = client
        .say_hello(HelloRequest {
            name: name.to_owned().into(),
        })
        .await?
        .into_inner();
    u16::try_from(reply.port)
        .map_err(|_| volo_grpc::Status::internal(format!("bad port {}", reply.port)))
}
