//! The two echo services the benchmark compares: ours (through `rpc_service!`) and a tonic
//! unary echo (generated from `proto/echo.proto`). Same request and response shape: a short
//! string and a number.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod load;
pub mod raw;

/// Registry clients (as separate processes would have) of one fresh in-memory store: a
/// provider's and a consumer's in the RPC benches.
pub fn memory_registries() -> impl Fn() -> registry_core::Registry {
    let store = registry_core::MemoryStore::new();
    move || {
        registry_core::Registry::new(
            std::sync::Arc::new(registry_core::MemoryBackend::new(std::sync::Arc::clone(
                &store,
            ))),
            registry_core::RegistryOptions::default(),
        )
        .unwrap()
    }
}

use rpc_runtime::rpc_service;
use rpc_runtime::service::ServiceError;
use serde::{Deserialize, Serialize};

/// Generated tonic code.
pub mod pb {
    tonic::include_proto!("echo");
}

/// The small request and response of the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    pub n: u64,
}

rpc_service! {
    /// Echo for the benchmark.
    pub trait Echo {
        /// Returns the message.
        async fn echo(&self, message: Message) -> Result<Message, ServiceError>;
    }
    server = EchoServer;
    client = EchoClient;
}

/// Our echo.
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, message: Message) -> Result<Message, ServiceError> {
        Ok(message)
    }
}

/// tonic's echo.
#[derive(Default)]
pub struct TonicEcho;

#[tonic::async_trait]
impl pb::echo_server::Echo for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoReply>, tonic::Status> {
        let r = request.into_inner();
        Ok(tonic::Response::new(pb::EchoReply {
            text: r.text,
            n: r.n,
        }))
    }
}
