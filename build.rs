//! Compiles `kernels/*.hip` into code objects with `hipcc --genco` when the `hip` feature is on.
//!
//! The architectures come from `HIPINFER_OFFLOAD_ARCH` (comma-separated; default
//! `gfx90a,gfx1030`, what Debian 12's HIP 5.2 can build — gfx942 and gfx1100 need a newer ROCm).
//! `hipcc` is found through `HIPCC`, `HIP_PATH/bin`, `ROCM_PATH/bin`, `/opt/rocm/bin`, then `PATH`.
//! Without the feature this script does nothing, so the crate builds without any HIP install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCHS: &str = "gfx90a,gfx1030";
const KERNELS: &[&str] = &["gemm", "elementwise", "norm", "attention", "pooling"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_HIP").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=HIPINFER_OFFLOAD_ARCH");
    println!("cargo:rerun-if-env-changed=HIPCC");
    println!("cargo:rerun-if-env-changed=HIP_PATH");
    println!("cargo:rerun-if-changed=kernels/common.h");
    let archs = env::var("HIPINFER_OFFLOAD_ARCH").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let archs: Vec<&str> = archs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if archs.is_empty() {
        fail("HIPINFER_OFFLOAD_ARCH names no architecture (example: gfx90a,gfx1030)");
    }
    let hipcc = find_hipcc().unwrap_or_else(|| {
        fail(
            "the `hip` feature needs hipcc, and none was found (looked at $HIPCC, $HIP_PATH/bin, \
             $ROCM_PATH/bin, /opt/rocm/bin and PATH). On Debian 12: \
             apt-get install -y --no-install-recommends hipcc libamdhip64-dev",
        )
    });
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for kernel in KERNELS {
        let source = format!("kernels/{kernel}.hip");
        println!("cargo:rerun-if-changed={source}");
        let output = out_dir.join(format!("{kernel}.co"));
        let status = Command::new(&hipcc)
            .args(["--genco", "-O3", "-std=c++17"])
            .arg(format!("--offload-arch={}", archs.join(",")))
            .arg(&source)
            .arg("-o")
            .arg(&output)
            .status()
            .unwrap_or_else(|e| fail(&format!("could not run {}: {e}", hipcc.display())));
        if !status.success() {
            fail(&format!(
                "hipcc failed on {source} for {} ({status}); set HIPINFER_OFFLOAD_ARCH to architectures \
                 your ROCm supports",
                archs.join(",")
            ));
        }
    }
    println!("cargo:rustc-env=HIPINFER_BUILT_ARCHS={}", archs.join(","));
}

fn find_hipcc() -> Option<PathBuf> {
    if let Some(path) = env::var_os("HIPCC") {
        return Some(PathBuf::from(path));
    }
    let roots = ["HIP_PATH", "ROCM_PATH"]
        .into_iter()
        .filter_map(env::var_os)
        .map(PathBuf::from);
    for root in roots.chain([PathBuf::from("/opt/rocm")]) {
        let candidate = root.join("bin/hipcc");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("hipcc"))
            .find(|p| Path::new(p).is_file())
    })
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
