//! The caching device allocator: freed blocks are kept by size class and reused, so a steady
//! stream of batches allocates from the device only while it warms up.
//!
//! Dropping a buffer gives its block back to the cache (no device call, so a drop cannot fail).
//! [`CachingAllocator::reclaim`] returns cached blocks to the device — what the retry layer does
//! on out-of-memory before trying again; a failure to free there is kept and reported by the next
//! allocation (as cudarc does for errors in `Drop`). After a device reset, [`forget`] drops the
//! cache without freeing (the old context took its memory with it) and blocks from the old
//! context are not taken back.
//!
//! The cache holds at most [`DEFAULT_CACHE_LIMIT`] bytes (set with
//! [`CachingAllocator::with_cache_limit`]): batches of many shapes need blocks of many size
//! classes, and a cache without a bound would keep one of each for good. A block given back past
//! the limit is freed at once.
//!
//! [`forget`]: CachingAllocator::forget

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::IntGauge;

use crate::error::HipError;

/// Where blocks come from: device memory (`hipMalloc`) or host memory (the CPU backend).
pub trait RawMemory: Send + Sync {
    type Block: Send + Sync;
    /// Allocates exactly `bytes` (already rounded to a size class).
    fn raw_allocate(&self, bytes: usize) -> Result<Self::Block, HipError>;
    fn raw_free(&self, block: Self::Block) -> Result<(), HipError>;
}

/// Rounds a request up to its size class: 512 B steps up to 1 MiB, then 2 MiB steps (as
/// PyTorch's caching allocator), so reuse is likely and waste bounded.
pub fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    let bytes = bytes.max(1);
    if bytes <= 1 << 20 {
        bytes.div_ceil(SMALL) * SMALL
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// Bytes of free blocks the cache keeps by default (512 MiB).
pub const DEFAULT_CACHE_LIMIT: u64 = 512 << 20;

struct Shared<M: RawMemory> {
    memory: M,
    cache_limit: AtomicU64,
    cache: Mutex<HashMap<usize, Vec<M::Block>>>,
    generation: AtomicU64,
    in_use: AtomicU64,
    cached: AtomicU64,
    deferred: Mutex<Option<HipError>>,
    gauges: Option<(IntGauge, IntGauge)>,
}

impl<M: RawMemory> Shared<M> {
    fn update_gauges(&self) {
        if let Some((in_use, cached)) = &self.gauges {
            in_use.set(self.in_use.load(Ordering::Relaxed) as i64);
            cached.set(self.cached.load(Ordering::Relaxed) as i64);
        }
    }

    fn give_back(&self, class: usize, generation: u64, block: M::Block) {
        self.in_use.fetch_sub(class as u64, Ordering::Relaxed);
        if generation == self.generation.load(Ordering::Acquire) {
            let limit = self.cache_limit.load(Ordering::Relaxed);
            if self.cached.load(Ordering::Relaxed) + class as u64 <= limit {
                self.cache.lock().entry(class).or_default().push(block);
                self.cached.fetch_add(class as u64, Ordering::Relaxed);
            } else if let Err(error) = self.memory.raw_free(block) {
                self.deferred.lock().get_or_insert(error);
            }
        }
        self.update_gauges();
    }
}

/// A caching allocator over `M`. Cheap to clone.
pub struct CachingAllocator<M: RawMemory> {
    shared: Arc<Shared<M>>,
}

impl<M: RawMemory> Clone for CachingAllocator<M> {
    fn clone(&self) -> Self {
        CachingAllocator {
            shared: self.shared.clone(),
        }
    }
}

impl<M: RawMemory> std::fmt::Debug for CachingAllocator<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingAllocator")
            .field("in_use", &self.in_use_bytes())
            .field("cached", &self.cached_bytes())
            .finish()
    }
}

/// A block on loan from the allocator; goes back to its cache when dropped.
pub struct PooledBlock<M: RawMemory> {
    block: Option<M::Block>,
    class: usize,
    generation: u64,
    owner: Arc<Shared<M>>,
}

impl<M: RawMemory> std::fmt::Debug for PooledBlock<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBlock")
            .field("bytes", &self.class)
            .finish_non_exhaustive()
    }
}

impl<M: RawMemory> PooledBlock<M> {
    pub fn block(&self) -> &M::Block {
        self.block
            .as_ref()
            .expect("a pooled block holds its block until dropped")
    }

    pub fn block_mut(&mut self) -> &mut M::Block {
        self.block
            .as_mut()
            .expect("a pooled block holds its block until dropped")
    }

    /// The size class (bytes actually reserved).
    pub fn capacity_bytes(&self) -> usize {
        self.class
    }

    /// Whether the block comes from the allocator's current context, not one a reset destroyed
    /// ([`CachingAllocator::forget`]): only such a block may still be touched.
    pub fn is_current(&self) -> bool {
        self.generation == self.owner.generation.load(Ordering::Acquire)
    }
}

impl<M: RawMemory> Drop for PooledBlock<M> {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.owner.give_back(self.class, self.generation, block);
        }
    }
}

impl<M: RawMemory> CachingAllocator<M> {
    pub fn new(memory: M) -> Self {
        Self::build(memory, None)
    }

    /// Also keeps `in_use` and `cached` gauges (bytes) up to date.
    pub fn with_gauges(memory: M, in_use: IntGauge, cached: IntGauge) -> Self {
        Self::build(memory, Some((in_use, cached)))
    }

    fn build(memory: M, gauges: Option<(IntGauge, IntGauge)>) -> Self {
        CachingAllocator {
            shared: Arc::new(Shared {
                memory,
                cache_limit: AtomicU64::new(DEFAULT_CACHE_LIMIT),
                cache: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                in_use: AtomicU64::new(0),
                cached: AtomicU64::new(0),
                deferred: Mutex::new(None),
                gauges,
            }),
        }
    }

    /// Keeps at most `bytes` of free blocks; blocks given back past it are freed.
    pub fn with_cache_limit(self, bytes: u64) -> Self {
        self.shared.cache_limit.store(bytes, Ordering::Relaxed);
        self
    }

    pub fn memory(&self) -> &M {
        &self.shared.memory
    }

    /// A block of at least `bytes`, from the cache when one of its size class is free.
    /// Reports (once) a failure of an earlier [`CachingAllocator::reclaim`] to free.
    pub fn allocate(&self, bytes: usize) -> Result<PooledBlock<M>, HipError> {
        if let Some(error) = self.shared.deferred.lock().take() {
            return Err(error);
        }
        let class = size_class(bytes);
        let cached = self.shared.cache.lock().get_mut(&class).and_then(Vec::pop);
        let block = match cached {
            Some(block) => {
                self.shared
                    .cached
                    .fetch_sub(class as u64, Ordering::Relaxed);
                block
            }
            None => self.shared.memory.raw_allocate(class)?,
        };
        self.shared
            .in_use
            .fetch_add(class as u64, Ordering::Relaxed);
        self.shared.update_gauges();
        Ok(PooledBlock {
            block: Some(block),
            class,
            generation: self.shared.generation.load(Ordering::Acquire),
            owner: self.shared.clone(),
        })
    }

    /// Frees every cached block; returns the bytes freed. The first failure to free is kept and
    /// returned by the next [`CachingAllocator::allocate`].
    pub fn reclaim(&self) -> u64 {
        let drained: Vec<(usize, M::Block)> = self
            .shared
            .cache
            .lock()
            .drain()
            .flat_map(|(class, blocks)| blocks.into_iter().map(move |b| (class, b)))
            .collect();
        let mut freed = 0u64;
        for (class, block) in drained {
            self.shared
                .cached
                .fetch_sub(class as u64, Ordering::Relaxed);
            match self.shared.memory.raw_free(block) {
                Ok(()) => freed += class as u64,
                Err(error) => {
                    self.shared.deferred.lock().get_or_insert(error);
                }
            }
        }
        self.shared.update_gauges();
        freed
    }

    /// Forgets every block without freeing it, after the device context was destroyed: the cache
    /// is emptied and blocks still on loan are not taken back when dropped.
    pub fn forget(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let forgotten: u64 = self
            .shared
            .cache
            .lock()
            .drain()
            .map(|(class, blocks)| class as u64 * blocks.len() as u64)
            .sum();
        self.shared.cached.fetch_sub(forgotten, Ordering::Relaxed);
        self.shared.update_gauges();
    }

    /// Bytes of blocks on loan.
    pub fn in_use_bytes(&self) -> u64 {
        self.shared.in_use.load(Ordering::Relaxed)
    }

    /// Bytes of free blocks kept for reuse.
    pub fn cached_bytes(&self) -> u64 {
        self.shared.cached.load(Ordering::Relaxed)
    }
}
