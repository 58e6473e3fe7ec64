//! The kernels' fatbins, compiled by `build.rs` with nvcc from `kernels/*.hip` and embedded.

use crate::backend::gpu::CodeObjects;

/// What the fatbins hold: machine code per `HIPINFER_CUDA_ARCH`, and PTX of the newest.
pub const BUILT_ARCHS: &str = env!("HIPINFER_CUDA_BUILT_ARCHS");

const ALL: [(&str, &[u8]); 6] = [
    (
        "gemm",
        include_bytes!(concat!(env!("OUT_DIR"), "/gemm.fatbin")),
    ),
    (
        "elementwise",
        include_bytes!(concat!(env!("OUT_DIR"), "/elementwise.fatbin")),
    ),
    (
        "norm",
        include_bytes!(concat!(env!("OUT_DIR"), "/norm.fatbin")),
    ),
    (
        "attention",
        include_bytes!(concat!(env!("OUT_DIR"), "/attention.fatbin")),
    ),
    (
        "pooling",
        include_bytes!(concat!(env!("OUT_DIR"), "/pooling.fatbin")),
    ),
    (
        "fault",
        include_bytes!(concat!(env!("OUT_DIR"), "/fault.fatbin")),
    ),
];

pub const CODE: CodeObjects = CodeObjects {
    all: &ALL,
    built_for: BUILT_ARCHS,
    chosen_by: "HIPINFER_CUDA_ARCH",
};
