//! Choosing a backend, and the HIP backend's answer on a machine without a GPU.

use hipinfer::backend::{open, probe_hip, Backend, BackendChoice, SelectedBackend};
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
    let error = "cuda".parse::<BackendChoice>().unwrap_err();
    assert_eq!(error.field, "backend");
    assert!(error.to_string().contains("\"cuda\""), "{error}");
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
