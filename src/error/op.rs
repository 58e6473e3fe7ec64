//! The closed set of device operations: a metric label, and the context of every `HipError`.

use std::fmt;

/// A device operation. Closed, so it is safe as a metric label and as an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Init,
    ModuleLoad,
    Allocate,
    Free,
    CopyHostToDevice,
    CopyDeviceToHost,
    CopyDeviceToDevice,
    Launch,
    Synchronize,
    Query,
}

impl Op {
    /// How many operations there are.
    pub const COUNT: usize = 10;

    /// Every operation, in declaration order (`ALL[op.index()] == op`).
    pub const ALL: [Op; Op::COUNT] = [
        Op::Init,
        Op::ModuleLoad,
        Op::Allocate,
        Op::Free,
        Op::CopyHostToDevice,
        Op::CopyDeviceToHost,
        Op::CopyDeviceToDevice,
        Op::Launch,
        Op::Synchronize,
        Op::Query,
    ];

    /// Position in [`Op::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metric label and the name used in configuration (`HIPINFER_RETRY_<NAME>_…`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Init => "init",
            Op::ModuleLoad => "module_load",
            Op::Allocate => "allocate",
            Op::Free => "free",
            Op::CopyHostToDevice => "copy_h2d",
            Op::CopyDeviceToHost => "copy_d2h",
            Op::CopyDeviceToDevice => "copy_d2d",
            Op::Launch => "launch",
            Op::Synchronize => "synchronize",
            Op::Query => "query",
        }
    }

    /// The inverse of [`Op::as_str`].
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In configuration files an operation is its name (`"allocate"`).
impl serde::Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
        let name = String::deserialize(d)?;
        Op::from_name(&name).ok_or_else(|| {
            let names: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown operation {name:?} (one of {})",
                names.join(", ")
            ))
        })
    }
}
