//! What the machine the binary runs on has: memory, free disk.

use std::path::Path;

/// The machine's memory (`MemTotal`), if the kernel says.
pub fn memory_total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
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
