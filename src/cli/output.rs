//! Command output on stdout. `println!` panics when the reader has gone away
//! (`szb-sync status | head -1`); [`out!`] ends the command instead, as a closed pipe ends `cat`
//! or `grep`: quietly, with exit code 141 (128 + SIGPIPE, what the shell reports for them).

use std::io::Write as _;

/// The exit code of a command whose reader closed the pipe.
const BROKEN_PIPE: i32 = 128 + 13;

/// `println!` for command output: a closed pipe ends the process quietly (see the module doc).
macro_rules! out {
    () => {
        $crate::cli::output::write(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Writes `bytes` to stdout and flushes them. A closed pipe exits with 141; any other failure
/// (a full disk behind a redirect) exits with 1, naming it on stderr.
pub(super) fn write(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints `value` as one pretty JSON document.
pub(super) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(text.as_bytes());
    Ok(())
}
