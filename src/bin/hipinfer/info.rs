//! `info`: the backends available, the devices found (or why none), the build's GPU archs.

use std::process::ExitCode;

use hipinfer::backend::{self, Backend, Dtype, SimdLevel};
use serde_json::json;

use crate::args::InfoArgs;
use crate::Failure;

pub fn info(args: InfoArgs) -> Result<ExitCode, Failure> {
    if let Some(model) = &args.model {
        println!("{}", serde_json::to_string_pretty(&gguf_summary(model)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    let describe = |probe: Result<backend::DeviceInfo, hipinfer::HipError>| match probe {
        Ok(device) => {
            json!({"available": true, "device": device.device, "name": device.name, "arch": device.arch,
                   "memory_bytes": device.total_memory, "compute_units": device.compute_units})
        }
        Err(error) => json!({"available": false, "reason": error.to_string()}),
    };
    let hip = describe(backend::probe_hip(args.device));
    let cuda = describe(backend::probe_cuda(args.device));
    let cpu = hipinfer::backend::CpuBackend::new()?.info();
    let output = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backends": {
            "cpu": {"available": true, "name": cpu.name, "arch": cpu.arch,
                    "threads": cpu.compute_units,
                    "levels": SimdLevel::available().iter().map(|l| l.as_str()).collect::<Vec<_>>(),
                    "dtypes": Dtype::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>()},
            "hip": hip,
            "cuda": cuda,
        },
        "hip_compiled": backend::HIP_COMPILED,
        "hip_archs": backend::hip_archs(),
        "cuda_compiled": backend::CUDA_COMPILED,
        "cuda_archs": backend::cuda_archs(),
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(ExitCode::SUCCESS)
}

/// A GGUF file described: its architecture's sizes (the `<arch>.*` keys), the tokenizer, and
/// how many tensors (and bytes) of each type it holds.
fn gguf_summary(path: &std::path::Path) -> Result<serde_json::Value, Failure> {
    use std::collections::BTreeMap;
    let file = hipinfer::gguf::GgufFile::open(path)?;
    let gguf = file.parsed()?;
    let architecture = gguf
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let prefix = format!("{architecture}.");
    let scalar = |value: &hipinfer::gguf::Value| match (value.as_u64(), value.as_f64()) {
        (Some(n), _) => json!(n),
        (None, Some(x)) => json!(x),
        _ => json!(value.summary()),
    };
    let sizes: BTreeMap<&str, serde_json::Value> = gguf
        .metadata()
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(&prefix)?, scalar(value))))
        .collect();
    let mut types: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for tensor in gguf.tensors() {
        let entry = types.entry(tensor.kind.to_string()).or_default();
        entry.0 += 1;
        entry.1 += tensor.bytes as u64;
    }
    let parameters: u64 = gguf.tensors().iter().map(|t| t.elements()).sum();
    Ok(json!({
        "file": path.display().to_string(),
        "gguf_version": gguf.version,
        "architecture": architecture,
        "name": gguf.get("general.name").and_then(|v| v.as_str()),
        "parameters": parameters,
        "sizes": sizes,
        "tokenizer": {
            "model": gguf.get("tokenizer.ggml.model").and_then(|v| v.as_str()),
            "tokens": gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(<[_]>::len),
            "merges": gguf.get("tokenizer.ggml.merges").and_then(|v| v.as_array()).map(<[_]>::len),
            "chat_template": gguf.get("tokenizer.chat_template").is_some(),
        },
        "tensors": gguf.tensors().len(),
        "tensor_types": types.iter().map(|(k, (n, b))| (k.clone(), json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
    }))
}
