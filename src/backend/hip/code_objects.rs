//! The kernels' code objects, compiled by `build.rs` with hipcc and embedded in the binary.

use crate::backend::kernel::KernelId;

/// The architectures the code objects were built for (`HIPINFER_OFFLOAD_ARCH`).
pub const BUILT_ARCHS: &str = env!("HIPINFER_BUILT_ARCHS");

/// Every code object, by kernel file name.
pub const ALL: [(&str, &[u8]); 5] = [
    ("gemm", include_bytes!(concat!(env!("OUT_DIR"), "/gemm.co"))),
    (
        "elementwise",
        include_bytes!(concat!(env!("OUT_DIR"), "/elementwise.co")),
    ),
    ("norm", include_bytes!(concat!(env!("OUT_DIR"), "/norm.co"))),
    (
        "attention",
        include_bytes!(concat!(env!("OUT_DIR"), "/attention.co")),
    ),
    (
        "pooling",
        include_bytes!(concat!(env!("OUT_DIR"), "/pooling.co")),
    ),
];

/// The `kernels/*.hip` file a kernel lives in.
pub const fn file_of(id: KernelId) -> &'static str {
    match id {
        KernelId::Gemm => "gemm",
        KernelId::Embed | KernelId::Gelu | KernelId::Add => "elementwise",
        KernelId::LayerNorm | KernelId::L2Normalize => "norm",
        KernelId::Attention => "attention",
        KernelId::MeanPool => "pooling",
    }
}
