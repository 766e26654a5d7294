use std::path::{Path, PathBuf};

/// Why the journal could not open, recover or write. Every variant names the
/// file involved so that an operator knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt at byte offset {offset}: {reason}; acknowledged data may be damaged, refusing to start")]
    Corrupt { path: PathBuf, offset: u64, reason: &'static str },
    #[error("data directory {path} is in use by another process (lock file held)")]
    Locked { path: PathBuf },
    #[error("log records are missing: {detail} (in {path})")]
    Gap { path: PathBuf, detail: String },
    #[error("cannot decode {path} at record {sequence}: {detail}")]
    Undecodable { path: PathBuf, sequence: u64, detail: String },
    #[error("snapshot {path} does not rebuild its ledger: {detail}")]
    BadSnapshot { path: PathBuf, detail: String },
    #[error(
        "{path} says the data directory holds `{found}`, and this program reads `{expected}`: another \
         version of zhifu, or another of its commands, wrote it (run that one, or give another data directory)"
    )]
    OtherFormat { path: PathBuf, found: String, expected: String },
    #[error(
        "data directory {path} holds a log or snapshots but no FORMAT file: a version of zhifu from before \
         formats were recorded wrote it (this program reads `{expected}`; give another data directory)"
    )]
    FormatUnrecorded { path: PathBuf, expected: String },
    #[error(
        "{path} records a ledger of `{recorded}`, and {found_in} holds one of `{found}`: a replay under \
         another configuration could reach another state (start with the data directory and store that \
         were written together)"
    )]
    OtherLedgerConfig { path: PathBuf, recorded: String, found: String, found_in: String },
    #[error("the journal failed earlier and accepts no more writes: {0}")]
    Failed(String),
    /// The command is in the log, durably, but this node stopped before
    /// applying it: it is applied when the node starts again (its outcome
    /// is not known yet; nothing may be assumed undone).
    #[error("the command is logged but not applied (the node stopped: {0}); it is applied when it starts again")]
    LoggedNotApplied(String),
    #[error("the journal is shut down")]
    Closed,
    #[error("the journal's queue is full; try again")]
    Busy,
    /// Another node leads the store this one shares: nothing was done.
    #[error("this node follows the store's leader{}; nothing was done", leader.as_ref().map(|name| format!(" ({name})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// The store cannot be reached now: nothing was done; retry later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store went away while committing: the records may or may not be
    /// there (`Journal::resolve` finds out).
    #[error("the store went away while committing: {0}")]
    Ambiguous(String),
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io { action, path: path.to_path_buf(), source }
}
