//! The progress line of a training loop: step, loss, learning rate, throughput and ETA. On a
//! terminal it redraws one line on stderr; elsewhere (CI logs, files) it prints a line about
//! every twentieth step, so logs stay short.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    first: usize,
    started: Instant,
    terminal: bool,
    every: usize,
    /// What the throughput counts, e.g. "img/s" or "tok/s".
    unit: &'static str,
}

impl Progress {
    /// A loop of `total` steps that starts (or resumes) at step `first`, reporting its
    /// throughput in `unit`.
    pub fn new(total: usize, first: usize, unit: &'static str) -> Self {
        Self {
            total,
            first,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            every: (total / 20).max(1),
            unit,
        }
    }

    /// Reports that step `step` (0-based) is done.
    pub fn step(&self, step: usize, loss: f64, lr: f64, throughput: f64) {
        let done = step + 1;
        if !self.terminal && !done.is_multiple_of(self.every) && done != self.total {
            return;
        }
        let line = self.line(done, loss, lr, throughput);
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop training.
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if done == self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn line(&self, done: usize, loss: f64, lr: f64, throughput: f64) -> String {
        let width = 20;
        let filled = (done * width).checked_div(self.total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let this_run = done.saturating_sub(self.first);
        let eta = if this_run == 0 {
            Duration::ZERO
        } else {
            self.started.elapsed() / this_run as u32 * (self.total - done) as u32
        };
        format!(
            "step {done}/{total} [{bar}] loss {loss:.4} lr {lr:.2e} {throughput:.1} {unit} ETA {eta}",
            total = self.total,
            unit = self.unit,
            eta = clock(eta)
        )
    }
}

/// `1h02m03s`, `2m03s` or `3s`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats() {
        assert_eq!(clock(Duration::from_secs(3)), "3s");
        assert_eq!(clock(Duration::from_secs(123)), "2m03s");
        assert_eq!(clock(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn line_shows_every_field() {
        let p = Progress::new(10, 0, "img/s");
        let line = p.line(5, 1.23456, 3.2e-4, 12.34);
        assert!(
            line.starts_with("step 5/10 [##########..........]"),
            "{line}"
        );
        assert!(
            line.contains("loss 1.2346 lr 3.20e-4 12.3 img/s ETA "),
            "{line}"
        );
    }
}
