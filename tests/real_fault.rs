//! Real GPU memory faults on purpose (`hipinfer chaos --real-fault-rate`): refused clearly where
//! there is no device to fault, and survived with subprocess isolation where there is one — a
//! genuine sticky 700 poisons the worker process, which is killed and replaced, zero lost.

mod support;

use std::process::Command;

use hipinfer::backend::{Backend, BackendChoice, CpuBackend, FaultPlan, FaultyBackend, Kernel};
use hipinfer::chaos::{run_campaign, ChaosConfig};
use hipinfer::{EngineConfig, Op};
use support::backends::{no_gpu, upload};
use support::tiny_model;

#[test]
fn a_campaign_with_real_faults_needs_a_gpu_backend() {
    let dir = tiny_model::write("real-fault-config");
    for backend in [BackendChoice::Cpu, BackendChoice::Auto] {
        let engine = EngineConfig {
            model: dir.clone(),
            backend,
            ..EngineConfig::default()
        };
        let mut config = ChaosConfig::new(engine, 10, 2, 1);
        config.real_fault_rate = 0.1;
        let error = run_campaign(&config, &|_, _| {}).unwrap_err().to_string();
        assert!(error.contains("real_fault_rate"), "{error}");
        assert!(error.contains("needs a GPU backend"), "{error}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_hipinfer"))
        .args([
            "chaos",
            "--backend",
            "cpu",
            "--real-fault-rate",
            "0.5",
            "--model",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a GPU backend"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_a_device_a_real_fault_is_a_clear_error_not_a_simulation() {
    let plan = FaultPlan::new(1).with_real_fault_rate(Some(Op::Launch), 1.0);
    let faulty = FaultyBackend::new(CpuBackend::with_threads(1).unwrap(), plan);
    let mut x = upload(&faulty, &[1.0f32; 4]);
    let error = faulty
        .launch(Kernel::Gelu { x: &mut x, len: 4 })
        .unwrap_err();
    assert_eq!(error.code(), 801, "{error}");
    assert!(error.to_string().contains("needs a GPU backend"), "{error}");
    // Nothing sticky was simulated on top: the next call without the rule works.
    let plain = FaultyBackend::new(CpuBackend::with_threads(1).unwrap(), FaultPlan::new(1));
    let mut y = upload(&plain, &[1.0f32; 4]);
    plain.launch(Kernel::Gelu { x: &mut y, len: 4 }).unwrap();
}

/// On a GPU (a CUDA or HIP build with a device): real out-of-bounds writes at 2 % of launches,
/// workers in subprocesses; every request answered exactly once, and workers replaced.
#[test]
fn a_real_memory_fault_is_survived_by_replacing_the_worker() {
    let backends = [
        (
            "cuda",
            hipinfer::backend::CUDA_COMPILED,
            hipinfer::backend::probe_cuda(0),
        ),
        (
            "hip",
            hipinfer::backend::HIP_COMPILED,
            hipinfer::backend::probe_hip(0),
        ),
    ];
    let mut ran = false;
    for (name, compiled, probe) in backends {
        if !compiled {
            continue;
        }
        if let Err(error) = probe {
            no_gpu(name, &error);
            continue;
        }
        let dir = tiny_model::write(&format!("real-fault-{name}"));
        let output = Command::new(env!("CARGO_BIN_EXE_hipinfer"))
            .args(["chaos", "--backend", name, "--isolation", "subprocess"])
            .args([
                "--real-fault-rate",
                "0.02",
                "--requests",
                "200",
                "--seed",
                "4",
            ])
            .arg("--model")
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr))
        });
        assert!(output.status.success(), "{report}");
        assert_eq!(report["lost"], 0, "{report}");
        assert_eq!(report["duplicated"], 0, "{report}");
        assert_eq!(report["mismatched"], 0, "{report}");
        assert!(report["worker_restarts"].as_u64().unwrap() >= 1, "{report}");
        std::fs::remove_dir_all(dir).unwrap();
        ran = true;
    }
    if !ran {
        eprintln!("no GPU backend compiled or answering: the real-fault campaign did not run");
    }
}
