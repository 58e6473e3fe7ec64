//! `FaultyBackend`: wraps any backend and injects HIP errors with real codes, reproducibly.
//!
//! How tests and `hipinfer chaos` prove, without a GPU, that faults are survived:
//! - **rates**: each call of an operation fails with a code at a rate, drawn from a seeded RNG;
//! - **scripts**: "fail the next 2 launches with code 2", or "let 4 launches pass, then fail one";
//! - **sticky**: once an injected fault is Reset-class (700, 702, 710, …), every later call returns
//!   that code. With [`StickyScope::Context`] a [`Backend::reset`] clears it (a context-scoped
//!   fault); with [`StickyScope::Process`] — what ROCm ≥ 6 and CUDA do after a memory fault —
//!   every call of every fault-injected backend of the process returns it from then on, `reset()`
//!   and backends made later included, until the process ends;
//! - **abort** (feature `fault-injection`): the process calls `abort()`, at a rate or on every
//!   Reset-class fault ([`FaultPlan::abort_on_fault`]) — ROCm ≤ 5 aborts from its queue callback
//!   before any error code reaches the caller;
//! - **hang** (feature `fault-injection`): a kernel that never finishes — drawn at launch, it
//!   blocks the next synchronize (or copy to the host) forever, as HIP waits without a timeout;
//! - **poison**: every embedding launch whose input holds a given token id meets a fault (a
//!   code, an abort, a hang) — one request that always breaks its steps, for isolation tests.
//!
//! A failed call does nothing (no kernel runs, no byte is copied), and every error returned is
//! counted by operation and code, so tests can compare the retry metrics with it exactly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{HipError, Op, Recovery};

use super::graph_scope::GraphScope;
use super::kernel::Kernel;
use super::traits::{Backend, DeviceInfo, Word};

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// The call returns this HIP error code.
    Fail(i32),
    /// The process aborts (SIGABRT), as ROCm ≤ 5 does on a GPU memory fault.
    #[cfg(feature = "fault-injection")]
    Abort,
    /// The kernel never finishes: the next synchronize or copy to the host never returns.
    #[cfg(feature = "fault-injection")]
    Hang,
    /// A real device memory fault: the wrapped GPU backend runs a kernel that writes out of
    /// bounds ([`Backend::provoke_memory_fault`]); what the device answers is returned as it is.
    /// On the CPU (no device to fault) the call fails with 801, saying so.
    #[cfg(feature = "fault-injection")]
    RealFault,
}

/// How far a sticky (Reset-class) fault reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyScope {
    /// Until the backend is reset (a context-scoped fault; kinder than a real memory fault).
    #[default]
    Context,
    /// Until the process ends: every call of every fault-injected backend in the fault's
    /// [`FaultDomain`], `reset()` and backends made later included (ROCm ≥ 6, CUDA).
    Process,
}

impl std::str::FromStr for StickyScope {
    type Err = crate::error::ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "context" => Ok(StickyScope::Context),
            "process" => Ok(StickyScope::Process),
            _ => Err(crate::error::ConfigError::new(
                "sticky_scope",
                format!("{text:?} is not one of context, process"),
            )),
        }
    }
}

/// The process a process-scoped sticky fault poisons. [`FaultDomain::process`] (the default) is
/// this very process; [`FaultDomain::simulated`] stands for one process inside a test, so that
/// tests running side by side in one binary do not poison each other. Within a domain the
/// behaviour is the same: once poisoned, it stays poisoned.
#[derive(Debug, Clone, Default)]
pub struct FaultDomain(Option<Arc<AtomicI32>>);

/// The code that poisons this process (0: none yet).
static PROCESS_POISON: AtomicI32 = AtomicI32::new(0);

impl FaultDomain {
    /// This process.
    pub fn process() -> Self {
        FaultDomain(None)
    }

    /// A simulated process of its own (tests).
    pub fn simulated() -> Self {
        FaultDomain(Some(Arc::new(AtomicI32::new(0))))
    }

    fn cell(&self) -> &AtomicI32 {
        self.0.as_deref().unwrap_or(&PROCESS_POISON)
    }

    /// The code that poisoned the domain, if one did.
    pub fn poisoned(&self) -> Option<i32> {
        match self.cell().load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Poisons the domain with `code` (the first poison stays).
    fn poison(&self, code: i32) {
        let _ = self
            .cell()
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl PartialEq for FaultDomain {
    /// The same domain.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One rate rule: calls of `op` (every operation when `None`) fault with `action` at `rate`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultRule {
    pub op: Option<Op>,
    pub action: FaultAction,
    pub rate: f64,
}

/// The faults to inject (serde, so a supervisor can hand them to its worker process).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    pub seed: u64,
    pub rules: Vec<FaultRule>,
    /// Embedding launches whose input holds this token id meet this fault.
    pub poison: Option<(u32, FaultAction)>,
    /// How far a sticky fault reaches.
    pub sticky_scope: StickyScope,
    /// Every Reset-class fault aborts the process instead of returning its code (ROCm ≤ 5).
    #[cfg(feature = "fault-injection")]
    pub abort_on_fault: bool,
    /// The process a process-scoped fault poisons (not serialised: a worker process is its own).
    #[serde(skip)]
    pub domain: FaultDomain,
}

/// Told just before an injected abort or hang takes the process down (`"abort"`, `"hang"`): a
/// worker process tells its supervisor, which counts them.
pub type FaultNotifier = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl FaultPlan {
    pub fn new(seed: u64) -> Self {
        FaultPlan {
            seed,
            ..FaultPlan::default()
        }
    }

    /// Sticky faults reach `scope` (context: until a reset; process: until the process ends).
    pub fn with_sticky_scope(mut self, scope: StickyScope) -> Self {
        self.sticky_scope = scope;
        self
    }

    /// Process-scoped faults poison `domain` instead of this process (tests).
    pub fn with_domain(mut self, domain: FaultDomain) -> Self {
        self.domain = domain;
        self
    }

    /// Every Reset-class fault aborts the process (ROCm ≤ 5) instead of returning its code.
    #[cfg(feature = "fault-injection")]
    pub fn with_abort_on_fault(mut self) -> Self {
        self.abort_on_fault = true;
        self
    }

    /// Whether a fault of this plan can take the process down (abort or hang), so that it must
    /// run in a worker process — or, for hangs, under a step deadline.
    pub fn aborts(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.abort_on_fault
                || self
                    .rules
                    .iter()
                    .any(|r| r.rate > 0.0 && r.action == FaultAction::Abort)
                || self.poison.is_some_and(|(_, a)| a == FaultAction::Abort)
        }
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Every call of `op` (every operation when `None`) fails with `code` at `rate`.
    pub fn with_rate(mut self, op: Option<Op>, code: i32, rate: f64) -> Self {
        self.rules.push(FaultRule {
            op,
            action: FaultAction::Fail(code),
            rate,
        });
        self
    }

    /// Every call of `op` aborts the process at `rate`.
    #[cfg(feature = "fault-injection")]
    pub fn with_abort_rate(mut self, op: Option<Op>, rate: f64) -> Self {
        self.rules.push(FaultRule {
            op,
            action: FaultAction::Abort,
            rate,
        });
        self
    }

    /// Every call of `op` starts a kernel that never finishes, at `rate`: the next synchronize
    /// (or copy to the host) never returns.
    #[cfg(feature = "fault-injection")]
    pub fn with_hang_rate(mut self, op: Option<Op>, rate: f64) -> Self {
        self.rules.push(FaultRule {
            op,
            action: FaultAction::Hang,
            rate,
        });
        self
    }

    /// Every call of `op` makes a real device memory fault at `rate` (GPU backends).
    #[cfg(feature = "fault-injection")]
    pub fn with_real_fault_rate(mut self, op: Option<Op>, rate: f64) -> Self {
        self.rules.push(FaultRule {
            op,
            action: FaultAction::RealFault,
            rate,
        });
        self
    }

    /// Every embedding launch whose input holds `token` meets `action` (an error code, an
    /// abort, a hang): one request that deterministically breaks its steps.
    pub fn with_poison(mut self, token: u32, action: FaultAction) -> Self {
        self.poison = Some((token, action));
        self
    }
}

/// Which operations can fault (every method of [`Backend`] but `len`, `info`, `reset` and
/// `reclaim`).
const FAULTABLE: [Op; 6] = [
    Op::Allocate,
    Op::CopyHostToDevice,
    Op::CopyDeviceToHost,
    Op::CopyDeviceToDevice,
    Op::Launch,
    Op::Synchronize,
];

#[derive(Debug)]
struct Injector {
    rng: SmallRng,
    /// Per operation, what its next calls do: fail with a code, or pass (`None`: left to the
    /// rate rules).
    scripts: HashMap<Op, VecDeque<Option<i32>>>,
    sticky: Option<i32>,
    returned: HashMap<(Op, i32), u64>,
    injected: HashMap<i32, u64>,
    poison: Option<(u32, FaultAction)>,
    /// A launched kernel that will never finish (the next wait hangs).
    hung: bool,
}

/// A backend that injects faults into `B`.
pub struct FaultyBackend<B> {
    inner: B,
    rules: Vec<FaultRule>,
    sticky_scope: StickyScope,
    #[cfg(feature = "fault-injection")]
    abort_on_fault: bool,
    domain: FaultDomain,
    injector: Mutex<Injector>,
    reclaims: AtomicU64,
    resets: AtomicU64,
    hangs: AtomicU64,
    notifier: Option<FaultNotifier>,
    graph: GraphScope,
}

impl<B: std::fmt::Debug> std::fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl<B: Backend<Error = HipError>> FaultyBackend<B> {
    pub fn new(inner: B, plan: FaultPlan) -> Self {
        FaultyBackend {
            inner,
            rules: plan.rules,
            sticky_scope: plan.sticky_scope,
            #[cfg(feature = "fault-injection")]
            abort_on_fault: plan.abort_on_fault,
            domain: plan.domain,
            injector: Mutex::new(Injector {
                rng: SmallRng::seed_from_u64(plan.seed),
                scripts: HashMap::new(),
                sticky: None,
                returned: HashMap::new(),
                injected: HashMap::new(),
                poison: plan.poison,
                hung: false,
            }),
            reclaims: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            notifier: None,
            graph: GraphScope::default(),
        }
    }

    /// Calls `notifier` just before an injected abort or hang.
    pub fn with_notifier(mut self, notifier: FaultNotifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Every fresh fault injected so far: HIP code → count.
    pub fn injected_counts(&self) -> Vec<(i32, u64)> {
        let mut counts: Vec<(i32, u64)> = self
            .injector
            .lock()
            .injected
            .iter()
            .map(|(&code, &n)| (code, n))
            .collect();
        counts.sort_unstable();
        counts
    }

    /// A wrapper that injects nothing until scripted.
    pub fn passthrough(inner: B) -> Self {
        Self::new(inner, FaultPlan::default())
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// From now on, every embedding launch whose token ids hold `token` fails with `code`
    /// (sticky like any Reset-class fault): one input that deterministically breaks its steps.
    pub fn poison_token(&self, token: u32, code: i32) {
        self.injector.lock().poison = Some((token, FaultAction::Fail(code)));
    }

    /// Whether this launch embeds the poisoned token (read back from the device buffer).
    fn hits_poison(&self, kernel: &Kernel<'_, B::Buffer>) -> Option<FaultAction> {
        let (token, action) = self.injector.lock().poison?;
        let (Kernel::Embed { ids, tokens, .. } | Kernel::EmbedRows { ids, tokens, .. }) = kernel
        else {
            return None;
        };
        let mut host = vec![0u32; *tokens];
        self.inner.copy_to_host(ids, &mut host).ok()?;
        host.contains(&token).then_some(action)
    }

    /// Records and returns an injected `code` for `op` (sticky when Reset-class: for the
    /// context, or for the whole domain with process scope).
    fn inject(&self, injector: &mut Injector, op: Op, code: i32) -> HipError {
        let error = HipError::new(code, op).with_detail("injected by FaultyBackend");
        if error.recovery() == Recovery::Reset {
            injector.sticky = Some(code);
            if self.sticky_scope == StickyScope::Process {
                self.domain.poison(code);
            }
        }
        *injector.returned.entry((op, code)).or_default() += 1;
        error
    }

    /// The sticky code every call returns now: the domain's (process scope), else the context's.
    fn sticky(&self, injector: &Injector) -> Option<i32> {
        let process = (self.sticky_scope == StickyScope::Process)
            .then(|| self.domain.poisoned())
            .flatten();
        process.or(injector.sticky)
    }

    /// The next `times` calls of `op` fail with `code` (before any rate rule is drawn).
    pub fn script(&self, op: Op, code: i32, times: u32) {
        let mut injector = self.injector.lock();
        let queue = injector.scripts.entry(op).or_default();
        queue.extend(std::iter::repeat_n(Some(code), times as usize));
    }

    /// The next `times` calls of `op` are not scripted (a following [`FaultyBackend::script`]
    /// fails the calls after them): a fault at a fixed point of a run, whatever its timing.
    pub fn script_pass(&self, op: Op, times: u32) {
        let mut injector = self.injector.lock();
        let queue = injector.scripts.entry(op).or_default();
        queue.extend(std::iter::repeat_n(None, times as usize));
    }

    /// Fresh faults injected with `code` (sticky repeats not counted).
    pub fn injected(&self, code: i32) -> u64 {
        self.injector
            .lock()
            .injected
            .get(&code)
            .copied()
            .unwrap_or(0)
    }

    /// Every error returned for `op` with `code` (sticky repeats included): what
    /// `hipinfer_gpu_errors_total{op, code}` should read.
    pub fn returned(&self, op: Op, code: i32) -> u64 {
        self.injector
            .lock()
            .returned
            .get(&(op, code))
            .copied()
            .unwrap_or(0)
    }

    /// Every error returned, over all operations and codes.
    pub fn returned_total(&self) -> u64 {
        self.injector.lock().returned.values().sum()
    }

    /// Calls of [`Backend::reclaim`] so far.
    pub fn reclaims(&self) -> u64 {
        self.reclaims.load(Ordering::Relaxed)
    }

    /// Kernels hung by an injected fault so far.
    pub fn hangs(&self) -> u64 {
        self.hangs.load(Ordering::Relaxed)
    }

    /// Calls of [`Backend::reset`] so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Whether a sticky fault poisons the backend now.
    pub fn is_poisoned(&self) -> bool {
        self.sticky(&self.injector.lock()).is_some()
    }

    /// Decides whether this call of `op` faults.
    fn check(&self, op: Op) -> Result<(), HipError> {
        debug_assert!(FAULTABLE.contains(&op));
        let mut injector = self.injector.lock();
        if let Some(code) = self.sticky(&injector) {
            return Err(self.inject(&mut injector, op, code));
        }
        #[cfg(feature = "fault-injection")]
        if injector.hung && matches!(op, Op::Synchronize | Op::CopyDeviceToHost) {
            drop(injector);
            hang_forever(op);
        }
        if let Some(code) = injector
            .scripts
            .get_mut(&op)
            .and_then(VecDeque::pop_front)
            .flatten()
        {
            return self.act(injector, op, FaultAction::Fail(code));
        }
        let mut drawn = None;
        for rule in self.rules.iter().filter(|r| r.op.is_none_or(|o| o == op)) {
            if rule.rate > 0.0 && injector.rng.random::<f64>() < rule.rate {
                drawn = Some(rule.action);
                break;
            }
        }
        match drawn {
            None => Ok(()),
            Some(action) => self.act(injector, op, action),
        }
    }

    /// Carries out a fresh fault: returns the error, or takes the process down.
    fn act(
        &self,
        mut injector: parking_lot::MutexGuard<'_, Injector>,
        op: Op,
        action: FaultAction,
    ) -> Result<(), HipError> {
        match action {
            FaultAction::Fail(code) => {
                *injector.injected.entry(code).or_default() += 1;
                if HipError::check(code, op).is_ok() {
                    // A benign status: a real backend's FFI layer treats it as success.
                    return Ok(());
                }
                #[cfg(feature = "fault-injection")]
                if self.abort_on_fault
                    && crate::error::HipError::new(code, op).recovery() == Recovery::Reset
                {
                    self.abort(op);
                }
                Err(self.inject(&mut injector, op, code))
            }
            #[cfg(feature = "fault-injection")]
            FaultAction::Abort => self.abort(op),
            #[cfg(feature = "fault-injection")]
            FaultAction::Hang => {
                tracing::error!(
                    op = op.as_str(),
                    "fault injection: a kernel that never ends"
                );
                self.hangs.fetch_add(1, Ordering::Relaxed);
                if let Some(notify) = &self.notifier {
                    notify("hang");
                }
                if matches!(op, Op::Synchronize | Op::CopyDeviceToHost) {
                    drop(injector);
                    hang_forever(op);
                }
                // A launch returns; the wait for it will not.
                injector.hung = true;
                Ok(())
            }
            #[cfg(feature = "fault-injection")]
            FaultAction::RealFault => {
                drop(injector);
                let answer = self.inner.provoke_memory_fault().unwrap_or_else(|| {
                    Err(HipError::new(801, op).with_detail(
                        "a real memory fault needs a GPU backend; this one has no device to fault",
                    ))
                });
                let code = answer.as_ref().err().map_or(0, HipError::code);
                *self.injector.lock().injected.entry(code).or_default() += 1;
                answer
            }
        }
    }

    /// Takes the process down as ROCm ≤ 5 does on a memory fault.
    #[cfg(feature = "fault-injection")]
    fn abort(&self, op: Op) -> ! {
        tracing::error!(op = op.as_str(), "fault injection: aborting the process");
        if let Some(notify) = &self.notifier {
            notify("abort");
        }
        std::process::abort();
    }
}

/// Blocks the calling thread for good: a wait on a kernel that never finishes.
#[cfg(feature = "fault-injection")]
fn hang_forever(op: Op) -> ! {
    tracing::error!(
        op = op.as_str(),
        "fault injection: waiting forever on a hung kernel"
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

impl<B: Backend<Error = HipError>> Backend for FaultyBackend<B> {
    type Buffer = B::Buffer;
    type Error = HipError;

    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }

    fn packs_f32_weights(&self) -> bool {
        self.inner.packs_f32_weights()
    }

    fn allocate(&self, len: usize) -> Result<B::Buffer, HipError> {
        self.check(Op::Allocate)?;
        self.inner.allocate(len)
    }

    fn len(&self, buffer: &B::Buffer) -> usize {
        self.inner.len(buffer)
    }

    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut B::Buffer) -> Result<(), HipError> {
        self.check(Op::CopyHostToDevice)?;
        self.inner.copy_to_device(src, dst)
    }

    fn copy_to_host<T: Word>(&self, src: &B::Buffer, dst: &mut [T]) -> Result<(), HipError> {
        self.check(Op::CopyDeviceToHost)?;
        self.inner.copy_to_host(src, dst)
    }

    fn copy_on_device(
        &self,
        src: &B::Buffer,
        dst: &mut B::Buffer,
        len: usize,
    ) -> Result<(), HipError> {
        self.check(Op::CopyDeviceToDevice)?;
        self.inner.copy_on_device(src, dst, len)
    }

    fn launch(&self, kernel: Kernel<'_, B::Buffer>) -> Result<(), HipError> {
        let symbol = kernel.id().symbol();
        if !self.graph.is_current() {
            self.check(Op::Launch).map_err(|e| e.with_kernel(symbol))?;
        }
        if let Some(action) = self.hits_poison(&kernel) {
            let injector = self.injector.lock();
            return self
                .act(injector, Op::Launch, action)
                .map_err(|e| e.with_kernel(symbol));
        }
        self.inner.launch(kernel)
    }

    /// A graph is one launch: its faults are drawn once, before any of its kernels runs; a
    /// poisoned input still meets its fault at the launch that reads it.
    fn graph<R>(&self, body: impl FnMut() -> Result<R, HipError>) -> Result<R, HipError> {
        self.check(Op::Launch)
            .map_err(|e| e.with_detail("a graph launch"))?;
        let _inside = self.graph.enter();
        self.inner.graph(body)
    }

    fn synchronize(&self) -> Result<(), HipError> {
        self.check(Op::Synchronize)?;
        self.inner.synchronize()
    }

    /// Clears a context-scoped sticky fault; a process-scoped one survives it, and the reset
    /// returns its code (as `hipDeviceReset` does on ROCm ≥ 6).
    fn reset(&self) -> Result<(), HipError> {
        self.resets.fetch_add(1, Ordering::Relaxed);
        let mut injector = self.injector.lock();
        if let Some(code) = (self.sticky_scope == StickyScope::Process)
            .then(|| self.domain.poisoned())
            .flatten()
        {
            return Err(self.inject(&mut injector, Op::Init, code));
        }
        injector.sticky = None;
        injector.hung = false;
        drop(injector);
        self.inner.reset()
    }

    fn scoped<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        self.inner.scoped(job)
    }

    fn reclaim(&self) -> u64 {
        self.reclaims.fetch_add(1, Ordering::Relaxed);
        self.inner.reclaim()
    }
}
