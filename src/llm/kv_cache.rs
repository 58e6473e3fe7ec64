//! `KvCache`: keys and values of every layer in backend buffers from the caching allocator,
//! `rows` token positions of them, and [`KvSlot`]: one sequence's range of those rows. A single
//! generation owns a whole cache; the generation engine gives each running sequence a slot of
//! one shared cache. It holds nothing the host does not also have: the prompt and the tokens
//! generated so far rebuild it on a fresh context (a prefill of them), which is how generation
//! survives a reset.

use crate::backend::Backend;

use super::LlamaConfig;

#[derive(Debug)]
pub struct KvCache<Buf> {
    /// Per layer: K, then V, each `[rows × kv_heads·head_dim]`.
    pub(super) layers: Vec<(Buf, Buf)>,
    rows: usize,
    /// Tokens held when the cache is one sequence's ([`super::forward`]).
    len: usize,
}

/// One sequence's rows of a cache: positions `0..capacity` at rows `base..base + capacity`,
/// `len` of them written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSlot {
    pub base: usize,
    pub capacity: usize,
    pub len: usize,
}

impl<Buf> KvCache<Buf> {
    /// Room for `rows` token positions on `backend`.
    pub fn new<B: Backend<Buffer = Buf>>(
        backend: &B,
        config: &LlamaConfig,
        rows: usize,
    ) -> Result<KvCache<Buf>, B::Error> {
        let words = rows.max(1) * config.kv_width();
        let mut layers = Vec::with_capacity(config.layers);
        for _ in 0..config.layers {
            layers.push((backend.allocate(words)?, backend.allocate(words)?));
        }
        Ok(KvCache {
            layers,
            rows,
            len: 0,
        })
    }

    /// Token positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.rows
    }

    /// Tokens it holds as one sequence's cache (the position of the next one).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole cache as one sequence's slot.
    pub(super) fn whole(&self) -> KvSlot {
        KvSlot {
            base: 0,
            capacity: self.rows,
            len: self.len,
        }
    }

    /// Records that `tokens` more positions of the one sequence were written.
    pub(super) fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}
