//! Real PostgreSQL servers for the replicated-store tests (Debian's
//! PostgreSQL, run as the `postgres` user): a primary on a free port, a
//! standby made with `pg_basebackup`, synchronous replication, kill -9,
//! promotion. Each server lives in a directory of its own, removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`, the newest).
pub fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether the tests can run PostgreSQL here; under CI they must (`.ci/run`
/// installs it), elsewhere a test without it says it skipped.
pub fn available() -> bool {
    let found = binaries().is_some();
    if !found {
        assert!(std::env::var("CI").is_err(), "CI must install PostgreSQL (apt-get install postgresql, see .ci/run)");
        eprintln!("skipped: PostgreSQL is not installed");
    }
    found
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

pub struct Postgres {
    pub name: String,
    pub port: u16,
    directory: PathBuf,
    bin: PathBuf,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

impl Postgres {
    fn data(&self) -> PathBuf {
        self.directory.join("data")
    }

    /// Runs one of PostgreSQL's tools (as `postgres` when this is root: it refuses root).
    fn tool(&self, name: &str, args: &[&str]) -> std::process::Output {
        let program = self.bin.join(name);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir("/").stdin(Stdio::null()).output().expect("a PostgreSQL tool runs")
    }

    fn tool_ok(&self, name: &str, args: &[&str]) {
        let output = self.tool(name, args);
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn new_directory(name: &str, port: u16) -> (PathBuf, PathBuf) {
        let bin = binaries().expect("PostgreSQL is installed");
        let directory = std::env::temp_dir().join(format!("zhifu-pg-{}-{name}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).expect("a directory for PostgreSQL");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&directory).status();
            assert!(status.is_ok_and(|status| status.success()), "chown to postgres");
        }
        (directory, bin)
    }

    /// Settings of every server here: loopback, its own socket directory,
    /// replication, durable commits.
    fn configure(&self) {
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 10\nhot_standby = on\nsynchronous_commit = on\nwal_keep_size = '512MB'\n\
             fsync = on\nshared_buffers = '64MB'\nmax_connections = 50\n",
            self.port,
            self.directory.display()
        );
        let path = self.data().join("postgresql.conf");
        let mut conf = std::fs::read_to_string(&path).expect("postgresql.conf");
        conf.push_str(&settings);
        std::fs::write(&path, conf).expect("write postgresql.conf");
    }

    /// A new primary on `port` with an empty database `zhifu`.
    pub fn primary(name: &str, port: u16) -> Postgres {
        let (directory, bin) = Postgres::new_directory(name, port);
        let server = Postgres { name: name.to_string(), port, directory, bin };
        let data = server.data();
        let data = data.to_str().expect("a UTF-8 path");
        server.tool_ok("initdb", &["-D", data, "-A", "trust", "-U", "postgres", "--no-instructions"]);
        server.configure();
        server.start();
        server.sql("postgres", "CREATE DATABASE zhifu");
        server
    }

    /// A standby of `primary` on `port`, streaming from it as `name`.
    pub fn standby(primary: &Postgres, name: &str, port: u16) -> Postgres {
        let (directory, bin) = Postgres::new_directory(name, port);
        let server = Postgres { name: name.to_string(), port, directory, bin };
        let data = server.data();
        let data = data.to_str().expect("a UTF-8 path");
        let source_port = primary.port.to_string();
        server.tool_ok(
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &source_port, "-U", "postgres", "-D", data, "-R", "-X", "stream", "-c", "fast"],
        );
        server.configure();
        // Its own name in replication (for synchronous_standby_names), and
        // not waiting for a standby of its own once promoted.
        let extra = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={name}'\n\
             synchronous_standby_names = ''\n",
            primary.port
        );
        let auto = server.data().join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&extra);
        std::fs::write(&auto, conf).expect("write postgresql.auto.conf");
        server.start();
        server
    }

    pub fn start(&self) {
        let data = self.data();
        let log = self.directory.join("server.log");
        self.tool_ok(
            "pg_ctl",
            &["-D", data.to_str().expect("UTF-8"), "-l", log.to_str().expect("UTF-8"), "-w", "-t", "60", "start"],
        );
    }

    pub fn stop(&self) {
        let data = self.data();
        self.tool_ok("pg_ctl", &["-D", data.to_str().expect("UTF-8"), "-m", "fast", "-w", "stop"]);
    }

    /// kill -9 of the postmaster (its children go with it).
    pub fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
        let pid = pid_file.lines().next().unwrap_or("").trim().to_string();
        assert!(!pid.is_empty(), "{} is running", self.name);
        let _ = Command::new("kill").args(["-9", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its backends die with it; wait until none listens.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Promotes a standby to primary.
    pub fn promote(&self) {
        let data = self.data();
        self.tool_ok("pg_ctl", &["-D", data.to_str().expect("UTF-8"), "-w", "promote"]);
    }

    /// Commits on this primary wait for `standby` (synchronous replication).
    pub fn require_synchronous(&self, standby: &str) {
        self.sql("postgres", &format!("ALTER SYSTEM SET synchronous_standby_names = '{standby}'"));
        self.sql("postgres", "SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.sql(
                "postgres",
                &format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{standby}'"),
            );
            if state.trim() == "sync" {
                return;
            }
            assert!(Instant::now() < deadline, "{standby} never became synchronous ({state})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL with psql; its output, unaligned.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let psql = self.bin.join("psql");
        let output = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.tool("pg_ctl", &["-D", data.to_str().unwrap_or("/nonexistent"), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The URL of a store on these hosts, following whichever is the primary.
pub fn store_url(hosts: &[String]) -> String {
    format!("postgresql://postgres@{}/zhifu?target_session_attrs=read-write", hosts.join(","))
}
