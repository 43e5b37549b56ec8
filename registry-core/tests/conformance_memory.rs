//! The conformance suite on the embedded memory backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use registry_conformance::Harness;
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions};

struct Memory {
    store: Arc<MemoryStore>,
}

#[async_trait]
impl Harness for Memory {
    async fn client(&self, options: RegistryOptions) -> Registry {
        Registry::new(Arc::new(MemoryBackend::new(self.store.clone())), options)
            .expect("valid options")
    }

    async fn delete_raw(&self, key: &str) {
        self.store.delete(key);
    }

    async fn put_raw(&self, key: &str, value: &[u8]) {
        self.store.put(key, value, None).expect("no lease involved");
    }
}

async fn memory() -> Memory {
    Memory {
        store: MemoryStore::new(),
    }
}

registry_conformance::conformance_tests!(memory);
