//! Resilient<FaultyBackend<CpuBackend>>: injected faults are survived with bit-identical results,
//! and the retry metrics match what was injected, exactly.

mod support;

use std::sync::Arc;

use hipinfer::backend::{
    Activation, Backend, CpuBackend, FaultPlan, FaultyBackend, Kernel, Resilient,
};
use hipinfer::retry::{
    BreakerConfig, FakeClock, GiveUpReason, RetryConfig, RetryPolicy, RetryState,
};
use hipinfer::{HipError, Op, Recovery};
use prometheus::Registry;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{sample, scrape};

/// A fixed sequence of every kind of op: upload, GEMM + GELU, LayerNorm, attention, pooling,
/// normalisation, download. Returns the downloaded embeddings of each round.
fn workload<B: Backend>(backend: &B, rounds: usize) -> Result<Vec<Vec<f32>>, B::Error> {
    let (batch, seq, heads, head_dim) = (2, 9, 2, 8);
    let hidden = heads * head_dim;
    let tokens = batch * seq;
    let mut rng = SmallRng::seed_from_u64(11);
    let mut random =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let (w_qkv, b_qkv, gamma, beta) = (
        random(3 * hidden * hidden),
        random(3 * hidden),
        random(hidden),
        random(hidden),
    );
    let mask: Vec<f32> = (0..tokens)
        .map(|t| if t % seq < 7 || t < seq { 1.0 } else { 0.0 })
        .collect();
    let mut outputs = Vec::new();
    for _ in 0..rounds {
        let x = random(tokens * hidden);
        let upload = |values: &[f32]| -> Result<B::Buffer, B::Error> {
            let mut buffer = backend.allocate(values.len())?;
            backend.copy_to_device(values, &mut buffer)?;
            Ok(buffer)
        };
        let (bx, bw, bb, bg, bbeta, bm) = (
            upload(&x)?,
            upload(&w_qkv)?,
            upload(&b_qkv)?,
            upload(&gamma)?,
            upload(&beta)?,
            upload(&mask)?,
        );
        let mut qkv = backend.allocate(tokens * 3 * hidden)?;
        backend.launch(Kernel::Gemm {
            input: &bx,
            weight: &bw,
            bias: Some(&bb),
            out: &mut qkv,
            m: tokens,
            n: 3 * hidden,
            k: hidden,
            activation: Activation::Gelu,
        })?;
        let mut context = backend.allocate(tokens * hidden)?;
        backend.launch(Kernel::Attention {
            qkv: &qkv,
            mask: &bm,
            out: &mut context,
            batch,
            seq,
            heads,
            head_dim,
        })?;
        let mut normed = backend.allocate(tokens * hidden)?;
        let mut copy = backend.allocate(tokens * hidden)?;
        backend.copy_on_device(&bx, &mut copy, tokens * hidden)?;
        backend.launch(Kernel::LayerNorm {
            input: &context,
            residual: Some(&copy),
            gamma: &bg,
            beta: &bbeta,
            out: &mut normed,
            rows: tokens,
            cols: hidden,
            eps: 1e-12,
        })?;
        let mut pooled = backend.allocate(batch * hidden)?;
        backend.launch(Kernel::MeanPool {
            input: &normed,
            mask: &bm,
            out: &mut pooled,
            batch,
            seq,
            hidden,
        })?;
        backend.launch(Kernel::L2Normalize {
            x: &mut pooled,
            rows: batch,
            cols: hidden,
        })?;
        backend.synchronize()?;
        let mut host = vec![0.0f32; batch * hidden];
        backend.copy_to_host(&pooled, &mut host)?;
        outputs.push(host);
    }
    Ok(outputs)
}

fn resilient(plan: FaultPlan, registry: &Registry) -> Resilient<FaultyBackend<CpuBackend>> {
    let clock = Arc::new(FakeClock::new());
    let state = RetryState::builder()
        .clock(clock)
        .seed(5)
        .registry(registry.clone())
        .breaker(BreakerConfig {
            failure_threshold: 1000,
            ..Default::default()
        })
        .build()
        .unwrap();
    let policy = Arc::new(RetryPolicy::new(RetryConfig::new().with_max_retries(5)).unwrap());
    Resilient::new(
        FaultyBackend::new(CpuBackend::with_threads(2).unwrap(), plan),
        policy,
        state,
    )
}

#[test]
fn transient_and_oom_faults_leave_results_bit_identical_and_metrics_exact() {
    let reference = workload(&CpuBackend::with_threads(2).unwrap(), 30).unwrap();
    let registry = Registry::new();
    let plan = FaultPlan::new(2024)
        .with_rate(None, 2, 0.05)
        .with_rate(None, 304, 0.05);
    let backend = resilient(plan, &registry);
    let outputs = workload(&backend, 30).expect("every fault is retried away");
    assert_eq!(
        outputs, reference,
        "results must be bit-identical to the fault-free run"
    );

    let faulty = backend.inner();
    let (oom, transient) = (faulty.injected(2), faulty.injected(304));
    assert!(
        oom > 20 && transient > 20,
        "the plan injected too little: {oom} OOM, {transient} transient"
    );
    assert_eq!(
        faulty.reclaims(),
        oom,
        "one reclaim per out-of-memory error"
    );

    let text = scrape(&registry);
    let mut retries = 0.0;
    for op in [
        Op::Allocate,
        Op::CopyHostToDevice,
        Op::CopyDeviceToHost,
        Op::CopyDeviceToDevice,
        Op::Launch,
        Op::Synchronize,
    ] {
        for (code, name) in [(2, "hipErrorOutOfMemory"), (304, "hipErrorOperatingSystem")] {
            let series = format!(
                "hipinfer_gpu_errors_total{{code=\"{name}\",op=\"{}\"}}",
                op.as_str()
            );
            assert_eq!(
                sample(&text, &series).unwrap_or(0.0),
                faulty.returned(op, code) as f64,
                "{series}"
            );
        }
        retries += sample(
            &text,
            &format!(
                "hipinfer_gpu_retry_attempts_total{{op=\"{}\"}}",
                op.as_str()
            ),
        )
        .unwrap();
    }
    assert_eq!(
        retries,
        (oom + transient) as f64,
        "every injected fault was retried once"
    );
}

#[test]
fn sticky_illegal_address_fails_after_one_call_until_reset() {
    let registry = Registry::new();
    let backend = resilient(FaultPlan::new(1), &registry);
    let buffer = backend.allocate(4).unwrap();
    backend.inner().script(Op::Synchronize, 700, 1);
    let error = backend.synchronize().unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Reset);
    assert_eq!(
        error.attempts(),
        1,
        "a poisoned context is never retried in place"
    );
    assert_eq!(hipinfer::error::Classify::recovery(&error), Recovery::Reset);
    // Poisoned: every call fails with the same code until reset.
    for _ in 0..3 {
        let error = backend.allocate(4).unwrap_err();
        assert_eq!(error.error().map(HipError::code), Some(700));
        let mut host = [0.0f32; 4];
        assert!(backend.copy_to_host(&buffer, &mut host).is_err());
    }
    backend.reset().unwrap();
    assert!(backend.allocate(4).is_ok());
    assert_eq!(backend.inner().resets(), 1);
}

#[test]
fn fatal_is_not_retried() {
    let registry = Registry::new();
    let backend = resilient(FaultPlan::new(1), &registry);
    backend.inner().script(Op::Launch, 1, 1);
    let mut x = backend.allocate(4).unwrap();
    let error = backend
        .launch(Kernel::Gelu { x: &mut x, len: 4 })
        .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Permanent);
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.error().unwrap().kernel(), Some("hipinfer_gelu"));
    assert_eq!(backend.inner().returned(Op::Launch, 1), 1);
}

#[test]
fn scripted_faults_are_retried_in_order() {
    let registry = Registry::new();
    let backend = resilient(FaultPlan::new(1), &registry);
    backend.inner().script(Op::Allocate, 2, 2);
    assert!(backend.allocate(16).is_ok());
    assert_eq!(backend.inner().reclaims(), 2);
    assert_eq!(backend.inner().returned(Op::Allocate, 2), 2);
}

#[test]
fn benign_codes_are_success_as_every_backend_treats_them() {
    use hipinfer::backend::{Backend, FaultPlan, FaultyBackend};
    // Every call "returns" hipErrorContextAlreadyCurrent (202): the calls did their work.
    let faulty = FaultyBackend::new(
        hipinfer::backend::CpuBackend::with_threads(1).unwrap(),
        FaultPlan::new(1).with_rate(None, 202, 1.0),
    );
    let mut buffer = faulty.allocate(2).unwrap();
    faulty.copy_to_device(&[3.0f32, 4.0], &mut buffer).unwrap();
    faulty.synchronize().unwrap();
    let mut back = [0.0f32; 2];
    faulty.copy_to_host(&buffer, &mut back).unwrap();
    assert_eq!(back, [3.0, 4.0]);
    assert!(faulty.injected(202) >= 4);
    assert_eq!(
        faulty.returned_total(),
        0,
        "nothing reached the caller as an error"
    );
}

/// A graph is one submission: the fault injector draws once for it (none for the launches
/// inside), a transient fault retries the whole body, and a Reset-class one gives up with it.
#[test]
fn a_graph_is_one_launch_retried_as_a_whole() {
    let registry = Registry::new();
    let backend = resilient(FaultPlan::new(1), &registry);
    let mut x = backend.allocate(8).unwrap();
    backend.copy_to_device(&[1.0f32; 8], &mut x).unwrap();
    let bodies = std::cell::Cell::new(0);
    let double_three_times = |x: &mut _| {
        bodies.set(bodies.get() + 1);
        for _ in 0..3 {
            backend.launch(Kernel::L2Normalize {
                x,
                rows: 1,
                cols: 8,
            })?;
        }
        Ok(())
    };
    // The first launch fails transiently; the ones after it are inside the graph and pass.
    backend.inner().script(Op::Launch, 304, 1);
    backend.graph(|| double_three_times(&mut x)).unwrap();
    assert_eq!(bodies.get(), 1, "the failed submission ran nothing");
    assert_eq!(backend.inner().returned(Op::Launch, 304), 1);
    let recovered = backend.take_recovered();
    assert_eq!(recovered.len(), 1, "one recovered call: the graph");
    assert_eq!(recovered[0].op, Op::Launch);
    // A Reset-class fault at the next submission fails the graph, as a whole.
    backend.inner().script(Op::Launch, 700, 1);
    let error = backend.graph(|| double_three_times(&mut x)).unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Reset);
    assert_eq!(
        bodies.get(),
        1,
        "a graph that faults at submission runs nothing"
    );
    // Outside a graph every launch is a call of its own again, and the sticky fault answers.
    assert!(backend
        .launch(Kernel::L2Normalize {
            x: &mut x,
            rows: 1,
            cols: 8
        })
        .is_err());
    backend.reset().unwrap();
    let mut x = backend.allocate(8).unwrap();
    backend.copy_to_device(&[1.0f32; 8], &mut x).unwrap();
    let mut host = [0.0f32; 8];
    backend.graph(|| double_three_times(&mut x)).unwrap();
    backend.copy_to_host(&x, &mut host).unwrap();
    assert_eq!(bodies.get(), 2);
    assert!((host.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
}
