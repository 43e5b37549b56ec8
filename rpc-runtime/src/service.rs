//! Service definitions without hand-written stubs.
//!
//! Define a trait once with [`rpc_service!`](crate::rpc_service) and get the server-side
//! dispatcher and a typed client. Methods are `async`, take and return serde types, and
//! return `Result<T, ServiceError>`; implementations may use plain `async fn`.
//!
//! ```
//! use rpc_runtime::rpc_service;
//! use rpc_runtime::service::{Service, ServiceError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! pub struct User {
//!     pub name: String,
//! }
//!
//! rpc_service! {
//!     /// Users.
//!     pub trait UserService {
//!         /// Returns the user with a new name.
//!         async fn get_user(&self, user: User) -> Result<User, ServiceError>;
//!         /// A number.
//!         async fn get_number(&self) -> Result<i32, ServiceError>;
//!     }
//!     server = UserServiceServer;
//!     client = UserServiceClient;
//! }
//!
//! struct Impl;
//! impl UserService for Impl {
//!     async fn get_user(&self, mut user: User) -> Result<User, ServiceError> {
//!         user.name.push_str(" (served)");
//!         Ok(user)
//!     }
//!     async fn get_number(&self) -> Result<i32, ServiceError> {
//!         Ok(1)
//!     }
//! }
//!
//! let server = UserServiceServer::new(Impl);
//! assert_eq!(server.name(), "UserService");
//! assert_eq!(server.methods(), &["get_user", "get_number"]);
//! ```
//!
//! The client (`UserServiceClient::new(consumer)`) has the same methods, returning
//! `Result<T, CallError>`; see [`Consumer`](crate::consumer::Consumer).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::serializer::{SerializeError, Serializer};

/// A boxed, sendable future (what the object-safe [`Service`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An error a handler returns; it travels to the caller as data, typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ServiceError {
    /// Application-defined code.
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

impl ServiceError {
    /// An error with a code and a message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }
}

/// Why the dispatcher could not produce a result. The cause, when there is one, is the
/// [`source`](std::error::Error::source); the server sends the whole chain to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The service has no such method.
    #[error("unknown method `{0}`")]
    UnknownMethod(String),
    /// The arguments did not decode as the method's parameters.
    #[error("bad arguments")]
    BadRequest(#[source] SerializeError),
    /// The handler returned an error.
    #[error("handler error")]
    Handler(#[source] ServiceError),
    /// The result could not be encoded.
    #[error("cannot encode the result")]
    Encode(#[source] SerializeError),
}

/// The server side of a service, object-safe so one server hosts many services.
/// [`rpc_service!`](crate::rpc_service) implements it; implementing it by hand is possible
/// (a dynamic gateway, for instance).
pub trait Service: Send + Sync + 'static {
    /// The service name (the trait name for generated services).
    fn name(&self) -> &'static str;
    /// The method names.
    fn methods(&self) -> &'static [&'static str];
    /// Runs `method` on `args` encoded with `serializer`; the result is encoded with it too.
    fn call(
        &self,
        method: &str,
        serializer: Serializer,
        args: Bytes,
    ) -> BoxFuture<Result<Vec<u8>, DispatchError>>;
}

/// Defines a service trait, its server-side dispatcher and its typed client.
///
/// ```text
/// rpc_service! {
///     pub trait Name {
///         async fn method(&self, arg: Type, ...) -> Result<Out, ServiceError>;
///         ...
///     }
///     server = NameServer;
///     client = NameClient;
/// }
/// ```
///
/// - `trait Name`: implement it with `async fn`s. The futures must be `Send`.
/// - `NameServer::new(impl)`: a [`Service`] to hand to the [`Provider`](crate::provider::Provider).
/// - `NameClient::new(consumer)`: the same methods, returning
///   `Result<Out, CallError>`; return types implement `Default` (what the `failSafe`
///   tolerant strategy returns when a call fails).
///
/// The service is registered as `Name:<rpc.version>`; methods are called by their Rust name.
/// See the [module docs](crate::service) for a full example.
#[macro_export]
macro_rules! rpc_service {
    (
        $(#[$meta:meta])*
        $vis:vis trait $name:ident {
            $(
                $(#[$mmeta:meta])*
                async fn $method:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> Result<$ok:ty, ServiceError>;
            )*
        }
        server = $server:ident;
        client = $client:ident;
    ) => {
        $(#[$meta])*
        $vis trait $name: Send + Sync + 'static {
            $(
                $(#[$mmeta])*
                fn $method(&self $(, $arg: $ty)*)
                    -> impl ::std::future::Future<Output = ::std::result::Result<$ok, $crate::service::ServiceError>> + Send;
            )*
        }

        #[doc = concat!("Server-side dispatcher of [`", stringify!($name), "`].")]
        $vis struct $server<T>(::std::sync::Arc<T>);

        impl<T: $name> $server<T> {
            #[doc = concat!("Serves `inner` as `", stringify!($name), "`.")]
            pub fn new(inner: T) -> Self {
                $server(::std::sync::Arc::new(inner))
            }
        }

        impl<T: $name> $crate::service::Service for $server<T> {
            fn name(&self) -> &'static str {
                stringify!($name)
            }

            fn methods(&self) -> &'static [&'static str] {
                &[$(stringify!($method)),*]
            }

            #[allow(unused_variables)]
            fn call(
                &self,
                method: &str,
                serializer: $crate::serializer::Serializer,
                args: $crate::__private::Bytes,
            ) -> $crate::service::BoxFuture<::std::result::Result<::std::vec::Vec<u8>, $crate::service::DispatchError>> {
                let inner = ::std::sync::Arc::clone(&self.0);
                match method {
                    $(
                        stringify!($method) => ::std::boxed::Box::pin(async move {
                            #[allow(unused_parens)]
                            let ($($arg,)*): ($($ty,)*) = serializer
                                .decode(&args)
                                .map_err($crate::service::DispatchError::BadRequest)?;
                            let out = inner
                                .$method($($arg),*)
                                .await
                                .map_err($crate::service::DispatchError::Handler)?;
                            serializer
                                .encode(&out)
                                .map_err($crate::service::DispatchError::Encode)
                        }),
                    )*
                    other => {
                        let other = other.to_owned();
                        ::std::boxed::Box::pin(async move {
                            Err($crate::service::DispatchError::UnknownMethod(other))
                        })
                    }
                }
            }
        }

        #[doc = concat!("Typed client of [`", stringify!($name), "`]: each call goes through a consumer (discovery, load balancing, retry, failover).")]
        #[derive(Clone)]
        $vis struct $client {
            consumer: $crate::consumer::Consumer,
            service_key: ::std::sync::Arc<str>,
        }

        impl $client {
            #[doc = concat!("A client of `", stringify!($name), ":<version>` through `consumer`.")]
            pub fn new(consumer: $crate::consumer::Consumer) -> Self {
                let service_key = consumer.service_key(stringify!($name)).into();
                $client { consumer, service_key }
            }

            /// The service key this client calls (`Name:version`).
            pub fn service_key(&self) -> &str {
                &self.service_key
            }

            $(
                $(#[$mmeta])*
                ///
                /// # Errors
                /// `CallError`: no provider, transport failures (after retries and failover),
                /// or the server's typed error.
                pub async fn $method(&self $(, $arg: $ty)*) -> ::std::result::Result<$ok, $crate::consumer::CallError> {
                    self.consumer
                        .call(&self.service_key, stringify!($method), &($($arg,)*))
                        .await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    // The generated client is not used here.
    #![allow(clippy::unwrap_used, dead_code)]
    use std::error::Error as _;

    use super::*;

    crate::rpc_service! {
        /// A test service.
        pub trait Adder {
            /// Adds.
            async fn add(&self, a: i32, b: i32) -> Result<i32, ServiceError>;
        }
        server = AdderServer;
        client = AdderClient;
    }

    struct Impl;
    impl Adder for Impl {
        async fn add(&self, a: i32, b: i32) -> Result<i32, ServiceError> {
            a.checked_add(b)
                .ok_or_else(|| ServiceError::new(1, "overflow"))
        }
    }

    #[tokio::test]
    async fn dispatch_errors_keep_their_cause() {
        let server = AdderServer::new(Impl);
        let json = Serializer::Json;
        let sum = server.call("add", json, Bytes::from_static(b"[1,2]")).await;
        assert_eq!(json.decode::<i32>(&sum.unwrap()).unwrap(), 3);

        let err = server
            .call("add", json, Bytes::from_static(b"\"one\""))
            .await
            .unwrap_err();
        assert!(matches!(err, DispatchError::BadRequest(_)), "{err:?}");
        assert_eq!(err.to_string(), "bad arguments");
        let cause = err.source().unwrap();
        assert_eq!(cause.to_string(), "json decode failed");
        assert!(cause.source().is_some(), "the serde error is kept");

        let err = server
            .call("add", json, Bytes::from_static(b"[2147483647,1]"))
            .await
            .unwrap_err();
        assert_eq!(
            err.source().unwrap().to_string(),
            ServiceError::new(1, "overflow").to_string()
        );
        let err = server.call("sub", json, Bytes::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "unknown method `sub`");
        assert!(err.source().is_none());
    }
}
