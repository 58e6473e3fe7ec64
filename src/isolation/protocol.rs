//! The supervisor ↔ worker protocol: length-prefixed frames over the worker's Unix socket.
//!
//! A frame is `[u32 length, little-endian][u8 tag][body]`, `length` counting the tag and the
//! body. Bulk data is binary (token ids in, embeddings out); everything else is a JSON body.
//! Decoding checks every length against what is left and against [`MAX_FRAME`], so a truncated,
//! oversized or garbled frame is an [`ProtocolError`], never a panic or a huge allocation.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::llm::{Feed, KvSlot};
use crate::model::{Encoding, Readout};
use crate::step::{RetryRecord, StepFailure};

/// The version of this protocol. A worker checks its supervisor's at `Start` (and the supervisor
/// the worker's at `Ready`): a mismatch — a worker program from another build — is a clear,
/// permanent start failure naming both versions, never a garbled conversation.
pub const PROTOCOL_VERSION: u32 = 4;

/// The largest frame either side accepts (256 MiB: 32 × 512 tokens of ids, or a batch's
/// embeddings, are far below it).
pub const MAX_FRAME: usize = 256 << 20;

/// A frame that cannot be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn malformed<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError::Malformed(message.into()))
}

/// The supervisor's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// Load the model and open the backend; answered by `Ready` or `StartFailed`.
    Start(WorkerStart),
    /// Run one step; answered by `StepDone` or `StepFailed` with the same id. `requests` are
    /// the ids of the requests the inputs belong to (for the recovery log).
    Step {
        id: u64,
        inputs: Vec<Encoding>,
        readout: Readout,
        requests: Vec<u64>,
    },
    /// Run one language-model step over the worker's KV cache; answered by `DecodeDone` or
    /// `StepFailed` with the same id.
    Decode {
        id: u64,
        feeds: Vec<WireFeed>,
        requests: Vec<u64>,
    },
    /// Run the probe kernel; answered by `ProbeDone`.
    Probe { id: u64 },
    /// Reset the device and upload the weights again; answered by `RecoverDone`.
    Recover { id: u64 },
    /// Exit now.
    Shutdown,
}

/// The worker's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    Ready(WorkerReady),
    StartFailed(StartFailure),
    StepDone {
        id: u64,
        embeddings: Vec<Vec<f32>>,
        report: WorkerReport,
    },
    StepFailed {
        id: u64,
        failure: StepFailure,
        report: WorkerReport,
    },
    /// Per feed, the logits of its wanted rows.
    DecodeDone {
        id: u64,
        logits: Vec<Vec<Vec<f32>>>,
        report: WorkerReport,
    },
    ProbeDone {
        id: u64,
        error: Option<String>,
        report: WorkerReport,
    },
    RecoverDone {
        id: u64,
        failure: Option<StepFailure>,
        report: WorkerReport,
    },
    /// Sent just before an injected fault takes the worker down (`abort` or `hang`).
    Injected {
        kind: String,
    },
}

/// One sequence's tokens in a `Decode` step (`crate::llm::Feed` with owned vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct WireFeed {
    pub slot: KvSlot,
    pub tokens: Vec<u32>,
    pub prompt: usize,
    pub logit_rows: Vec<usize>,
}

impl WireFeed {
    pub fn of(feed: &Feed<'_>) -> WireFeed {
        WireFeed {
            slot: feed.slot,
            tokens: feed.tokens.to_vec(),
            prompt: feed.prompt,
            logit_rows: feed.logit_rows.to_vec(),
        }
    }

    pub fn feed(&self) -> Feed<'_> {
        Feed {
            slot: self.slot,
            tokens: &self.tokens,
            prompt: self.prompt,
            logit_rows: &self.logit_rows,
        }
    }
}

/// What a worker runs: an embedding model's steps, or a language model's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// `spec` is a `RunnerSpec`; steps are `Step`.
    #[default]
    Embed,
    /// `spec` is a `DecoderSpec`; steps are `Decode`.
    Decode,
}

/// What a worker is started with (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStart {
    /// The supervisor's [`PROTOCOL_VERSION`] (0: from before versions existed).
    #[serde(default)]
    pub protocol: u32,
    /// What the worker runs.
    #[serde(default)]
    pub role: WorkerRole,
    /// What the runner is built from (a `RunnerSpec`, or a `DecoderSpec` for `Decode`), as
    /// JSON.
    pub spec: serde_json::Value,
    /// Faults to inject (tests and `hipinfer chaos`), as JSON.
    pub faults: Option<serde_json::Value>,
    /// How many workers were started before this one (it seeds the faults differently).
    pub incarnation: u64,
}

/// Why a worker could not start (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartFailure {
    pub message: String,
    /// Starting another worker the same way cannot work (a protocol mismatch, a bad
    /// configuration): the supervisor stops trying.
    #[serde(default)]
    pub permanent: bool,
    /// Faults injected while starting (an injected fault can be why): HIP code → count.
    #[serde(default)]
    pub injected: Vec<(i32, u64)>,
}

/// A worker's answer to `Start` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReady {
    /// The worker's [`PROTOCOL_VERSION`].
    #[serde(default)]
    pub protocol: u32,
    pub backend: String,
    pub device: i32,
    pub name: String,
    pub arch: String,
    pub total_memory: u64,
    pub compute_units: u32,
    pub pid: u32,
}

/// What a worker reports with each answer (JSON): the device calls it retried, its retry
/// metrics when they changed, its circuit breaker, and the faults it injected so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The failed attempts of the step's device calls that succeeded after retries.
    pub recovered: Vec<RetryRecord>,
    /// The worker's metric families, when they changed since its last report.
    pub metrics: Option<serde_json::Value>,
    /// `closed`, `half_open` or `open`.
    pub breaker: String,
    /// Faults injected by this worker so far: HIP code → count.
    pub injected: Vec<(i32, u64)>,
    pub reclaims: u64,
}

const START: u8 = 1;
const STEP: u8 = 2;
const PROBE: u8 = 3;
const SHUTDOWN: u8 = 4;
const RECOVER: u8 = 5;
const READY: u8 = 65;
const START_FAILED: u8 = 66;
const STEP_DONE: u8 = 67;
const STEP_FAILED: u8 = 68;
const PROBE_DONE: u8 = 69;
const INJECTED: u8 = 70;
const RECOVER_DONE: u8 = 71;
const DECODE: u8 = 6;
const DECODE_DONE: u8 = 72;

/// Writes one frame.
fn write_frame(out: &mut impl Write, tag: u8, body: &[u8]) -> Result<(), ProtocolError> {
    let length = body.len() + 1;
    if length > MAX_FRAME {
        return malformed(format!(
            "a {length}-byte frame is over the {MAX_FRAME}-byte limit"
        ));
    }
    let mut frame = Vec::with_capacity(4 + length);
    frame.extend_from_slice(&(length as u32).to_le_bytes());
    frame.push(tag);
    frame.extend_from_slice(body);
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame: its tag and body.
fn read_frame(input: &mut impl Read) -> Result<(u8, Vec<u8>), ProtocolError> {
    let mut header = [0u8; 4];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let length = u32::from_le_bytes(header) as usize;
    if length == 0 || length > MAX_FRAME {
        return malformed(format!("frame length {length} is not in 1..={MAX_FRAME}"));
    }
    let mut frame = vec![0u8; length];
    input.read_exact(&mut frame).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtocolError::Malformed(format!(
            "the connection closed inside a {length}-byte frame"
        )),
        _ => e.into(),
    })?;
    let body = frame.split_off(1);
    Ok((frame[0], body))
}

/// Appends little-endian values to a body.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64s(&mut self, values: &[u64]) -> &mut Self {
        self.u32(values.len() as u32);
        values
            .iter()
            .for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
        self
    }
    fn u32s(&mut self, values: &[u32]) -> &mut Self {
        self.u32(values.len() as u32);
        values
            .iter()
            .for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
        self
    }
    fn f32s(&mut self, values: &[f32]) -> &mut Self {
        values
            .iter()
            .for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
        self
    }
    fn json(&mut self, value: &impl Serialize) -> &mut Self {
        let text = serde_json::to_vec(value).unwrap_or_default();
        self.u32(text.len() as u32);
        self.0.extend_from_slice(&text);
        self
    }
}

/// Reads little-endian values from a body, checking each length against what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        if n > self.bytes.len() {
            return malformed(format!(
                "{what}: {n} bytes needed, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of `size` bytes each that must fit in what is left.
    fn count(&mut self, size: usize, what: &str) -> Result<usize, ProtocolError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(size) > self.bytes.len() {
            return malformed(format!(
                "{what}: {n} items do not fit in {} bytes",
                self.bytes.len()
            ));
        }
        Ok(n)
    }
    fn u32s(&mut self, what: &str) -> Result<Vec<u32>, ProtocolError> {
        let n = self.count(4, what)?;
        let bytes = self.take(n * 4, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
    fn u64s(&mut self, what: &str) -> Result<Vec<u64>, ProtocolError> {
        let n = self.count(8, what)?;
        let bytes = self.take(n * 8, what)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_le_bytes(a)
            })
            .collect())
    }
    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>, ProtocolError> {
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| ProtocolError::Malformed(format!("{what}: {n} values overflow")))?,
            what,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
    fn json<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, ProtocolError> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(format!("{what}: {e}")))
    }
    fn end(&self, what: &str) -> Result<(), ProtocolError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            malformed(format!("{what}: {} bytes left over", self.bytes.len()))
        }
    }
}

impl ToWorker {
    pub fn write(&self, out: &mut impl Write) -> Result<(), ProtocolError> {
        let mut body = Body::default();
        let tag = match self {
            ToWorker::Start(start) => {
                body.json(start);
                START
            }
            ToWorker::Step {
                id,
                inputs,
                readout,
                requests,
            } => {
                body.u64(*id).u32(inputs.len() as u32);
                for input in inputs {
                    body.u32s(&input.ids).u32s(&input.type_ids);
                }
                body.u32(match readout {
                    Readout::Pooled => 0,
                    Readout::PerToken => 1,
                });
                body.u64s(requests);
                STEP
            }
            ToWorker::Decode {
                id,
                feeds,
                requests,
            } => {
                body.u64(*id).u32(feeds.len() as u32);
                for feed in feeds {
                    let slot = feed.slot;
                    body.u64(slot.base as u64)
                        .u64(slot.capacity as u64)
                        .u64(slot.len as u64)
                        .u32s(&feed.tokens)
                        .u64(feed.prompt as u64)
                        .u64s(
                            &feed
                                .logit_rows
                                .iter()
                                .map(|&r| r as u64)
                                .collect::<Vec<_>>(),
                        );
                }
                body.u64s(requests);
                DECODE
            }
            ToWorker::Probe { id } => {
                body.u64(*id);
                PROBE
            }
            ToWorker::Recover { id } => {
                body.u64(*id);
                RECOVER
            }
            ToWorker::Shutdown => SHUTDOWN,
        };
        write_frame(out, tag, &body.0)
    }

    pub fn read(input: &mut impl Read) -> Result<ToWorker, ProtocolError> {
        let (tag, body) = read_frame(input)?;
        Self::decode(tag, &body)
    }

    /// Decodes a frame's tag and body.
    pub fn decode(tag: u8, body: &[u8]) -> Result<ToWorker, ProtocolError> {
        let mut r = Reader { bytes: body };
        let message = match tag {
            START => ToWorker::Start(r.json("start")?),
            STEP => {
                let id = r.u64("step id")?;
                let count = r.count(8, "step inputs")?;
                let mut inputs = Vec::with_capacity(count);
                for _ in 0..count {
                    let ids = r.u32s("token ids")?;
                    let type_ids = r.u32s("token type ids")?;
                    if ids.len() != type_ids.len() {
                        return malformed(format!(
                            "{} token ids but {} type ids",
                            ids.len(),
                            type_ids.len()
                        ));
                    }
                    inputs.push(Encoding { ids, type_ids });
                }
                let readout = match r.u32("readout")? {
                    0 => Readout::Pooled,
                    1 => Readout::PerToken,
                    other => return malformed(format!("unknown readout {other}")),
                };
                let requests = r.u64s("request ids")?;
                ToWorker::Step {
                    id,
                    inputs,
                    readout,
                    requests,
                }
            }
            DECODE => {
                let id = r.u64("decode id")?;
                // Each feed is at least its fixed 40 bytes: the count is bounded by the frame.
                let count = r.count(40, "decode feeds")?;
                let mut feeds = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut size = |what: &str| -> Result<usize, ProtocolError> {
                        usize::try_from(r.u64(what)?).map_err(|_| {
                            ProtocolError::Malformed(format!("{what} does not fit in memory"))
                        })
                    };
                    let slot = KvSlot {
                        base: size("slot base")?,
                        capacity: size("slot capacity")?,
                        len: size("slot length")?,
                    };
                    let tokens = r.u32s("feed tokens")?;
                    let prompt = usize::try_from(r.u64("feed prompt")?)
                        .map_err(|_| ProtocolError::Malformed("feed prompt too large".into()))?;
                    let logit_rows = r
                        .u64s("logit rows")?
                        .into_iter()
                        .map(|row| match usize::try_from(row) {
                            Ok(row) if row < tokens.len() => Ok(row),
                            _ => malformed(format!(
                                "logit row {row} is not among the feed's {} tokens",
                                tokens.len()
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if slot.len.saturating_add(tokens.len()) > slot.capacity {
                        return malformed(format!(
                            "a feed of {} tokens after {} does not fit its slot of {}",
                            tokens.len(),
                            slot.len,
                            slot.capacity
                        ));
                    }
                    feeds.push(WireFeed {
                        slot,
                        tokens,
                        prompt,
                        logit_rows,
                    });
                }
                ToWorker::Decode {
                    id,
                    feeds,
                    requests: r.u64s("request ids")?,
                }
            }
            PROBE => ToWorker::Probe {
                id: r.u64("probe id")?,
            },
            RECOVER => ToWorker::Recover {
                id: r.u64("recover id")?,
            },
            SHUTDOWN => ToWorker::Shutdown,
            other => return malformed(format!("unknown message tag {other} to a worker")),
        };
        r.end("message")?;
        Ok(message)
    }
}

impl FromWorker {
    pub fn write(&self, out: &mut impl Write) -> Result<(), ProtocolError> {
        let mut body = Body::default();
        let tag = match self {
            FromWorker::Ready(ready) => {
                body.json(ready);
                READY
            }
            FromWorker::StartFailed(failure) => {
                body.json(failure);
                START_FAILED
            }
            FromWorker::StepDone {
                id,
                embeddings,
                report,
            } => {
                // Rows of their own lengths (a per-token readout's differ by input).
                body.u64(*id).u32(embeddings.len() as u32);
                embeddings.iter().for_each(|e| {
                    body.u32(e.len() as u32).f32s(e);
                });
                body.json(report);
                STEP_DONE
            }
            FromWorker::StepFailed {
                id,
                failure,
                report,
            } => {
                body.u64(*id).json(failure).json(report);
                STEP_FAILED
            }
            FromWorker::DecodeDone { id, logits, report } => {
                body.u64(*id).u32(logits.len() as u32);
                for rows in logits {
                    body.u32(rows.len() as u32);
                    rows.iter().for_each(|row| {
                        body.u32(row.len() as u32).f32s(row);
                    });
                }
                body.json(report);
                DECODE_DONE
            }
            FromWorker::ProbeDone { id, error, report } => {
                body.u64(*id).json(error).json(report);
                PROBE_DONE
            }
            FromWorker::Injected { kind } => {
                body.json(kind);
                INJECTED
            }
            FromWorker::RecoverDone {
                id,
                failure,
                report,
            } => {
                body.u64(*id).json(failure).json(report);
                RECOVER_DONE
            }
        };
        write_frame(out, tag, &body.0)
    }

    pub fn read(input: &mut impl Read) -> Result<FromWorker, ProtocolError> {
        let (tag, body) = read_frame(input)?;
        Self::decode(tag, &body)
    }

    /// Decodes a frame's tag and body.
    pub fn decode(tag: u8, body: &[u8]) -> Result<FromWorker, ProtocolError> {
        let mut r = Reader { bytes: body };
        let message = match tag {
            READY => FromWorker::Ready(r.json("ready")?),
            START_FAILED => FromWorker::StartFailed(r.json("start failure")?),
            STEP_DONE => {
                let id = r.u64("step id")?;
                // Each row is at least its 4-byte length: the count is bounded by the frame.
                let rows = r.count(4, "rows")?;
                let mut embeddings = Vec::with_capacity(rows);
                for _ in 0..rows {
                    let values = r.count(4, "row values")?;
                    if values == 0 {
                        // No model has empty embeddings.
                        return malformed("an embedding of no dimensions");
                    }
                    embeddings.push(r.f32s(values, "embedding")?);
                }
                FromWorker::StepDone {
                    id,
                    embeddings,
                    report: r.json("report")?,
                }
            }
            STEP_FAILED => FromWorker::StepFailed {
                id: r.u64("step id")?,
                failure: r.json("failure")?,
                report: r.json("report")?,
            },
            DECODE_DONE => {
                let id = r.u64("decode id")?;
                // Every count is at least 4 bytes: each is bounded by the frame.
                let feeds = r.count(4, "decode feeds")?;
                let mut logits = Vec::with_capacity(feeds);
                for _ in 0..feeds {
                    let rows = r.count(4, "logit rows")?;
                    let mut feed = Vec::with_capacity(rows);
                    for _ in 0..rows {
                        let values = r.count(4, "logits")?;
                        feed.push(r.f32s(values, "logits")?);
                    }
                    logits.push(feed);
                }
                FromWorker::DecodeDone {
                    id,
                    logits,
                    report: r.json("report")?,
                }
            }
            PROBE_DONE => FromWorker::ProbeDone {
                id: r.u64("probe id")?,
                error: r.json("probe error")?,
                report: r.json("report")?,
            },
            INJECTED => FromWorker::Injected {
                kind: r.json("injected fault")?,
            },
            RECOVER_DONE => FromWorker::RecoverDone {
                id: r.u64("recover id")?,
                failure: r.json("recover failure")?,
                report: r.json("report")?,
            },
            other => return malformed(format!("unknown message tag {other} from a worker")),
        };
        r.end("message")?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_to(message: ToWorker) {
        let mut bytes = Vec::new();
        message.write(&mut bytes).unwrap();
        assert_eq!(ToWorker::read(&mut bytes.as_slice()).unwrap(), message);
    }

    fn round_trip_from(message: FromWorker) {
        let mut bytes = Vec::new();
        message.write(&mut bytes).unwrap();
        assert_eq!(FromWorker::read(&mut bytes.as_slice()).unwrap(), message);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip_to(ToWorker::Start(WorkerStart {
            protocol: PROTOCOL_VERSION,
            role: WorkerRole::Decode,
            spec: serde_json::json!({"model": "m"}),
            faults: None,
            incarnation: 3,
        }));
        round_trip_to(ToWorker::Step {
            id: 7,
            inputs: vec![
                Encoding {
                    ids: vec![101, 7, 102],
                    type_ids: vec![0, 0, 0],
                },
                Encoding {
                    ids: vec![101, 102],
                    type_ids: vec![0, 0],
                },
            ],
            readout: Readout::PerToken,
            requests: vec![4, 5],
        });
        round_trip_to(ToWorker::Decode {
            id: 8,
            feeds: vec![
                WireFeed {
                    slot: KvSlot {
                        base: 0,
                        capacity: 64,
                        len: 0,
                    },
                    tokens: vec![1, 2, 3],
                    prompt: 3,
                    logit_rows: vec![2],
                },
                WireFeed {
                    slot: KvSlot {
                        base: 64,
                        capacity: 32,
                        len: 9,
                    },
                    tokens: vec![7],
                    prompt: 0,
                    logit_rows: vec![0],
                },
            ],
            requests: vec![1, 2],
        });
        round_trip_to(ToWorker::Probe { id: 9 });
        round_trip_to(ToWorker::Recover { id: 10 });
        round_trip_to(ToWorker::Shutdown);
        round_trip_from(FromWorker::StepDone {
            id: 7,
            embeddings: vec![vec![0.5, -1.0], vec![2.0, 3.5]],
            report: WorkerReport {
                breaker: "closed".into(),
                injected: vec![(304, 2)],
                ..WorkerReport::default()
            },
        });
        round_trip_from(FromWorker::StepFailed {
            id: 8,
            failure: StepFailure::fatal("launch", "bad argument"),
            report: WorkerReport::default(),
        });
        round_trip_from(FromWorker::DecodeDone {
            id: 8,
            logits: vec![
                vec![vec![0.5, -1.0, 2.0]],
                vec![],
                vec![vec![1.0], vec![2.0]],
            ],
            report: WorkerReport::default(),
        });
        round_trip_from(FromWorker::ProbeDone {
            id: 1,
            error: Some("no".into()),
            report: WorkerReport::default(),
        });
        round_trip_from(FromWorker::Injected {
            kind: "abort".into(),
        });
        round_trip_from(FromWorker::RecoverDone {
            id: 2,
            failure: None,
            report: WorkerReport::default(),
        });
        round_trip_from(FromWorker::StartFailed(StartFailure {
            message: "no model".into(),
            permanent: false,
            injected: vec![(700, 1)],
        }));
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let mut bytes = Vec::new();
        ToWorker::Probe { id: 1 }.write(&mut bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(ToWorker::read(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let huge = (u32::MAX).to_le_bytes();
        assert!(matches!(
            ToWorker::read(&mut huge.as_slice()),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            ToWorker::read(&mut [].as_slice()),
            Err(ProtocolError::Closed)
        ));
    }
}
