//! The writer's helper threads: while it applies a group, one appends the
//! next group and one reads the archived records that group needs (replay
//! reads ahead on one too). They start once with the journal, not for every
//! group: two threads started a group (over a thousand in 25 s of a busy
//! day) took 3–15% more CPU time a run — starting and ending them, and each
//! new thread's allocator finding memory again.

use std::path::Path;
use std::sync::Arc;

use rayon_core::{ThreadPool, ThreadPoolBuilder};

use crate::archive::{ArchiveReader, ReadAhead};
use crate::error::JournalError;
use crate::machine::StateMachine;

/// Threads a group's jobs aside from the writer's apply: its append and its read-ahead.
const HELPER_THREADS: usize = 2;

/// Threads kept for jobs beside the writer's (see the module's doc).
pub(crate) type Helpers = Arc<ThreadPool>;

/// Starts the helper threads of the journal in `directory`.
pub(crate) fn start(directory: &Path) -> Result<Helpers, JournalError> {
    let pool = ThreadPoolBuilder::new()
        .num_threads(HELPER_THREADS)
        .thread_name(|index| format!("journal-helper-{index}"))
        .build()
        .map_err(|error| JournalError::Io {
            action: "start the helper threads of",
            path: directory.to_path_buf(),
            source: std::io::Error::other(error.to_string()),
        })?;
    Ok(Arc::new(pool))
}

/// What `job` answers, or `None` if it panicked (a helper's panic must not
/// take the writer down unanswered; the caller decides what it means).
pub(crate) fn caught<T>(job: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).ok()
}

/// Reads the archived records at `needed` ahead into `read`, on a helper
/// thread of `scope`. A reader that panicked read nothing: whoever applies
/// reads for itself.
pub(crate) fn read_ahead_aside<'scope, M: StateMachine>(
    scope: &rayon_core::Scope<'scope>,
    reader: &'scope ArchiveReader,
    needed: &'scope [u64],
    read: &'scope mut ReadAhead,
) {
    scope.spawn(move |_| *read = caught(|| reader.read_ahead(needed, M::decode_read_ahead)).unwrap_or_default());
}
