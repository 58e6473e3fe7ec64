//! A device context (a stream and every kernel loaded) that cleans up after itself, and device
//! memory for the caching allocator — over any [`Driver`].

use std::sync::Arc;

use crate::backend::allocator::RawMemory;
use crate::backend::kernel::KernelId;
use crate::error::{HipError, Op};

use super::driver::{Driver, Handle};
use super::file_of;

/// A stream and every kernel's function on one device.
#[derive(Debug)]
pub struct Context<D: Driver> {
    driver: Arc<D>,
    device: i32,
    stream: Handle,
    modules: Vec<Handle>,
    functions: Vec<(KernelId, Handle)>,
}

impl<D: Driver> Context<D> {
    /// Binds `device`, creates a stream and loads every code object.
    pub fn create(driver: Arc<D>, device: i32) -> Result<Self, HipError> {
        driver.bind(device)?;
        let stream = driver.stream_create()?;
        let mut context = Context {
            driver,
            device,
            stream,
            modules: Vec::new(),
            functions: Vec::new(),
        };
        let code = context.driver.code_objects();
        for (file, image) in code.all {
            let module = context.driver.module_load(image).map_err(|e| {
                e.with_device(device).with_detail(format!(
                    "loading kernels/{file}.hip failed: was it built for this GPU's architecture? \
                     (built for {}; set {} and rebuild)",
                    code.built_for, code.chosen_by
                ))
            })?;
            context.modules.push(module);
            for id in KernelId::ALL
                .into_iter()
                .filter(|id| file_of(*id) == Some(*file))
            {
                // SAFETY: `module` was just loaded and stays loaded until this context drops.
                let function = unsafe { context.driver.module_function(module, id.symbol()) }?;
                context.functions.push((id, function));
            }
        }
        Ok(context)
    }

    pub fn stream(&self) -> Handle {
        self.stream
    }

    /// The loaded function of `id`.
    pub fn function(&self, id: KernelId) -> Result<Handle, HipError> {
        self.functions
            .iter()
            .find(|(kernel, _)| *kernel == id)
            .map(|(_, f)| *f)
            .ok_or_else(|| HipError::new(98, Op::Launch).with_kernel(id.symbol()))
    }
}

impl<D: Driver> Drop for Context<D> {
    fn drop(&mut self) {
        if let Err(error) = self.driver.bind(self.device) {
            tracing::warn!(%error, "could not bind the device to release its context");
            return;
        }
        for &module in &self.modules {
            // SAFETY: the module was loaded by `create`; no launch can follow, as the context is
            // being dropped and functions are only reached through it.
            if let Err(error) = unsafe { self.driver.module_unload(module) } {
                tracing::warn!(%error, backend = D::NAME, "could not unload a module");
            }
        }
        // SAFETY: the stream was created by `create` and nothing uses it after the drop.
        if let Err(error) = unsafe { self.driver.stream_destroy(self.stream) } {
            tracing::warn!(%error, backend = D::NAME, "could not destroy a stream");
        }
    }
}

/// Device memory of one device, as blocks of the caching allocator (device addresses).
#[derive(Debug)]
pub struct DeviceMemory<D: Driver> {
    driver: Arc<D>,
    device: i32,
}

impl<D: Driver> DeviceMemory<D> {
    pub fn new(driver: Arc<D>, device: i32) -> Self {
        DeviceMemory { driver, device }
    }
}

impl<D: Driver> RawMemory for DeviceMemory<D> {
    type Block = u64;

    fn raw_allocate(&self, bytes: usize) -> Result<u64, HipError> {
        self.driver.bind(self.device)?;
        self.driver.malloc(bytes)
    }

    fn raw_free(&self, address: u64) -> Result<(), HipError> {
        self.driver.bind(self.device)?;
        // SAFETY: the allocator only frees blocks it got from `raw_allocate` in the current
        // context (blocks of a context destroyed by a reset are forgotten, never freed), and a
        // block is freed once, when it leaves the cache.
        unsafe { self.driver.free(address) }
    }
}
