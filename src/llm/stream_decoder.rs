//! Streaming detokenization that never emits half a UTF-8 character: byte-level BPE tokens can
//! end inside a character (an emoji spans up to four tokens), so text is held back until the
//! pending tokens decode to whole characters.

use super::{GgufTokenizer, TokenizerError};

/// At most this many tokens are held waiting for a character to complete (no UTF-8 character
/// spans more than four bytes, so more means the bytes are invalid: they are emitted as U+FFFD).
const MAX_PENDING: usize = 4;

#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t GgufTokenizer,
    pending: Vec<u32>,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t GgufTokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// The text that `id` completes (often empty while a character is unfinished).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.pending.push(id);
        let text = self.tokenizer.decode(&self.pending, true)?;
        if text.ends_with('\u{FFFD}') && self.pending.len() < MAX_PENDING {
            return Ok(String::new());
        }
        self.pending.clear();
        Ok(text)
    }

    /// What is still held back (an unfinished character, as U+FFFD), at the end of a stream.
    pub fn finish(mut self) -> Result<String, TokenizerError> {
        let text = self.tokenizer.decode(&self.pending, true)?;
        self.pending.clear();
        Ok(text)
    }
}
