//! A file system in memory that can crash, for testing what the store promises.
//!
//! It keeps two views: the namespace and contents as the running process sees them, and what
//! a crash would leave. A file's contents become durable at its fsync; a directory's entries
//! (files created, renamed or removed in it, subdirectories made) at the directory's fsync.
//! [`SimFs::fail_after`] makes the Nth mutating operation from now, and every one after it,
//! fail as if the machine had stopped there; [`SimFs::reboot`] then throws away what was not
//! durable. To be adversarial about what the kernel happened to flush on its own, a reboot
//! keeps, at random from the seed, a prefix of each file's unsynced writes and, for each
//! directory, either its durable or its last visible entries. The store must come back with
//! every object it acknowledged intact and nothing half-written presented as an object.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::fs::{Fs, ReadFile, WriteFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
struct Contents {
    data: Vec<u8>,
    synced: Vec<u8>,
}

/// Directory → its entries by name.
type Namespace = BTreeMap<PathBuf, BTreeMap<OsString, Kind>>;

fn split(p: &Path) -> Option<(&Path, OsString)> {
    Some((p.parent()?, p.file_name()?.to_os_string()))
}

fn get(ns: &Namespace, p: &Path) -> Option<Kind> {
    let (dir, name) = split(p)?;
    ns.get(dir)?.get(&name).copied()
}

fn insert(ns: &mut Namespace, p: &Path, k: Kind) {
    if let Some((dir, name)) = split(p) {
        ns.entry(dir.to_path_buf()).or_default().insert(name, k);
    }
}

fn remove(ns: &mut Namespace, p: &Path) -> Option<Kind> {
    let (dir, name) = split(p)?;
    ns.get_mut(dir)?.remove(&name)
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<u64, Contents>,
    visible: Namespace,
    durable: Namespace,
    /// Directories that exist before anything runs (and after every crash).
    roots: Vec<PathBuf>,
    next_inode: u64,
    ops: u64,
    fail_at: Option<u64>,
    /// The operation the machine stopped at, until the reboot.
    stopped_at: Option<&'static str>,
    rng: u64,
    /// Every `start_writeback` hint: (offset, length, the file's length then).
    writeback: Vec<(u64, u64, u64)>,
}

impl State {
    fn step(&mut self, op: &'static str) -> io::Result<()> {
        self.ops += 1;
        if self.fail_at.is_some_and(|n| self.ops >= n) {
            self.stopped_at.get_or_insert(op);
            return Err(io::Error::other(
                "simulated crash: the machine stopped here",
            ));
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.fail_at.is_some_and(|n| self.ops >= n) {
            return Err(io::Error::other("simulated crash: the machine stopped"));
        }
        Ok(())
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn is_dir(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| r == p) || get(&self.visible, p) == Some(Kind::Dir)
    }

    fn not_found(p: &Path) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such file", p.display()),
        )
    }

    fn parent_ok(&self, p: &Path) -> io::Result<()> {
        match p.parent() {
            Some(d) if self.is_dir(d) => Ok(()),
            _ => Err(Self::not_found(p)),
        }
    }
}

/// A crashable file system in memory. Cheap to clone; clones share the disk.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    /// An empty disk; `seed` decides what a reboot keeps beyond the durable state.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                rng: seed | 1,
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `n`th mutating operation from now (1 = the next) and all after it fail: the
    /// machine stops there.
    pub fn fail_after(&self, n: u64) {
        let mut st = self.lock();
        st.fail_at = Some(st.ops + n.max(1));
    }

    /// Whether the machine has stopped.
    pub fn crashed(&self) -> bool {
        self.lock().alive().is_err()
    }

    /// The mutating operation the machine stopped at (`write`, `sync_all`, `create`,
    /// `create_dir`, `rename`, `remove_file`, `sync_dir`), until the reboot: which sync
    /// point a crash hit, for the crash loop's figures.
    pub fn stopped_at(&self) -> Option<&'static str> {
        self.lock().stopped_at
    }

    /// The writeback hints files were given, in order: (offset, length, the file's length
    /// when hinted). A hint makes nothing durable here, as on a real disk it promises
    /// nothing.
    pub fn writeback_hints(&self) -> Vec<(u64, u64, u64)> {
        self.lock().writeback.clone()
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Restarts the machine: what was not durable is lost (with what the kernel may have
    /// flushed on its own kept at random), and operations succeed again.
    pub fn reboot(&self) {
        let mut st = self.lock();
        st.fail_at = None;
        st.stopped_at = None;
        // Directories: each keeps its durable entries, or (the kernel flushed it) its
        // visible ones.
        let dirs: BTreeSet<PathBuf> = st
            .visible
            .keys()
            .chain(st.durable.keys())
            .cloned()
            .collect();
        let mut after: Namespace = BTreeMap::new();
        for d in dirs {
            let flushed = st.random() % 4 == 0;
            let source = if flushed { &st.visible } else { &st.durable };
            if let Some(entries) = source.get(&d) {
                after.insert(d, entries.clone());
            }
        }
        // Only what hangs from a root through surviving directories exists.
        let roots = st.roots.clone();
        let reachable = |d: &Path, ns: &Namespace| {
            let mut cur = Some(d);
            while let Some(c) = cur {
                if roots.iter().any(|r| r == c) {
                    return true;
                }
                if get(ns, c) != Some(Kind::Dir) {
                    return false;
                }
                cur = c.parent();
            }
            false
        };
        let unreachable: Vec<PathBuf> = after
            .keys()
            .filter(|d| !reachable(d, &after))
            .cloned()
            .collect();
        for d in unreachable {
            after.remove(&d);
        }
        // Files no name reaches are gone; the rest keep their synced contents, plus perhaps
        // a prefix of what came after.
        let live: BTreeSet<u64> = after
            .values()
            .flat_map(|entries| entries.values())
            .filter_map(|k| match k {
                Kind::File(ino) => Some(*ino),
                Kind::Dir => None,
            })
            .collect();
        st.files.retain(|ino, _| live.contains(ino));
        let inodes: Vec<u64> = st.files.keys().copied().collect();
        for ino in inodes {
            let extra = st.random();
            if let Some(c) = st.files.get_mut(&ino) {
                if c.data.len() > c.synced.len() && extra % 3 == 0 {
                    let keep =
                        c.synced.len() + (extra as usize / 3) % (c.data.len() - c.synced.len() + 1);
                    c.data.truncate(keep);
                    c.synced = c.data.clone();
                } else {
                    c.data = c.synced.clone();
                }
            }
        }
        st.visible = after.clone();
        st.durable = after;
    }

    /// Flips one bit of a file's contents, durably (a bad sector, bit rot).
    pub fn flip(&self, path: &Path, at: u64) -> io::Result<()> {
        let mut st = self.lock();
        let Some(Kind::File(ino)) = get(&st.visible, path) else {
            return Err(State::not_found(path));
        };
        let c = st
            .files
            .get_mut(&ino)
            .ok_or_else(|| State::not_found(path))?;
        let i = (at as usize).min(c.data.len().saturating_sub(1));
        if let Some(b) = c.data.get_mut(i) {
            *b ^= 0x10;
        }
        if let Some(b) = c.synced.get_mut(i) {
            *b ^= 0x10;
        }
        Ok(())
    }

    /// Every file path that exists now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock()
            .visible
            .iter()
            .flat_map(|(d, entries)| {
                entries
                    .iter()
                    .filter(|(_, k)| matches!(k, Kind::File(_)))
                    .map(move |(n, _)| d.join(n))
            })
            .collect()
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.step("write")?;
        let c = st.files.entry(self.ino).or_default();
        c.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteFile for SimFile {
    fn sync_all(&mut self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.step("sync_all")?;
        let c = st.files.entry(self.ino).or_default();
        c.synced = c.data.clone();
        Ok(())
    }

    fn start_writeback(&mut self, offset: u64, len: u64) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = st.files.get(&self.ino).map_or(0, |c| c.data.len() as u64);
        st.writeback.push((offset, len, now));
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        if !st.roots.iter().any(|r| r == path) {
            st.roots.push(path.to_path_buf());
        }
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.step("create_dir")?;
        st.parent_ok(path)?;
        if get(&st.visible, path).is_some() || st.roots.iter().any(|r| r == path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        insert(&mut st.visible, path, Kind::Dir);
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
        let st = self.lock();
        st.alive()?;
        if !st.is_dir(path) {
            return Err(State::not_found(path));
        }
        Ok(st
            .visible
            .get(path)
            .map(|entries| {
                entries
                    .iter()
                    .map(|(n, k)| (path.join(n), *k == Kind::Dir))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut st = self.lock();
        st.step("create")?;
        st.parent_ok(path)?;
        if st.is_dir(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        let ino = st.next_inode;
        st.next_inode += 1;
        st.files.insert(ino, Contents::default());
        insert(&mut st.visible, path, Kind::File(ino));
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let st = self.lock();
        st.alive()?;
        match get(&st.visible, path) {
            Some(Kind::File(ino)) => {
                let data = st
                    .files
                    .get(&ino)
                    .map(|c| c.data.clone())
                    .unwrap_or_default();
                Ok(Box::new(Cursor::new(data)))
            }
            Some(Kind::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )),
            None => Err(State::not_found(path)),
        }
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let st = self.lock();
        st.alive()?;
        match get(&st.visible, path) {
            Some(Kind::File(ino)) => Ok(st.files.get(&ino).map_or(0, |c| c.data.len() as u64)),
            _ => Err(State::not_found(path)),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        get(&st.visible, path).is_some() || st.roots.iter().any(|r| r == path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().is_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.step("rename")?;
        st.parent_ok(to)?;
        let k = remove(&mut st.visible, from).ok_or_else(|| State::not_found(from))?;
        insert(&mut st.visible, to, k);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.step("remove_file")?;
        match get(&st.visible, path) {
            Some(Kind::File(_)) => {
                remove(&mut st.visible, path);
                Ok(())
            }
            _ => Err(State::not_found(path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.step("sync_dir")?;
        if !st.is_dir(path) {
            return Err(State::not_found(path));
        }
        let now = st.visible.get(path).cloned().unwrap_or_default();
        st.durable.insert(path.to_path_buf(), now);
        Ok(())
    }
}
