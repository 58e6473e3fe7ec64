//! A model file memory-mapped read-only: safetensors weights and GGUF files both read through
//! this, so the one `unsafe` of mapping a file lives here.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and private to this process. It stays valid while the
        // file is not truncated or rewritten underneath; a model file is not modified while a
        // server reads it, and every read of it is bounds-checked (safetensors' views, the GGUF
        // reader's cursor).
        let map = unsafe { Mmap::map(&file) }?;
        Ok(MappedFile { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
