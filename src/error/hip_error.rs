//! `HipError`: a HIP status code, the operation it came from and what was being done.

use std::fmt;

use super::codes::{self, LAUNCH_FAILURE, OPERATING_SYSTEM, RUNTIME_MEMORY};
use super::op::Op;
use super::recovery::{Classify, Recovery};

/// A failed device call.
///
/// Keeps the raw `hipError_t` integer (never transmuted into an enum, so codes from a newer ROCm
/// stay representable), the operation, and context. Ask it questions ([`HipError::recovery`],
/// [`HipError::is_recoverable`], [`HipError::is_permanent`]) rather than matching on codes.
///
/// Two words: the context is boxed, so `Result<(), HipError>` comes back in registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HipError {
    code: i32,
    op: Op,
    context: Option<Box<ErrorContext>>,
}

/// What was being done when a device call failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ErrorContext {
    device: Option<i32>,
    kernel: Option<&'static str>,
    bytes: Option<usize>,
    detail: Option<Box<str>>,
}

impl HipError {
    /// `hipErrorOutOfMemory`.
    pub const OUT_OF_MEMORY: i32 = 2;
    /// `hipErrorNoDevice`.
    pub const NO_DEVICE: i32 = 100;
    /// `hipErrorInvalidDevice`.
    pub const INVALID_DEVICE: i32 = 101;
    /// `hipErrorOperatingSystem`.
    pub const OPERATING_SYSTEM: i32 = OPERATING_SYSTEM;
    /// `hipErrorIllegalAddress`.
    pub const ILLEGAL_ADDRESS: i32 = 700;
    /// `hipErrorLaunchFailure`.
    pub const LAUNCH_FAILURE: i32 = LAUNCH_FAILURE;

    /// What a device call's status means: `Ok` for success and for the Benign codes (profiler
    /// state, a context already current, peer access or host memory already set up — the call
    /// did what was asked), the error otherwise. Every backend's FFI layer checks with this.
    pub fn check(code: i32, op: Op) -> Result<(), HipError> {
        if code == 0 {
            return Ok(());
        }
        let error = HipError::new(code, op);
        if error.recovery() == Recovery::Benign {
            tracing::debug!(
                code,
                op = op.as_str(),
                "a benign status, treated as success"
            );
            return Ok(());
        }
        Err(error)
    }

    /// An error with `code` from `op`, without further context.
    pub fn new(code: i32, op: Op) -> Self {
        HipError {
            code,
            op,
            context: None,
        }
    }

    /// Adds the device index.
    pub fn with_device(mut self, device: i32) -> Self {
        self.context_mut().device = Some(device);
        self
    }

    /// Adds the kernel being launched.
    pub fn with_kernel(mut self, kernel: &'static str) -> Self {
        self.context_mut().kernel = Some(kernel);
        self
    }

    /// Adds the byte count being allocated or copied.
    pub fn with_bytes(mut self, bytes: usize) -> Self {
        self.context_mut().bytes = Some(bytes);
        self
    }

    /// Adds a free-text detail (shown in `Display`, never used as a metric label).
    /// Adds a detail; one already there (the driver's own words, say) is kept after it.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        let context = self.context_mut();
        context.detail = Some(match context.detail.take() {
            Some(earlier) => format!("{detail}; {earlier}").into_boxed_str(),
            None => detail.into_boxed_str(),
        });
        self
    }

    fn context_mut(&mut self) -> &mut ErrorContext {
        self.context.get_or_insert_with(Box::default)
    }

    /// The raw `hipError_t` value.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The HIP name of the code (`hipErrorOutOfMemory`), or `hipErrorUnrecognized`.
    pub fn name(&self) -> &'static str {
        codes::name_of(self.code)
    }

    /// The operation the error came from.
    pub fn op(&self) -> Op {
        self.op
    }

    pub fn device(&self) -> Option<i32> {
        self.context.as_ref()?.device
    }

    pub fn kernel(&self) -> Option<&'static str> {
        self.context.as_ref()?.kernel
    }

    pub fn bytes(&self) -> Option<usize> {
        self.context.as_ref()?.bytes
    }

    pub fn detail(&self) -> Option<&str> {
        self.context.as_ref()?.detail.as_deref()
    }

    /// What recovery this failure needs (the table in `hip-errors.md`).
    ///
    /// `hipErrorLaunchFailure` (719) depends on where it was seen: returned by the launch call
    /// itself it is ambiguous (Probe); seen at synchronize, a copy or a query it means a kernel
    /// faulted and the context is poisoned (Reset). Codes HIP 5.2 does not define are Probe.
    pub fn recovery(&self) -> Recovery {
        if self.code == LAUNCH_FAILURE && self.op == Op::Launch {
            return Recovery::Probe;
        }
        codes::lookup(self.code).map_or(Recovery::Probe, |info| info.class)
    }

    /// Can `retry_operation` fix this in place (Retry, Reclaim or Poll)?
    pub fn is_recoverable(&self) -> bool {
        self.recovery().is_recoverable_in_place()
    }

    /// Will this never succeed, however often it is tried or whatever is reset (Fatal)?
    pub fn is_permanent(&self) -> bool {
        self.recovery() == Recovery::Fatal
    }

    /// Is the device context poisoned, so that only a reset (or a new process) helps?
    pub fn needs_reset(&self) -> bool {
        self.recovery() == Recovery::Reset
    }
}

impl Classify for HipError {
    fn recovery(&self) -> Recovery {
        HipError::recovery(self)
    }

    fn escalation(&self) -> Option<(u32, Recovery)> {
        match self.code {
            OPERATING_SYSTEM => Some((2, Recovery::Probe)),
            RUNTIME_MEMORY => Some((1, Recovery::Probe)),
            _ => None,
        }
    }

    fn code_label(&self) -> &'static str {
        self.name()
    }

    fn code(&self) -> Option<i32> {
        Some(self.code)
    }
}

impl fmt::Display for HipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HIP error {} ({}) during {} [recovery: {}",
            self.code,
            self.name(),
            self.op,
            self.recovery()
        )?;
        if let Some(device) = self.device() {
            write!(f, ", device {device}")?;
        }
        if let Some(kernel) = self.kernel() {
            write!(f, ", kernel {kernel}")?;
        }
        if let Some(bytes) = self.bytes() {
            write!(f, ", {bytes} bytes")?;
        }
        f.write_str("]")?;
        if let Some(detail) = self.detail() {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HipError {}
