//! The recovery classes: what the engine does about a failure.
//!
//! The retry layer knows nothing about HIP. It asks an error for its [`Recovery`] class through
//! the [`Classify`] trait and acts on the answer, so the HIP backend, the CPU backend and the fault
//! injector all plug into the same retry machinery.

use std::fmt;

/// What to do about a failed device call (see `docs/hip-errors.md` in the shared folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// The same call may succeed after a wait: retry with backoff.
    Retry,
    /// Out of memory: free cached device blocks, then retry.
    Reclaim,
    /// The device context is poisoned: never retry the call; reset the backend and replay the step.
    Reset,
    /// A bug, a bad argument, a missing device or a wrong code object: never retry.
    Fatal,
    /// "Not ready yet": query again.
    Poll,
    /// Not really an error (profiler state, already-enabled peer access): treat as success.
    Benign,
    /// Ambiguous: run a health probe; a failed probe means Reset, a passing one Fatal.
    Probe,
}

impl Recovery {
    /// Every class, in declaration order.
    pub const ALL: [Recovery; 7] = [
        Recovery::Retry,
        Recovery::Reclaim,
        Recovery::Reset,
        Recovery::Fatal,
        Recovery::Poll,
        Recovery::Benign,
        Recovery::Probe,
    ];

    /// A stable lower-case name, used as a metric label and in events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Recovery::Retry => "retry",
            Recovery::Reclaim => "reclaim",
            Recovery::Reset => "reset",
            Recovery::Fatal => "fatal",
            Recovery::Poll => "poll",
            Recovery::Benign => "benign",
            Recovery::Probe => "probe",
        }
    }

    /// Whether `retry_operation` can fix this in place (Retry, Reclaim, Poll).
    pub const fn is_recoverable_in_place(self) -> bool {
        matches!(self, Recovery::Retry | Recovery::Reclaim | Recovery::Poll)
    }

    /// Whether a failure of this class says something about the device's health (for the
    /// circuit breaker). Fatal errors are the caller's fault, Poll is not a failure.
    pub const fn counts_against_device(self) -> bool {
        matches!(
            self,
            Recovery::Retry | Recovery::Reclaim | Recovery::Reset | Recovery::Probe
        )
    }
}

/// In JSON (reports, the worker protocol) a class is its name (`"reset"`).
impl serde::Serialize for Recovery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Recovery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Recovery, D::Error> {
        let name = String::deserialize(d)?;
        Recovery::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown recovery class {name:?}")))
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error the retry layer can ask questions of.
pub trait Classify {
    /// The recovery class of this failure.
    fn recovery(&self) -> Recovery;

    /// After this many in-place retries of this same failure, treat it as the returned class
    /// instead (HIP's OperatingSystem error: "Retry ×2, then Probe"). `None`: no escalation.
    fn escalation(&self) -> Option<(u32, Recovery)> {
        None
    }

    /// A short, bounded label naming the failure (a metric label value), e.g. `hipErrorOutOfMemory`.
    fn code_label(&self) -> &'static str;

    /// The raw numeric code, where the failure has one.
    fn code(&self) -> Option<i32> {
        None
    }
}
