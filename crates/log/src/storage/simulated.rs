//! [`SimulatedDisk`]: a [`Storage`] for tests that runs on a real directory (so that reads,
//! `read_dir` and `sendfile` work unchanged) and keeps, beside it, what would survive a
//! power loss: each file's content as of its last sync, each directory's entries as of its
//! last sync. Its faults, all on command and seeded:
//! - **power loss** ([`SimulatedDisk::power_off`], or at a chosen call with
//!   [`SimulatedDisk::power_off_at`]): every later call fails with EIO; then
//!   [`SimulatedDisk::restart`] rebuilds the directory as the disk would hold it: only
//!   entries of synced directories (a file created, renamed or removed since its
//!   directory's last sync is back as it was), each file with its synced content, except
//!   that of the 512-byte sectors written since, some made it and some did not, an
//!   unsynced truncation stuck or not, an unsynced extension is cut at a random sector
//!   boundary (torn writes), and an extension that survives sometimes reads as zeros (the
//!   size reached the disk, the data did not);
//! - **a failing call** ([`SimulatedDisk::fail_call`]): that call fails with EIO or ENOSPC;
//!   a failing write first writes a part of its bytes, as a full disk does;
//! - **bit flips** ([`SimulatedDisk::flip_bits`]) in a chosen byte range of a file, synced
//!   or not.
//!
//! The model is POSIX's, stricter than ext4's ordered mode: data not fdatasynced and
//! directory entries not fsynced are never assumed to survive. Calls are serialised (one
//! lock, held across each call's I/O): the tests that use it run their workload on one
//! thread, so that a seed replays the same calls.
//!
//! Identity: files and directories are known by their inode (with its birth time, so that a
//! reused inode number is a new file); a removal or a rename over a file goes through this
//! storage, which forgets the inode there. A file's durable content is taken when it is
//! synced, by reading it back through `/proc/self/fd` (Linux).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Storage;

/// Sectors: the unit a torn write keeps or loses.
const SECTOR: usize = 512;

/// The error a failing call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedFault {
    /// EIO: the device failed the operation.
    Io,
    /// ENOSPC: the disk is full.
    NoSpace,
}

impl SimulatedFault {
    fn error(self) -> io::Error {
        match self {
            SimulatedFault::Io => io::Error::from_raw_os_error(5),
            SimulatedFault::NoSpace => io::Error::from_raw_os_error(28),
        }
    }
}

/// What the disk did, for a test's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulatedDiskStats {
    /// Calls through the [`Storage`] interface.
    pub calls: u64,
    pub syncs: u64,
    pub faults: u64,
    pub power_losses: u64,
    /// Unsynced bytes that survived a power loss (torn writes).
    pub torn_bytes_kept: u64,
    /// Unsynced bytes lost to a power loss.
    pub bytes_lost: u64,
    pub bits_flipped: u64,
}

/// A file or a directory as the disk knows it across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir(u64),
}

/// An inode, and its birth time: inode numbers are reused after a removal.
type InodeKey = (u64, i64);

#[derive(Debug, Clone, Copy)]
enum Armed {
    Fail(SimulatedFault),
    PowerOff,
}

#[derive(Debug)]
struct State {
    rng: u64,
    next_id: u64,
    /// Live inodes → the file or directory they are.
    live: HashMap<InodeKey, Node>,
    /// A file's content as of its last sync (absent: never synced, empty after a crash).
    durable_data: HashMap<u64, Vec<u8>>,
    /// A directory's entries as of its last sync (absent: never synced, empty).
    durable_entries: HashMap<u64, BTreeMap<OsString, Node>>,
    root: u64,
    powered: bool,
    armed: BTreeMap<u64, Armed>,
    stats: SimulatedDiskStats,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SimulatedDisk {
    root: PathBuf,
    state: Mutex<State>,
}

/// Whether a call may go on.
enum Gate<'a> {
    Go(MutexGuard<'a, State>),
    /// An injected fault: the state, for a write's partial effect.
    Fault(MutexGuard<'a, State>, SimulatedFault),
    Off,
}

fn powerless() -> io::Error {
    io::Error::other("the simulated disk has lost power")
}

fn inode_key(meta: &std::fs::Metadata) -> InodeKey {
    (meta.ino(), birth_nanos(meta))
}

fn birth_nanos(meta: &std::fs::Metadata) -> i64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

impl State {
    fn random(&mut self) -> u64 {
        // SplitMix64: deterministic per seed.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.random() % n }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The node a live inode is, known from now on if it was not.
    fn node(&mut self, meta: &std::fs::Metadata) -> Node {
        let key = inode_key(meta);
        if let Some(node) = self.live.get(&key) {
            return *node;
        }
        let id = self.new_id();
        let node = if meta.is_dir() {
            Node::Dir(id)
        } else {
            Node::File(id)
        };
        self.live.insert(key, node);
        node
    }

    /// The live inode at `path`, if any.
    fn key_at(path: &Path) -> Option<InodeKey> {
        std::fs::symlink_metadata(path).ok().map(|m| inode_key(&m))
    }

    fn forget_tree(&mut self, path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            for entry in entries.flatten() {
                self.forget_tree(&entry.path());
            }
        }
        self.live.remove(&inode_key(&meta));
    }

    fn capture_file(&mut self, file: &File) -> io::Result<()> {
        let meta = file.metadata()?;
        if meta.nlink() == 0 {
            return Ok(()); // removed: nothing of it can come back but what was synced
        }
        let Node::File(id) = self.node(&meta) else {
            return Ok(());
        };
        // The handle may be write-only: read the same inode through procfs.
        let content = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        self.durable_data.insert(id, content);
        self.stats.syncs += 1;
        Ok(())
    }

    fn capture_dir(&mut self, dir: &Path) -> io::Result<Node> {
        let meta = std::fs::metadata(dir)?;
        let node = self.node(&meta);
        let Node::Dir(id) = node else {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        };
        let mut entries = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            entries.insert(entry.file_name(), self.node(&meta));
        }
        self.durable_entries.insert(id, entries);
        self.stats.syncs += 1;
        Ok(node)
    }

    /// Syncs everything under `dir`: its entries, its files' data, its directories.
    fn capture_tree(&mut self, dir: &Path) -> io::Result<()> {
        self.capture_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                self.capture_tree(&path)?;
            } else {
                self.capture_file(&File::open(&path)?)?;
            }
        }
        Ok(())
    }

    /// The current content of every live file under `dir`, by file id.
    fn current_files(&mut self, dir: &Path, out: &mut HashMap<u64, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                self.current_files(&path, out);
            } else if let Some(Node::File(id)) = self.live.get(&inode_key(&meta)).copied()
                && let Ok(content) = std::fs::read(&path)
            {
                out.insert(id, content);
            }
        }
    }

    /// What a file holds after a power loss: of the sectors written since its last sync,
    /// each kept or not; an unsynced truncation stuck or not; an unsynced extension cut at
    /// any sector boundary, and when kept, sometimes read as zeros (the size reached the
    /// disk, the data did not).
    fn survivor(&mut self, durable: &[u8], current: Option<&Vec<u8>>) -> Vec<u8> {
        let Some(current) = current else {
            return durable.to_vec();
        };
        // A truncation is one change of size: it stuck or it did not. An extension may be
        // cut at any sector boundary past the synced end.
        let cuts = if current.len() < durable.len() {
            vec![current.len(), durable.len()]
        } else {
            let mut cuts = vec![durable.len()];
            let mut boundary = (durable.len() / SECTOR + 1) * SECTOR;
            while boundary < current.len() {
                cuts.push(boundary);
                boundary += SECTOR;
            }
            if current.len() > durable.len() {
                cuts.push(current.len());
            }
            cuts
        };
        let len = cuts[self.below(cuts.len() as u64) as usize];
        // Pieces: sectors, split where the synced content ends (a sector it ends in holds
        // synced bytes before that point, which no loss may touch).
        let mut bounds: Vec<usize> = (1..=len / SECTOR).map(|k| k * SECTOR).collect();
        bounds.extend([durable.len(), len]);
        bounds.retain(|b| *b <= len);
        bounds.sort_unstable();
        bounds.dedup();
        let mut kept = Vec::with_capacity(len);
        let mut start = 0;
        for end in bounds {
            if end <= start {
                continue;
            }
            match (durable.get(start..end), current.get(start..end)) {
                (Some(old), Some(new)) if old != new => {
                    if self.below(2) == 0 {
                        kept.extend_from_slice(new);
                        self.stats.torn_bytes_kept += new.len() as u64;
                    } else {
                        kept.extend_from_slice(old);
                        self.stats.bytes_lost += new.len() as u64;
                    }
                }
                (Some(old), _) => kept.extend_from_slice(old),
                (None, Some(new)) => {
                    if self.below(4) == 0 {
                        // The size reached the disk before the data.
                        kept.resize(kept.len() + new.len(), 0);
                        self.stats.bytes_lost += new.len() as u64;
                    } else {
                        kept.extend_from_slice(new);
                        self.stats.torn_bytes_kept += new.len() as u64;
                    }
                }
                // Beyond both: cannot happen (len is at most the longer).
                (None, None) => break,
            }
            start = end;
        }
        debug_assert_eq!(kept.len(), len);
        if current.len() > len {
            self.stats.bytes_lost += (current.len() - len) as u64;
        }
        kept
    }

    fn materialize(
        &mut self,
        dir: &Path,
        id: u64,
        current: &HashMap<u64, Vec<u8>>,
    ) -> io::Result<()> {
        let entries = self.durable_entries.get(&id).cloned().unwrap_or_default();
        for (name, node) in entries {
            let path = dir.join(&name);
            match node {
                Node::Dir(child) => {
                    std::fs::create_dir(&path)?;
                    self.materialize(&path, child, current)?;
                }
                Node::File(file) => {
                    let durable = self.durable_data.get(&file).cloned().unwrap_or_default();
                    let content = self.survivor(&durable, current.get(&file));
                    std::fs::write(&path, content)?;
                }
            }
        }
        Ok(())
    }
}

impl SimulatedDisk {
    /// A simulated disk over the existing directory `root`, whose present content is taken
    /// as durable. `seed` decides every torn write and flipped bit.
    pub fn new(root: &Path, seed: u64) -> io::Result<Arc<SimulatedDisk>> {
        let mut state = State {
            rng: seed,
            next_id: 0,
            live: HashMap::new(),
            durable_data: HashMap::new(),
            durable_entries: HashMap::new(),
            root: 0,
            powered: true,
            armed: BTreeMap::new(),
            stats: SimulatedDiskStats::default(),
        };
        if std::fs::metadata(root)?.created().is_err() {
            // Without birth times a reused inode number would pass for the file it replaced.
            return Err(io::Error::other(
                "the simulated disk needs a filesystem that records birth times (statx btime)",
            ));
        }
        state.capture_tree(root)?;
        let Node::Dir(root_id) = state.node(&std::fs::metadata(root)?) else {
            return Err(io::Error::other(
                "the simulated disk's root is not a directory",
            ));
        };
        state.root = root_id;
        state.stats = SimulatedDiskStats::default();
        Ok(Arc::new(SimulatedDisk {
            root: root.to_path_buf(),
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self) -> Gate<'_> {
        let mut state = self.lock();
        let call = state.stats.calls;
        state.stats.calls += 1;
        if !state.powered {
            return Gate::Off;
        }
        match state.armed.remove(&call) {
            None => Gate::Go(state),
            Some(Armed::Fail(fault)) => {
                state.stats.faults += 1;
                Gate::Fault(state, fault)
            }
            Some(Armed::PowerOff) => {
                state.powered = false;
                state.stats.power_losses += 1;
                Gate::Off
            }
        }
    }

    /// Calls made so far through the interface; the next call has this number.
    pub fn calls(&self) -> u64 {
        self.lock().stats.calls
    }

    pub fn stats(&self) -> SimulatedDiskStats {
        self.lock().stats
    }

    /// Call number `call` fails with `fault` (a write first writes part of its bytes).
    pub fn fail_call(&self, call: u64, fault: SimulatedFault) {
        self.lock().armed.insert(call, Armed::Fail(fault));
    }

    /// The power goes at call number `call`: it and every later call fail with EIO.
    pub fn power_off_at(&self, call: u64) {
        self.lock().armed.insert(call, Armed::PowerOff);
    }

    /// The power goes now.
    pub fn power_off(&self) {
        let mut state = self.lock();
        if state.powered {
            state.powered = false;
            state.stats.power_losses += 1;
        }
    }

    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    /// The power comes back: the directory becomes what the disk held (see the module
    /// documentation), and all of it counts as synced. Handles opened before refer to files
    /// that are gone: whoever held them must have stopped (the process "died" with the
    /// power).
    pub fn restart(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.powered = true;
        state.armed.clear();
        let mut current = HashMap::new();
        state.current_files(&self.root, &mut current);
        for entry in std::fs::read_dir(&self.root)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        let root = state.root;
        state.materialize(&self.root, root, &current)?;
        state.live.clear();
        state.durable_data.clear();
        state.durable_entries.clear();
        let stats = state.stats;
        state.capture_tree(&self.root)?;
        let Node::Dir(root) = state.node(&std::fs::metadata(&self.root)?) else {
            return Err(io::Error::other("the root is not a directory"));
        };
        state.root = root;
        state.stats = stats;
        Ok(())
    }

    /// Flips `bits` random bits within `range` of the file at `path`, in what it holds now
    /// and in its synced content alike (the medium went bad there).
    pub fn flip_bits(&self, path: &Path, range: std::ops::Range<u64>, bits: u32) -> io::Result<()> {
        let mut state = self.lock();
        let meta = std::fs::metadata(path)?;
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let durable = match state.node(&meta) {
            Node::File(id) => Some(id),
            Node::Dir(_) => None,
        };
        let end = range.end.min(meta.len());
        if range.start >= end {
            return Ok(());
        }
        for _ in 0..bits {
            let at = range.start + state.below(end - range.start);
            let mask = 1u8 << state.below(8);
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at)?;
            byte[0] ^= mask;
            file.write_all_at(&byte, at)?;
            if let Some(synced) = durable.and_then(|id| state.durable_data.get_mut(&id))
                && let Some(b) = synced.get_mut(at as usize)
            {
                *b ^= mask;
            }
            state.stats.bits_flipped += 1;
        }
        Ok(())
    }
}

impl Storage for SimulatedDisk {
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        match self.enter() {
            Gate::Go(_) => options.open(path),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn write_at(&self, file: &File, bytes: &[u8], position: u64) -> io::Result<()> {
        match self.enter() {
            Gate::Go(_) => file.write_all_at(bytes, position),
            Gate::Fault(mut state, fault) => {
                // A short write first, of any length below the whole.
                let partial = state.below(bytes.len() as u64) as usize;
                file.write_all_at(&bytes[..partial], position)?;
                Err(fault.error())
            }
            Gate::Off => Err(powerless()),
        }
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        match self.enter() {
            Gate::Go(_) => file.set_len(len),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => state.capture_file(file),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.sync_data(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => state.capture_dir(dir).map(|_| ()),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn sync_filesystem(&self, _dir: &File) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => state.capture_tree(&self.root),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => {
                // The file replaced at `to` (if the rename happens, and is another file)
                // is no longer live.
                let (moved, replaced) = (State::key_at(from), State::key_at(to));
                std::fs::rename(from, to)?;
                if let Some(replaced) = replaced.filter(|r| Some(*r) != moved) {
                    state.live.remove(&replaced);
                }
                Ok(())
            }
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => {
                let removed = State::key_at(path);
                std::fs::remove_file(path)?;
                if let Some(removed) = removed {
                    state.live.remove(&removed);
                }
                Ok(())
            }
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self.enter() {
            Gate::Go(mut state) => {
                state.forget_tree(path);
                std::fs::remove_dir_all(path)
            }
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self.enter() {
            Gate::Go(_) => std::fs::create_dir_all(path),
            Gate::Fault(_, fault) => Err(fault.error()),
            Gate::Off => Err(powerless()),
        }
    }
}
