//! Widening tensor data to f32: the reference semantics of each block type (ggml's
//! `dequantize_row_*`), used for checks and for backends that compute in f32.

use super::TensorType;

fn f16(bytes: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32()
}

/// `data` (whole blocks, checked at parse time) as f32 values.
pub fn to_f32(kind: TensorType, data: &[u8]) -> Result<Vec<f32>, String> {
    let (per_block, bytes) = kind.block();
    let (per_block, bytes) = (per_block as usize, bytes as usize);
    if !data.len().is_multiple_of(bytes) {
        return Err(format!("{} bytes are not whole {kind} blocks", data.len()));
    }
    let mut out = Vec::with_capacity(data.len() / bytes * per_block);
    let blocks = data.chunks_exact(bytes);
    match kind {
        TensorType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        TensorType::F16 => out.extend(blocks.map(f16)),
        TensorType::Bf16 => out.extend(
            blocks.map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        // {f16 d; i8 q[32]}: d · q
        TensorType::Q8_0 => {
            for block in blocks {
                let d = f16(block);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        // {f16 d; u8 q[16]}: low nibbles are values 0..16, high nibbles 16..32; d · (q − 8)
        TensorType::Q4_0 => {
            for block in blocks {
                let d = f16(block);
                let q = &block[2..18];
                out.extend(q.iter().map(|&b| d * (f32::from(b & 0x0f) - 8.0)));
                out.extend(q.iter().map(|&b| d * (f32::from(b >> 4) - 8.0)));
            }
        }
        // {f16 d; f16 m; u8 q[16]}: d · q + m
        TensorType::Q4_1 => {
            for block in blocks {
                let (d, m) = (f16(block), f16(&block[2..]));
                let q = &block[4..20];
                out.extend(q.iter().map(|&b| d * f32::from(b & 0x0f) + m));
                out.extend(q.iter().map(|&b| d * f32::from(b >> 4) + m));
            }
        }
        other => return Err(format!("{other} tensors cannot be dequantized yet")),
    }
    Ok(out)
}
