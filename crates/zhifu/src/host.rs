//! What the machine the binary runs on has: memory, free disk.

use std::path::Path;

/// The machine's memory (`MemTotal`), if the kernel says.
pub fn memory_total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// File descriptors kept free of connections: the journal's files,
/// snapshots being written, outgoing webhook connections.
const FILES_RESERVED: u64 = 256;

/// Raises the process's open-file limit to the most it may (a server holds
/// a socket per connection), and answers how many connections, at most
/// `wanted`, fit under it with room for the files the server itself opens.
pub fn connections_the_file_limit_allows(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    let current = if setrlimit(Resource::Nofile, raised).is_ok() { limit.maximum } else { limit.current };
    let allowed = current.map_or(u64::MAX, |files| files.saturating_sub(FILES_RESERVED).max(1));
    wanted.min(usize::try_from(allowed).unwrap_or(usize::MAX))
}

/// Bytes an unprivileged writer can still use on the filesystem that holds
/// `path`, or would hold it (its nearest existing ancestor's).
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    let existing = path.ancestors().find(|ancestor| ancestor.exists()).filter(|found| !found.as_os_str().is_empty());
    let stats = rustix::fs::statvfs(existing.unwrap_or(Path::new(".")))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Bytes of the files directly in `directory` (0 if it does not exist).
pub fn directory_bytes(directory: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut total = 0u64;
    for entry in entries {
        let metadata = entry?.metadata()?;
        if metadata.is_file() {
            total = total.saturating_add(metadata.len());
        }
    }
    Ok(total)
}
