//! The Hugging Face tokenizer of the model folder (`tokenizer.json`), with the file's fixed
//! padding turned off, and bounded: an input longer than what truncation keeps is never handed
//! to the tokenizer whole.
//!
//! Tokenizing costs about 90 bytes of memory per input byte (normalized text, offsets,
//! alignments), so a 1.9 MB input would cost 165 MB to keep 256 tokens of it. Instead, a window
//! of the text — from its start, or its end when truncating on the left — is tokenized, growing
//! fourfold until the pre-tokenized words that lie wholly inside it give the tokens that are
//! kept: the word cut by the window's edge is dropped, so each kept token is exactly the token
//! a whole-text tokenization gives there (pre-tokenization splits text into words that are
//! tokenized on their own). The window stops growing at [`WINDOW_BYTES_PER_TOKEN`] bytes per
//! kept token (128 KiB for 256 tokens); only a text whose kept tokens lie further in — words of
//! thousands of characters, which WordPiece turns into `[UNK]` — is cut there.

use std::path::{Path, PathBuf};

use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use super::error::ModelError;

/// The first window, in bytes per kept token (most texts fit in it).
const FIRST_WINDOW_BYTES_PER_TOKEN: usize = 16;
/// The largest window, in bytes per kept token.
pub const WINDOW_BYTES_PER_TOKEN: usize = 512;

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// One token of a text, as `/tokenize` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    pub id: u32,
    /// The token's text (`##ing` for a continuation piece, `[CLS]` for a special token).
    pub text: String,
    /// Whether the tokenizer added it (`[CLS]`, `[SEP]`).
    pub special: bool,
    /// Byte offsets of the token in the input (`0..0` for special tokens).
    pub start: usize,
    pub stop: usize,
}

/// Which end of a long input is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// The first tokens (TEI's default, `truncation_direction: "right"`).
    #[default]
    Right,
    /// The last tokens.
    Left,
}

/// What to do with an input longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongInput {
    /// Keep the tokens at this end.
    Truncate(Truncation),
    /// Refuse it (an error saying so).
    Refuse,
}

/// A tokenizer that never pads, tokenizes at most a bounded window of each input and keeps
/// `max_length` tokens (special tokens included).
#[derive(Debug)]
pub struct TextTokenizer {
    /// Without truncation or padding: windows are cut and truncated here.
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
    /// Special tokens the post-processor adds (`[CLS]`, `[SEP]`: 2).
    added: usize,
}

/// A tokenized input and whether it was cut.
struct Bounded {
    encoding: tokenizers::Encoding,
    truncated: bool,
    /// Where the window began in the input (offsets of the encoding are relative to it).
    window_start: usize,
}

impl TextTokenizer {
    pub fn load(path: &Path, max_length: usize) -> Result<TextTokenizer, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let invalid = |message: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| invalid(e.to_string()))?;
        let added = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length <= added {
            return Err(invalid(format!(
                "max_length {max_length} leaves no room beside the {added} special tokens"
            )));
        }
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            max_length,
            added,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes `text` with the special tokens (`[CLS] … [SEP]`), its first tokens kept.
    pub fn encode(&self, index: usize, text: &str) -> Result<Encoding, ModelError> {
        self.encode_noting_truncation(index, text).map(|(e, _)| e)
    }

    /// [`TextTokenizer::encode`], also saying whether the text was cut at `max_length`.
    pub fn encode_noting_truncation(
        &self,
        index: usize,
        text: &str,
    ) -> Result<(Encoding, bool), ModelError> {
        self.encode_within(
            index,
            text,
            self.max_length,
            LongInput::Truncate(Truncation::Right),
        )
    }

    /// Tokenizes `text` into at most `max_tokens` tokens (special tokens included, at most
    /// `max_length`): a longer text is cut at the end `long` says, or refused. Also says whether
    /// it was cut.
    pub fn encode_within(
        &self,
        index: usize,
        text: &str,
        max_tokens: usize,
        long: LongInput,
    ) -> Result<(Encoding, bool), ModelError> {
        let bounded = self.bounded(index, text, max_tokens, long)?;
        let encoding = &bounded.encoding;
        Ok((
            Encoding {
                ids: encoding.get_ids().to_vec(),
                type_ids: encoding.get_type_ids().to_vec(),
            },
            bounded.truncated,
        ))
    }

    /// The tokens of `text` with their texts and offsets, its first `max_length` kept.
    pub fn tokens(&self, index: usize, text: &str) -> Result<Vec<Token>, ModelError> {
        let bounded = self.bounded(
            index,
            text,
            self.max_length,
            LongInput::Truncate(Truncation::Right),
        )?;
        let encoding = &bounded.encoding;
        let shift = bounded.window_start;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_offsets())
            .map(|(((&id, token), &special), &(start, stop))| Token {
                id,
                text: token.clone(),
                special: special != 0,
                start: if special != 0 { start } else { start + shift },
                stop: if special != 0 { stop } else { stop + shift },
            })
            .collect())
    }

    /// The text of token `ids` (special tokens left out when `skip_special`); an id outside the
    /// vocabulary is an error naming it.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        let vocabulary = self.inner.get_vocab_size(true);
        if let Some((at, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocabulary)
        {
            return Err(ModelError::Input {
                index: at,
                message: format!(
                    "token id {id} (at {at}) is outside the vocabulary of {vocabulary} tokens"
                ),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Input {
                index: 0,
                message: format!("could not decode: {e}"),
            })
    }

    /// Tokenizes a growing window of `text` until the tokens kept are known (module docs).
    fn bounded(
        &self,
        index: usize,
        text: &str,
        max_tokens: usize,
        long: LongInput,
    ) -> Result<Bounded, ModelError> {
        let keep = max_tokens.clamp(self.added + 1, self.max_length) - self.added;
        let direction = match long {
            LongInput::Truncate(Truncation::Left) => Truncation::Left,
            _ => Truncation::Right,
        };
        let largest = keep.saturating_mul(WINDOW_BYTES_PER_TOKEN).max(1);
        let mut window = keep.saturating_mul(FIRST_WINDOW_BYTES_PER_TOKEN).max(1);
        loop {
            let whole = text.len() <= window;
            let (start, part) = if whole {
                (0, text)
            } else {
                cut(text, window, direction)
            };
            let mut encoding = self.raw_encode(index, part)?;
            if !whole && window < largest {
                drop_cut_word(&mut encoding, direction);
            }
            // Enough whole-word tokens (one more than kept tells a refusal it is too long), or
            // the whole text, or the largest window: the tokens kept are known.
            let known = encoding.len() > keep;
            if whole || known || window >= largest {
                let truncated = encoding.len() > keep || !whole;
                if truncated && long == LongInput::Refuse {
                    return Err(ModelError::Input {
                        index,
                        message: format!(
                            "input {index} is longer than {max_tokens} tokens and truncation is off"
                        ),
                    });
                }
                encoding.truncate(
                    keep,
                    0,
                    match direction {
                        Truncation::Right => TruncationDirection::Right,
                        Truncation::Left => TruncationDirection::Left,
                    },
                );
                let encoding = self.inner.post_process(encoding, None, true).map_err(|e| {
                    ModelError::Input {
                        index,
                        message: format!("could not tokenize: {e}"),
                    }
                })?;
                return Ok(Bounded {
                    encoding,
                    truncated,
                    window_start: start,
                });
            }
            window = window.saturating_mul(4).min(largest);
        }
    }

    /// `text` through the tokenizer, without special tokens or truncation.
    fn raw_encode(&self, index: usize, text: &str) -> Result<tokenizers::Encoding, ModelError> {
        self.inner
            .encode(text, false)
            .map_err(|e| ModelError::Input {
                index,
                message: format!("could not tokenize: {e}"),
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The first (right) or last (left) `bytes` of `text`, cut at a character boundary, with where
/// the part starts.
fn cut(text: &str, bytes: usize, direction: Truncation) -> (usize, &str) {
    match direction {
        Truncation::Right => {
            let mut end = bytes.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (0, &text[..end])
        }
        Truncation::Left => {
            let mut start = text.len().saturating_sub(bytes);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            (start, &text[start..])
        }
    }
}

/// Drops the tokens of the word the window's edge may have cut: the last word of a prefix, the
/// first of a suffix.
fn drop_cut_word(encoding: &mut tokenizers::Encoding, direction: Truncation) {
    let words = encoding.get_word_ids();
    let n = words.len();
    let cut = match direction {
        Truncation::Right => {
            let last = words.last().copied().flatten();
            let keep = words.iter().rposition(|w| *w != last).map_or(0, |i| i + 1);
            n - keep
        }
        Truncation::Left => {
            let first = words.first().copied().flatten();
            words.iter().position(|w| *w != first).unwrap_or(n)
        }
    };
    if cut == 0 {
        return;
    }
    match direction {
        Truncation::Right => encoding.truncate(n - cut, 0, TruncationDirection::Right),
        Truncation::Left => encoding.truncate(n - cut, 0, TruncationDirection::Left),
    }
}
