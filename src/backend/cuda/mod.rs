//! CUDA (feature `cuda`): NVIDIA GPUs through the driver API, as a [`Driver`] of the GPU backend,
//! running the same `kernels/*.hip` sources compiled with nvcc. The driver library is loaded at
//! run time ([`sys`]), so the binary starts anywhere; without it, [`CudaBackend::new`] answers
//! `hipErrorNoDevice` (100, Fatal) saying "no CUDA driver".
//!
//! Codes are `CUresult`s kept as raw integers: the shared ones mean what HIP's do (700 illegal
//! address, 2 out of memory, 719 launch failed), the CUDA-only ones have their own rows
//! (`error::codes::CUDA_ONLY_CODES`); each error carries the driver's own name in its detail.

mod code_objects;
mod sys;

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use parking_lot::Mutex;

use crate::error::{HipError, Op};

use super::gpu::{CodeObjects, CopyKind, Driver, GpuBackend, GpuBuffer, Handle};
use super::traits::DeviceInfo;

pub use code_objects::BUILT_ARCHS;

/// An NVIDIA GPU.
pub type CudaBackend = GpuBackend<CudaDriver>;
/// A buffer on an NVIDIA GPU.
pub type CudaBuffer = GpuBuffer<CudaDriver>;

/// The CUDA driver API of this process, with each device's primary context once retained.
pub struct CudaDriver {
    api: &'static sys::Api,
    /// (device ordinal, its primary context) for the devices bound so far.
    contexts: Mutex<Vec<(i32, usize)>>,
}

impl std::fmt::Debug for CudaDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDriver").finish_non_exhaustive()
    }
}

/// Whether the CUDA driver sees GPU `device` (no context is created on it).
pub fn device_present(device: i32) -> bool {
    super::gpu::device_present::<CudaDriver>(device)
}

impl CudaDriver {
    /// `Ok(())` for success and the Benign codes, else the error with the driver's name for it.
    fn check(&self, status: sys::Status, op: Op) -> Result<(), HipError> {
        HipError::check(status, op).map_err(|error| {
            let mut name: *const c_char = std::ptr::null();
            // SAFETY: `name` is a writable pointer slot; the driver sets it to a static
            // NUL-terminated string or leaves it null for a code it does not know.
            let known = unsafe { (self.api.error_name)(status, &mut name) } == 0;
            if known && !name.is_null() {
                // SAFETY: non-null, NUL-terminated and static (the driver's own table).
                let text = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                error.with_detail(format!("CUDA: {text}"))
            } else {
                error.with_detail(format!("CUDA: code {status}"))
            }
        })
    }

    fn device(&self, ordinal: i32) -> Result<sys::Device, HipError> {
        let mut device: sys::Device = 0;
        // SAFETY: `device` is a writable slot; the driver validates the ordinal.
        self.check(
            unsafe { (self.api.device_get)(&mut device, ordinal) },
            Op::Init,
        )
        .map_err(|e| e.with_device(ordinal))?;
        Ok(device)
    }

    fn attribute(&self, attribute: c_int, device: sys::Device) -> Result<i32, HipError> {
        let mut value: c_int = 0;
        // SAFETY: `value` is a writable c_int for the duration of the call.
        let status = unsafe { (self.api.device_attribute)(&mut value, attribute, device) };
        self.check(status, Op::Query)?;
        Ok(value)
    }

    /// The primary context of `ordinal`, retained on first use.
    fn primary_context(&self, ordinal: i32) -> Result<sys::Handle, HipError> {
        let mut contexts = self.contexts.lock();
        if let Some(&(_, context)) = contexts.iter().find(|(d, _)| *d == ordinal) {
            return Ok(context as sys::Handle);
        }
        let device = self.device(ordinal)?;
        let mut context: sys::Handle = std::ptr::null_mut();
        // SAFETY: `context` is a writable handle slot; `device` came from cuDeviceGet.
        let status = unsafe { (self.api.primary_context_retain)(&mut context, device) };
        self.check(status, Op::Init)
            .map_err(|e| e.with_device(ordinal))?;
        contexts.push((ordinal, context as usize));
        Ok(context)
    }
}

impl Driver for CudaDriver {
    const NAME: &'static str = "cuda";

    fn open() -> Result<Self, HipError> {
        let api = sys::api().map_err(|why| {
            HipError::new(HipError::NO_DEVICE, Op::Init).with_detail(format!(
                "no CUDA driver: {why} (install NVIDIA's driver, or run with --backend cpu)"
            ))
        })?;
        let driver = CudaDriver {
            api,
            contexts: Mutex::new(Vec::new()),
        };
        // SAFETY: takes no pointers; flags must be 0.
        let status = unsafe { (api.init)(0) };
        driver
            .check(status, Op::Init)
            .map_err(|e| e.with_detail("the CUDA driver found no usable GPU (cuInit)"))?;
        Ok(driver)
    }

    fn code_objects(&self) -> CodeObjects {
        code_objects::CODE
    }

    fn device_count(&self) -> Result<i32, HipError> {
        let mut count: c_int = 0;
        // SAFETY: `count` is a writable c_int for the duration of the call.
        self.check(unsafe { (self.api.device_count)(&mut count) }, Op::Init)?;
        Ok(count)
    }

    fn bind(&self, device: i32) -> Result<(), HipError> {
        let context = self.primary_context(device)?;
        // SAFETY: `context` is a primary context this driver retained (never released).
        let status = unsafe { (self.api.context_set_current)(context) };
        self.check(status, Op::Init)
            .map_err(|e| e.with_device(device))
    }

    fn reset(&self, device: i32) -> Result<(), HipError> {
        let handle = self.device(device)?;
        // SAFETY: takes no pointers; destroys every allocation, stream and module of the primary
        // context, none of which the caller uses afterwards (its context was dropped first).
        let status = unsafe { (self.api.primary_context_reset)(handle) };
        // The next bind retains the (fresh) primary context again.
        self.contexts.lock().retain(|(d, _)| *d != device);
        self.check(status, Op::Init)
            .map_err(|e| e.with_device(device))
    }

    fn info(&self, ordinal: i32) -> Result<DeviceInfo, HipError> {
        let device = self.device(ordinal)?;
        let mut name = [0 as c_char; 256];
        // SAFETY: `name` is a writable buffer of the length passed; the driver writes a
        // NUL-terminated string of at most that length.
        let status =
            unsafe { (self.api.device_name)(name.as_mut_ptr(), name.len() as c_int, device) };
        self.check(status, Op::Query)?;
        // SAFETY: the driver NUL-terminated `name` within its length.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut memory: usize = 0;
        // SAFETY: `memory` is a writable size_t for the duration of the call.
        let status = unsafe { (self.api.device_total_memory)(&mut memory, device) };
        self.check(status, Op::Query)?;
        let major = self.attribute(sys::ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)?;
        let minor = self.attribute(sys::ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)?;
        Ok(DeviceInfo {
            backend: Self::NAME,
            device: ordinal,
            name,
            arch: format!("sm_{major}{minor}"),
            total_memory: memory as u64,
            compute_units: self
                .attribute(sys::ATTRIBUTE_MULTIPROCESSOR_COUNT, device)?
                .max(0) as u32,
        })
    }

    fn stream_create(&self) -> Result<Handle, HipError> {
        let mut stream: sys::Handle = std::ptr::null_mut();
        // SAFETY: `stream` is a writable handle slot; flags 0 (CU_STREAM_DEFAULT).
        let status = unsafe { (self.api.stream_create)(&mut stream, 0) };
        self.check(status, Op::Init)?;
        Ok(stream as Handle)
    }

    unsafe fn stream_destroy(&self, stream: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a live stream of ours, unused afterwards).
        let status = unsafe { (self.api.stream_destroy)(stream as sys::Handle) };
        self.check(status, Op::Free)
    }

    unsafe fn stream_synchronize(&self, stream: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a live stream of ours).
        let status = unsafe { (self.api.stream_synchronize)(stream as sys::Handle) };
        self.check(status, Op::Synchronize)
    }

    fn malloc(&self, bytes: usize) -> Result<u64, HipError> {
        let mut address: sys::DevicePointer = 0;
        // SAFETY: `address` is a writable slot for the duration of the call.
        let status = unsafe { (self.api.mem_alloc)(&mut address, bytes) };
        self.check(status, Op::Allocate)
            .map_err(|e| e.with_bytes(bytes))?;
        Ok(address)
    }

    unsafe fn free(&self, address: u64) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (memory of ours in the current context, freed once).
        let status = unsafe { (self.api.mem_free)(address) };
        self.check(status, Op::Free)
    }

    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        stream: Handle,
    ) -> Result<(), HipError> {
        let stream = stream as sys::Handle;
        // SAFETY (all three): the caller's guarantee — both sides valid for `bytes` of the
        // memory `kind` names (device sides are device addresses passed as pointers), the host
        // side alive until the stream is synchronized, and a live stream.
        let (status, op) = match kind {
            CopyKind::HostToDevice => (
                unsafe { (self.api.memcpy_htod_async)(dst as u64, src, bytes, stream) },
                Op::CopyHostToDevice,
            ),
            CopyKind::DeviceToHost => (
                unsafe { (self.api.memcpy_dtoh_async)(dst, src as u64, bytes, stream) },
                Op::CopyDeviceToHost,
            ),
            CopyKind::DeviceToDevice => (
                unsafe { (self.api.memcpy_dtod_async)(dst as u64, src as u64, bytes, stream) },
                Op::CopyDeviceToDevice,
            ),
        };
        self.check(status, op)
    }

    fn module_load(&self, image: &'static [u8]) -> Result<Handle, HipError> {
        let mut module: sys::Handle = std::ptr::null_mut();
        // SAFETY: `image` is a whole fatbin ('static embedded bytes); the driver reads it during
        // the call.
        let status = unsafe { (self.api.module_load_data)(&mut module, image.as_ptr().cast()) };
        self.check(status, Op::ModuleLoad)?;
        Ok(module as Handle)
    }

    unsafe fn module_unload(&self, module: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a loaded module none of whose functions runs again).
        let status = unsafe { (self.api.module_unload)(module as sys::Handle) };
        self.check(status, Op::ModuleLoad)
    }

    unsafe fn module_function(&self, module: Handle, name: &str) -> Result<Handle, HipError> {
        let c_name = CString::new(name)
            .map_err(|_| HipError::new(1, Op::ModuleLoad).with_detail("kernel name has a NUL"))?;
        let mut function: sys::Handle = std::ptr::null_mut();
        // SAFETY: `function` is a writable slot, `c_name` NUL-terminated and alive for the call,
        // and the module is loaded (the caller's guarantee).
        let status = unsafe {
            (self.api.module_get_function)(&mut function, module as sys::Handle, c_name.as_ptr())
        };
        self.check(status, Op::ModuleLoad)
            .map_err(|e| e.with_detail(format!("kernel {name} not found in its fatbin")))?;
        Ok(function as Handle)
    }

    unsafe fn launch(
        &self,
        function: Handle,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        stream: Handle,
        params: &mut [*mut c_void],
    ) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a loaded kernel, parameters of its types in order,
        // buffers large enough); `params` outlives the call and `extra` is null.
        let status = unsafe {
            (self.api.launch_kernel)(
                function as sys::Handle,
                grid.0,
                grid.1,
                grid.2,
                block.0,
                block.1,
                block.2,
                shared_bytes,
                stream as sys::Handle,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check(status, Op::Launch)
    }
}
