//! The tonic bridge end to end (see `support` for the story): tonic greeters registered with
//! `Registry::register_guard`, a tonic client through a `registry_tonic` channel, on etcd and
//! on the memory backend. Run with `--no-capture` to see the failed calls per event.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use registry_core::MemoryStore;
use registry_test_support::EtcdServer;
use support::{story, Kind, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_tonic_calls_follow_the_registry_through_a_kill_and_a_graceful_stop() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    story(Store::Etcd(etcd), Kind::Tonic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory_tonic_calls_follow_the_registry_through_a_kill_and_a_graceful_stop() {
    story(Store::Memory(MemoryStore::new()), Kind::Tonic).await;
}
