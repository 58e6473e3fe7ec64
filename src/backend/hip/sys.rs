//! Raw HIP runtime entry points (layer 1 of 3: declarations only).
//!
//! Declared here rather than taken from `hip-sys`, because its bindings return `hipError_t` as a
//! Rust enum: a code outside that enum (any newer ROCm's) would be undefined behaviour. These
//! return the plain C `int`. `hip-sys` is still the dependency that finds and links `amdhip64`.

use std::ffi::{c_char, c_int, c_uint, c_void};

// hip-sys's build script finds HIP (`hipconfig -p`, `HIP_PATH`, `ROCM_PATH`) and adds its library
// folder to the link search path; naming the crate keeps it linked.
use hip_sys as _;

/// `hipError_t` as the C ABI returns it.
pub type Status = c_int;
/// Opaque handles (`hipStream_t`, `hipModule_t`, `hipFunction_t`).
pub type Handle = *mut c_void;

/// `hipMemcpyKind`.
pub const MEMCPY_HOST_TO_DEVICE: c_int = 1;
pub const MEMCPY_DEVICE_TO_HOST: c_int = 2;
pub const MEMCPY_DEVICE_TO_DEVICE: c_int = 3;

/// `hipDeviceAttribute_t` values of HIP 5.2 (checked against its header).
pub const ATTRIBUTE_MULTIPROCESSOR_COUNT: c_int = 63;
pub const ATTRIBUTE_GCN_ARCH: c_int = 10003;

#[link(name = "amdhip64")]
extern "C" {
    pub fn hipInit(flags: c_uint) -> Status;
    pub fn hipGetDeviceCount(count: *mut c_int) -> Status;
    pub fn hipSetDevice(device: c_int) -> Status;
    pub fn hipDeviceReset() -> Status;
    pub fn hipDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: c_int) -> Status;
    pub fn hipDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> Status;
    pub fn hipDeviceTotalMem(bytes: *mut usize, device: c_int) -> Status;
    pub fn hipStreamCreate(stream: *mut Handle) -> Status;
    pub fn hipStreamDestroy(stream: Handle) -> Status;
    pub fn hipStreamSynchronize(stream: Handle) -> Status;
    pub fn hipMalloc(pointer: *mut *mut c_void, bytes: usize) -> Status;
    pub fn hipFree(pointer: *mut c_void) -> Status;
    pub fn hipMemcpyAsync(
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: c_int,
        stream: Handle,
    ) -> Status;
    pub fn hipModuleLoadData(module: *mut Handle, image: *const c_void) -> Status;
    pub fn hipModuleUnload(module: Handle) -> Status;
    pub fn hipModuleGetFunction(
        function: *mut Handle,
        module: Handle,
        name: *const c_char,
    ) -> Status;
    #[allow(clippy::too_many_arguments)]
    pub fn hipModuleLaunchKernel(
        function: Handle,
        grid_x: c_uint,
        grid_y: c_uint,
        grid_z: c_uint,
        block_x: c_uint,
        block_y: c_uint,
        block_z: c_uint,
        shared_bytes: c_uint,
        stream: Handle,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> Status;
}
