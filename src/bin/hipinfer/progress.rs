//! Progress on stderr for long commands — only when stderr is a terminal, so logs and pipes stay
//! clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Prints `label: done/total` over itself at most every 100 ms.
pub struct Progress {
    label: &'static str,
    shown: Option<Mutex<Instant>>,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        Progress {
            label,
            shown: std::io::stderr()
                .is_terminal()
                .then(|| Mutex::new(Instant::now() - Duration::from_secs(1))),
        }
    }

    /// `label: done/total`.
    pub fn update(&self, done: usize, total: usize) {
        self.show(|| format!("{done}/{total}"), done >= total);
    }

    /// `label: 3/10 s` for a phase that runs for a set time.
    pub fn seconds(&self, elapsed: f64, total: f64) {
        let done = elapsed >= total;
        self.show(|| format!("{:.1}/{total:.1} s", elapsed.min(total)), done);
    }

    /// Writes `label: text` over the previous line (a newline after the last).
    fn show(&self, text: impl FnOnce() -> String, last: bool) {
        let Some(shown) = &self.shown else { return };
        let mut at = shown.lock();
        if !last && at.elapsed() < Duration::from_millis(100) {
            return;
        }
        *at = Instant::now();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {}", self.label, text());
        if last {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }

    /// A message on its own line (only on a terminal).
    pub fn note(&self, message: &str) {
        if self.shown.is_some() {
            eprintln!("{}: {message}", self.label);
        }
    }
}
