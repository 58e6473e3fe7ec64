//! The device layer under the GPU backends: one trait with a HIP implementation
//! (`backend::hip`) and a CUDA one (`backend::cuda`). HIP and CUDA are one API in two spellings
//! (`hipModuleLaunchKernel` and `cuLaunchKernel` take the same arguments; 700 is an illegal
//! address in both), so [`super::GpuBackend`] holds everything else once.
//!
//! Handles and device addresses are plain integers: opaque here, never dereferenced.

use std::ffi::c_void;

use crate::backend::traits::DeviceInfo;
use crate::error::HipError;

/// An opaque driver handle (stream, module, function), kept as an address.
pub type Handle = usize;

/// The direction of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

/// The kernels' compiled code, embedded in the binary by `build.rs`.
#[derive(Debug, Clone, Copy)]
pub struct CodeObjects {
    /// Every code object, by kernel file name (`kernels/<name>.hip`).
    pub all: &'static [(&'static str, &'static [u8])],
    /// What they were built for (`gfx90a,gfx1030`; `sm_80,sm_90,compute_90`).
    pub built_for: &'static str,
    /// The variable that chooses it at build time.
    pub chosen_by: &'static str,
}

/// One GPU runtime. Every method that touches a device acts on the one bound to the calling
/// thread: [`super::GpuBackend`] calls [`Driver::bind`] first, on whichever thread it runs.
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// `hip` or `cuda`: the backend's name in `DeviceInfo`, logs and errors.
    const NAME: &'static str;

    /// Initialises the runtime (loading it first where it is loaded at run time).
    fn open() -> Result<Self, HipError>
    where
        Self: Sized;
    fn code_objects(&self) -> CodeObjects;
    fn device_count(&self) -> Result<i32, HipError>;
    /// Makes `device` current on the calling thread.
    fn bind(&self, device: i32) -> Result<(), HipError>;
    /// Destroys `device`'s context: its memory, streams and modules.
    fn reset(&self, device: i32) -> Result<(), HipError>;
    /// Name, architecture, memory and compute units of `device`.
    fn info(&self, device: i32) -> Result<DeviceInfo, HipError>;

    fn stream_create(&self) -> Result<Handle, HipError>;
    /// # Safety
    /// `stream` came from [`Driver::stream_create`] and is not used after this call.
    unsafe fn stream_destroy(&self, stream: Handle) -> Result<(), HipError>;
    /// # Safety
    /// `stream` came from [`Driver::stream_create`] and has not been destroyed.
    unsafe fn stream_synchronize(&self, stream: Handle) -> Result<(), HipError>;

    /// `bytes` of device memory: its device address.
    fn malloc(&self, bytes: usize) -> Result<u64, HipError>;
    /// # Safety
    /// `address` came from [`Driver::malloc`] in the current context and is not used afterwards.
    unsafe fn free(&self, address: u64) -> Result<(), HipError>;
    /// # Safety
    /// `dst` and `src` address `bytes` valid bytes of the memory `kind` says (a device address
    /// as a pointer on the device side); the host side stays alive and unaliased until the stream
    /// is synchronized, and `stream` is live.
    unsafe fn copy_async(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        stream: Handle,
    ) -> Result<(), HipError>;

    fn module_load(&self, image: &'static [u8]) -> Result<Handle, HipError>;
    /// # Safety
    /// `module` came from [`Driver::module_load`] and none of its functions runs afterwards.
    unsafe fn module_unload(&self, module: Handle) -> Result<(), HipError>;
    /// # Safety
    /// `module` came from [`Driver::module_load`] and is still loaded.
    unsafe fn module_function(&self, module: Handle, name: &str) -> Result<Handle, HipError>;
    /// # Safety
    /// `function` is a kernel of a loaded module; `params` holds one pointer per kernel
    /// parameter, in order, each to a live value of exactly the parameter's type; every device
    /// address among them is large enough for what the kernel touches with these sizes.
    unsafe fn launch(
        &self,
        function: Handle,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        stream: Handle,
        params: &mut [*mut c_void],
    ) -> Result<(), HipError>;
}
