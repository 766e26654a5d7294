//! The writer's helper threads: while it applies a group, one appends the
//! next group and one reads the archived records that group needs (replay
//! reads ahead on one too). They start once with the journal, not for every
//! group: two threads started a group (over a thousand in 25 s of a busy
//! day) took 3–15% more CPU time a run — starting and ending them, and each
//! new thread's allocator finding memory again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

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

/// `work` on each of `chunks` chunks, by this thread and by whichever
/// helpers are free, each taking the next chunk not yet taken; answers
/// what each gave (`None`: it panicked on a helper). This thread waits
/// only for chunks a helper has begun, never for a helper still busy with
/// another job (the append, a read-ahead): those find nothing left.
pub(crate) fn share<T, W>(helpers: &Helpers, chunks: usize, work: W) -> Vec<Option<T>>
where
    T: Send + 'static,
    W: Fn(usize) -> T + Send + Sync + 'static,
{
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        chunks,
        work,
        done: Mutex::new(Done::new(chunks)),
        all_done: Condvar::new(),
    });
    for _ in 0..helpers.current_num_threads() {
        let shared = Arc::clone(&shared);
        helpers.spawn(move || shared.take_chunks(true));
    }
    shared.take_chunks(false);
    let mut done = shared.done.lock();
    while done.finished < chunks {
        shared.all_done.wait(&mut done);
    }
    std::mem::take(&mut done.answers)
}

struct Shared<T, W> {
    next: AtomicUsize,
    chunks: usize,
    work: W,
    done: Mutex<Done<T>>,
    all_done: Condvar,
}

struct Done<T> {
    answers: Vec<Option<T>>,
    finished: usize,
}

impl<T> Done<T> {
    fn new(chunks: usize) -> Done<T> {
        Done { answers: (0..chunks).map(|_| None).collect(), finished: 0 }
    }
}

impl<T, W: Fn(usize) -> T> Shared<T, W> {
    /// Takes chunks until none is left; a helper's panic is caught (the
    /// chunk counts as done, with no answer), the caller's is not.
    fn take_chunks(&self, on_helper: bool) {
        loop {
            let chunk = self.next.fetch_add(1, Ordering::Relaxed);
            if chunk >= self.chunks {
                return;
            }
            let answer = if on_helper { caught(|| (self.work)(chunk)) } else { Some((self.work)(chunk)) };
            let mut done = self.done.lock();
            done.answers[chunk] = answer;
            done.finished += 1;
            if done.finished == self.chunks {
                self.all_done.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use super::*;

    /// Every chunk is done once, its answer in its place, whoever took it.
    #[test]
    fn shared_work_answers_every_chunk_in_order() {
        let helpers = start(Path::new("/data")).unwrap();
        for chunks in [0, 1, 2, 100] {
            let answers = share(&helpers, chunks, |chunk| chunk * 3);
            assert_eq!(answers, (0..chunks).map(|chunk| Some(chunk * 3)).collect::<Vec<_>>());
        }
    }

    /// With every helper busy with another job, the caller does every
    /// chunk itself and does not wait for them.
    #[test]
    fn shared_work_does_not_wait_for_busy_helpers() {
        let helpers = start(Path::new("/data")).unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (started, busy) = std::sync::mpsc::channel();
        for _ in 0..helpers.current_num_threads() {
            let (released, started) = (Arc::clone(&released), started.clone());
            helpers.spawn(move || {
                started.send(()).unwrap();
                let _ = released.lock().recv();
            });
        }
        // Both helpers are now inside their jobs (the first holds the lock, the other waits on it).
        for _ in 0..helpers.current_num_threads() {
            busy.recv().unwrap();
        }
        let caller = std::thread::current().id();
        let answers = share(&helpers, 50, move |chunk| (chunk, std::thread::current().id() == caller));
        assert_eq!(answers, (0..50).map(|chunk| Some((chunk, true))).collect::<Vec<_>>());
        for _ in 0..helpers.current_num_threads() {
            release.send(()).unwrap();
        }
    }
}
