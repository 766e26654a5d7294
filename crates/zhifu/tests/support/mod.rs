//! A real `zhifu serve` process on a free port, and a small HTTP client.

#![allow(dead_code)] // each test file uses a part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub mod postgres;

pub const ADMIN_KEY: &str = "test-admin-key";

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub client: Client,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server on a fresh data directory inside `directory`.
    pub fn start(directory: &Path, extra: &[&str]) -> Server {
        Server::start_listening(directory, "127.0.0.1:0", extra)
    }

    /// As `start`, listening on `listen` (`0.0.0.0:0`: beyond loopback).
    pub fn start_listening(directory: &Path, listen: &str, extra: &[&str]) -> Server {
        let data_dir = directory.join("data");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--listen".to_string(), listen.to_string()]);
        Server::spawn(data_dir, extra)
    }

    /// Stops the server (SIGTERM) and starts it again on the same data with other flags.
    pub fn restart_with(self, extra: &[&str]) -> Server {
        let data_dir = self.data_dir.clone();
        assert!(self.terminate(), "the server stops cleanly");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        Server::spawn(data_dir, extra)
    }

    /// Where the process's log goes: beside its data directory, kept across restarts.
    fn log_file(data_dir: &Path) -> Stdio {
        let path = data_dir.with_extension("log");
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => Stdio::from(file),
            Err(_) => Stdio::null(),
        }
    }

    fn spawn(data_dir: PathBuf, extra: Vec<String>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zhifu"))
            .args(["serve", "--admin-key", ADMIN_KEY, "--data-dir"])
            .arg(&data_dir)
            .args(&extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Server::log_file(&data_dir))
            .spawn()
            .expect("zhifu serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("zhifu serve prints where it listens").expect("a line");
            if let Some(address) = line.strip_prefix("zhifu listening on ") {
                break address.to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Server { child, base, data_dir, client, extra }
    }

    /// Asks the server to stop (SIGTERM) and waits: true if it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().map(|status| status.success()).unwrap_or(false)
    }

    /// Kills the process at once (SIGKILL), leaving its data as it was.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again (after `kill`) on the same data and flags.
    pub fn restart(&mut self) {
        self.kill();
        *self = Server::spawn(self.data_dir.clone(), self.extra.clone());
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
    }

    /// Whether the process has ended, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once (SIGKILL) and starts a new one on the same data.
    pub fn crash_and_restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Server::spawn(self.data_dir.clone(), self.extra.clone())
    }

    pub fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, path, key, body, None)
    }

    pub fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the server answers");
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None)
    }

    pub fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, key, Some(body))
    }

    /// Waits (20 s at most) until the event's delivery log lists `attempts`
    /// attempts: an attempt is recorded (a journaled command) only after its
    /// receiver has answered, and a clock advanced before that moves the
    /// next attempt past the advanced clock.
    pub fn wait_for_attempts(&self, key: &str, event_id: &str, attempts: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, log) = self.get(&format!("/v1/events/{event_id}/deliveries"), Some(key));
            if log["data"].as_array().map_or(0, Vec::len) >= attempts {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{attempts} attempts not logged: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a user; returns (id, api key).
    pub fn user(&self, name: &str) -> (String, String) {
        let (status, body) = self.post("/v1/users", Some(ADMIN_KEY), serde_json::json!({ "name": name }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["id"].as_str().unwrap().to_string(), body["api_key"].as_str().unwrap().to_string())
    }

    pub fn merchant(&self, name: &str) -> (String, String) {
        let (status, body) = self.post("/v1/merchants", Some(ADMIN_KEY), serde_json::json!({ "name": name }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["id"].as_str().unwrap().to_string(), body["api_key"].as_str().unwrap().to_string())
    }

    pub fn top_up(&self, key: &str, amount: u64) {
        let (status, body) =
            self.post("/v1/topups", Some(key), serde_json::json!({ "amount": amount, "bank": "ICBC" }));
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub fn available(&self, key: &str) -> u64 {
        let (status, body) = self.get("/v1/balance", Some(key));
        assert_eq!(status, StatusCode::OK, "{body}");
        body["available"].as_u64().unwrap()
    }

    /// Sets a product's fee schedule (admin).
    pub fn fees(&self, product: &str, schedule: Value) {
        let (status, body) =
            self.call(Method::PUT, &format!("/v1/admin/fee-schedules/{product}"), Some(ADMIN_KEY), Some(schedule));
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The ledger check must say balanced.
    pub fn assert_balanced(&self) {
        let (status, body) = self.get("/v1/admin/ledger/check", Some(ADMIN_KEY));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["balanced"], Value::Bool(true), "{body}");
        assert_eq!(body["debits_total"], body["credits_total"], "{body}");
    }

    pub fn error_code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or("<no error code>")
    }
}

/// A merchant's app on the gateway: its id and its signing key.
pub struct App {
    pub app_id: String,
    key: server::gateway::PlatformKey,
    _directory: tempfile::TempDir,
}

impl Server {
    /// The process id, to read its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A merchant with a gateway app; returns (id, api key, app).
    pub fn merchant_with_app(&self, name: &str) -> (String, String, App) {
        let directory = tempfile::tempdir().expect("a directory for the app's key");
        let key = server::gateway::PlatformKey::in_directory(directory.path());
        let public = key.public_pem().expect("an RSA key");
        let body = serde_json::json!({ "name": name, "app_public_key": public });
        let (status, merchant) = self.post("/v1/merchants", Some(ADMIN_KEY), body);
        assert_eq!(status, StatusCode::CREATED, "{merchant}");
        let app = App { app_id: merchant["app_id"].as_str().unwrap().to_string(), key, _directory: directory };
        (merchant["id"].as_str().unwrap().to_string(), merchant["api_key"].as_str().unwrap().to_string(), app)
    }

    /// A signed gateway request as the SDKs send it (common parameters and
    /// `biz_content`, form-encoded); the answer's object under its name.
    pub fn gateway(&self, app: &App, method: &str, biz: Value, extra: &[(&str, &str)]) -> Value {
        let mut params = std::collections::BTreeMap::new();
        for (name, value) in [
            ("app_id", app.app_id.as_str()),
            ("method", method),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", "2013-11-11 00:00:00"),
            ("version", "1.0"),
        ] {
            params.insert(name.to_string(), value.to_string());
        }
        params.insert("biz_content".to_string(), biz.to_string());
        for (name, value) in extra {
            params.insert(name.to_string(), value.to_string());
        }
        let signature = app.key.sign(&server::gateway::sign_content(&params, &["sign"])).expect("signed");
        params.insert("sign".to_string(), signature);
        let response =
            self.client.post(format!("{}/gateway.do", self.base)).form(&params).send().expect("the gateway answers");
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().expect("JSON");
        answer[format!("{}_response", method.replace('.', "_"))].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a receiver got: the signature header and the body.
pub type Received = mpsc::Receiver<(String, String)>;

/// A webhook receiver on loopback: answers 500 while `down` is above 0
/// (counting down each request), else `status`; reports every request.
pub fn receiver_with(down: Arc<AtomicUsize>, status: &'static str) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut signature, mut length) = (String::new(), 0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("zhifu-signature:") {
                    signature = value.trim().to_string();
                }
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let failing = down.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            let status = if failing { "500 Internal Server Error" } else { status };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sender.send((signature, String::from_utf8(body).unwrap()));
        }
    });
    (url, received)
}

/// Runs a Playwright script of `tests/browser/` against a fresh `zhifu
/// serve` (simulated clock) in Debian's Chromium, keeping its screenshots in
/// `target/tmp/<shots>/`; it passes when the script prints `done`. Without
/// Chromium or the Python modules (`modules`, imported) it is skipped,
/// except under `CI`, where it fails.
#[allow(dead_code)] // used by the browser tests only
pub fn run_browser_script(script: &str, modules: &str, shots: &str, done: &str) {
    use std::path::Path;
    use std::process::Command;
    let python = std::env::var("ZHIFU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let found = Command::new(&python).args(["-c", &format!("import {modules}")]).output();
    let chromium = std::env::var("ZHIFU_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    if !found.is_ok_and(|output| output.status.success()) || !Path::new(&chromium).exists() {
        assert!(std::env::var("CI").is_err(), "CI must install chromium and {modules} (scripts/test-all)");
        eprintln!("skipped: Chromium or {modules} is not installed (apt install chromium; pip install playwright)");
        return;
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join(shots);
    std::fs::create_dir_all(&shots).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser").join(script);
    let output = Command::new(python)
        .arg(script)
        .args([server.base.as_str(), ADMIN_KEY, shots.to_str().unwrap()])
        .env("ZHIFU_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && stdout.contains(done), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    server.assert_balanced();
}
