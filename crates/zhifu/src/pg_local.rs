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
        let server = LocalPostgres { bin: bin.to_path_buf(), directory, as_postgres_user };
        let data = server.directory.join("data");
        server.run_tool("initdb", &["-D", path_str(&data)?, "-A", "trust", "-U", "postgres", "--no-instructions"])?;
        let options = format!("-p {SOCKET_PORT} -k {} -c listen_addresses=''", path_str(&server.directory)?);
        let log = server.directory.join("server.log");
        server.run_tool("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&log)?, "-o", &options, "-w", "start"])?;
        Ok(server)
    }

    /// A libpq connection string for the server.
    pub fn url(&self) -> String {
        format!("host={} port={SOCKET_PORT} user=postgres dbname=postgres", self.directory.display())
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
