//! A cache hit allocates nothing: counted with a global allocator.

#![allow(clippy::unwrap_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt as _;
use registry_core::{
    KeySpace, MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn cache_hits_do_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (registry, keys) = rt.block_on(async {
        let store = MemoryStore::new();
        let mut keys = Vec::new();
        for s in 0..100 {
            for port in 0..10 {
                let node = ServiceMetaInfo::new(format!("s{s}"), "10.0.0.1", port);
                let path = KeySpace::default().node_path(&node);
                store
                    .put(&path, &serde_json::to_vec(&node).unwrap(), None)
                    .unwrap();
            }
            keys.push(format!("s{s}:1.0"));
        }
        let registry = Registry::new(
            Arc::new(MemoryBackend::new(store)),
            RegistryOptions::default(),
        )
        .unwrap();
        for k in &keys {
            registry.discover(k).await.unwrap();
        }
        (registry, keys)
    });
    // Warm up thread-local state, then count.
    for k in &keys {
        drop(registry.cached(k));
    }
    // The counter does see allocations.
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::SeqCst), 1);
    let mut found = 0;
    for _ in 0..100 {
        for k in &keys {
            found += registry.cached(k).unwrap().len();
            found += registry.discover(k).now_or_never().unwrap().unwrap().len();
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(found, 100 * 100 * 10 * 2);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations during cache hits"
    );
    drop(rt);
}
