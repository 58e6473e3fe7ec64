//! Safe HIP types (layer 3 of 3): a device context (stream + loaded kernels) that cleans up
//! after itself, and device memory for the caching allocator.
//!
//! Handles are kept as plain addresses (`usize`): they are opaque to Rust, never dereferenced
//! here, and this keeps the types `Send + Sync` without an `unsafe impl`.

use crate::backend::allocator::RawMemory;
use crate::backend::kernel::KernelId;
use crate::error::HipError;

use super::code_objects;
use super::result;

/// A stream and every kernel's function on one device.
#[derive(Debug)]
pub struct Context {
    stream: usize,
    modules: Vec<usize>,
    functions: Vec<(KernelId, usize)>,
}

impl Context {
    /// Makes `device` current, creates a stream and loads every code object.
    pub fn create(device: i32) -> Result<Context, HipError> {
        result::set_device(device)?;
        let mut context = Context {
            stream: result::stream_create()? as usize,
            modules: Vec::new(),
            functions: Vec::new(),
        };
        for (file, image) in code_objects::ALL {
            let module = result::module_load(image).map_err(|e| {
                e.with_device(device).with_detail(format!(
                    "loading kernels/{file}.hip failed: was it built for this GPU's architecture? \
                     (built for {}; set HIPINFER_OFFLOAD_ARCH and rebuild)",
                    code_objects::BUILT_ARCHS
                ))
            })?;
            context.modules.push(module as usize);
            for id in KernelId::ALL
                .into_iter()
                .filter(|id| code_objects::file_of(*id) == file)
            {
                // SAFETY: `module` was just loaded and stays loaded until this context drops.
                let function = unsafe { result::module_function(module, id.symbol()) }?;
                context.functions.push((id, function as usize));
            }
        }
        Ok(context)
    }

    pub fn stream(&self) -> result::Handle {
        self.stream as result::Handle
    }

    /// The loaded function of `id`.
    pub fn function(&self, id: KernelId) -> Result<result::Handle, HipError> {
        self.functions
            .iter()
            .find(|(kernel, _)| *kernel == id)
            .map(|(_, f)| *f as result::Handle)
            .ok_or_else(|| HipError::new(98, crate::error::Op::Launch).with_kernel(id.symbol()))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        for &module in &self.modules {
            // SAFETY: the module was loaded by `create`; no launch can follow, as the context is
            // being dropped and functions are only reached through it.
            if let Err(error) = unsafe { result::module_unload(module as result::Handle) } {
                tracing::warn!(%error, "could not unload a HIP module");
            }
        }
        // SAFETY: the stream was created by `create` and nothing uses it after the drop.
        if let Err(error) = unsafe { result::stream_destroy(self.stream as result::Handle) } {
            tracing::warn!(%error, "could not destroy a HIP stream");
        }
    }
}

/// Device memory from `hipMalloc`, as blocks of the caching allocator (device addresses).
#[derive(Debug, Default)]
pub struct DeviceMemory;

impl RawMemory for DeviceMemory {
    type Block = usize;

    fn raw_allocate(&self, bytes: usize) -> Result<usize, HipError> {
        result::malloc(bytes)
    }

    fn raw_free(&self, address: usize) -> Result<(), HipError> {
        // SAFETY: the allocator only frees blocks it got from `raw_allocate` in the current
        // context (blocks of a context destroyed by a reset are forgotten, never freed), and a
        // block is freed once, when it leaves the cache.
        unsafe { result::free(address) }
    }
}
