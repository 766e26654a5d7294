//! The replicated store against real PostgreSQL (Debian's, started here on
//! free ports): nodes that share one database, one leading; followers that
//! apply its log and take over when it dies; PostgreSQL's own failover;
//! nothing acknowledged lost, nothing applied twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Server;
use support::postgres::{Postgres, available, free_port, store_url};

/// The lease the tests give nodes: a dead leader is replaced about this
/// long after it stopped (the default is 10 s).
const LEASE_MS: &str = "3000";

/// A zhifu node on the store at `url`, listening on a port of its own (kept across restarts).
fn node(directory: &Path, name: &str, url: &str) -> Server {
    node_with(directory, name, url, &[])
}

/// A node given `more` arguments besides.
fn node_with(directory: &Path, name: &str, url: &str, more: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    let data = directory.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let arguments = [
        "--store",
        url,
        "--store-lease-ms",
        LEASE_MS,
        "--clock",
        "simulated",
        "--rate-limit",
        "0",
        "--rate-limit-per-address",
        "0",
    ];
    Server::start_listening(&data, &listen, &[&arguments[..], more].concat())
}

fn role(server: &Server) -> Option<String> {
    let response = server.client.get(format!("{}/healthz", server.base)).timeout(Duration::from_secs(2)).send().ok()?;
    let body: Value = response.json().ok()?;
    body["role"].as_str().map(str::to_string)
}

fn sequence(server: &Server) -> u64 {
    server.get("/healthz", None).1["sequence"].as_u64().unwrap_or(0)
}

fn ready(server: &Server) -> bool {
    let response = server.client.get(format!("{}/readyz", server.base)).timeout(Duration::from_secs(2)).send();
    response.is_ok_and(|response| response.status() == StatusCode::OK)
}

/// Waits for one of `nodes` to lead; its index and how long it took.
fn wait_for_leader(nodes: &[&Server], within: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        if let Some(index) = nodes.iter().position(|node| ready(node)) {
            return (index, started.elapsed());
        }
        assert!(started.elapsed() < within, "no node led within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `zhifu recover` of a data directory: (last sequence, digest).
fn recovered(data_dir: &Path, url: &str) -> (u64, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .args(["recover", "--store", url, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let line = text.lines().last().unwrap_or_default();
    let sequence = line.split_whitespace().find_map(|part| part.strip_prefix("sequence=")).unwrap().parse().unwrap();
    let digest = line.split_whitespace().find_map(|part| part.strip_prefix("digest=")).unwrap().to_string();
    (sequence, digest)
}

#[test]
fn a_follower_applies_the_log_and_takes_over_and_an_empty_node_catches_up() {
    if !available() {
        return;
    }
    let primary = Postgres::primary("primary", free_port());
    let url = store_url(&[primary.host()]);
    let directory = tempfile::tempdir().unwrap();
    let mut first = node(directory.path(), "a", &url);
    let second = node(directory.path(), "b", &url);
    assert_eq!(role(&first).as_deref(), Some("leader"));
    assert_eq!(role(&second).as_deref(), Some("follower"));
    // Money moves on the leader.
    let (payee_id, payee) = first.user("payee");
    let (_, payer) = first.user("payer");
    first.top_up(&payer, 100_000);
    for n in 0..20 {
        let body = json!({ "to": payee_id, "amount": 100 + n });
        let (status, moved) =
            first.call_with(reqwest::Method::POST, "/v1/transfers", Some(&payer), Some(body), Some(&format!("t-{n}")));
        assert_eq!(status, StatusCode::CREATED, "{moved}");
    }
    let balances = (first.available(&payer), first.available(&payee));
    // The follower applies it, and sends writers to the leader.
    wait_until("the follower catches up", Duration::from_secs(10), || sequence(&second) == sequence(&first));
    // The leader knows how far it has come (it says so once a second).
    wait_until("the leader sees the follower caught up", Duration::from_secs(10), || {
        let (_, health) = first.get("/healthz", None);
        let followers = health["followers"].as_array().cloned().unwrap_or_default();
        followers.iter().any(|f| f["node"] == second.base.as_str() && f["behind"] == 0)
    });
    let response = second.client.get(format!("{}/v1/balance", second.base)).bearer_auth(&payer).send().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("zhifu-leader").and_then(|v| v.to_str().ok()), Some(first.base.as_str()));
    let body: Value = response.json().unwrap();
    assert_eq!(Server::error_code(&body), "not_leader");
    // A third node with an empty data directory catches up from PostgreSQL
    // alone, replaying the log as the memory horizon that wrote it (the
    // log records it), not as its own flag says.
    let third = node_with(directory.path(), "c", &url, &["--memory-horizon-seconds", "60"]);
    wait_until("the new node catches up", Duration::from_secs(20), || sequence(&third) == sequence(&first));
    let recorded = std::fs::read_to_string(directory.path().join("c/data/FORMAT")).unwrap();
    assert!(recorded.contains("\nledger id-horizon-ns 3600000000000 check "), "{recorded}");
    // The leader dies: a follower takes over within the lease, with every balance.
    first.kill();
    let (leader, took) = wait_for_leader(&[&second, &third], Duration::from_secs(30));
    eprintln!("takeover after the leader's kill -9: {took:?}");
    let leader = [&second, &third][leader];
    assert_eq!((leader.available(&payer), leader.available(&payee)), balances);
    // The node that started empty, made leader, answers every balance as the old leader did.
    let mut second = second;
    second.kill();
    wait_for_leader(&[&third], Duration::from_secs(30));
    assert_eq!((third.available(&payer), third.available(&payee)), balances);
    second.restart();
    let leader = &third;
    // A retried request is answered as the first time, and moves nothing again.
    let body = json!({ "to": payee_id, "amount": 100 });
    let (status, _) = leader.call_with(reqwest::Method::POST, "/v1/transfers", Some(&payer), Some(body), Some("t-0"));
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(leader.available(&payee), balances.1);
    leader.assert_balanced();
    // The old leader comes back as a follower of the new one.
    first.restart();
    wait_until("the old leader follows", Duration::from_secs(20), || {
        role(&first).as_deref() == Some("follower") && sequence(&first) == sequence(leader)
    });
}

/// One client's transfers, each under its own Idempotency-Key, sent to
/// whichever node leads and retried until a definite answer: the keys that
/// were acknowledged.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(String, String)>>>,
}

impl Load {
    fn start(bases: Vec<String>, payer: String, payee_id: String) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
            let mut acknowledged = Vec::new();
            let mut next = 0u64;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("load-{next}");
                next += 1;
                // Until a definite answer: a 201, from whichever node leads.
                'answered: loop {
                    for base in &bases {
                        let response = client
                            .post(format!("{base}/v1/transfers"))
                            .bearer_auth(&payer)
                            .header("Idempotency-Key", &key)
                            .json(&json!({ "to": payee_id, "amount": 1 }))
                            .send();
                        let Ok(response) = response else { continue };
                        match response.status() {
                            StatusCode::CREATED => {
                                let body: Value = response.json().unwrap_or(Value::Null);
                                acknowledged.push((key.clone(), body["id"].as_str().unwrap_or("").to_string()));
                                break 'answered;
                            }
                            status if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
                                panic!("{key}: {status} {}", response.text().unwrap_or_default());
                            }
                            _ => {}
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            acknowledged
        });
        Load { stop, handle: Some(handle) }
    }

    fn finish(mut self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

#[test]
fn under_load_crashes_and_failovers_lose_nothing_acknowledged_and_apply_nothing_twice() {
    if !available() {
        return;
    }
    // PostgreSQL: a primary and a synchronous standby; nodes know every host
    // a primary will ever have in this test.
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let hosts: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let url = store_url(&hosts);
    let mut primary = Postgres::primary("pg0", ports[0]);
    let mut standby = Postgres::standby(&primary, "pg1", ports[1]);
    primary.require_synchronous("pg1");
    let directory = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Server> = ["a", "b", "c"].iter().map(|name| node(directory.path(), name, &url)).collect();
    let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30));
    // The leader reports PostgreSQL's standby, synchronous, and its lag.
    wait_until("the leader sees the standby", Duration::from_secs(10), || {
        let (_, health) = nodes[leader].get("/healthz", None);
        let replicas = health["replicas"].as_array().cloned().unwrap_or_default();
        replicas.iter().any(|r| r["name"] == "pg1" && r["sync_state"] == "sync" && r["behind_bytes"].is_u64())
    });
    let (payee_id, payee) = nodes[leader].user("payee");
    let (_, payer) = nodes[leader].user("payer");
    nodes[leader].top_up(&payer, 1_000_000_000);
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
    let load = Load::start(bases, payer.clone(), payee_id.clone());
    let mut takeovers = Vec::new();

    // kill -9 of the leader, ten times at random moments; it comes back as a follower.
    let mut random = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..10 {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(Duration::from_millis(300 + random % 1_500));
        let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
        nodes[leader].kill();
        let others: Vec<&Server> = nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n).collect();
        let (_, took) = wait_for_leader(&others, Duration::from_secs(30));
        takeovers.push(took);
        nodes[leader].restart();
    }
    let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
    nodes[leader].assert_balanced();
    // kill -9 of PostgreSQL's primary, three times: the standby is promoted,
    // and a new standby is made from it.
    let mut spare = 2;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1_000));
        primary.kill();
        standby.promote();
        let new_standby = Postgres::standby(&standby, &format!("pg{spare}"), ports[spare]);
        standby.require_synchronous(&format!("pg{spare}"));
        drop(std::mem::replace(&mut primary, std::mem::replace(&mut standby, new_standby)));
        spare = (spare + 1) % ports.len();
        while ports[spare] == primary.port || ports[spare] == standby.port {
            spare = (spare + 1) % ports.len();
        }
        let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
        nodes[leader].assert_balanced();
    }
    // PostgreSQL stopped for 30 s, then started again.
    primary.stop();
    std::thread::sleep(Duration::from_secs(30));
    primary.start();
    wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
    // The leader paused past its lease: another takes over; the old one,
    // resumed, acknowledges nothing it did not commit before.
    let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
    nodes[leader].signal("STOP");
    let others: Vec<&Server> = nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n).collect();
    let (_, took) = wait_for_leader(&others, Duration::from_secs(30));
    takeovers.push(took);
    std::thread::sleep(Duration::from_secs(1));
    nodes[leader].signal("CONT");
    wait_until("the paused leader follows", Duration::from_secs(30), || {
        role(&nodes[leader]).as_deref() == Some("follower")
    });
    std::thread::sleep(Duration::from_secs(2));
    let acknowledged = load.finish();

    // Every acknowledged transfer is there exactly once: the payee got one fen for each.
    let (leader, _) = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60));
    assert!(acknowledged.len() > 100, "the load ran: {}", acknowledged.len());
    assert_eq!(nodes[leader].available(&payee), acknowledged.len() as u64, "one fen per acknowledged key, no more");
    let ids: std::collections::BTreeSet<&String> = acknowledged.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), acknowledged.len(), "every key its own transfer");
    nodes[leader].assert_balanced();
    // Followers hold the state a fresh replay of PostgreSQL's log gives.
    let last = sequence(&nodes[leader]);
    for node in &nodes {
        wait_until("every node catches up", Duration::from_secs(30), || sequence(node) >= last);
    }
    let data_dirs: Vec<_> = nodes.iter().map(|node| node.data_dir.clone()).collect();
    for node in &mut nodes {
        node.kill();
    }
    let fresh = directory.path().join("fresh");
    let mut digests: BTreeMap<String, (u64, String)> = BTreeMap::new();
    digests.insert("a fresh replay".to_string(), recovered(&fresh, &url));
    for dir in &data_dirs {
        digests.insert(dir.display().to_string(), recovered(dir, &url));
    }
    let distinct: std::collections::BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "{digests:?}");
    takeovers.sort();
    eprintln!(
        "{} acknowledged; takeovers: p50 {:?}, max {:?} (lease {LEASE_MS} ms)",
        acknowledged.len(),
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap()
    );
}
