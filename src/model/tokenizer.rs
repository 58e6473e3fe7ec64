//! The Hugging Face tokenizer of the model folder (`tokenizer.json`), with the file's fixed
//! padding turned off and truncation at the model's `max_seq_length`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

use super::error::ModelError;

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

/// A tokenizer that never pads and truncates at `max_length` tokens (special tokens included).
#[derive(Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
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
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes `text` with the special tokens (`[CLS] … [SEP]`), truncated to `max_length`.
    pub fn encode(&self, index: usize, text: &str) -> Result<Encoding, ModelError> {
        self.encode_noting_truncation(index, text).map(|(e, _)| e)
    }

    /// [`TextTokenizer::encode`], also saying whether the text was cut at `max_length`.
    pub fn encode_noting_truncation(
        &self,
        index: usize,
        text: &str,
    ) -> Result<(Encoding, bool), ModelError> {
        let encoding = self.hf_encode(index, text)?;
        let truncated = !encoding.get_overflowing().is_empty();
        Ok((
            Encoding {
                ids: encoding.get_ids().to_vec(),
                type_ids: encoding.get_type_ids().to_vec(),
            },
            truncated,
        ))
    }

    /// The tokens of `text` with their texts and offsets, truncated to `max_length`.
    pub fn tokens(&self, index: usize, text: &str) -> Result<Vec<Token>, ModelError> {
        let encoding = self.hf_encode(index, text)?;
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
                start,
                stop,
            })
            .collect())
    }

    /// Input `index` through the Hugging Face tokenizer, special tokens added.
    fn hf_encode(&self, index: usize, text: &str) -> Result<tokenizers::Encoding, ModelError> {
        self.inner
            .encode(text, true)
            .map_err(|e| ModelError::Input {
                index,
                message: format!("could not tokenize: {e}"),
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
