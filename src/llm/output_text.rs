//! `OutputText`: a generation's text as its tokens come — decoded without half characters
//! ([`StreamDecoder`]), cut at the first stop string, and released to the stream only once no
//! stop string can still begin in it, so a client never sees a piece of a stop string.

use super::{GgufTokenizer, StreamDecoder, TokenizerError};

#[derive(Debug)]
pub struct OutputText<'t> {
    decoder: Option<StreamDecoder<'t>>,
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already released.
    emitted: usize,
    stopped: bool,
}

/// The longest suffix of `text` that begins some stop string (held back while streaming).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if text.ends_with(&stop[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

impl<'t> OutputText<'t> {
    pub fn new(tokenizer: &'t GgufTokenizer, stops: &[String]) -> Self {
        OutputText {
            decoder: Some(StreamDecoder::new(tokenizer)),
            stops: stops.to_vec(),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Adds `token`'s text; returns the text that became final (often empty) and whether a
    /// stop string ended the generation (the text is cut before it).
    pub fn push(&mut self, token: u32) -> Result<(String, bool), TokenizerError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok((String::new(), self.stopped));
        };
        self.text.push_str(&decoder.push(token)?);
        let searched = &self.text[self.emitted.min(self.text.len())..];
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| searched.find(s.as_str()))
            .min()
        {
            self.text.truncate(self.emitted + at);
            self.stopped = true;
            self.decoder = None;
            return Ok((self.release(self.text.len()), true));
        }
        let safe = self.text.len() - held_back(&self.text, &self.stops);
        Ok((self.release(safe), false))
    }

    /// At the end: what was still held back (an unfinished character, the start of a stop
    /// string that never completed).
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        if let Some(decoder) = self.decoder.take() {
            self.text.push_str(&decoder.finish()?);
        }
        Ok(self.release(self.text.len()))
    }

    /// The text so far (released or not).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self, upto: usize) -> String {
        if upto <= self.emitted {
            return String::new();
        }
        let piece = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        piece
    }
}
