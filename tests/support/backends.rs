//! Runs one test body on every backend this build and machine have.
#![allow(dead_code)]

use hipinfer::backend::{Backend, CpuBackend, SimdLevel, Word};

/// Uploads `values` into a new buffer.
pub fn upload<B: Backend, T: Word>(backend: &B, values: &[T]) -> B::Buffer {
    let mut buffer = backend.allocate(values.len().max(1)).expect("allocate");
    backend
        .copy_to_device(values, &mut buffer)
        .expect("copy to device");
    buffer
}

/// Downloads `len` values of `buffer`.
pub fn download<B: Backend>(backend: &B, buffer: &B::Buffer, len: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; len];
    backend.synchronize().expect("synchronize");
    backend
        .copy_to_host(buffer, &mut values)
        .expect("copy to host");
    values
}

/// The CPU backend with two threads, so parallel code paths run.
pub fn cpu() -> CpuBackend {
    CpuBackend::with_threads(2).expect("cpu backend")
}

/// The CPU backend (two threads) at each SIMD level this machine has, the lower ones forced,
/// each with its level's name.
pub fn cpu_at_each_level() -> Vec<(SimdLevel, CpuBackend)> {
    let levels = SimdLevel::available();
    eprintln!(
        "CPU levels on this machine: {:?}",
        levels.iter().map(|l| l.as_str()).collect::<Vec<_>>()
    );
    levels
        .into_iter()
        .map(|level| {
            (
                level,
                CpuBackend::with_level(2, level).expect("cpu backend"),
            )
        })
        .collect()
}

/// A GPU backend that failed to open: with `HIPINFER_REQUIRE_GPU=1` the test fails, otherwise
/// it says why it skipped (libtest shows it with `--nocapture`, and CI's log keeps it).
#[allow(dead_code)]
pub fn no_gpu(backend: &str, error: &dyn std::fmt::Display) {
    if std::env::var("HIPINFER_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("HIPINFER_REQUIRE_GPU=1 and the {backend} backend did not open: {error}");
    }
    eprintln!(
        "SKIPPED on {backend} (no device; HIPINFER_REQUIRE_GPU=1 makes this a failure): {error}"
    );
}

/// The backend if it opened; else `None`, through [`no_gpu`].
#[allow(dead_code)]
fn opened<B>(backend: &str, result: Result<B, hipinfer::HipError>) -> Option<B> {
    result.map_err(|error| no_gpu(backend, &error)).ok()
}

/// The HIP backend when this build has it and a device answers; `None` (with the reason
/// printed) otherwise.
#[cfg(feature = "hip")]
pub fn hip() -> Option<hipinfer::backend::HipBackend> {
    opened("hip", hipinfer::backend::HipBackend::new(0))
}

/// The CUDA backend when this build has it and a device answers; `None` (with the reason
/// printed) otherwise.
#[cfg(feature = "cuda")]
pub fn cuda() -> Option<hipinfer::backend::CudaBackend> {
    opened("cuda", hipinfer::backend::CudaBackend::new(0))
}

/// `backend_tests!(name => body_fn, …)` makes `mod name { cpu, hip, cuda }` tests calling
/// `body_fn(&backend)` on each backend (the CPU's at each of its SIMD levels).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident => $body:path),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn cpu() {
                    for (level, backend) in $crate::support::backends::cpu_at_each_level() {
                        eprintln!("at {level}");
                        $body(&backend);
                    }
                }

                #[cfg(feature = "hip")]
                #[test]
                fn hip() {
                    if let Some(backend) = $crate::support::backends::hip() {
                        $body(&backend);
                    }
                }

                #[cfg(feature = "cuda")]
                #[test]
                fn cuda() {
                    if let Some(backend) = $crate::support::backends::cuda() {
                        $body(&backend);
                    }
                }
            }
        )*
    };
}

/// Max |a − b| / max(1, |b|) over two equal-length slices.
pub fn max_relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(1.0))
        .fold(0.0, f32::max)
}
