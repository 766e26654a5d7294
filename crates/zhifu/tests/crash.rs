//! Crash recovery with a real process: `zhifu load-journal` is killed with
//! SIGKILL at random moments, again and again; after every kill the data
//! directory must hold every acknowledged batch, no half of any linked pair,
//! and balanced books.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use journal::{Journal, Options};

const KILLS: usize = 24;

/// A small deterministic generator for the kill moments (seed printed on failure).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_acknowledged_batch_survives_sigkill() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let seed = 0x5eed_2013_1111u64;
    let mut rng = seed;
    let mut acked_max = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zhifu"))
            .args(["load-journal", "--data-dir", data.to_str().unwrap(), "--snapshot-every", "16"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, acks) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ") {
                    let _ = sender.send(n.parse::<u64>().unwrap());
                }
            }
        });
        // Wait for a random number of acknowledgements (some rounds none),
        // then a random few more milliseconds, then kill.
        let wanted = next(&mut rng) % 40;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = 0;
        while seen < wanted && Instant::now() < deadline {
            if let Ok(n) = acks.recv_timeout(Duration::from_millis(50)) {
                acked_max = acked_max.max(n);
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(next(&mut rng) % 15));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(n) = acks.try_recv() {
            acked_max = acked_max.max(n);
        }

        let (_, ledger, report) = Journal::<ledger::Ledger>::open(&data, Options::default())
            .unwrap_or_else(|error| panic!("round {round} (seed {seed:#x}): recovery failed: {error}"));
        ledger.check_conservation().unwrap();
        let transfers = ledger.stats().transfers;
        let pairs = zhifu_pairs_per_batch() * 2;
        assert_eq!(transfers % pairs, 0, "round {round}: a batch was half applied ({transfers} transfers)");
        let durable_batches = transfers / pairs;
        assert!(
            durable_batches >= acked_max,
            "round {round}: acked {acked_max} but only {durable_batches} durable ({report:?})"
        );
        for n in 1..=durable_batches {
            let id = u128::from(n) * 1_000;
            assert!(
                ledger.transfer(id).is_some() && ledger.transfer(id + 1).is_some(),
                "round {round}: batch {n} incomplete"
            );
        }
    }
    assert!(acked_max > 50, "the load made too little progress to test anything: {acked_max}");
}

fn zhifu_pairs_per_batch() -> u64 {
    50
}
