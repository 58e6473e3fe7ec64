//! Sorting the supervisor's own failures (starting a worker, talking to it) into transient —
//! retry with backoff — and permanent — fail fast with a clear message. By error kind first, by
//! message only where the kind says nothing; permanent wins when both match.

use std::io::ErrorKind;

/// What to do about a spawn or IPC error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth another try after a backoff (a reset connection, a broken pipe, a timeout).
    Transient,
    /// Will fail the same way again (no such program, no permission, not an executable).
    Permanent,
}

const PERMANENT_KINDS: [ErrorKind; 4] = [
    ErrorKind::NotFound,
    ErrorKind::PermissionDenied,
    ErrorKind::InvalidInput,
    ErrorKind::Unsupported,
];

const TRANSIENT_KINDS: [ErrorKind; 8] = [
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::ConnectionRefused,
    ErrorKind::BrokenPipe,
    ErrorKind::WouldBlock,
    ErrorKind::TimedOut,
    ErrorKind::Interrupted,
    ErrorKind::UnexpectedEof,
];

/// Message fragments of permanent failures whose kind is `Other` or `Uncategorized` (exec
/// format errors, say: `ENOEXEC` has no kind of its own).
const PERMANENT_TEXT: [&str; 4] = [
    "exec format error",
    "no such file",
    "permission denied",
    "not a directory",
];

const TRANSIENT_TEXT: [&str; 5] = [
    "connection reset",
    "broken pipe",
    "timed out",
    "resource temporarily unavailable",
    "would block",
];

/// Classifies `error`: by its kind (and `ENOEXEC`, which has no kind of its own); by its message
/// only when the kind says nothing, permanent fragments before transient ones; transient when
/// nothing matches (a retry with backoff, bounded by the respawn breaker).
pub fn classify(error: &std::io::Error) -> FailureKind {
    let kind = error.kind();
    if PERMANENT_KINDS.contains(&kind) || error.raw_os_error() == Some(ENOEXEC) {
        return FailureKind::Permanent;
    }
    if TRANSIENT_KINDS.contains(&kind) {
        return FailureKind::Transient;
    }
    let text = error.to_string().to_ascii_lowercase();
    if PERMANENT_TEXT.iter().any(|t| text.contains(t)) {
        return FailureKind::Permanent;
    }
    if TRANSIENT_TEXT.iter().any(|t| text.contains(t)) {
        return FailureKind::Transient;
    }
    FailureKind::Transient
}

/// "Exec format error": the file is not a program this machine can run.
const ENOEXEC: i32 = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;

    #[test]
    fn kinds_decide_first_and_permanent_wins() {
        assert_eq!(
            classify(&Error::from(ErrorKind::NotFound)),
            FailureKind::Permanent
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::PermissionDenied)),
            FailureKind::Permanent
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::BrokenPipe)),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::ConnectionReset)),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::TimedOut)),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&Error::from_raw_os_error(8)),
            FailureKind::Permanent
        ); // ENOEXEC
           // A message naming both: permanent wins.
        let both = Error::other("broken pipe after exec format error");
        assert_eq!(classify(&both), FailureKind::Permanent);
        // A kind that says transient is not overruled by its message.
        let reset = Error::new(ErrorKind::ConnectionReset, "permission denied by peer");
        assert_eq!(classify(&reset), FailureKind::Transient);
        assert_eq!(
            classify(&Error::other("connection reset by peer")),
            FailureKind::Transient
        );
    }
}
