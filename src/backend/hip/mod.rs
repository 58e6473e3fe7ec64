//! HIP (feature `hip`): AMD GPUs through the HIP runtime, as a [`Driver`] of the GPU backend.
//! The FFI is in layers — raw declarations ([`sys`]) and one checked function per call
//! ([`result`]) — and the kernels of `kernels/*.hip` are compiled by `build.rs` and embedded.
//!
//! Without a GPU, [`HipBackend::new`] returns at once with `hipErrorInvalidDevice` or
//! `hipErrorNoDevice` from init, classified Fatal: no panic, no hang.

mod code_objects;
mod result;
mod sys;

use std::ffi::c_void;

use crate::error::HipError;

use super::gpu::{CodeObjects, CopyKind, Driver, GpuBackend, GpuBuffer, Handle};
use super::traits::DeviceInfo;

pub use code_objects::BUILT_ARCHS;

/// The HIP runtime.
#[derive(Debug)]
pub struct HipDriver(());

/// An AMD GPU.
pub type HipBackend = GpuBackend<HipDriver>;
/// A buffer on an AMD GPU.
pub type HipBuffer = GpuBuffer<HipDriver>;

/// Whether HIP sees GPU `device` (no context is created on it).
pub fn device_present(device: i32) -> bool {
    super::gpu::device_present::<HipDriver>(device)
}

/// The architecture name from `hipDeviceAttributeGcnArch` (910 → gfx90a, 1030 → gfx1030).
fn arch_name(gcn_arch: i32) -> String {
    match gcn_arch {
        910 => "gfx90a".into(),
        n => format!("gfx{n}"),
    }
}

fn memcpy_kind(kind: CopyKind) -> std::ffi::c_int {
    match kind {
        CopyKind::HostToDevice => sys::MEMCPY_HOST_TO_DEVICE,
        CopyKind::DeviceToHost => sys::MEMCPY_DEVICE_TO_HOST,
        CopyKind::DeviceToDevice => sys::MEMCPY_DEVICE_TO_DEVICE,
    }
}

impl Driver for HipDriver {
    const NAME: &'static str = "hip";

    fn open() -> Result<Self, HipError> {
        result::init()
            .map_err(|e| e.with_detail("the HIP runtime found no usable AMD GPU (hipInit)"))?;
        Ok(HipDriver(()))
    }

    fn code_objects(&self) -> CodeObjects {
        code_objects::CODE
    }

    fn device_count(&self) -> Result<i32, HipError> {
        result::device_count()
    }

    fn bind(&self, device: i32) -> Result<(), HipError> {
        result::set_device(device)
    }

    fn reset(&self, device: i32) -> Result<(), HipError> {
        result::set_device(device)?;
        result::device_reset()
    }

    fn info(&self, device: i32) -> Result<DeviceInfo, HipError> {
        // The architecture is informational, and HIP 5's attribute 10003 (GcnArch) answers
        // hipErrorInvalidValue on ROCm >= 6 (renamed Unused4): a failure there is a warning,
        // never a failed start.
        let arch = match result::attribute(sys::ATTRIBUTE_GCN_ARCH, device) {
            Ok(gcn) => arch_name(gcn),
            Err(error) => {
                tracing::warn!(%error, device, "could not read the GPU's architecture");
                "unknown".into()
            }
        };
        Ok(DeviceInfo {
            backend: Self::NAME,
            device,
            name: result::device_name(device)?,
            arch,
            total_memory: result::total_memory(device)?,
            compute_units: result::attribute(sys::ATTRIBUTE_MULTIPROCESSOR_COUNT, device)?.max(0)
                as u32,
        })
    }

    fn stream_create(&self) -> Result<Handle, HipError> {
        result::stream_create().map(|s| s as Handle)
    }

    unsafe fn stream_destroy(&self, stream: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a live stream of ours, unused afterwards).
        unsafe { result::stream_destroy(stream as result::Handle) }
    }

    unsafe fn stream_synchronize(&self, stream: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a live stream of ours).
        unsafe { result::stream_synchronize(stream as result::Handle) }
    }

    fn malloc(&self, bytes: usize) -> Result<u64, HipError> {
        result::malloc(bytes).map(|a| a as u64)
    }

    unsafe fn free(&self, address: u64) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (memory of ours in the current context, freed once).
        unsafe { result::free(address as usize) }
    }

    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        stream: Handle,
    ) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (both sides valid for `bytes`, a live stream).
        unsafe {
            result::memcpy_async(dst, src, bytes, memcpy_kind(kind), stream as result::Handle)
        }
    }

    fn module_load(&self, image: &'static [u8]) -> Result<Handle, HipError> {
        result::module_load(image).map(|m| m as Handle)
    }

    unsafe fn module_unload(&self, module: Handle) -> Result<(), HipError> {
        // SAFETY: the caller's guarantee (a loaded module none of whose functions runs again).
        unsafe { result::module_unload(module as result::Handle) }
    }

    unsafe fn module_function(&self, module: Handle, name: &str) -> Result<Handle, HipError> {
        // SAFETY: the caller's guarantee (a loaded module).
        unsafe { result::module_function(module as result::Handle, name) }.map(|f| f as Handle)
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
        // SAFETY: the caller's guarantee (a loaded kernel, parameters of its types, buffers
        // large enough).
        unsafe {
            result::launch(
                function as result::Handle,
                grid,
                block,
                shared_bytes,
                stream as result::Handle,
                params,
            )
        }
    }
}
