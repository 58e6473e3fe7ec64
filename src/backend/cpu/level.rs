//! Which vector instructions the CPU kernels use: detected at run time, and cappable — by
//! `HIPINFER_CPU_LEVEL` for a whole process (`portable`, `avx2`, `avx512`, `avx512_vnni`,
//! `avx512_bf16`), or per backend ([`super::CpuBackend::with_level`]), so that every level a
//! machine has, and the lower ones, can be tested and measured on it. One source per operation:
//! the kernels are generic over the vector width (`pulp`), and the reduced-precision products
//! add an instruction-specific inner loop where one exists (VNNI, BF16).
//!
//! faer's GEMM (the f32 products of many rows) dispatches on its own and is not capped.

use std::cell::Cell;
use std::sync::OnceLock;

/// A dispatch level, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimdLevel {
    /// No vector extension beyond the x86-64 baseline (or another architecture).
    Portable,
    /// AVX2 and FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/DQ/VL (x86-64-v4).
    Avx512,
    /// … and VNNI (int8 dot products, `vpdpbusd`).
    Avx512Vnni,
    /// … and BF16 (bf16 dot products, `vdpbf16ps`).
    Avx512Bf16,
}

impl SimdLevel {
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Portable,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Avx512Vnni,
        SimdLevel::Avx512Bf16,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx512Vnni => "avx512_vnni",
            SimdLevel::Avx512Bf16 => "avx512_bf16",
        }
    }

    /// The levels this CPU has (the highest last).
    pub fn available() -> Vec<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// Whether this CPU runs this level's instructions.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 =
                || has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
            match self {
                SimdLevel::Portable => true,
                SimdLevel::Avx2 => has!("avx2") && has!("fma"),
                SimdLevel::Avx512 => avx512(),
                SimdLevel::Avx512Vnni => avx512() && has!("avx512vnni"),
                SimdLevel::Avx512Bf16 => avx512() && has!("avx512vnni") && has!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == SimdLevel::Portable
        }
    }

    /// The highest level this CPU has.
    pub fn detected() -> SimdLevel {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            SimdLevel::available()
                .last()
                .copied()
                .unwrap_or(SimdLevel::Portable)
        })
    }

    /// The detected level, capped by `HIPINFER_CPU_LEVEL` when it is set (an unknown value is
    /// reported once and ignored).
    pub fn for_process() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let detected = SimdLevel::detected();
            match std::env::var("HIPINFER_CPU_LEVEL") {
                Ok(text) if !text.trim().is_empty() => match text.parse::<SimdLevel>() {
                    Ok(cap) => cap.min(detected),
                    Err(message) => {
                        tracing::warn!(
                            "HIPINFER_CPU_LEVEL: {message}; using {}",
                            detected.as_str()
                        );
                        detected
                    }
                },
                _ => detected,
            }
        })
    }
}

impl std::str::FromStr for SimdLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase().replace('-', "_");
        SimdLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == text)
            .ok_or_else(|| {
                format!("{text:?} is not one of portable, avx2, avx512, avx512_vnni, avx512_bf16")
            })
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    /// The level kernels on this thread use (set by the backend around its work).
    static CURRENT: Cell<Option<SimdLevel>> = const { Cell::new(None) };
}

/// The level kernels running on this thread use.
pub fn current() -> SimdLevel {
    CURRENT
        .with(Cell::get)
        .unwrap_or_else(SimdLevel::for_process)
}

/// Runs `f` with kernels on this thread at `level` (never above what the CPU has: the
/// instruction-specific loops rely on it).
pub fn at<T>(level: SimdLevel, f: impl FnOnce() -> T) -> T {
    let level = level.min(SimdLevel::detected());
    let previous = CURRENT.with(|c| c.replace(Some(level)));
    struct Restore(Option<SimdLevel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Sets this thread's level for good (a backend's pool threads, at their start), never above
/// what the CPU has.
pub fn set_for_thread(level: SimdLevel) {
    CURRENT.with(|c| c.set(Some(level.min(SimdLevel::detected()))));
}

/// The CPU's model name (`/proc/cpuinfo` on Linux), for reports that state speed on the
/// machine at hand; `CPU` where it cannot be read.
pub fn cpu_model() -> String {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, name)| name.trim().to_string())
                })
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "CPU".to_string())
        })
        .clone()
}
