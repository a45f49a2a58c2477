//! Glue shared by the binaries: one-line errors, CSV fields, and the message for capabilities
//! not built yet.

use std::process::ExitCode;

/// Runs a binary's body; an error becomes one line on stderr (causes joined by `: `) and exit
/// status 1, never a panic trace.
pub fn main_with(command: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{command}: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message before
/// it already ends with (library errors print their source inline).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// The error of a capability whose issue has not landed yet.
#[allow(dead_code)]
pub fn not_built(what: &str, issue: u32) -> anyhow::Error {
    anyhow::anyhow!("{what} is not built yet (tracked in issue #{issue})")
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
#[allow(dead_code)]
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
