//! The caching allocator: reuse by size class, reclaim, deferred free errors, gauges, resets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hipinfer::backend::{size_class, CachingAllocator, RawMemory};
use hipinfer::{HipError, Op};
use prometheus::IntGauge;

/// Counts device allocations and frees; blocks carry an id so double frees are visible.
#[derive(Default)]
struct CountingMemory {
    next_id: AtomicUsize,
    allocations: AtomicUsize,
    freed: parking_lot::Mutex<Vec<usize>>,
    fail_free: std::sync::atomic::AtomicBool,
}

/// A handle on the shared counters, so the test keeps one while the allocator owns the other.
#[derive(Clone)]
struct Memory(Arc<CountingMemory>);

impl std::ops::Deref for Memory {
    type Target = CountingMemory;
    fn deref(&self) -> &CountingMemory {
        &self.0
    }
}

impl RawMemory for Memory {
    type Block = usize;

    fn raw_allocate(&self, _bytes: usize) -> Result<usize, HipError> {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn raw_free(&self, block: usize) -> Result<(), HipError> {
        if self.fail_free.load(Ordering::Relaxed) {
            return Err(HipError::new(700, Op::Free));
        }
        let mut freed = self.freed.lock();
        assert!(!freed.contains(&block), "block {block} freed twice");
        freed.push(block);
        Ok(())
    }
}

#[test]
fn size_classes() {
    assert_eq!(size_class(0), 512);
    assert_eq!(size_class(1), 512);
    assert_eq!(size_class(512), 512);
    assert_eq!(size_class(513), 1024);
    assert_eq!(size_class(1 << 20), 1 << 20);
    assert_eq!(size_class((1 << 20) + 1), 2 << 20);
    assert_eq!(size_class(5 << 20), 6 << 20);
}

#[test]
fn freed_blocks_are_reused_by_size_class() {
    let memory = Memory(Arc::new(CountingMemory::default()));
    let allocator = CachingAllocator::new(memory.clone());
    let a = allocator.allocate(1000).unwrap();
    let first = *a.block();
    drop(a);
    assert_eq!(allocator.cached_bytes(), 1024);
    let b = allocator.allocate(700).unwrap(); // same 1024-byte class
    assert_eq!(*b.block(), first);
    assert_eq!(memory.allocations.load(Ordering::Relaxed), 1);
    let c = allocator.allocate(100).unwrap(); // another class
    assert_ne!(*c.block(), first);
    assert_eq!(memory.allocations.load(Ordering::Relaxed), 2);
    assert_eq!(allocator.in_use_bytes(), 1024 + 512);
}

#[test]
fn reclaim_frees_everything_cached_once() {
    let memory = Memory(Arc::new(CountingMemory::default()));
    let allocator = CachingAllocator::new(memory.clone());
    let blocks: Vec<_> = (0..5)
        .map(|i| allocator.allocate(512 * (i + 1)).unwrap())
        .collect();
    let kept = allocator.allocate(512).unwrap();
    drop(blocks);
    assert_eq!(allocator.cached_bytes(), 512 * (1 + 2 + 3 + 4 + 5));
    assert_eq!(allocator.reclaim(), 512 * 15);
    assert_eq!(allocator.cached_bytes(), 0);
    assert_eq!(memory.freed.lock().len(), 5);
    assert_eq!(allocator.reclaim(), 0, "nothing left to free");
    drop(kept);
    assert_eq!(allocator.in_use_bytes(), 0);
    assert_eq!(allocator.reclaim(), 512);
    assert_eq!(memory.freed.lock().len(), 6);
}

#[test]
fn a_failed_free_is_reported_by_the_next_allocation_once() {
    let memory = Memory(Arc::new(CountingMemory::default()));
    let allocator = CachingAllocator::new(memory.clone());
    drop(allocator.allocate(10).unwrap());
    memory.fail_free.store(true, Ordering::Relaxed);
    assert_eq!(allocator.reclaim(), 0);
    let error = allocator.allocate(10).unwrap_err();
    assert_eq!((error.code(), error.op()), (700, Op::Free));
    assert!(allocator.allocate(10).is_ok(), "reported once");
}

#[test]
fn gauges_follow_the_bytes() {
    let (in_use, cached) = (
        IntGauge::new("in_use", "x").unwrap(),
        IntGauge::new("cached", "x").unwrap(),
    );
    let allocator = CachingAllocator::with_gauges(
        Memory(Arc::new(CountingMemory::default())),
        in_use.clone(),
        cached.clone(),
    );
    let a = allocator.allocate(2000).unwrap();
    assert_eq!((in_use.get(), cached.get()), (2048, 0));
    drop(a);
    assert_eq!((in_use.get(), cached.get()), (0, 2048));
    allocator.reclaim();
    assert_eq!((in_use.get(), cached.get()), (0, 0));
}

#[test]
fn after_forget_old_blocks_are_not_taken_back() {
    let memory = Memory(Arc::new(CountingMemory::default()));
    let allocator = CachingAllocator::new(memory.clone());
    let on_loan = allocator.allocate(512).unwrap();
    drop(allocator.allocate(1024).unwrap());
    allocator.forget();
    assert_eq!(allocator.cached_bytes(), 0);
    drop(on_loan);
    assert_eq!(
        allocator.cached_bytes(),
        0,
        "a block of the old context is not reused"
    );
    assert_eq!(allocator.in_use_bytes(), 0);
    assert_eq!(allocator.reclaim(), 0);
    assert!(
        memory.freed.lock().is_empty(),
        "the old context's memory is never freed twice"
    );
}

#[test]
fn blocks_past_the_cache_limit_are_freed_not_kept() {
    let memory = Memory(Arc::new(CountingMemory::default()));
    let allocator = CachingAllocator::new(memory.clone()).with_cache_limit(2048);
    let blocks: Vec<_> = (0..4).map(|_| allocator.allocate(1024).unwrap()).collect();
    drop(blocks);
    assert_eq!(allocator.cached_bytes(), 2048, "two blocks fit the limit");
    assert_eq!(
        memory.freed.lock().len(),
        2,
        "the other two were freed at once"
    );
    // Memory is not lost: cached blocks are reused, freed ones allocated anew.
    let again: Vec<_> = (0..4).map(|_| allocator.allocate(1024).unwrap()).collect();
    assert_eq!(memory.allocations.load(Ordering::Relaxed), 6);
    assert_eq!(allocator.in_use_bytes(), 4096);
    drop(again);
}
