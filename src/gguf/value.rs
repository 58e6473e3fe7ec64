//! Metadata values: every GGUF value type, arrays (of arrays) included.

use super::cursor::Cursor;
use super::GgufError;

/// How deep arrays of arrays may nest (GGUF files in the wild use one level).
const MAX_DEPTH: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Reads a value: its type code, then the value (`key` names it in errors).
    pub(super) fn read(cursor: &mut Cursor<'_>, key: &str, depth: u32) -> Result<Value, GgufError> {
        let code = cursor.u32(key)?;
        Value::read_typed(cursor, key, code, depth)
    }

    fn read_typed(
        cursor: &mut Cursor<'_>,
        key: &str,
        code: u32,
        depth: u32,
    ) -> Result<Value, GgufError> {
        Ok(match code {
            0 => Value::U8(cursor.u8(key)?),
            1 => Value::I8(cursor.u8(key)? as i8),
            2 => Value::U16(cursor.u16(key)?),
            3 => Value::I16(cursor.u16(key)? as i16),
            4 => Value::U32(cursor.u32(key)?),
            5 => Value::I32(cursor.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(cursor.u32(key)?)),
            7 => match cursor.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(cursor.error(key, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(cursor.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(cursor.error(key, "arrays nest too deep".into()));
                }
                let element = cursor.u32(key)?;
                let size = minimum_size(element).ok_or_else(|| {
                    cursor.error(key, format!("unknown array element type {element}"))
                })?;
                let count = cursor.count(key, size)?;
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    values.push(Value::read_typed(cursor, key, element, depth + 1)?);
                }
                Value::Array(values)
            }
            10 => Value::U64(cursor.u64(key)?),
            11 => Value::I64(cursor.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(cursor.u64(key)?)),
            _ => return Err(cursor.error(key, format!("unknown value type {code}"))),
        })
    }

    /// An unsigned integer value of any width (negative ones are `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(values) => Some(values),
            _ => None,
        }
    }

    /// A short description for listings: the value, or an array's element count.
    pub fn summary(&self) -> String {
        match self {
            Value::Array(values) => format!("[{} values]", values.len()),
            Value::String(s) if s.chars().count() > 80 => {
                let head: String = s.chars().take(80).collect();
                format!("{head:?}… ({} bytes)", s.len())
            }
            Value::String(s) => format!("{s:?}"),
            other => format!("{other:?}"),
        }
    }
}

/// The fewest bytes one element of type `code` takes (a string: its 8-byte length).
fn minimum_size(code: u32) -> Option<usize> {
    Some(match code {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10 | 11 | 12 => 8,
        9 => 12,
        _ => return None,
    })
}
