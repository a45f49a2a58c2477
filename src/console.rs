//! Lines for the terminal that never panic. `println!` panics when stdout is a pipe whose
//! reader has gone (`inspect config | head -1`); a command should rather stop writing and go
//! on: a training run keeps training (its results are in its run directory), a listing ends
//! quietly. Other write errors on stdout (a full disk under `> file`) are returned, so that
//! results are never lost silently. Stderr is best effort: there is nowhere left to report
//! its failure.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to stdout found its reader gone.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Writes `text` to stdout and flushes. Once the reader has gone, this and every later write
/// is dropped and `Ok` returned.
pub fn out(text: &str) -> std::io::Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Stdout as a writer with `out`'s rule, for code that writes a stream (a CSV) piece by piece.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if stdout_closed() {
            return Ok(buf.len());
        }
        match std::io::stdout().lock().write_all(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(buf.len())
            }
            Err(e) => Err(e),
            Ok(()) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if stdout_closed() {
            return Ok(());
        }
        match std::io::stdout().lock().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

/// Writes `text` to stderr, ignoring failure.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// `println!` through `console::out`: evaluates to `std::io::Result<()>`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::console::out("\n")
    };
    ($($arg:tt)*) => {
        $crate::console::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` through `console::err`.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::err(&format!("{}\n", format_args!($($arg)*)))
    };
}
