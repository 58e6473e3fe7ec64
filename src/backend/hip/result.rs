//! One thin checked function per HIP call (layer 2 of 3): the status code becomes a
//! `Result<_, HipError>` tagged with its operation. Still `unsafe` where the call takes raw
//! pointers; each says what the caller must guarantee.

use std::ffi::{c_char, c_int, c_void, CString};

use crate::error::{HipError, Op};

pub use super::sys::Handle;
use super::sys::{self, Status};

/// `Ok(())` for `hipSuccess` and the Benign codes ([`HipError::check`]), the error otherwise.
fn check(status: Status, op: Op) -> Result<(), HipError> {
    HipError::check(status, op)
}

pub fn init() -> Result<(), HipError> {
    // SAFETY: hipInit takes no pointers; flags must be 0.
    check(unsafe { sys::hipInit(0) }, Op::Init)
}

pub fn device_count() -> Result<i32, HipError> {
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid, writable c_int for the duration of the call.
    check(unsafe { sys::hipGetDeviceCount(&mut count) }, Op::Init)?;
    Ok(count)
}

pub fn set_device(device: i32) -> Result<(), HipError> {
    // SAFETY: takes no pointers; HIP validates the index and returns an error when it is bad.
    check(unsafe { sys::hipSetDevice(device) }, Op::Init).map_err(|e| e.with_device(device))
}

pub fn device_reset() -> Result<(), HipError> {
    // SAFETY: takes no pointers; resets the current device's primary context.
    check(unsafe { sys::hipDeviceReset() }, Op::Init)
}

pub fn attribute(attribute: c_int, device: i32) -> Result<i32, HipError> {
    let mut value: c_int = 0;
    // SAFETY: `value` is a valid, writable c_int for the duration of the call.
    check(
        unsafe { sys::hipDeviceGetAttribute(&mut value, attribute, device) },
        Op::Query,
    )?;
    Ok(value)
}

pub fn device_name(device: i32) -> Result<String, HipError> {
    let mut name = [0 as c_char; 256];
    // SAFETY: `name` is a writable buffer of the length passed; HIP writes a NUL-terminated string
    // of at most that length.
    check(
        unsafe { sys::hipDeviceGetName(name.as_mut_ptr(), name.len() as c_int, device) },
        Op::Query,
    )?;
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn total_memory(device: i32) -> Result<u64, HipError> {
    let mut bytes: usize = 0;
    // SAFETY: `bytes` is a valid, writable usize (size_t) for the duration of the call.
    check(
        unsafe { sys::hipDeviceTotalMem(&mut bytes, device) },
        Op::Query,
    )?;
    Ok(bytes as u64)
}

pub fn stream_create() -> Result<Handle, HipError> {
    let mut stream: Handle = std::ptr::null_mut();
    // SAFETY: `stream` is a valid, writable handle slot for the duration of the call.
    check(unsafe { sys::hipStreamCreate(&mut stream) }, Op::Init)?;
    Ok(stream)
}

/// # Safety
/// `stream` came from [`stream_create`] and is not used after this call.
pub unsafe fn stream_destroy(stream: Handle) -> Result<(), HipError> {
    // SAFETY: guaranteed by the caller.
    check(unsafe { sys::hipStreamDestroy(stream) }, Op::Free)
}

/// # Safety
/// `stream` came from [`stream_create`] and has not been destroyed.
pub unsafe fn stream_synchronize(stream: Handle) -> Result<(), HipError> {
    // SAFETY: guaranteed by the caller.
    check(
        unsafe { sys::hipStreamSynchronize(stream) },
        Op::Synchronize,
    )
}

pub fn malloc(bytes: usize) -> Result<usize, HipError> {
    let mut pointer: *mut c_void = std::ptr::null_mut();
    // SAFETY: `pointer` is a valid, writable pointer slot for the duration of the call.
    check(unsafe { sys::hipMalloc(&mut pointer, bytes) }, Op::Allocate)
        .map_err(|e| e.with_bytes(bytes))?;
    Ok(pointer as usize)
}

/// # Safety
/// `address` came from [`malloc`] in the current context and is not freed or used afterwards.
pub unsafe fn free(address: usize) -> Result<(), HipError> {
    // SAFETY: guaranteed by the caller.
    check(unsafe { sys::hipFree(address as *mut c_void) }, Op::Free)
}

/// # Safety
/// `dst` and `src` point to `bytes` valid bytes of the memory `kind` says (host or device), the
/// host side stays alive and unaliased until the stream is synchronized, and `stream` is live.
pub unsafe fn memcpy_async(
    dst: *mut c_void,
    src: *const c_void,
    bytes: usize,
    kind: c_int,
    stream: Handle,
) -> Result<(), HipError> {
    let op = match kind {
        sys::MEMCPY_HOST_TO_DEVICE => Op::CopyHostToDevice,
        sys::MEMCPY_DEVICE_TO_HOST => Op::CopyDeviceToHost,
        _ => Op::CopyDeviceToDevice,
    };
    // SAFETY: guaranteed by the caller.
    check(
        unsafe { sys::hipMemcpyAsync(dst, src, bytes, kind, stream) },
        op,
    )
    .map_err(|e| e.with_bytes(bytes))
}

pub fn module_load(image: &[u8]) -> Result<Handle, HipError> {
    let mut module: Handle = std::ptr::null_mut();
    // SAFETY: `image` is a whole code object kept alive by the caller ('static embedded bytes);
    // HIP copies what it needs during the call.
    check(
        unsafe { sys::hipModuleLoadData(&mut module, image.as_ptr().cast()) },
        Op::ModuleLoad,
    )?;
    Ok(module)
}

/// # Safety
/// `module` came from [`module_load`] and none of its functions is launched afterwards.
pub unsafe fn module_unload(module: Handle) -> Result<(), HipError> {
    // SAFETY: guaranteed by the caller.
    check(unsafe { sys::hipModuleUnload(module) }, Op::ModuleLoad)
}

/// # Safety
/// `module` came from [`module_load`] and is still loaded.
pub unsafe fn module_function(module: Handle, name: &str) -> Result<Handle, HipError> {
    let c_name = CString::new(name)
        .map_err(|_| HipError::new(1, Op::ModuleLoad).with_detail("kernel name has a NUL"))?;
    let mut function: Handle = std::ptr::null_mut();
    // SAFETY: `function` is a writable slot, `c_name` a NUL-terminated string alive for the call,
    // and the module is loaded (caller's guarantee).
    check(
        unsafe { sys::hipModuleGetFunction(&mut function, module, c_name.as_ptr()) },
        Op::ModuleLoad,
    )
    .map_err(|e| e.with_detail(format!("kernel {name} not found in its code object")))?;
    Ok(function)
}

/// # Safety
/// `function` is a kernel of a loaded module; `params` holds one pointer per kernel parameter,
/// in order, each to a live value of exactly the parameter's type; every device pointer among
/// them addresses memory large enough for what the kernel reads and writes with these sizes.
pub unsafe fn launch(
    function: Handle,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_bytes: u32,
    stream: Handle,
    params: &mut [*mut c_void],
) -> Result<(), HipError> {
    // SAFETY: guaranteed by the caller; `params` outlives the call, `extra` is null.
    let status = unsafe {
        sys::hipModuleLaunchKernel(
            function,
            grid.0,
            grid.1,
            grid.2,
            block.0,
            block.1,
            block.2,
            shared_bytes,
            stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    check(status, Op::Launch)
}
