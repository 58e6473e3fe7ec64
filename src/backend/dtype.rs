//! `Dtype`: the precision of the weights of the model's matrix products. `f32` (the default)
//! matches PyTorch; `bf16` and `int8` halve and quarter the weights' memory traffic, and run on
//! the CPU's bf16 (AVX512_BF16) or int8 (VNNI) dot-product instructions where it has them.

use crate::error::ConfigError;

/// The weights' precision for the matrix products (everything else stays f32).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// Weights stored as bfloat16; products in bf16 with f32 accumulation (AVX512_BF16), or
    /// upcast to f32 on CPUs without it.
    Bf16,
    /// Weights quantized to int8 per output channel (symmetric), activations quantized per row
    /// on the fly; products in int8 with i32 accumulation (VNNI, or portable code).
    Int8,
}

impl Dtype {
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::Bf16, Dtype::Int8];

    pub const fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            "int8" | "i8" => Ok(Dtype::Int8),
            _ => Err(ConfigError::new(
                "dtype",
                format!("{text:?} is not one of f32, bf16, int8"),
            )),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
