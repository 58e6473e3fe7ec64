//! Little-endian reads over the file's bytes, each checked against what is left.

use std::path::Path;

use super::GgufError;

pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Cursor { bytes, at: 0, path }
    }

    pub fn position(&self) -> usize {
        self.at
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub fn error(&self, field: &str, message: String) -> GgufError {
        GgufError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            message,
        }
    }

    pub fn take(&mut self, len: usize, field: &str) -> Result<&'a [u8], GgufError> {
        if len > self.remaining() {
            return Err(self.error(
                field,
                format!(
                    "needs {len} bytes at offset {}, the file has {} left: truncated?",
                    self.at,
                    self.remaining()
                ),
            ));
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &str) -> Result<u16, GgufError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub fn u32(&mut self, field: &str) -> Result<u32, GgufError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, field: &str) -> Result<u64, GgufError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A count of items taking at least `min_bytes` each: refused when the rest of the file
    /// could not hold that many.
    pub fn count(&mut self, field: &str, min_bytes: usize) -> Result<usize, GgufError> {
        let count = self.u64(field)?;
        let most = (self.remaining() / min_bytes.max(1)) as u64;
        if count > most {
            return Err(self.error(
                field,
                format!(
                    "{count} items cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(count as usize)
    }

    /// A GGUF string: u64 length, then UTF-8 bytes.
    pub fn string(&mut self, field: &str) -> Result<String, GgufError> {
        let len = self.count(field, 1)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.error(field, "a string that is not UTF-8".into()))
    }
}
