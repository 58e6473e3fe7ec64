//! Writes small GGUF files for tests: metadata of any value type and tensors of raw bytes.

/// A metadata value as GGUF encodes it: (type code, encoded bytes).
pub fn string(text: &str) -> (u32, Vec<u8>) {
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    (8, bytes)
}

pub fn u32_value(value: u32) -> (u32, Vec<u8>) {
    (4, value.to_le_bytes().to_vec())
}

pub fn f32_value(value: f32) -> (u32, Vec<u8>) {
    (6, value.to_le_bytes().to_vec())
}

/// An array of strings.
pub fn strings(items: &[&str]) -> (u32, Vec<u8>) {
    let mut bytes = 8u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for item in items {
        bytes.extend_from_slice(&string(item).1);
    }
    (9, bytes)
}

/// A tensor: name, dims (innermost first), GGML type code, data.
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A whole GGUF v3 file, data aligned to 32.
pub fn file(metadata: &[(&str, (u32, Vec<u8>))], tensors: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, (code, bytes)) in metadata {
        out.extend_from_slice(&string(key).1);
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for tensor in tensors {
        out.extend_from_slice(&string(&tensor.name).1);
        out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
        for d in &tensor.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&tensor.kind.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset += (tensor.data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    let start = out.len();
    for (tensor, offset) in tensors.iter().zip(offsets) {
        out.resize(start + offset as usize, 0);
        out.extend_from_slice(&tensor.data);
    }
    out
}
