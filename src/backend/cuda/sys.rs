//! The CUDA driver API (`libcuda.so.1`), loaded at run time with `libloading`, so a build with
//! the `cuda` feature starts on machines without NVIDIA software and says "no CUDA driver".
//!
//! Declared by hand, every call returning the plain C `int` of `CUresult` (never a Rust enum: a
//! code a newer driver adds stays representable). Symbols are the versioned ones `cuda.h` maps
//! its names to (`cuMemAlloc` → `cuMemAlloc_v2`, …).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

/// `CUresult`.
pub type Status = c_int;
/// `CUdevice`.
pub type Device = c_int;
/// `CUdeviceptr`.
pub type DevicePointer = u64;
/// Opaque handles (`CUcontext`, `CUstream`, `CUmodule`, `CUfunction`).
pub type Handle = *mut c_void;

/// `CUdevice_attribute` values (CUDA 13.0 `cuda.h`).
pub const ATTRIBUTE_MULTIPROCESSOR_COUNT: c_int = 16;
pub const ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

/// The library's file name (the driver's stable soname).
pub const LIBRARY: &str = "libcuda.so.1";

macro_rules! api {
    ($($field:ident = $symbol:literal : fn($($arg:ty),*);)*) => {
        /// The driver's entry points, resolved once.
        #[allow(non_snake_case)]
        pub struct Api {
            _library: libloading::Library,
            $(pub $field: unsafe extern "C" fn($($arg),*) -> Status,)*
        }

        impl Api {
            /// # Safety
            /// Loading a shared library runs its initialisers: the one loaded must be NVIDIA's
            /// driver (or a library with the same ABI).
            unsafe fn load(path: &str) -> Result<Api, libloading::Error> {
                // SAFETY: the caller's guarantee.
                let library = unsafe { libloading::Library::new(path) }?;
                $(
                    // SAFETY: the symbol is the driver's function of exactly this signature
                    // (CUDA 13.0 `cuda.h`); the pointer is copied out and `library` is kept in
                    // the same struct, so it stays valid as long as it can be called.
                    let $field = unsafe {
                        *library.get::<unsafe extern "C" fn($($arg),*) -> Status>(
                            concat!($symbol, "\0").as_bytes(),
                        )?
                    };
                )*
                Ok(Api { _library: library, $($field,)* })
            }
        }
    };
}

api! {
    init = "cuInit": fn(c_uint);
    device_count = "cuDeviceGetCount": fn(*mut c_int);
    device_get = "cuDeviceGet": fn(*mut Device, c_int);
    device_name = "cuDeviceGetName": fn(*mut c_char, c_int, Device);
    device_total_memory = "cuDeviceTotalMem_v2": fn(*mut usize, Device);
    device_attribute = "cuDeviceGetAttribute": fn(*mut c_int, c_int, Device);
    primary_context_retain = "cuDevicePrimaryCtxRetain": fn(*mut Handle, Device);
    primary_context_reset = "cuDevicePrimaryCtxReset_v2": fn(Device);
    context_set_current = "cuCtxSetCurrent": fn(Handle);
    stream_create = "cuStreamCreate": fn(*mut Handle, c_uint);
    stream_destroy = "cuStreamDestroy_v2": fn(Handle);
    stream_synchronize = "cuStreamSynchronize": fn(Handle);
    mem_alloc = "cuMemAlloc_v2": fn(*mut DevicePointer, usize);
    mem_free = "cuMemFree_v2": fn(DevicePointer);
    memcpy_htod_async = "cuMemcpyHtoDAsync_v2": fn(DevicePointer, *const c_void, usize, Handle);
    memcpy_dtoh_async = "cuMemcpyDtoHAsync_v2": fn(*mut c_void, DevicePointer, usize, Handle);
    memcpy_dtod_async = "cuMemcpyDtoDAsync_v2": fn(DevicePointer, DevicePointer, usize, Handle);
    module_load_data = "cuModuleLoadData": fn(*mut Handle, *const c_void);
    module_unload = "cuModuleUnload": fn(Handle);
    module_get_function = "cuModuleGetFunction": fn(*mut Handle, Handle, *const c_char);
    launch_kernel = "cuLaunchKernel": fn(
        Handle, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Handle,
        *mut *mut c_void, *mut *mut c_void
    );
    error_name = "cuGetErrorName": fn(Status, *mut *const c_char);
}

/// The driver, loaded on first use (`HIPINFER_CUDA_DRIVER` names another file), or why it
/// could not be.
pub fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let path = std::env::var("HIPINFER_CUDA_DRIVER").unwrap_or_else(|_| LIBRARY.to_string());
        // SAFETY: `path` is NVIDIA's driver library (its soname, or the file the user named for
        // it); nothing else is loaded through here.
        unsafe { Api::load(&path) }.map_err(|e| format!("{path} could not be loaded: {e}"))
    })
    .as_ref()
    .map_err(String::as_str)
}
