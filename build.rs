//! Reads the kernels' block and tile sizes from their sources (so Rust and `kernels/` share one
//! definition), and compiles `kernels/*.hip`:
//! - feature `hip`: with `hipcc --genco` into code objects for `HIPINFER_OFFLOAD_ARCH`
//!   (comma-separated; default `gfx90a,gfx1030`, what Debian 12's HIP 5.2 can build — gfx942 and
//!   gfx1100 need a newer ROCm). `hipcc` is found through `HIPCC`, `HIP_PATH/bin`,
//!   `ROCM_PATH/bin`, `/opt/rocm/bin`, then `PATH`.
//! - feature `cuda`: the same sources with `nvcc -fatbin -x cu -include kernels/cuda_compat.h`
//!   into fatbins holding machine code for each of `HIPINFER_CUDA_ARCH` (default `80,90`: A100,
//!   H100/H200) plus PTX of the newest, so a newer GPU can still JIT it. `nvcc` is found through
//!   `NVCC`, `CUDA_PATH/bin`, `CUDA_HOME/bin`, `/usr/local/cuda/bin`, then `PATH`
//!   (`scripts/install-cuda-toolchain.sh` installs nvcc 13.0 from PyPI).
//!
//! Without either feature nothing is compiled, so the crate builds without any GPU toolchain.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_HIP_ARCHS: &str = "gfx90a,gfx1030";
const DEFAULT_CUDA_ARCHS: &str = "80,90";
const KERNELS: &[&str] = &[
    "gemm",
    "elementwise",
    "norm",
    "attention",
    "pooling",
    "fault",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    export_size(
        "kernels/common.h",
        "HIPINFER_BLOCK",
        "HIPINFER_KERNEL_BLOCK",
    );
    export_size(
        "kernels/gemm.hip",
        "GEMM_BLOCK_TILE",
        "HIPINFER_GEMM_BLOCK_TILE",
    );
    export_size(
        "kernels/gemm.hip",
        "GEMM_THREADS_SIDE",
        "HIPINFER_GEMM_THREADS_SIDE",
    );
    if env::var_os("CARGO_FEATURE_HIP").is_some() {
        build_hip();
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_cuda();
    }
}

/// Passes `#define NAME value` of `file` to the crate as the environment variable `var`.
fn export_size(file: &str, name: &str, var: &str) {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| fail(&format!("could not read {file}: {e}")));
    let value = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("#define "))
        .find_map(|rest| {
            let mut words = rest.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()).flatten()
        })
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| fail(&format!("{file} has no `#define {name} <number>`")));
    println!("cargo:rustc-env={var}={value}");
}

fn archs(var: &str, default: &str) -> Vec<String> {
    println!("cargo:rerun-if-env-changed={var}");
    let list = env::var(var).unwrap_or_else(|_| default.to_string());
    let archs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if archs.is_empty() {
        fail(&format!("{var} names no architecture (default: {default})"));
    }
    archs
}

fn out_dir() -> PathBuf {
    PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
}

fn build_hip() {
    let archs = archs("HIPINFER_OFFLOAD_ARCH", DEFAULT_HIP_ARCHS);
    for var in ["HIPCC", "HIP_PATH", "ROCM_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let hipcc = find_tool("hipcc", "HIPCC", &["HIP_PATH", "ROCM_PATH"], "/opt/rocm")
        .unwrap_or_else(|| {
            fail(
                "the `hip` feature needs hipcc, and none was found (looked at $HIPCC, $HIP_PATH/bin, \
                 $ROCM_PATH/bin, /opt/rocm/bin and PATH). On Debian 12: \
                 apt-get install -y --no-install-recommends hipcc libamdhip64-dev",
            )
        });
    for kernel in KERNELS {
        let source = format!("kernels/{kernel}.hip");
        let output = out_dir().join(format!("{kernel}.co"));
        let mut command = Command::new(&hipcc);
        command
            .args(["--genco", "-O3", "-std=c++17"])
            .arg(format!("--offload-arch={}", archs.join(",")))
            .arg(&source)
            .arg("-o")
            .arg(&output);
        run(command, &hipcc, &source, "HIPINFER_OFFLOAD_ARCH", &archs);
    }
    println!("cargo:rustc-env=HIPINFER_BUILT_ARCHS={}", archs.join(","));
}

fn build_cuda() {
    let archs = archs("HIPINFER_CUDA_ARCH", DEFAULT_CUDA_ARCHS);
    if let Some(bad) = archs.iter().find(|a| a.parse::<u32>().is_err()) {
        fail(&format!(
            "HIPINFER_CUDA_ARCH: {bad:?} is not a compute capability such as 80 or 90"
        ));
    }
    for var in ["NVCC", "CUDA_PATH", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = find_tool(
        "nvcc",
        "NVCC",
        &["CUDA_PATH", "CUDA_HOME"],
        "/usr/local/cuda",
    )
    .unwrap_or_else(|| {
        fail(
            "the `cuda` feature needs nvcc, and none was found (looked at $NVCC, \
                 $CUDA_PATH/bin, $CUDA_HOME/bin, /usr/local/cuda/bin and PATH). \
                 `bash scripts/install-cuda-toolchain.sh` installs nvcc 13.0 from PyPI and prints \
                 the NVCC=… to set",
        )
    });
    let newest = archs.last().expect("archs is not empty");
    let mut gencode: Vec<String> = archs
        .iter()
        .map(|a| format!("-gencode=arch=compute_{a},code=sm_{a}"))
        .collect();
    gencode.push(format!(
        "-gencode=arch=compute_{newest},code=compute_{newest}"
    ));
    for kernel in KERNELS {
        let source = format!("kernels/{kernel}.hip");
        let output = out_dir().join(format!("{kernel}.fatbin"));
        let mut command = Command::new(&nvcc);
        command
            .args(["-fatbin", "-O3", "-std=c++17", "-x", "cu"])
            .args(["-include", "kernels/cuda_compat.h"])
            .args(&gencode)
            .arg(&source)
            .arg("-o")
            .arg(&output);
        run(command, &nvcc, &source, "HIPINFER_CUDA_ARCH", &archs);
    }
    let built: Vec<String> = archs
        .iter()
        .map(|a| format!("sm_{a}"))
        .chain([format!("compute_{newest}")])
        .collect();
    println!(
        "cargo:rustc-env=HIPINFER_CUDA_BUILT_ARCHS={}",
        built.join(",")
    );
}

fn run(mut command: Command, tool: &Path, source: &str, var: &str, archs: &[String]) {
    let status = command
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run {}: {e}", tool.display())));
    if !status.success() {
        fail(&format!(
            "{} failed on {source} for {} ({status}); set {var} to architectures your toolchain \
             supports",
            tool.display(),
            archs.join(",")
        ));
    }
}

/// `tool` from `$var`, then `$root/bin` for each root variable, then `fallback/bin`, then PATH.
fn find_tool(tool: &str, var: &str, roots: &[&str], fallback: &str) -> Option<PathBuf> {
    if let Some(path) = env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let roots = roots.iter().filter_map(env::var_os).map(PathBuf::from);
    for root in roots.chain([PathBuf::from(fallback)]) {
        let candidate = root.join("bin").join(tool);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| Path::new(p).is_file())
    })
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
