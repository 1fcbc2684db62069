//! Who has a store open: the engine locks its directory for one process; once the lock is held the
//! store writes the holder's process id to [`PID_FILE`], so that a second opener (a command-line
//! tool run on a running server's data directory) is told the store is in use, and by which
//! process, instead of the engine's raw lock error.

use std::path::Path;

use crate::error::FhirError;

/// The file, inside a store's directory, naming the process that has it open.
pub const PID_FILE: &str = "vbc-server.pid";

/// Record this process as the store's holder (best effort: a store that cannot write the file
/// still works; only the message to a second opener is vaguer).
pub fn record(dir: &Path) {
    let _ = std::fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id()));
}

/// Forget the holder at a clean close (a file left by a killed process is never read: it is
/// read only while the lock is held, and the holder has rewritten it).
pub fn clear(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(PID_FILE));
}

/// The process holding the store, as far as known: "pid N (command line)".
fn holder(dir: &Path) -> Option<String> {
    let pid: u32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    Some(match command {
        Some(c) => format!("pid {pid}: {c}"),
        None => format!("pid {pid}"),
    })
}

/// The error for a failed open: "in use" (naming the holder when known) when another process
/// holds sled's lock on the directory, otherwise sled's error as a storage failure.
pub fn open_error(dir: &Path, e: sled::Error) -> FhirError {
    let locked =
        matches!(&e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
    if !locked {
        return FhirError::from(e);
    }
    in_use(dir)
}

/// "The store is in use by another process", naming that process when known.
pub fn in_use(dir: &Path) -> FhirError {
    let by = holder(dir).map(|h| format!(" ({h})")).unwrap_or_default();
    FhirError::Unavailable(format!(
        "the store in {} is in use by another process{by}; stop that server first, or send the \
         change to the running server over HTTP",
        dir.display()
    ))
}
