//! The kernels' code objects, compiled by `build.rs` with hipcc and embedded in the binary.

use crate::backend::gpu::CodeObjects;

/// The architectures the code objects were built for (`HIPINFER_OFFLOAD_ARCH`).
pub const BUILT_ARCHS: &str = env!("HIPINFER_BUILT_ARCHS");

/// Every code object, by kernel file name.
const ALL: [(&str, &[u8]); 6] = [
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
    (
        "fault",
        include_bytes!(concat!(env!("OUT_DIR"), "/fault.co")),
    ),
];

pub const CODE: CodeObjects = CodeObjects {
    all: &ALL,
    built_for: BUILT_ARCHS,
    chosen_by: "HIPINFER_OFFLOAD_ARCH",
};
