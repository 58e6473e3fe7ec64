//! Argument checks every backend makes before touching memory, so a bad size is the same clear
//! `hipErrorInvalidValue` (or out-of-memory) on the CPU and on a GPU.

use crate::error::{HipError, Op};

/// Bytes of `len` 4-byte words, or an out-of-memory error when that overflows.
pub fn words_to_bytes(len: usize) -> Result<usize, HipError> {
    len.checked_mul(4).ok_or_else(|| {
        HipError::new(HipError::OUT_OF_MEMORY, Op::Allocate)
            .with_detail(format!("{len} words overflow"))
    })
}

/// A copy of `need` words with a buffer of `have`: fine when it fits.
pub fn copy_fits(op: Op, have: usize, need: usize) -> Result<(), HipError> {
    if need <= have {
        Ok(())
    } else {
        Err(HipError::new(1, op).with_detail(format!(
            "the buffer holds {have} values, the copy needs {need}"
        )))
    }
}

/// `hipErrorInvalidHandle` (Fatal): what a buffer of a context destroyed by a reset gets.
pub const STALE_BUFFER: i32 = 400;

/// Refuses a buffer allocated before the last reset (`is_current` false): its memory went with
/// the old context, and touching it would read freed memory (or, on a GPU, fault).
pub fn current(op: Op, is_current: bool) -> Result<(), HipError> {
    if is_current {
        Ok(())
    } else {
        Err(HipError::new(STALE_BUFFER, op).with_detail(
            "the buffer was allocated before a device reset and its memory is gone: upload it again",
        ))
    }
}
