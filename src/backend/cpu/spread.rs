//! Where a kernel's pieces run: spread over the backend's thread pool, or in turn on the calling
//! thread. Waking the pool costs tens of microseconds on a VM, more than a LayerNorm of 8 rows
//! takes, so small launches (single-request latency) run inline.

use rayon::prelude::*;

/// Launches touching fewer values than this run on the calling thread.
pub const INLINE_MAX_VALUES: usize = 1 << 15;

/// How a kernel's independent pieces are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Over the pool's threads (the caller is inside `ThreadPool::install`).
    Pool,
    /// One after another on the calling thread.
    Inline,
}

impl Spread {
    /// `Inline` for launches that touch fewer than [`INLINE_MAX_VALUES`] values.
    pub fn for_values(values: usize) -> Spread {
        if values < INLINE_MAX_VALUES {
            Spread::Inline
        } else {
            Spread::Pool
        }
    }

    /// Calls `f(index, chunk)` for each `len`-sized chunk of `data` (at least `min_per_task`
    /// chunks per task when spread).
    pub fn chunks_mut<F>(self, data: &mut [f32], len: usize, min_per_task: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Send + Sync,
    {
        match self {
            Spread::Pool => data
                .par_chunks_mut(len)
                .with_min_len(min_per_task)
                .enumerate()
                .for_each(|(i, chunk)| f(i, chunk)),
            Spread::Inline => data
                .chunks_mut(len)
                .enumerate()
                .for_each(|(i, chunk)| f(i, chunk)),
        }
    }

    /// `(0..count).map(f)` collected in order.
    pub fn map<T, F>(self, count: usize, min_per_task: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Send + Sync,
    {
        match self {
            Spread::Pool => (0..count)
                .into_par_iter()
                .with_min_len(min_per_task)
                .map(f)
                .collect(),
            Spread::Inline => (0..count).map(f).collect(),
        }
    }
}
