//! What the writer's replies leave for the in-process driver: the answers
//! to tally, their count, and the wake of a driver that waits for one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::Duration;

/// A driver that sleeps wakes at least this often: the most that a wake
/// lost to a bug would cost.
const DRIVER_SLEEP_MAX: Duration = Duration::from_millis(5);

/// In one block: a reply that held three references cost six atomic
/// operations on lines both threads write.
pub(super) struct Replies<A> {
    /// Commands answered (the writer counts them as it answers).
    completed: AtomicU64,
    failed: AtomicBool,
    /// The count of answers the driver sleeps until (`u64::MAX`: it does
    /// not sleep, or its wake is given). The reply that reaches it wakes the
    /// driver: one wake a wait, where sleeping 50 µs at a time woke it some
    /// 250 times for each group commit, and each wake took the writer's core
    /// from it.
    wake_at: AtomicU64,
    /// The thread that submits and waits: the driver's.
    driver: Thread,
    /// `DRIVER_SLEEP_MAX`, longer in tests (where it would hide a lost wake).
    sleep_max: Duration,
    /// Answers not yet tallied, in order: the writer only files them, so
    /// that the tallying (a cache miss or two in these maps, a histogram)
    /// is the driver's time, not the writer's (3% of the writer's when it
    /// tallied them itself).
    answers: Mutex<Vec<A>>,
}

impl<A> Replies<A> {
    /// For the driver on this thread, with `completed` commands answered already.
    pub(super) fn new(completed: u64) -> Replies<A> {
        Replies {
            completed: AtomicU64::new(completed),
            failed: AtomicBool::new(false),
            wake_at: AtomicU64::new(u64::MAX),
            driver: std::thread::current(),
            sleep_max: DRIVER_SLEEP_MAX,
            answers: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Files an answer (a failure too) and counts it; wakes the driver if
    /// it waits for it. Called by the writer, in the commands' order.
    pub(super) fn file(&self, answer: A, is_failure: bool) {
        lock(&self.answers).push(answer);
        if is_failure {
            self.failed.store(true, Ordering::SeqCst);
        }
        // SeqCst here and in `sleep_until`: either this sees the driver's
        // `wake_at` or the driver sees this count, so no wake is lost.
        let completed = self.completed.fetch_add(1, Ordering::SeqCst) + 1;
        let wake_at = self.wake_at.load(Ordering::SeqCst);
        if completed >= wake_at || is_failure {
            // Only the wait seen is marked woken: a newer one keeps its count.
            let _ = self.wake_at.compare_exchange(wake_at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst);
            self.driver.unpark();
        }
    }

    /// Swaps the answers filed so far for `spare` (empty, its room kept, so
    /// the writer never grows the list from nothing).
    pub(super) fn take_answers(&self, spare: &mut Vec<A>) {
        std::mem::swap(spare, &mut *lock(&self.answers));
    }

    /// Sleeps (on the driver's thread) until `sequence` commands are
    /// answered or one failed, or for `DRIVER_SLEEP_MAX` at most.
    pub(super) fn sleep_until(&self, sequence: u64) {
        // Another thread's park would never be woken: it would look every `sleep_max`.
        assert_eq!(std::thread::current().id(), self.driver.id(), "a driver sleeps on its own thread");
        self.wake_at.store(sequence, Ordering::SeqCst);
        if self.completed.load(Ordering::SeqCst) < sequence && !self.failed.load(Ordering::SeqCst) {
            std::thread::park_timeout(self.sleep_max);
        }
        self.wake_at.store(u64::MAX, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// A park this long was not woken (one woken returns at once).
    const PARK_TIMEOUT: Duration = Duration::from_secs(1);
    /// A driver's sleep in a test, so long that a lost wake shows.
    const SLEEP_MAX_IN_TESTS: Duration = Duration::from_secs(60);

    /// Whether this thread's park token is set (a wake was given).
    fn woken() -> bool {
        let started = Instant::now();
        std::thread::park_timeout(PARK_TIMEOUT);
        started.elapsed() < PARK_TIMEOUT / 2
    }

    #[test]
    fn the_answer_a_driver_waits_for_wakes_it_and_no_earlier_one_does() {
        let replies = Replies::new(10);
        replies.wake_at.store(12, Ordering::SeqCst);
        replies.file(11, false);
        assert_eq!(replies.wake_at.load(Ordering::SeqCst), 12, "the 11th answer is not the one awaited");
        assert!(!woken(), "an answer before the awaited one woke the driver");
        replies.file(12, false);
        assert_eq!(replies.wake_at.load(Ordering::SeqCst), u64::MAX);
        assert!(woken(), "the awaited answer did not wake the driver");
        assert_eq!(replies.completed(), 12);
        let mut answers = Vec::new();
        replies.take_answers(&mut answers);
        assert_eq!(answers, [11, 12]);
    }

    #[test]
    fn a_failure_wakes_a_waiting_driver() {
        let replies = Replies::new(0);
        replies.wake_at.store(100, Ordering::SeqCst);
        replies.file((), true);
        assert!(replies.failed());
        assert!(woken(), "a failure did not wake the driver");
    }

    #[test]
    fn a_driver_waiting_on_a_writer_thread_is_woken_for_each_wait() {
        const ANSWERS: u64 = 100_000;
        let mut replies = Replies::new(0);
        replies.sleep_max = SLEEP_MAX_IN_TESTS;
        let replies = Arc::new(replies);
        let writer = {
            let replies = Arc::clone(&replies);
            std::thread::spawn(move || (1..=ANSWERS).for_each(|answer| replies.file(answer, false)))
        };
        // Many short waits, each racing the writer's answers: a lost wake
        // would sleep the whole `SLEEP_MAX_IN_TESTS`.
        for sequence in (1..=ANSWERS).step_by(97) {
            let started = Instant::now();
            while replies.completed() < sequence {
                replies.sleep_until(sequence);
            }
            assert!(started.elapsed() < SLEEP_MAX_IN_TESTS / 2, "the wait for answer {sequence} was not woken");
        }
        assert!(writer.join().is_ok());
        assert_eq!(replies.completed(), ANSWERS);
    }
}
