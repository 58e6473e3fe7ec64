//! Choosing a backend, and the HIP backend's answer on a machine without a GPU.

use hipinfer::backend::{open, probe_cuda, probe_hip, Backend, BackendChoice, SelectedBackend};
use hipinfer::{Op, Recovery};

#[test]
fn choices_parse_and_bad_ones_name_the_setting() {
    assert_eq!(
        "auto".parse::<BackendChoice>().unwrap(),
        BackendChoice::Auto
    );
    assert_eq!(
        " CPU ".parse::<BackendChoice>().unwrap(),
        BackendChoice::Cpu
    );
    assert_eq!("hip".parse::<BackendChoice>().unwrap(), BackendChoice::Hip);
    assert_eq!(
        "CUDA".parse::<BackendChoice>().unwrap(),
        BackendChoice::Cuda
    );
    let error = "rocm".parse::<BackendChoice>().unwrap_err();
    assert_eq!(error.field, "backend");
    assert!(error.to_string().contains("\"rocm\""), "{error}");
    assert!(
        error.to_string().contains("auto, cpu, hip, cuda"),
        "{error}"
    );
}

/// `HIPINFER_REQUIRE_GPU=1`: a GPU test fails instead of skipping when no device answers.
fn require_gpu() -> bool {
    std::env::var("HIPINFER_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

#[test]
fn cpu_is_always_there() {
    match open(BackendChoice::Cpu, 0, Some(1)).unwrap() {
        SelectedBackend::Cpu(cpu) => assert_eq!(cpu.info().backend, "cpu"),
        #[allow(unreachable_patterns)]
        _ => panic!("asked for the CPU"),
    }
}

/// Without a usable GPU (this machine, CI), HIP answers with a Fatal init error at once, `hip`
/// is an error, and `auto` falls back to the CPU. On a machine with a GPU this test says so and
/// checks that `auto` picks it.
#[test]
fn without_a_gpu_hip_is_a_clear_fatal_error_and_auto_falls_back() {
    match probe_hip(0) {
        Ok(info) => {
            eprintln!(
                "a HIP device answered ({}); checking that auto picks it",
                info.name
            );
            assert!(!matches!(
                open(BackendChoice::Auto, 0, None).unwrap(),
                SelectedBackend::Cpu(_)
            ));
        }
        Err(error) => {
            if hipinfer::backend::HIP_COMPILED && require_gpu() {
                panic!("HIPINFER_REQUIRE_GPU=1 and no HIP device answered: {error}");
            }
            assert_eq!(error.op(), Op::Init);
            assert!([100, 101].contains(&error.code()), "{error}");
            assert_eq!(error.recovery(), Recovery::Fatal);
            if !hipinfer::backend::HIP_COMPILED {
                assert!(
                    error.to_string().contains("built without HIP support"),
                    "{error}"
                );
            }
            let hip = open(BackendChoice::Hip, 0, None).unwrap_err();
            assert_eq!(hip.code(), error.code());
            assert!(matches!(
                open(BackendChoice::Auto, 0, Some(1)).unwrap(),
                SelectedBackend::Cpu(_)
            ));
        }
    }
}

/// Without a usable NVIDIA GPU (this machine, CI), CUDA answers with a Fatal init error at once —
/// "no CUDA driver" when the driver library is missing, "built without CUDA support" without the
/// feature — `cuda` is an error and `auto` falls back to the CPU. With a GPU it is described.
/// `HIPINFER_REQUIRE_GPU=1` turns the no-GPU answer into a failure.
#[test]
fn without_a_gpu_cuda_is_a_clear_fatal_error_and_auto_falls_back() {
    match probe_cuda(0) {
        Ok(info) => {
            eprintln!("a CUDA device answered: {} ({})", info.name, info.arch);
            assert_eq!(info.backend, "cuda");
            assert!(info.arch.starts_with("sm_"), "{}", info.arch);
        }
        Err(error) => {
            if hipinfer::backend::CUDA_COMPILED && require_gpu() {
                panic!("HIPINFER_REQUIRE_GPU=1 and no CUDA device answered: {error}");
            }
            assert_eq!(error.op(), Op::Init);
            assert_eq!(error.recovery(), Recovery::Fatal);
            let text = error.to_string();
            if hipinfer::backend::CUDA_COMPILED {
                assert!(
                    text.contains("no CUDA driver")
                        || text.contains("cuInit")
                        || text.contains("device(s) visible"),
                    "{text}"
                );
            } else {
                assert!(text.contains("built without CUDA support"), "{text}");
            }
            let cuda = open(BackendChoice::Cuda, 0, None).unwrap_err();
            assert_eq!(cuda.code(), error.code());
            if !hipinfer::backend::is_gpu(BackendChoice::Auto, 0) {
                assert!(matches!(
                    open(BackendChoice::Auto, 0, Some(1)).unwrap(),
                    SelectedBackend::Cpu(_)
                ));
            }
        }
    }
}
