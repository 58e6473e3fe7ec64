//! `KvCache`: one sequence's keys and values, every layer, in backend buffers from the caching
//! allocator — sized for the sequence's whole context when it starts, given back when it drops.
//! It holds nothing the host does not also have: the prompt and the tokens generated so far
//! rebuild it on a fresh context (a prefill of them), which is how generation survives a reset.

use crate::backend::Backend;

use super::LlamaConfig;

#[derive(Debug)]
pub struct KvCache<Buf> {
    /// Per layer: K, then V, each `[capacity × kv_heads·head_dim]`.
    pub(super) layers: Vec<(Buf, Buf)>,
    capacity: usize,
    len: usize,
}

impl<Buf> KvCache<Buf> {
    /// Room for `capacity` tokens on `backend`.
    pub fn new<B: Backend<Buffer = Buf>>(
        backend: &B,
        config: &LlamaConfig,
        capacity: usize,
    ) -> Result<KvCache<Buf>, B::Error> {
        let words = capacity * config.kv_width();
        let mut layers = Vec::with_capacity(config.layers);
        for _ in 0..config.layers {
            layers.push((backend.allocate(words)?, backend.allocate(words)?));
        }
        Ok(KvCache {
            layers,
            capacity,
            len: 0,
        })
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens it holds (the position of the next one).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records that `tokens` more positions were written.
    pub(super) fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}
