//! GGML tensor types: their codes, block sizes and bytes per block.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Bf16,
}

impl TensorType {
    /// The type of GGML code `code` (`ggml_type`), if it is one of ours.
    pub fn from_code(code: u32) -> Option<TensorType> {
        use TensorType::*;
        Some(match code {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            30 => Bf16,
            _ => return None,
        })
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (u64, u64) {
        use TensorType::*;
        match self {
            F32 => (1, 4),
            F16 | Bf16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
        }
    }

    /// Bytes of a tensor of `elements` values whose rows are `row` long: rows must be whole
    /// blocks.
    pub fn bytes_for(self, row: u64, elements: u64) -> Result<u64, String> {
        let (per_block, bytes) = self.block();
        if !row.is_multiple_of(per_block) {
            return Err(format!(
                "rows of {row} values are not whole {self} blocks of {per_block}"
            ));
        }
        (elements / per_block)
            .checked_mul(bytes)
            .ok_or_else(|| "its size overflows".to_string())
    }

    /// Whether [`super::Gguf::dequantize`] can widen it.
    pub fn dequantizes(self) -> bool {
        use TensorType::*;
        matches!(self, F32 | F16 | Bf16 | Q4_0 | Q4_1 | Q8_0)
    }

    pub fn as_str(self) -> &'static str {
        use TensorType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            Bf16 => "BF16",
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
