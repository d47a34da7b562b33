//! The file system the store runs on: the real one, or a simulated one that can crash.
//!
//! The store touches the disk only through [`Fs`], so a test can run it on [`SimFs`]
//! (`simfs.rs`), which models what a crash loses: file contents written since their last
//! fsync, and directory entries (creations, renames, removals) since their directory's
//! last fsync. [`RealFs`] is `std::fs`, one call each.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A file opened for writing.
pub trait WriteFile: Write + Send {
    /// Makes the file's contents durable (fsync).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// A file opened for reading.
pub trait ReadFile: Read + Seek + Send {}

impl<T: Read + Seek + Send> ReadFile for T {}

/// The file operations the store uses.
pub trait Fs: Send + Sync + 'static {
    /// Creates a directory and its parents (the store's root, at open).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates one directory; `AlreadyExists` if it does.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory: path, and whether it is a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, bool)>>;
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Opens a file for reading.
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// A file's length.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

struct RealFile(File);

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteFile for RealFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // The directory entry's own type (no stat per file); a link is followed.
            let dir = match entry.file_type()? {
                t if t.is_symlink() => entry.path().is_dir(),
                t => t.is_dir(),
            };
            out.push((entry.path(), dir));
        }
        Ok(out)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(RealFile(File::create(path)?)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(path)?))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}
