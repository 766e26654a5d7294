//! A throwaway local PostgreSQL server for baselines: initdb into a fresh
//! directory, listening only on a Unix socket inside it (no TCP port), with
//! PostgreSQL's default durable settings; stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub struct LocalPostgres {
    bin: PathBuf,
    directory: PathBuf,
    /// When running as root, PostgreSQL refuses to run; its tools run as
    /// the `postgres` system user instead.
    as_postgres_user: bool,
    /// Of its Unix socket (there is no TCP port).
    port: u16,
}

const SOCKET_PORT: u16 = 5433;

impl LocalPostgres {
    /// Finds PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`, the
    /// newest) or returns `None` when none is installed.
    pub fn find_bin() -> Option<PathBuf> {
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

    pub fn start(bin: &Path, parent: &Path) -> anyhow::Result<LocalPostgres> {
        let directory = parent.join(format!("zhifu-postgres-{}", std::process::id()));
        if directory.exists() {
            std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
        }
        std::fs::create_dir_all(&directory).with_context(|| format!("create {}", directory.display()))?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&directory))?;
        }
        let server = LocalPostgres { bin: bin.to_path_buf(), directory, as_postgres_user, port: SOCKET_PORT };
        let data = server.directory.join("data");
        server.run_tool("initdb", &["-D", path_str(&data)?, "-A", "trust", "-U", "postgres", "--no-instructions"])?;
        server.start_server()?;
        Ok(server)
    }

    /// A libpq connection string for the server.
    pub fn url(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.directory.display(), self.port)
    }

    /// A standby of `primary` (`pg_basebackup`), streaming from it as `name`.
    pub fn standby_of(primary: &LocalPostgres, parent: &Path, name: &str) -> anyhow::Result<LocalPostgres> {
        let directory = parent.join(format!("zhifu-postgres-{}-{name}", std::process::id()));
        if directory.exists() {
            std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
        }
        std::fs::create_dir_all(&directory).with_context(|| format!("create {}", directory.display()))?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&directory))?;
        }
        let server = LocalPostgres { bin: primary.bin.clone(), directory, as_postgres_user, port: primary.port + 1 };
        let data = server.directory.join("data");
        let source = path_str(&primary.directory)?.to_string();
        let source_port = primary.port.to_string();
        server.run_tool(
            "pg_basebackup",
            &[
                "-h",
                &source,
                "-p",
                &source_port,
                "-U",
                "postgres",
                "-D",
                path_str(&data)?,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        let conninfo = format!(
            "\nprimary_conninfo = 'host={source} port={source_port} user=postgres application_name={name}'\n\
             synchronous_standby_names = ''\n"
        );
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&conninfo);
        std::fs::write(&auto, conf).with_context(|| format!("write {}", auto.display()))?;
        server.start_server()?;
        Ok(server)
    }

    /// Commits wait for the standby `name` (synchronous replication).
    pub fn require_synchronous(&self, name: &str) -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&self.url(), postgres::NoTls).context("connect to the primary")?;
        // One statement each: ALTER SYSTEM cannot run in the implicit transaction of several.
        client.batch_execute(&format!("ALTER SYSTEM SET synchronous_standby_names = '{name}'"))?;
        client.batch_execute("SELECT pg_reload_conf()")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let state: Option<String> = client
                .query_opt("SELECT sync_state FROM pg_stat_replication WHERE application_name = $1", &[&name])?
                .map(|row| row.get(0));
            if state.as_deref() == Some("sync") {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the standby {name} never became synchronous");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn start_server(&self) -> anyhow::Result<()> {
        let data = self.directory.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses='' -c wal_level=replica -c max_wal_senders=4 -c hot_standby=on",
            self.port,
            path_str(&self.directory)?
        );
        let log = self.directory.join("server.log");
        self.run_tool("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&log)?, "-o", &options, "-w", "start"])
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args);
        run(&mut command)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let data = self.directory.join("data");
        if let Some(data) = data.to_str() {
            let _ = self.run_tool("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}
