//! What the engine's front, its step thread and its watchdog share, and the watchdog itself.
//!
//! The step thread announces every device call (a step, a probe, a reset, a new backend) in the
//! busy slot, with the inputs it holds. The watchdog thread enforces two deadlines that hold
//! even while a kernel never finishes (HIP has no timeout of its own):
//! - **the step deadline** (`step_timeout`): a call past it is abandoned — its inputs go back
//!   to the queue as replays, the stuck thread is left behind (counted in
//!   `hipinfer_abandoned_steps_total`; whatever it returns later is discarded), and a new step
//!   thread with a fresh backend takes over;
//! - **request deadlines** (`request_deadline`): a request is failed with `DeadlineExceeded` at
//!   its deadline, wherever its inputs are; a result that comes later is discarded.
//!
//! Every step thread has a generation; only the current one may hand out results, so nothing
//! is answered twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::retry::{EventRecord, Events};
use crate::step::{RunnerFactory, StepFailure};

use super::config::{RecoveryConfig, StepReplayConfig};
use super::error::EngineError;
use super::health::{EngineHealth, HealthCause, ProbeFailure};
use super::ladder;
use super::metrics::EngineMetrics;
use super::queue::{Entry, Limits, Queue};
use super::request::RequestState;
use super::step_loop::StepLoop;

/// What a device call of the step thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    Step,
    Probe(u64),
    Recover,
    /// Making a new runner (a backend opened and the weights uploaded).
    Start,
}

impl Activity {
    fn as_str(self) -> &'static str {
        match self {
            Activity::Step => "step",
            Activity::Probe(_) => "probe",
            Activity::Recover => "device reset",
            Activity::Start => "backend start",
        }
    }
}

/// The device call in progress.
struct Busy {
    generation: u64,
    started: Instant,
    activity: Activity,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Threads {
    /// The current step thread.
    current: Option<JoinHandle<()>>,
    /// The current thread ran to its end.
    ended: bool,
}

#[derive(Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    requests: HashMap<u64, Weak<RequestState>>,
}

/// The engine's shared core.
pub(crate) struct Shared {
    pub queue: Arc<Queue>,
    pub health: Arc<EngineHealth>,
    pub metrics: EngineMetrics,
    pub events: Events,
    pub limits: Limits,
    pub replay: StepReplayConfig,
    pub recovery: RecoveryConfig,
    /// A device call longer than this is abandoned.
    pub step_timeout: Duration,
    pub factory: Arc<dyn RunnerFactory>,
    /// Makes the CPU fallback, when `fallback: cpu`.
    pub fallback: Option<Arc<dyn RunnerFactory>>,
    /// The backend the primary runners use (for health and logs).
    pub primary_backend: String,
    generation: AtomicU64,
    busy: Mutex<Option<Busy>>,
    threads: Mutex<Threads>,
    thread_ended: Condvar,
    deadlines: Mutex<Deadlines>,
    wake: Condvar,
    watch: Mutex<()>,
    stopping: AtomicBool,
}

/// The settings a `Shared` is made of.
pub(crate) struct SharedParts {
    pub queue: Arc<Queue>,
    pub health: Arc<EngineHealth>,
    pub metrics: EngineMetrics,
    pub events: Events,
    pub limits: Limits,
    pub replay: StepReplayConfig,
    pub recovery: RecoveryConfig,
    pub step_timeout: Duration,
    pub factory: Arc<dyn RunnerFactory>,
    pub fallback: Option<Arc<dyn RunnerFactory>>,
    pub primary_backend: String,
}

impl Shared {
    pub fn new(parts: SharedParts) -> Arc<Shared> {
        Arc::new(Shared {
            queue: parts.queue,
            health: parts.health,
            metrics: parts.metrics,
            events: parts.events,
            limits: parts.limits,
            replay: parts.replay,
            recovery: parts.recovery,
            step_timeout: parts.step_timeout,
            factory: parts.factory,
            fallback: parts.fallback,
            primary_backend: parts.primary_backend,
            generation: AtomicU64::new(0),
            busy: Mutex::new(None),
            threads: Mutex::new(Threads::default()),
            thread_ended: Condvar::new(),
            deadlines: Mutex::new(Deadlines::default()),
            wake: Condvar::new(),
            watch: Mutex::new(()),
            stopping: AtomicBool::new(false),
        })
    }

    /// The current step thread's generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `generation` is no longer the current step thread (it was abandoned).
    pub fn superseded(&self, generation: u64) -> bool {
        self.generation() != generation
    }

    /// A device call of step thread `generation` starts, holding `entries`.
    pub fn begin(&self, generation: u64, activity: Activity, entries: Vec<Entry>) {
        *self.busy.lock() = Some(Busy {
            generation,
            started: Instant::now(),
            activity,
            entries,
        });
        let _watch = self.watch.lock();
        self.wake.notify_all();
    }

    /// The call ended: its entries back, or `None` when the watchdog abandoned it (the caller
    /// must then discard what it got and end).
    pub fn end(&self, generation: u64) -> Option<Vec<Entry>> {
        let mut busy = self.busy.lock();
        match busy.take() {
            Some(b) if b.generation == generation && !self.superseded(generation) => {
                Some(b.entries)
            }
            other => {
                *busy = other;
                None
            }
        }
    }

    /// When the device call in progress started, if one runs.
    pub fn busy_since(&self) -> Option<Instant> {
        self.busy.lock().as_ref().map(|b| b.started)
    }

    /// Fails `request` at its deadline (the watchdog's job).
    pub fn watch_deadline(&self, request: &Arc<RequestState>) {
        let Some(at) = request.deadline_at() else {
            return;
        };
        {
            let mut deadlines = self.deadlines.lock();
            deadlines.heap.push(Reverse((at, request.id)));
            deadlines
                .requests
                .insert(request.id, Arc::downgrade(request));
        }
        let _watch = self.watch.lock();
        self.wake.notify_all();
    }

    /// Starts step thread `generation` with `primary` — or, without one, after `lost` (the
    /// device could not start), or making a fresh runner first (a replacement after a hang).
    pub fn spawn_step_thread_starting(
        self: &Arc<Self>,
        generation: u64,
        primary: Option<Box<dyn crate::step::StepRunner>>,
        lost: Option<StepFailure>,
    ) -> std::io::Result<()> {
        let step_loop = StepLoop::new(self.clone(), generation, primary, lost);
        let shared = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("hipinfer-steps-{generation}"))
            .spawn(move || {
                step_loop.run();
                shared.step_thread_ended(generation);
            })?;
        let mut threads = self.threads.lock();
        threads.current = Some(handle);
        threads.ended = false;
        Ok(())
    }

    fn step_thread_ended(&self, generation: u64) {
        if self.superseded(generation) {
            return;
        }
        self.threads.lock().ended = true;
        self.thread_ended.notify_all();
    }

    /// Whether the current step thread is alive (it may be in a long step: that is alive).
    pub fn step_thread_alive(&self) -> bool {
        let threads = self.threads.lock();
        !threads.ended && threads.current.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until the current step thread ended (it drains the closed queue first), up to
    /// `grace` (forever when `None`). Returns whether it ended.
    pub fn wait_step_thread(&self, grace: Option<Duration>) -> bool {
        let deadline = grace.map(|g| Instant::now() + g);
        let mut threads = self.threads.lock();
        loop {
            if threads.ended || threads.current.is_none() {
                if let Some(handle) = threads.current.take() {
                    drop(threads);
                    let _ = handle.join();
                }
                return true;
            }
            match deadline {
                None => self.thread_ended.wait(&mut threads),
                Some(at) => {
                    if self.thread_ended.wait_until(&mut threads, at).timed_out() && !threads.ended
                    {
                        return false;
                    }
                }
            }
        }
    }

    /// After the drain's grace period: answers every input still waiting, and the ones in the
    /// step in flight, with `ShuttingDown` (their late results are discarded).
    pub fn abort_remaining(&self) {
        let mut entries = self.queue.drain();
        if let Some(busy) = self.busy.lock().as_mut() {
            entries.extend(busy.entries.iter().cloned());
        }
        for entry in entries {
            entry.request.fail(|_| EngineError::ShuttingDown);
        }
    }

    /// Starts the watchdog thread.
    pub fn spawn_watchdog(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let shared = self.clone();
        std::thread::Builder::new()
            .name("hipinfer-watchdog".into())
            .spawn(move || shared.watchdog())
    }

    /// Stops the watchdog.
    pub fn stop_watchdog(&self) {
        self.stopping.store(true, Ordering::Release);
        let _watch = self.watch.lock();
        self.wake.notify_all();
    }

    fn watchdog(self: Arc<Self>) {
        let mut watch = self.watch.lock();
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let next_deadline = self.expire_deadlines(now);
            let next_abandon = self.check_busy(now);
            let wake_at = [next_deadline, next_abandon]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(1))
                .max(now + Duration::from_micros(100));
            self.wake.wait_until(&mut watch, wake_at);
        }
    }

    /// Fails the requests whose deadline passed; returns the next deadline.
    fn expire_deadlines(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut deadlines = self.deadlines.lock();
            while let Some(Reverse((at, id))) = deadlines.heap.peek().copied() {
                if at > now {
                    break;
                }
                deadlines.heap.pop();
                if let Some(request) = deadlines.requests.remove(&id).and_then(|w| w.upgrade()) {
                    due.push(request);
                }
            }
            // Forget requests answered long before their deadline (bounded memory).
            if deadlines.requests.len() > 4096 {
                deadlines.requests.retain(|_, w| w.strong_count() > 0);
            }
            deadlines.heap.peek().map(|Reverse((at, _))| *at)
        };
        for request in due {
            request.fail_deadline();
        }
        next
    }

    /// Abandons a device call past the step deadline; returns when the current one will be due.
    fn check_busy(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut slot = self.busy.lock();
        let busy = slot.as_ref()?;
        let due = busy.started + self.step_timeout;
        if now < due || self.superseded(busy.generation) {
            return (!self.superseded(busy.generation)).then_some(due);
        }
        let busy = slot.take().expect("checked");
        drop(slot);
        self.abandon(busy);
        None
    }

    /// Leaves the stuck thread behind: its inputs to the queue, a new thread in its place.
    fn abandon(self: &Arc<Self>, busy: Busy) {
        let next = busy.generation + 1;
        self.generation.store(next, Ordering::Release);
        self.metrics.abandoned_steps.inc();
        let message = format!(
            "a {} did not finish within the step deadline {:?}: it is abandoned with its \
             thread, and its inputs replayed on a fresh backend",
            busy.activity.as_str(),
            self.step_timeout
        );
        tracing::warn!(inputs = busy.entries.len(), "{message}");
        let ids: Vec<u64> = ladder::unique_requests(&busy.entries)
            .iter()
            .map(|r| r.id)
            .collect();
        self.events.emit(|| EventRecord {
            requests: ids,
            error: Some(message.clone()),
            ..EventRecord::new("engine", "abandoned_step", busy.activity.as_str())
        });
        if let Activity::Probe(number) = busy.activity {
            self.health.probe_finished(
                number,
                Err(ProbeFailure {
                    cause: HealthCause::ProbeTimeout,
                    reason: message.clone(),
                }),
            );
        }
        if !busy.entries.is_empty() {
            let failure = StepFailure::hang(message);
            let decision = ladder::after_failure(
                busy.entries,
                &failure,
                self.step_timeout,
                &self.replay,
                &self.metrics,
                &self.events,
            );
            self.queue.push_replays(decision.replays);
        }
        if let Err(e) = self.spawn_step_thread_starting(next, None, None) {
            tracing::error!("could not start a step thread to replace a stuck one: {e}");
            self.health.unhealthy(
                HealthCause::DeviceLost,
                format!("could not start a step thread to replace a stuck one: {e}"),
            );
        }
    }
}
