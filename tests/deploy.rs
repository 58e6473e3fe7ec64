//! The operations kit in `deploy/` names only metrics that exist: every `hipinfer_*` series in the
//! alert rules and the Grafana dashboard is in a real scrape of an engine that served requests.
//! (`scripts/check-deploy.sh` also runs `promtool` on the rules and on a live `/metrics`.)

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use hipinfer::backend::{CpuBackend, FaultyBackend};
use hipinfer::engine::{EngineConfig, InferenceEngine};
use hipinfer::Op;

/// The `hipinfer_*` names in a file, with histogram suffixes removed.
fn metric_names(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("hipinfer_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base;
            }
        }
        names.insert(name.to_string());
        i = end;
    }
    names
}

#[test]
fn every_metric_the_rules_and_dashboard_use_exists() {
    let config = EngineConfig::builder()
        .model(support::tiny_model::write("deploy"))
        .build()
        .unwrap();
    let backend = std::sync::Arc::new(FaultyBackend::passthrough(
        CpuBackend::with_threads(1).unwrap(),
    ));
    let engine = InferenceEngine::with_backend(config, backend.clone()).unwrap();
    backend.script(Op::Launch, 304, 1); // so the error series exist, as they do after any fault
    engine.embed(&["hello world"]).unwrap();
    let mut scraped: BTreeSet<String> = engine
        .registry()
        .gather()
        .iter()
        .map(|family| family.name().to_string())
        .collect();
    // And a language model's generation engine (`hipinfer serve --model FILE.gguf`).
    let gguf = support::tiny_llama::write(
        &support::tiny_llama::scratch("deploy-generation"),
        "tiny.gguf",
        &support::tiny_llama::bytes_with(1, |_, _| {}),
    );
    let generation = hipinfer::generation::GenerationEngine::open(
        gguf,
        Default::default(),
        Default::default(),
        prometheus::Registry::new(),
    )
    .unwrap();
    generation
        .submit(hipinfer::llm::GenerateRequest::greedy(vec![1, 2], 2))
        .unwrap()
        .wait()
        .unwrap();
    scraped.extend(
        generation
            .registry()
            .gather()
            .iter()
            .map(|family| family.name().to_string()),
    );
    // And an engine whose backend runs in a worker process (the Kubernetes example's setting):
    // the worker series.
    let isolated = InferenceEngine::new(
        EngineConfig::builder()
            .model(support::tiny_model::write("deploy-isolated"))
            .backend(hipinfer::backend::BackendChoice::Cpu)
            .isolation(hipinfer::isolation::Isolation::Subprocess)
            .worker(hipinfer::isolation::WorkerConfig {
                program: Some(env!("CARGO_BIN_EXE_hipinfer").into()),
                ..Default::default()
            })
            .build()
            .unwrap(),
    )
    .unwrap();
    isolated.embed(&["hello world"]).unwrap();
    scraped.extend(
        isolated
            .registry()
            .gather()
            .iter()
            .map(|family| family.name().to_string()),
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for file in [
        "prometheus/hipinfer-alerts.yml",
        "grafana/hipinfer-dashboard.json",
    ] {
        let used = metric_names(&root.join(file));
        assert!(!used.is_empty(), "{file} names no metric");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics that do not exist: {missing:?}"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/hipinfer-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 12);
    let kubernetes = std::fs::read_to_string(root.join("kubernetes/hipinfer.yaml")).unwrap();
    assert!(
        kubernetes.contains("readinessProbe:\n            httpGet: {path: /readyz"),
        "readiness is /readyz"
    );
    assert!(
        kubernetes.contains("livenessProbe:\n            httpGet: {path: /livez"),
        "liveness is /livez, never the device probe"
    );
    assert!(kubernetes.contains("{name: HIPINFER_ISOLATION, value: subprocess}"));
}
