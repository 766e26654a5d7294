//! The disk under the journal's files, behind one interface: the machine's
//! own file system ([`FileSystem`], the default) or, for tests, a
//! [`SimulatedDisk`] in memory that does what real disks may do and a clean
//! shutdown never shows — at a crash it loses writes not yet synced, in any
//! order, and tears them at any byte; it makes names durable only when
//! their directory is synced; `fsync` can fail (and then the pages it was
//! to write are gone, though reads still show them, as Linux does); writes
//! can find the disk full; reads can return a flipped bit.
//!
//! Every file the journal writes goes through here: the log's segments,
//! snapshots, the history and archive files, `FORMAT` and `LOCK`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// An existing file, to read.
    Read,
    /// An existing file, to read and write.
    Write,
    /// Created if missing (empty), kept as it is if not.
    Create,
    /// Created; an error if it exists.
    CreateNew,
    /// Created, or cut to nothing if it exists.
    Truncate,
}

/// A file of a [`Disk`]. Reads and writes name their offset: the journal
/// keeps its own positions.
pub trait DiskFile: Send + Sync {
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Up to `buffer.len()` bytes at `offset`; fewer at the end, 0 past it.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;
    /// All of `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, length: u64) -> io::Result<()>;
    /// Makes the file's bytes and length durable (`fdatasync`). After an
    /// error the writes since the last sync may be lost whatever a later
    /// sync says: the caller must stop, never retry.
    fn sync(&self) -> io::Result<()>;
    /// A hint that these bytes will be read soon (`POSIX_FADV_WILLNEED`).
    fn will_need(&self, _offset: u64, _length: u64) {}
    /// Fills `buffer` from `offset` if the page cache holds all of it,
    /// without waiting for the disk (`preadv2` with `RWF_NOWAIT`); `false`
    /// if it does not, or the file cannot tell: read it as usual then.
    fn read_if_in_memory(&self, _buffer: &mut [u8], _offset: u64) -> bool {
        false
    }

    /// Exactly `buffer.len()` bytes at `offset`.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.read_at(&mut buffer[filled..], offset + filled as u64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Held while a data directory is in use; letting it go unlocks it.
pub struct DirectoryLock(#[allow(dead_code)] Box<dyn Send + Sync>);

/// Where the journal's files live.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates a directory (and its parents) private to the owner.
    fn create_directory(&self, directory: &Path) -> io::Result<()>;
    /// Takes a directory's lock; `None` if another holder has it.
    fn lock(&self, directory: &Path) -> io::Result<Option<DirectoryLock>>;
    /// The names of a directory's files.
    fn list(&self, directory: &Path) -> io::Result<Vec<String>>;
    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names of a directory's files durable (after a create, rename or remove).
    fn sync_directory(&self, directory: &Path) -> io::Result<()>;

    /// A whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, Open::Read)?;
        let length = usize::try_from(file.size()?).map_err(io::Error::other)?;
        let mut bytes = vec![0u8; length];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

/// A file read as a stream from its start.
pub struct FileReader {
    file: Arc<dyn DiskFile>,
    offset: u64,
}

impl FileReader {
    pub fn new(file: Arc<dyn DiskFile>) -> FileReader {
        FileReader { file, offset: 0 }
    }
}

impl Read for FileReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// A file written as a stream from its start.
pub struct FileWriter {
    file: Arc<dyn DiskFile>,
    offset: u64,
}

impl FileWriter {
    pub fn new(file: Arc<dyn DiskFile>) -> FileWriter {
        FileWriter { file, offset: 0 }
    }

    pub fn file(&self) -> &Arc<dyn DiskFile> {
        &self.file
    }
}

impl Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The machine's own file system; files and directories private to the owner.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSystem;

struct RealFile {
    file: std::fs::File,
    /// Cleared when the file system refuses `RWF_NOWAIT`: asking again
    /// would waste a system call a read.
    reads_without_waiting: std::sync::atomic::AtomicBool,
}

impl DiskFile for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buffer, offset)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset)
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn will_need(&self, offset: u64, length: u64) {
        // A failed hint costs nothing but the wait it meant to save.
        let _ =
            rustix::fs::fadvise(&self.file, offset, std::num::NonZeroU64::new(length), rustix::fs::Advice::WillNeed);
    }

    fn read_if_in_memory(&self, buffer: &mut [u8], offset: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.reads_without_waiting.load(Relaxed) {
            return false;
        }
        let wanted = buffer.len();
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(&self.file, &mut [io::IoSliceMut::new(buffer)], offset, flags) {
            // A short read found only some of the pages in memory.
            Ok(read) => read == wanted,
            Err(rustix::io::Errno::OPNOTSUPP) => {
                self.reads_without_waiting.store(false, Relaxed);
                false
            }
            Err(_) => false,
        }
    }
}

impl Disk for FileSystem {
    fn create_directory(&self, directory: &Path) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(directory)?;
        // An existing directory is made private too: it holds the platform's secrets.
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
    }

    fn lock(&self, directory: &Path) -> io::Result<Option<DirectoryLock>> {
        let file = private_options().create(true).truncate(false).write(true).open(directory.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirectoryLock(Box::new(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(directory)?
            .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>> {
        let mut options = private_options();
        match how {
            Open::Read => options.read(true),
            Open::Write => options.read(true).write(true),
            Open::Create => options.read(true).write(true).create(true).truncate(false),
            Open::CreateNew => options.read(true).write(true).create_new(true),
            Open::Truncate => options.read(true).write(true).create(true).truncate(true),
        };
        let file = options.open(path)?;
        Ok(Arc::new(RealFile { file, reads_without_waiting: std::sync::atomic::AtomicBool::new(true) }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        std::fs::File::open(directory)?.sync_all()
    }
}

/// Readable and writable by the owner only (0600).
fn private_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.mode(0o600);
    options
}

/// What a [`SimulatedDisk`] does wrong, in chances per 10,000 operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A sync fails (EIO), and the writes it was to make durable are lost
    /// at the next crash, some or all of them, whatever a later sync says.
    pub sync_fails_bps: u32,
    /// A write finds the disk full (ENOSPC), after writing some of its bytes.
    pub write_full_bps: u32,
    /// A read returns one bit flipped (the disk's copy is intact: a read
    /// after a restart sees it right).
    pub read_flips_bps: u32,
}

/// A disk in memory for tests (see the module's documentation). Cloning
/// gives another handle to the same disk.
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    state: Arc<Mutex<SimulatedState>>,
}

impl fmt::Debug for SimulatedDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimulatedDisk")
    }
}

/// One file's bytes: as the disk holds them durably, as reads see them,
/// and the changes between the two, in order.
#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Change>,
}

#[derive(Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Change::Write { offset, bytes: written } => {
                let start = *offset as usize;
                if bytes.len() < start + written.len() {
                    bytes.resize(start + written.len(), 0);
                }
                bytes[start..start + written.len()].copy_from_slice(written);
            }
            Change::SetLen(length) => bytes.resize(*length as usize, 0),
        }
    }
}

/// A change to the names of files, durable once its directory is synced.
#[derive(Clone)]
enum Rename {
    Link { path: PathBuf, inode: usize },
    Move { from: PathBuf, to: PathBuf },
    Unlink { path: PathBuf },
}

/// The generator of a disk's choices (seed 0 unless given one).
struct Choices(rand_pcg::Pcg64Mcg);

impl Default for Choices {
    fn default() -> Choices {
        use rand::SeedableRng as _;
        Choices(rand_pcg::Pcg64Mcg::seed_from_u64(0))
    }
}

#[derive(Default)]
struct SimulatedState {
    inodes: Vec<Inode>,
    /// Names as reads see them, and as the disk holds them durably.
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    /// Name changes since the last directory sync, in order (the file
    /// system's journal keeps them in order: a crash keeps a prefix).
    renames: Vec<Rename>,
    directories: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    faults: Faults,
    random: Choices,
    /// Operations that change the disk before the power goes (`None`: it stays).
    power_left: Option<u64>,
    powered_off: bool,
    /// Faults injected so far.
    injected: u64,
    /// The latest faults, crashes and power cuts, for a failure's report.
    events: std::collections::VecDeque<String>,
    /// Reads and read-ahead hints in order, once asked for (`record_accesses`).
    accesses: Option<Vec<(PathBuf, Access)>>,
    /// The pages (inode, page number) reads, writes and hints brought into
    /// memory, once asked for (`track_page_cache`).
    in_memory: Option<BTreeSet<(usize, u64)>>,
}

/// A read or a read-ahead hint, as a [`SimulatedDisk`] recording them saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read {
        offset: u64,
        length: u64,
    },
    /// A read the page cache answered without waiting (`read_if_in_memory`).
    ReadInMemory {
        offset: u64,
        length: u64,
    },
    WillNeed {
        offset: u64,
        length: u64,
    },
}

/// The page cache's unit, as a simulated disk tracks it.
const PAGE_BYTES: u64 = 4096;

/// Accesses a simulated disk records at most (later ones are not kept).
const ACCESSES_KEPT_MAX: usize = 1 << 16;

/// What a write tears at, at most: a disk's sector.
const SECTOR_BYTES: usize = 512;

/// Events a simulated disk remembers for a failure's report.
const EVENTS_KEPT: usize = 32;

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated disk: {what}"))
}

impl SimulatedState {
    fn record(&mut self, path: &Path, access: Access) {
        if let Some(accesses) = self.accesses.as_mut().filter(|accesses| accesses.len() < ACCESSES_KEPT_MAX) {
            accesses.push((path.to_path_buf(), access));
        }
    }

    /// Brings these bytes' pages into memory, if the page cache is tracked.
    fn load(&mut self, inode: usize, offset: u64, length: u64) {
        if let Some(in_memory) = self.in_memory.as_mut() {
            let pages = offset / PAGE_BYTES..offset.saturating_add(length).div_ceil(PAGE_BYTES);
            in_memory.extend(pages.map(|page| (inode, page)));
        }
    }

    /// Whether the page cache is tracked and holds all of these bytes.
    fn in_memory(&self, inode: usize, offset: u64, length: u64) -> bool {
        let Some(in_memory) = self.in_memory.as_ref() else { return false };
        let mut pages = offset / PAGE_BYTES..offset.saturating_add(length).div_ceil(PAGE_BYTES);
        pages.all(|page| in_memory.contains(&(inode, page)))
    }

    fn note(&mut self, event: String) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The disk's own choices, from its seed: in `0..bound` (0 if `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        use rand::Rng as _;
        if bound == 0 { 0 } else { self.random.0.random_range(0..bound) }
    }

    /// Whether the fault `chance` picks strikes this operation.
    fn strikes(&mut self, chance: fn(&Faults) -> u32) -> bool {
        let bps = chance(&self.faults);
        bps > 0 && self.below(10_000) < u64::from(bps)
    }

    /// Fails once the power is off; counts down a change.
    fn change(&mut self) -> io::Result<()> {
        if self.powered_off {
            return Err(eio("the power is off"));
        }
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                self.powered_off = true;
                self.note("the power went off".to_string());
                return Err(eio("the power went off"));
            }
            *left -= 1;
        }
        Ok(())
    }

    fn live(&self) -> io::Result<()> {
        if self.powered_off { Err(eio("the power is off")) } else { Ok(()) }
    }

    /// A write reads see at once and the disk holds at the next sync.
    fn write(&mut self, inode: usize, offset: u64, bytes: &[u8]) {
        let change = Change::Write { offset, bytes: bytes.to_vec() };
        change.apply(&mut self.inodes[inode].current);
        self.inodes[inode].pending.push(change);
    }

    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Some of the changes, each kept, lost or torn: a write's first bytes
    /// only, or some of its sectors and not others, in any order (the
    /// pages of one write reach the disk in any order before its sync).
    fn survive(&mut self, durable: &mut Vec<u8>, changes: &[Change]) {
        for change in changes {
            match (self.below(4), change) {
                (0, _) => {}
                (1, Change::Write { offset, bytes }) => {
                    let kept = self.below(bytes.len() as u64) as usize;
                    Change::Write { offset: *offset, bytes: bytes[..kept].to_vec() }.apply(durable);
                }
                (2, Change::Write { offset, bytes }) => {
                    for (index, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
                        if self.below(2) == 0 {
                            let at = *offset + (index * SECTOR_BYTES) as u64;
                            Change::Write { offset: at, bytes: sector.to_vec() }.apply(durable);
                        }
                    }
                }
                _ => change.apply(durable),
            }
        }
    }

    fn crash(&mut self) {
        self.note("crash".to_string());
        for index in 0..self.inodes.len() {
            let pending = std::mem::take(&mut self.inodes[index].pending);
            let mut durable = std::mem::take(&mut self.inodes[index].durable);
            self.survive(&mut durable, &pending);
            let inode = &mut self.inodes[index];
            inode.current = durable.clone();
            inode.durable = durable;
        }
        let renames = std::mem::take(&mut self.renames);
        let kept = self.below(renames.len() as u64 + 1) as usize;
        let mut names = std::mem::take(&mut self.durable_names);
        for rename in &renames[..kept] {
            apply_rename(&mut names, rename);
        }
        self.durable_names = names.clone();
        self.names = names;
        self.locked.clear();
        self.powered_off = false;
        self.power_left = None;
    }
}

fn apply_rename(names: &mut BTreeMap<PathBuf, usize>, rename: &Rename) {
    match rename {
        Rename::Link { path, inode } => {
            names.insert(path.clone(), *inode);
        }
        Rename::Move { from, to } => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        Rename::Unlink { path } => {
            names.remove(path);
        }
    }
}

impl SimulatedDisk {
    /// An empty disk whose choices (what a crash keeps, when a fault
    /// strikes) follow from `seed`.
    pub fn new(seed: u64) -> SimulatedDisk {
        use rand::SeedableRng as _;
        let disk = SimulatedDisk::default();
        disk.state().random = Choices(rand_pcg::Pcg64Mcg::seed_from_u64(seed));
        disk
    }

    fn state(&self) -> MutexGuard<'_, SimulatedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// The power goes after `changes` more writes, syncs or renames (the
    /// one it goes at may be half done); every operation fails from then
    /// until [`SimulatedDisk::crash`].
    pub fn cut_power_after(&self, changes: u64) {
        self.state().power_left = Some(changes);
    }

    pub fn powered_off(&self) -> bool {
        self.state().powered_off
    }

    /// The machine stops and starts again: what was not synced is kept,
    /// lost or torn, names not synced keep a prefix of their changes,
    /// locks are let go and the power is back.
    pub fn crash(&self) {
        self.state().crash();
    }

    /// Faults injected so far (failed syncs, full writes, flipped reads).
    pub fn faults_injected(&self) -> u64 {
        self.state().injected
    }

    /// From now on, keeps the reads and read-ahead hints made (up to
    /// 65,536), for a test to see in what order a reader asks.
    pub fn record_accesses(&self) {
        self.state().accesses = Some(Vec::new());
    }

    /// From now on, keeps which pages reads, writes and read-ahead hints
    /// bring into memory (none at first, as after the cache is dropped),
    /// so that `read_if_in_memory` answers as the kernel would.
    pub fn track_page_cache(&self) {
        self.state().in_memory = Some(BTreeSet::new());
    }

    /// The reads and hints recorded since `record_accesses`, in order.
    pub fn accesses(&self) -> Vec<(PathBuf, Access)> {
        self.state().accesses.clone().unwrap_or_default()
    }

    /// The latest faults, power cuts and crashes, oldest first.
    pub fn events(&self) -> Vec<String> {
        self.state().events.iter().cloned().collect()
    }

    /// Flips one bit of a file as the disk holds it (lasting damage, not a
    /// read fault): `None` if there is no such file or it is empty.
    pub fn damage(&self, path: &Path, bit: u64) -> Option<u64> {
        let mut state = self.state();
        let inode = *state.names.get(path)?;
        let length = state.inodes[inode].current.len() as u64 * 8;
        let bit = bit.checked_rem(length)?;
        let node = &mut state.inodes[inode];
        for bytes in [&mut node.current, &mut node.durable] {
            if let Some(byte) = bytes.get_mut((bit / 8) as usize) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Some(bit)
    }

    /// The length of a file as reads see it.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let state = self.state();
        state.names.get(path).map(|&inode| state.inodes[inode].current.len() as u64)
    }
}

struct SimulatedFile {
    disk: SimulatedDisk,
    inode: usize,
    path: PathBuf,
}

impl DiskFile for SimulatedFile {
    fn size(&self) -> io::Result<u64> {
        let state = self.disk.state();
        state.live()?;
        Ok(state.inodes[self.inode].current.len() as u64)
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.disk.state();
        state.live()?;
        let current = &state.inodes[self.inode].current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(current.len());
        let read = buffer.len().min(current.len() - start);
        buffer[..read].copy_from_slice(&current[start..start + read]);
        state.record(&self.path, Access::Read { offset, length: read as u64 });
        state.load(self.inode, offset, read as u64);
        if read > 0 && state.strikes(|faults| faults.read_flips_bps) {
            let bit = state.below(read as u64 * 8);
            buffer[(bit / 8) as usize] ^= 1 << (bit % 8);
            state.injected += 1;
            state.note(format!("read of {} at {offset} flipped bit {bit}", self.path.display()));
        }
        Ok(read)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.disk.state();
        let power_goes_now = state.power_left == Some(0) && !state.powered_off;
        if let Err(error) = state.change() {
            if power_goes_now {
                // The write the power went at: some of it may have reached the page cache.
                let kept = state.below(bytes.len() as u64 + 1) as usize;
                state.write(self.inode, offset, &bytes[..kept]);
            }
            return Err(error);
        }
        if state.strikes(|faults| faults.write_full_bps) {
            let kept = state.below(bytes.len() as u64 + 1) as usize;
            state.write(self.inode, offset, &bytes[..kept]);
            state.injected += 1;
            state.note(format!(
                "write to {} at {offset} found the disk full ({kept} of {} bytes)",
                self.path.display(),
                bytes.len()
            ));
            return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk: no space left on device"));
        }
        state.write(self.inode, offset, bytes);
        state.load(self.inode, offset, bytes.len() as u64);
        Ok(())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let mut state = self.disk.state();
        state.change()?;
        let inode = &mut state.inodes[self.inode];
        Change::SetLen(length).apply(&mut inode.current);
        inode.pending.push(Change::SetLen(length));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.disk.state();
        state.change()?;
        if state.strikes(|faults| faults.sync_fails_bps) {
            // The kernel marks the pages clean whether or not they were
            // written: some are on the disk, the rest are gone for good.
            let pending = std::mem::take(&mut state.inodes[self.inode].pending);
            let mut durable = std::mem::take(&mut state.inodes[self.inode].durable);
            state.survive(&mut durable, &pending);
            state.inodes[self.inode].durable = durable;
            state.injected += 1;
            state.note(format!("sync of {} failed", self.path.display()));
            return Err(eio("fsync failed (input/output error)"));
        }
        // What was written since the last sync reaches the disk: not what
        // reads see, which after a failed sync holds pages that never will.
        let inode = &mut state.inodes[self.inode];
        for change in inode.pending.drain(..) {
            change.apply(&mut inode.durable);
        }
        Ok(())
    }

    fn will_need(&self, offset: u64, length: u64) {
        let mut state = self.disk.state();
        state.record(&self.path, Access::WillNeed { offset, length });
        state.load(self.inode, offset, length);
    }

    fn read_if_in_memory(&self, buffer: &mut [u8], offset: u64) -> bool {
        let mut state = self.disk.state();
        let length = buffer.len() as u64;
        let current = &state.inodes[self.inode].current;
        let Some(bytes) =
            usize::try_from(offset).ok().and_then(|start| current.get(start..start.checked_add(buffer.len())?))
        else {
            return false;
        };
        if state.live().is_err() || !state.in_memory(self.inode, offset, length) {
            return false;
        }
        buffer.copy_from_slice(bytes);
        state.record(&self.path, Access::ReadInMemory { offset, length });
        true
    }
}

impl Disk for SimulatedDisk {
    fn create_directory(&self, directory: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.live()?;
        for ancestor in directory.ancestors() {
            state.directories.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn lock(&self, directory: &Path) -> io::Result<Option<DirectoryLock>> {
        let mut state = self.state();
        state.live()?;
        if !state.locked.insert(directory.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(DirectoryLock(Box::new(SimulatedLock { disk: self.clone(), directory: directory.to_path_buf() }))))
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        let state = self.state();
        state.live()?;
        if !state.directories.contains(directory) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let names = state.names.keys().filter(|path| path.parent() == Some(directory));
        Ok(names.filter_map(|path| path.file_name()).map(|name| name.to_string_lossy().into_owned()).collect())
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = self.state();
        state.live()?;
        let found = state.names.get(path).copied();
        let inode = match (how, found) {
            (Open::CreateNew, Some(_)) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            (Open::Read | Open::Write, None) => return Err(io::Error::from(io::ErrorKind::NotFound)),
            (Open::Truncate, Some(inode)) => {
                state.change()?;
                let node = &mut state.inodes[inode];
                node.current.clear();
                node.pending.push(Change::SetLen(0));
                inode
            }
            (_, Some(inode)) => inode,
            (_, None) => {
                if !path.parent().is_some_and(|parent| state.directories.contains(parent)) {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                state.change()?;
                state.inodes.push(Inode::default());
                let inode = state.inodes.len() - 1;
                state.names.insert(path.to_path_buf(), inode);
                state.renames.push(Rename::Link { path: path.to_path_buf(), inode });
                inode
            }
        };
        Ok(Arc::new(SimulatedFile { disk: self.clone(), inode, path: path.to_path_buf() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.live()?;
        state.inode_of(from)?;
        state.change()?;
        let rename = Rename::Move { from: from.to_path_buf(), to: to.to_path_buf() };
        apply_rename(&mut state.names, &rename);
        state.renames.push(rename);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.live()?;
        state.inode_of(path)?;
        state.change()?;
        let rename = Rename::Unlink { path: path.to_path_buf() };
        apply_rename(&mut state.names, &rename);
        state.renames.push(rename);
        Ok(())
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.change()?;
        // One journal for the whole file system: a directory's sync commits
        // every name change before it too.
        let _ = directory;
        let renames = std::mem::take(&mut state.renames);
        let mut names = std::mem::take(&mut state.durable_names);
        for rename in &renames {
            apply_rename(&mut names, rename);
        }
        state.durable_names = names;
        Ok(())
    }
}

struct SimulatedLock {
    disk: SimulatedDisk,
    directory: PathBuf,
}

impl Drop for SimulatedLock {
    fn drop(&mut self) {
        self.disk.state().locked.remove(&self.directory);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use super::*;

    fn disk_with_file(seed: u64) -> (SimulatedDisk, PathBuf) {
        let disk = SimulatedDisk::new(seed);
        disk.create_directory(Path::new("/data")).unwrap();
        (disk, PathBuf::from("/data/f"))
    }

    #[test]
    fn a_file_just_written_reads_from_memory_without_waiting() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("f");
        let bytes: Vec<u8> = (0..20_000u32).map(|n| (n % 251) as u8).collect();
        let file = FileSystem.open(&path, Open::CreateNew).unwrap();
        file.write_at(&bytes, 0).unwrap();
        let mut read = vec![0u8; 5000];
        assert!(file.read_if_in_memory(&mut read, 9000), "the page cache holds what was just written");
        assert_eq!(read, bytes[9000..14_000]);
        assert!(!file.read_if_in_memory(&mut read, 18_000), "only some of it is there: past the end");
    }

    #[test]
    fn synced_bytes_and_names_survive_a_crash() {
        let (disk, path) = disk_with_file(1);
        let file = disk.open(&path, Open::CreateNew).unwrap();
        file.write_at(b"hello", 0).unwrap();
        file.sync().unwrap();
        disk.sync_directory(Path::new("/data")).unwrap();
        disk.crash();
        assert_eq!(disk.read(&path).unwrap(), b"hello");
    }

    #[test]
    fn unsynced_writes_are_kept_lost_or_torn_and_unsynced_names_may_vanish() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let (disk, path) = disk_with_file(seed);
            let file = disk.open(&path, Open::CreateNew).unwrap();
            disk.sync_directory(Path::new("/data")).unwrap();
            file.write_at(b"abcd", 0).unwrap();
            disk.crash();
            outcomes.insert(disk.read(&path).unwrap());
            let fresh = PathBuf::from("/data/g");
            disk.open(&fresh, Open::CreateNew).unwrap();
            disk.crash();
            outcomes.insert(if disk.read(&fresh).is_ok() { b"g kept".to_vec() } else { b"g lost".to_vec() });
        }
        for expected in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"g kept", b"g lost"] {
            assert!(outcomes.contains(expected), "{:?} never happened", String::from_utf8_lossy(expected));
        }
    }

    #[test]
    fn a_failed_sync_loses_writes_that_a_later_sync_claims() {
        let lost = (0..100).any(|seed| {
            let (disk, path) = disk_with_file(seed);
            let file = disk.open(&path, Open::CreateNew).unwrap();
            disk.sync_directory(Path::new("/data")).unwrap();
            file.write_at(b"abcd", 0).unwrap();
            disk.set_faults(Faults { sync_fails_bps: 10_000, ..Faults::default() });
            assert!(file.sync().is_err());
            disk.set_faults(Faults::default());
            file.sync().unwrap();
            assert_eq!(disk.read(&path).unwrap(), b"abcd", "reads still see the bytes");
            disk.crash();
            disk.read(&path).unwrap() != b"abcd"
        });
        assert!(lost, "a failed sync must be able to lose what a later sync reports durable");
    }

    #[test]
    fn after_the_power_goes_nothing_changes_until_the_crash() {
        let (disk, path) = disk_with_file(3);
        let file = disk.open(&path, Open::CreateNew).unwrap();
        disk.sync_directory(Path::new("/data")).unwrap();
        disk.cut_power_after(1);
        file.write_at(b"ab", 0).unwrap();
        assert!(file.write_at(b"cd", 2).is_err());
        assert!(disk.powered_off() && file.sync().is_err() && disk.list(Path::new("/data")).is_err());
        disk.crash();
        assert!(!disk.powered_off());
        assert!(disk.read(&path).unwrap().len() <= 4);
    }
}
