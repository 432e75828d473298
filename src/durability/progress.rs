//! Progress of long restores: a bar redrawn in place when stderr is a terminal, a log line every tenth
//! of the work otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Reports progress towards `total` units (bytes).
pub struct Progress {
    label: &'static str,
    total: u64,
    terminal: bool,
    /// The last tenth logged (log lines) or percent drawn (terminal).
    shown: Mutex<u64>,
}

const BAR_WIDTH: u64 = 30;

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress { label, total: total.max(1), terminal: std::io::stderr().is_terminal(), shown: Mutex::new(u64::MAX) }
    }

    /// Records that `done` units are done.
    pub fn set(&self, done: u64) {
        let percent = done.min(self.total) * 100 / self.total;
        let Ok(mut shown) = self.shown.lock() else { return };
        if self.terminal {
            if *shown == percent {
                return;
            }
            *shown = percent;
            let filled = (percent * BAR_WIDTH / 100) as usize;
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(BAR_WIDTH as usize - filled));
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{} [{bar}] {percent:3}% ({} / {} MiB)", self.label, done >> 20, self.total >> 20);
            let _ = err.flush();
        } else {
            let tenth = percent / 10;
            if *shown != u64::MAX && *shown >= tenth {
                return;
            }
            *shown = tenth;
            tracing::info!(done_bytes = done, total_bytes = self.total, percent, "{}", self.label);
        }
    }

    /// Ends the bar's line.
    pub fn finish(&self) {
        if self.terminal {
            self.set(self.total);
            let _ = writeln!(std::io::stderr());
        }
    }
}
