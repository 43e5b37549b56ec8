//! A store server started for a test together with the [`Target`] that reaches it.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use registry_core::{Registry, RegistryOptions};
use registry_test_support::Server;

use crate::{pause_beyond_ttl, restart_without_data, Target};

/// A backend under test: the server a test started (`S`, e.g. an
/// [`EtcdServer`](registry_test_support::EtcdServer), stopped when this is dropped) and the
/// [`Target`] its backend connects to. It dereferences to the server, so the server's own
/// commands stay at hand.
pub struct BackendUnderTest<S> {
    server: S,
    target: Target,
}

impl<S> BackendUnderTest<S> {
    /// `server`, reached through `target`.
    pub fn new(server: S, target: Target) -> Self {
        Self { server, target }
    }

    /// How the backend connects to the server.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A new registry client with `options` (see [`Target::registry`]).
    pub async fn registry(&self, options: RegistryOptions) -> Registry {
        self.target.registry(options).await
    }
}

impl<S: DerefMut<Target = Server>> BackendUnderTest<S> {
    /// [`restart_without_data`] with `options`, the server killed and restarted empty.
    pub async fn restart_without_data(&mut self, options: RegistryOptions, back_within: Duration) {
        let server = &mut self.server;
        restart_without_data(
            &self.target,
            &mut |fault| fault.inflict(server),
            options,
            back_within,
        )
        .await;
    }

    /// [`pause_beyond_ttl`] with `options`, the server paused and resumed.
    pub async fn pause_beyond_ttl(&mut self, options: RegistryOptions, converge_within: Duration) {
        let server = &mut self.server;
        pause_beyond_ttl(
            &self.target,
            &mut |fault| fault.inflict(server),
            options,
            converge_within,
        )
        .await;
    }
}

impl<S> Deref for BackendUnderTest<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.server
    }
}

impl<S> DerefMut for BackendUnderTest<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.server
    }
}
