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

    pub fn update(&self, done: usize, total: usize) {
        let Some(shown) = &self.shown else { return };
        let mut last = shown.lock();
        if done < total && last.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = Instant::now();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {done}/{total}", self.label);
        if done >= total {
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
