//! Every `hipError_t` code of HIP 5.2 with its name and recovery class.
//!
//! Source: the HIP 5.2.21153 `hip/hip_runtime_api.h` enum, classes from `docs/hip-errors.md`.
//! Codes are kept as raw integers: a newer ROCm may return codes not listed here, and those must
//! stay representable (they classify as Probe).

use super::recovery::Recovery;

/// One row of the table: the raw code, its HIP name and its class (719 is refined by operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: i32,
    pub name: &'static str,
    pub class: Recovery,
}

const fn row(code: i32, name: &'static str, class: Recovery) -> CodeInfo {
    CodeInfo { code, name, class }
}

use Recovery::{Benign, Fatal, Poll, Probe, Reclaim, Reset, Retry};

/// `hipErrorLaunchFailure`: Probe from the launch call itself, Reset when seen later.
pub const LAUNCH_FAILURE: i32 = 719;
/// `hipErrorOperatingSystem`: retried twice, then probed.
pub const OPERATING_SYSTEM: i32 = 304;
/// `hipErrorRuntimeMemory` (HSA): reclaimed once, then probed.
pub const RUNTIME_MEMORY: i32 = 1052;

/// Every code HIP 5.2 defines, sorted by code.
pub const HIP_CODES: &[CodeInfo] = &[
    row(0, "hipSuccess", Benign),
    row(1, "hipErrorInvalidValue", Fatal),
    row(2, "hipErrorOutOfMemory", Reclaim),
    row(3, "hipErrorNotInitialized", Fatal),
    row(4, "hipErrorDeinitialized", Fatal),
    row(5, "hipErrorProfilerDisabled", Benign),
    row(6, "hipErrorProfilerNotInitialized", Benign),
    row(7, "hipErrorProfilerAlreadyStarted", Benign),
    row(8, "hipErrorProfilerAlreadyStopped", Benign),
    row(9, "hipErrorInvalidConfiguration", Fatal),
    row(12, "hipErrorInvalidPitchValue", Fatal),
    row(13, "hipErrorInvalidSymbol", Fatal),
    row(17, "hipErrorInvalidDevicePointer", Fatal),
    row(21, "hipErrorInvalidMemcpyDirection", Fatal),
    row(35, "hipErrorInsufficientDriver", Fatal),
    row(52, "hipErrorMissingConfiguration", Fatal),
    row(53, "hipErrorPriorLaunchFailure", Reset),
    row(98, "hipErrorInvalidDeviceFunction", Fatal),
    row(100, "hipErrorNoDevice", Fatal),
    row(101, "hipErrorInvalidDevice", Fatal),
    row(200, "hipErrorInvalidImage", Fatal),
    row(201, "hipErrorInvalidContext", Fatal),
    row(202, "hipErrorContextAlreadyCurrent", Benign),
    row(205, "hipErrorMapFailed", Fatal),
    row(206, "hipErrorUnmapFailed", Fatal),
    row(207, "hipErrorArrayIsMapped", Fatal),
    row(208, "hipErrorAlreadyMapped", Fatal),
    row(209, "hipErrorNoBinaryForGpu", Fatal),
    row(210, "hipErrorAlreadyAcquired", Fatal),
    row(211, "hipErrorNotMapped", Fatal),
    row(212, "hipErrorNotMappedAsArray", Fatal),
    row(213, "hipErrorNotMappedAsPointer", Fatal),
    row(214, "hipErrorECCNotCorrectable", Reset),
    row(215, "hipErrorUnsupportedLimit", Fatal),
    row(216, "hipErrorContextAlreadyInUse", Retry),
    row(217, "hipErrorPeerAccessUnsupported", Fatal),
    row(218, "hipErrorInvalidKernelFile", Fatal),
    row(219, "hipErrorInvalidGraphicsContext", Fatal),
    row(300, "hipErrorInvalidSource", Fatal),
    row(301, "hipErrorFileNotFound", Fatal),
    row(302, "hipErrorSharedObjectSymbolNotFound", Fatal),
    row(303, "hipErrorSharedObjectInitFailed", Fatal),
    row(OPERATING_SYSTEM, "hipErrorOperatingSystem", Retry),
    row(400, "hipErrorInvalidHandle", Fatal),
    row(401, "hipErrorIllegalState", Fatal),
    row(500, "hipErrorNotFound", Fatal),
    row(600, "hipErrorNotReady", Poll),
    row(700, "hipErrorIllegalAddress", Reset),
    row(701, "hipErrorLaunchOutOfResources", Fatal),
    row(702, "hipErrorLaunchTimeOut", Reset),
    row(704, "hipErrorPeerAccessAlreadyEnabled", Benign),
    row(705, "hipErrorPeerAccessNotEnabled", Fatal),
    row(708, "hipErrorSetOnActiveProcess", Fatal),
    row(709, "hipErrorContextIsDestroyed", Reset),
    row(710, "hipErrorAssert", Reset),
    row(712, "hipErrorHostMemoryAlreadyRegistered", Benign),
    row(713, "hipErrorHostMemoryNotRegistered", Fatal),
    row(LAUNCH_FAILURE, "hipErrorLaunchFailure", Reset),
    row(720, "hipErrorCooperativeLaunchTooLarge", Fatal),
    row(801, "hipErrorNotSupported", Fatal),
    row(900, "hipErrorStreamCaptureUnsupported", Fatal),
    row(901, "hipErrorStreamCaptureInvalidated", Fatal),
    row(902, "hipErrorStreamCaptureMerge", Fatal),
    row(903, "hipErrorStreamCaptureUnmatched", Fatal),
    row(904, "hipErrorStreamCaptureUnjoined", Fatal),
    row(905, "hipErrorStreamCaptureIsolation", Fatal),
    row(906, "hipErrorStreamCaptureImplicit", Fatal),
    row(907, "hipErrorCapturedEvent", Fatal),
    row(908, "hipErrorStreamCaptureWrongThread", Fatal),
    row(910, "hipErrorGraphExecUpdateFailure", Fatal),
    row(999, "hipErrorUnknown", Probe),
    row(RUNTIME_MEMORY, "hipErrorRuntimeMemory", Reclaim),
    row(1053, "hipErrorRuntimeOther", Probe),
    row(1054, "hipErrorTbd", Fatal),
];

/// The label used for a code HIP 5.2 does not define (bounded, unlike the raw number).
pub const UNRECOGNIZED_NAME: &str = "hipErrorUnrecognized";

/// The CUDA driver's codes (`CUresult`, CUDA 13.0 `cuda.h`) that HIP does not define, sorted by
/// code. The shared ones (700 IllegalAddress, 2 OutOfMemory, 719 LaunchFailed, …) mean the same
/// in both APIs and keep their HIP row.
pub const CUDA_ONLY_CODES: &[CodeInfo] = &[
    row(34, "CUDA_ERROR_STUB_LIBRARY", Fatal),
    row(36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", Fatal),
    row(46, "CUDA_ERROR_DEVICE_UNAVAILABLE", Retry),
    row(220, "CUDA_ERROR_NVLINK_UNCORRECTABLE", Reset),
    row(221, "CUDA_ERROR_JIT_COMPILER_NOT_FOUND", Fatal),
    row(222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", Fatal),
    row(223, "CUDA_ERROR_JIT_COMPILATION_DISABLED", Fatal),
    row(714, "CUDA_ERROR_HARDWARE_STACK_ERROR", Reset),
    row(715, "CUDA_ERROR_ILLEGAL_INSTRUCTION", Reset),
    row(716, "CUDA_ERROR_MISALIGNED_ADDRESS", Reset),
    row(717, "CUDA_ERROR_INVALID_ADDRESS_SPACE", Reset),
    row(718, "CUDA_ERROR_INVALID_PC", Reset),
    row(804, "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", Fatal),
];

/// Looks a code up in [`HIP_CODES`], then in [`CUDA_ONLY_CODES`].
pub fn lookup(code: i32) -> Option<&'static CodeInfo> {
    [HIP_CODES, CUDA_ONLY_CODES].into_iter().find_map(|table| {
        table
            .binary_search_by_key(&code, |info| info.code)
            .ok()
            .map(|i| &table[i])
    })
}

/// The HIP name of a code, or [`UNRECOGNIZED_NAME`].
pub fn name_of(code: i32) -> &'static str {
    lookup(code).map_or(UNRECOGNIZED_NAME, |info| info.name)
}
