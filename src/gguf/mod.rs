//! GGUF, the model file of llama.cpp: a checked reader.
//!
//! [`GgufFile::open`] memory-maps a file and [`Gguf::parse`] reads its header, metadata (every
//! value type, arrays of arrays included) and tensor infos, checking every offset, size, count
//! and type against the bytes that are really there: a truncated or corrupted file, a bad magic,
//! an unknown version or tensor type, tensors that overlap or run past the end, counts no file
//! of that size could hold — each is a [`GgufError`] naming the file and the field, never a
//! panic and never an allocation larger than the file. Tensor data stays in the mapping;
//! [`Gguf::dequantize`] widens a tensor (F32, F16, BF16, Q8_0, Q4_0, Q4_1) to f32.
//!
//! No well-kept standalone GGUF crate exists (the format lives inside llama.cpp, candle and
//! ggml's Python package), so this is our own, small and bounds-checked throughout.

mod cursor;
mod dequantize;
mod error;
mod tensor_type;
mod value;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use tensor_type::TensorType;
pub use value::Value;

use cursor::Cursor;

/// `"GGUF"` as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// The alignment of tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML's limit on a tensor's dimensions.
const MAX_DIMS: u32 = 4;

/// One tensor's description: its name, shape (innermost first, as GGUF stores it), type and
/// where its bytes lie in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub kind: TensorType,
    /// Byte offset of the data from the start of the file.
    pub offset: usize,
    pub bytes: usize,
}

impl TensorInfo {
    /// Values in the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// What parsing a GGUF yields: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
}

/// A parsed GGUF over borrowed bytes (its header owned, or a [`GgufFile`]'s, borrowed).
#[derive(Debug)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    path: &'a Path,
    header: Cow<'a, Header>,
}

impl Deref for Gguf<'_> {
    type Target = Header;

    fn deref(&self) -> &Header {
        &self.header
    }
}

impl<'a> Gguf<'a> {
    /// Parses `bytes` (`path` only names the file in errors).
    pub fn parse(bytes: &'a [u8], path: &'a Path) -> Result<Gguf<'a>, GgufError> {
        let mut cursor = Cursor::new(bytes, path);
        if bytes.get(..4) != Some(&MAGIC.to_le_bytes()[..]) {
            return Err(cursor.error(
                "magic",
                "the file does not start with \"GGUF\": not a GGUF file".into(),
            ));
        }
        cursor.u32("magic")?;
        let version = cursor.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(cursor.error(
                "version",
                format!("{version} is not a supported GGUF version (2 or 3)"),
            ));
        }
        // Every tensor info takes at least 24 bytes and every key/value 13: counts beyond what
        // the file could hold are refused before anything is allocated for them.
        let tensor_count = cursor.count("tensor_count", 24)?;
        let metadata_count = cursor.count("metadata_kv_count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = cursor.string("metadata key")?;
            let value = Value::read(&mut cursor, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(cursor.error(&key, "appears twice in the metadata".into()));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(value) => match value.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(cursor.error(
                        "general.alignment",
                        format!("{value:?} is not a power of two up to 1 MiB"),
                    ))
                }
            },
        };
        let mut infos = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = cursor.string("tensor name")?;
            let dims_count = cursor.u32(&name)?;
            if dims_count == 0 || dims_count > MAX_DIMS {
                return Err(cursor.error(
                    &name,
                    format!("{dims_count} dimensions (GGML allows 1 to {MAX_DIMS})"),
                ));
            }
            let mut dims = Vec::with_capacity(dims_count as usize);
            for _ in 0..dims_count {
                dims.push(cursor.u64(&name)?);
            }
            let code = cursor.u32(&name)?;
            let kind = TensorType::from_code(code)
                .ok_or_else(|| cursor.error(&name, format!("unknown tensor type {code}")))?;
            let relative = cursor.u64(&name)?;
            infos.push((name, dims, kind, relative));
        }
        let data_start = align_up(cursor.position() as u64, alignment)
            .filter(|&start| start <= bytes.len() as u64)
            .ok_or_else(|| cursor.error("tensor data", "the file ends before its data".into()))?;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, kind, relative) in infos {
            let check = |message: String| cursor.error(&name, message);
            if relative % alignment != 0 {
                return Err(check(format!(
                    "data offset {relative} is not a multiple of the alignment {alignment}"
                )));
            }
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| check(format!("shape {dims:?} overflows")))?;
            let bytes_needed = kind
                .bytes_for(dims[0], elements)
                .map_err(|why| check(format!("shape {dims:?}: {why}")))?;
            let start = data_start
                .checked_add(relative)
                .ok_or_else(|| check(format!("data offset {relative} overflows")))?;
            let end = start
                .checked_add(bytes_needed)
                .filter(|&end| end <= bytes.len() as u64)
                .ok_or_else(|| {
                    check(format!(
                        "data at {start}..{start}+{bytes_needed} runs past the end of the file \
                         ({} bytes): truncated?",
                        bytes.len()
                    ))
                })?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset: start as usize,
                bytes: (end - start) as usize,
            });
        }
        let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
        by_start.sort_by_key(|t| t.offset);
        for pair in by_start.windows(2) {
            if pair[0].offset + pair[0].bytes > pair[1].offset {
                return Err(cursor.error(
                    &pair[1].name,
                    format!("its data overlaps tensor {}'s", pair[0].name),
                ));
            }
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
            return Err(cursor.error(pair[0], "appears twice among the tensors".into()));
        }
        Ok(Gguf {
            bytes,
            path,
            header: Cow::Owned(Header {
                version,
                alignment,
                metadata,
                tensors,
            }),
        })
    }

    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (checked to lie in the file at parse time).
    pub fn data(&self, tensor: &TensorInfo) -> &'a [u8] {
        &self.bytes[tensor.offset..tensor.offset + tensor.bytes]
    }

    /// A tensor widened to f32, in GGUF's order (innermost dimension contiguous).
    pub fn dequantize(&self, tensor: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        dequantize::to_f32(tensor.kind, self.data(tensor)).map_err(|message| GgufError::Field {
            path: self.path.to_path_buf(),
            field: tensor.name.clone(),
            message,
        })
    }
}

/// `value` rounded up to a multiple of `alignment` (`None` on overflow).
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value
        .checked_add(alignment - 1)
        .map(|v| v / alignment * alignment)
}

/// A GGUF file, memory-mapped, its header parsed once.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: crate::model::MappedFile,
    header: Header,
}

impl GgufFile {
    /// Maps `path` and checks that it parses.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let map = crate::model::MappedFile::open(&path).map_err(|source| GgufError::Io {
            path: path.clone(),
            source,
        })?;
        let header = Gguf::parse(map.bytes(), &path)?.header.into_owned();
        Ok(GgufFile { path, map, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed view, over the header read at open (no parsing again; it does not fail).
    pub fn parsed(&self) -> Result<Gguf<'_>, GgufError> {
        Ok(Gguf {
            bytes: self.map.bytes(),
            path: &self.path,
            header: Cow::Borrowed(&self.header),
        })
    }
}
