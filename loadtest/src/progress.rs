//! A one-line progress bar on stderr, redrawn a few times a second, only when stderr is a
//! terminal (so logs and `--output jsonl` pipes stay clean). Workers count their ops with one
//! relaxed atomic add; the drawing is a task of its own, ended by `finish`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::workload::Budget;

/// How often the line is redrawn.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);
/// Characters of the bar itself.
const BAR_WIDTH: usize = 30;

pub struct Progress {
    done: Arc<AtomicU64>,
    /// The drawing task; `None` when stderr is not a terminal.
    drawer: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `label`'s progress through `budget` (if stderr is a terminal).
    pub fn start(label: &str, budget: Budget) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let drawer = std::io::stderr().is_terminal().then(|| {
            let (done, label, started) = (done.clone(), label.to_string(), Instant::now());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REDRAW_INTERVAL);
                loop {
                    tick.tick().await;
                    let line = render(&label, budget, done.load(Ordering::Relaxed), started.elapsed());
                    let mut stderr = std::io::stderr().lock();
                    let _ = write!(stderr, "\r\x1b[2K{line}");
                    let _ = stderr.flush();
                }
            })
        });
        Progress { done, drawer }
    }

    /// Counts one op done (succeeded or not).
    pub fn op_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops drawing and clears the line.
    pub fn finish(&self) {
        if let Some(drawer) = &self.drawer {
            drawer.abort();
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(drawer) = &self.drawer {
            drawer.abort();
        }
    }
}

/// The line for `done` ops after `elapsed` of a phase with `budget`.
fn render(label: &str, budget: Budget, done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let (fraction, counts) = match budget {
        Budget::Ops(total) => (done as f64 / total.max(1) as f64, format!("{done}/{total} ops  {secs:.1} s")),
        Budget::Time(d) => {
            let of = d.as_secs_f64();
            (secs / of.max(f64::MIN_POSITIVE), format!("{secs:.1}/{of:.1} s  {done} ops"))
        }
    };
    let filled = ((fraction.clamp(0.0, 1.0) * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    format!("{label} [{}{}] {counts}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ops_bar_fills_with_the_ops() {
        let line = render("par-put", Budget::Ops(100), 50, Duration::from_millis(1500));
        assert_eq!(line, format!("par-put [{}{}] 50/100 ops  1.5 s", "#".repeat(15), "-".repeat(15)));
    }

    #[test]
    fn a_time_bar_fills_with_the_time_and_never_overflows() {
        let line = render("txn", Budget::Time(Duration::from_secs(10)), 7, Duration::from_secs(5));
        assert!(line.starts_with(&format!("txn [{}{}]", "#".repeat(15), "-".repeat(15))), "{line}");
        assert!(line.ends_with("5.0/10.0 s  7 ops"), "{line}");
        let over = render("txn", Budget::Time(Duration::from_secs(1)), 7, Duration::from_secs(5));
        assert!(over.contains(&"#".repeat(BAR_WIDTH)), "{over}");
        let empty = render("x", Budget::Ops(0), 0, Duration::ZERO);
        assert!(empty.contains(&"-".repeat(BAR_WIDTH)), "{empty}");
    }
}
