//! A backend whose kernel launches wait while its gate is closed: holds steps (and so requests)
//! in flight for as long as a test needs, without sleeping.
#![allow(dead_code)]

use std::sync::Arc;

use hipinfer::backend::{Backend, DeviceInfo, Kernel, Word};
use hipinfer::HipError;
use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    waiting: Mutex<usize>,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn open(&self) {
        *self.open.lock() = true;
        self.changed.notify_all();
    }

    pub fn close(&self) {
        *self.open.lock() = false;
    }

    /// Launches waiting at the gate now.
    pub fn waiting(&self) -> usize {
        *self.waiting.lock()
    }

    /// Blocks until a launch waits at the gate (so a step is surely in flight).
    pub fn wait_for_waiter(&self) {
        let mut open = self.open.lock();
        while *self.waiting.lock() == 0 {
            self.changed
                .wait_for(&mut open, std::time::Duration::from_millis(1));
        }
    }

    fn pass(&self) {
        let mut open = self.open.lock();
        *self.waiting.lock() += 1;
        self.changed.notify_all();
        while !*open {
            self.changed.wait(&mut open);
        }
        *self.waiting.lock() -= 1;
    }
}

/// What a test wrapper does before forwarding a call to the backend it wraps.
pub trait Hooks: Send + Sync {
    fn before_launch(&self) {}
    fn before_synchronize(&self) {}
}

/// Launches wait at the gate.
impl Hooks for Arc<Gate> {
    fn before_launch(&self) {
        self.pass();
    }
}

/// Every synchronize takes this much longer: steps of a known length.
impl Hooks for std::time::Duration {
    fn before_synchronize(&self) {
        std::thread::sleep(*self);
    }
}

/// `B` with `hooks` run before its launches and synchronizes.
#[derive(Debug)]
pub struct Wrapped<B, H> {
    pub inner: B,
    pub hooks: H,
}

/// `B` behind a gate.
pub type Gated<B> = Wrapped<B, Arc<Gate>>;
/// `B` whose steps take longer.
pub type Slow<B> = Wrapped<B, std::time::Duration>;

impl<B: Backend<Error = HipError>, H: Hooks> Backend for Wrapped<B, H> {
    type Buffer = B::Buffer;
    type Error = HipError;

    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn packs_f32_weights(&self) -> bool {
        self.inner.packs_f32_weights()
    }
    fn allocate(&self, len: usize) -> Result<B::Buffer, HipError> {
        self.inner.allocate(len)
    }
    fn len(&self, buffer: &B::Buffer) -> usize {
        self.inner.len(buffer)
    }
    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut B::Buffer) -> Result<(), HipError> {
        self.inner.copy_to_device(src, dst)
    }
    fn copy_to_host<T: Word>(&self, src: &B::Buffer, dst: &mut [T]) -> Result<(), HipError> {
        self.inner.copy_to_host(src, dst)
    }
    fn copy_on_device(
        &self,
        src: &B::Buffer,
        dst: &mut B::Buffer,
        len: usize,
    ) -> Result<(), HipError> {
        self.inner.copy_on_device(src, dst, len)
    }
    fn launch(&self, kernel: Kernel<'_, B::Buffer>) -> Result<(), HipError> {
        self.hooks.before_launch();
        self.inner.launch(kernel)
    }
    fn synchronize(&self) -> Result<(), HipError> {
        self.hooks.before_synchronize();
        self.inner.synchronize()
    }
    fn reset(&self) -> Result<(), HipError> {
        self.inner.reset()
    }
    fn reclaim(&self) -> u64 {
        self.inner.reclaim()
    }
}

/// An engine on the CPU backend behind a closed gate: its steps wait until the test opens it.
pub fn gated_engine(
    config: hipinfer::engine::EngineConfig,
) -> (hipinfer::engine::InferenceEngine, Arc<Gate>) {
    let gate = Gate::closed();
    let backend = Gated {
        inner: hipinfer::backend::CpuBackend::with_threads(2).expect("cpu backend"),
        hooks: gate.clone(),
    };
    let engine = hipinfer::engine::InferenceEngine::with_backend(config, backend).expect("engine");
    (engine, gate)
}
