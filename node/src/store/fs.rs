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

    /// Starts writing `len` bytes from `offset` to the disk without waiting, so the final
    /// [`sync_all`](Self::sync_all) of a large file finds little left to write: its wait
    /// overlaps the upload instead of following it. A hint only; it promises nothing
    /// about durability, and a file system that cannot take it ignores it.
    fn start_writeback(&mut self, _offset: u64, _len: u64) {}

    /// Whether the file gathers what it is given into whole chunks itself, so that a
    /// buffer in front of it would only copy the bytes once more.
    fn gathers(&self) -> bool {
        false
    }
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
    /// Creates a file for one large sequential write that is not read back soon (an
    /// object of many MiB): where the system allows, its bytes go to the disk past the page
    /// cache, a whole chunk at a time as they come, the rest at [`WriteFile::sync_all`].
    /// Nothing may read the file before that.
    fn create_uncached(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        self.create(path)
    }
    /// Opens a file for reading.
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Opens a large object's file (as a rule written by
    /// [`create_uncached`](Self::create_uncached)) to read about `span` bytes of it: where
    /// the system allows, past the page cache, a whole block at a time into the reader's
    /// own buffer (so it needs no buffer in front of it).
    fn open_uncached(&self, path: &Path, _span: u64) -> io::Result<Box<dyn ReadFile>> {
        metrics::counter!("store_reads_total", "path" => "cached").increment(1);
        Ok(Box::new(io::BufReader::with_capacity(
            4 * DIRECT_ALIGN,
            self.open(path)?,
        )))
    }
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

    fn start_writeback(&mut self, offset: u64, len: u64) {
        start_writeback(&self.0, offset, len);
    }
}

/// Starts the writeback of `len` bytes from `offset` of `file` without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    use std::os::fd::AsRawFd;
    // On Linux, DONTNEED starts the writeback of the range's dirty pages without
    // waiting for it (as `sync_file_range(SYNC_FILE_RANGE_WRITE)` would, which has no
    // safe binding), and drops only pages already clean: the range was just written,
    // so it stays in the page cache. Its price: the pages it cannot drop make the
    // kernel drain every CPU's page lists once (`lru_add_drain_all`), hence one call
    // per 8 MiB, not per write. Failure costs only the overlap.
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = posix_fadvise(
        file.as_raw_fd(),
        offset,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// A file written past the page cache (`O_DIRECT`): bytes are gathered into a
/// block-aligned buffer and written a whole buffer at a time; the tail that does not fill
/// a block is written through the page cache at `sync_all`, with the fsync.
///
/// Why: on a virtual machine every fresh page of page cache can cost the host a fault, so
/// copying a 1 GiB object into the cache took 0.5–1.4 CPU seconds here, against 0.06 for
/// the same bytes written direct (and two of them wait for a replicated PUT's 201). An
/// object read back soon after its write (a GET, a repair push) reads from the disk.
struct DirectFile {
    file: File,
    /// Room for [`DIRECT_CHUNK`] bytes from the first block-aligned byte of `buf`;
    /// allocated at the first piece that is not aligned already (aligned input is written
    /// as it is).
    buf: Vec<u8>,
    /// Where the aligned window starts in `buf`.
    start: usize,
    /// Bytes gathered in the window.
    filled: usize,
    /// Bytes written to the file (where the window goes next).
    offset: u64,
    /// Still writing past the page cache (cleared if the file system refuses a write).
    direct: bool,
}

/// Alignment of a direct write's address, offset and length (a multiple of any logical
/// block size in use). A writer whose buffers start at such an address saves a copy.
pub const DIRECT_ALIGN: usize = 4096;
/// Bytes a direct write moves at once.
const DIRECT_CHUNK: usize = 1 << 20;

/// Whether a file system's error says it will not take a direct write (or open).
fn refuses_direct(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EINVAL) | Some(nix::libc::EOPNOTSUPP)
    )
}

impl DirectFile {
    fn new(file: File) -> DirectFile {
        DirectFile {
            file,
            buf: Vec::new(),
            start: 0,
            filled: 0,
            offset: 0,
            direct: true,
        }
    }

    /// Allocates the window if it is not yet.
    fn window(&mut self) {
        if self.buf.is_empty() {
            (self.buf, self.start) = aligned_window(DIRECT_CHUNK);
        }
    }

    /// Writes the window's first `n` bytes (whole blocks while direct) and keeps the rest.
    fn write_out(&mut self, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let window = self.start..self.start + n;
        // Positioned, so a write retried after a partial one cannot repeat bytes.
        if let Err(e) = self
            .file
            .write_all_at(&self.buf[window.clone()], self.offset)
        {
            // Refused by this file system (an alignment it wants larger than ours): go on
            // through the page cache.
            if !self.direct || !refuses_direct(&e) {
                return Err(e);
            }
            self.refused()?;
            self.file.write_all_at(&self.buf[window], self.offset)?;
        }
        self.offset += n as u64;
        self.buf
            .copy_within(self.start + n..self.start + self.filled, self.start);
        self.filled -= n;
        Ok(())
    }

    /// Turns `O_DIRECT` off for the rest of the file, after the file system refused a
    /// direct write (counted: an operator sees direct I/O is not in effect).
    fn refused(&mut self) -> io::Result<()> {
        metrics::counter!("store_writes_total", "path" => "refused").increment(1);
        self.buffered()
    }

    /// Turns `O_DIRECT` off for the rest of the file.
    fn buffered(&mut self) -> io::Result<()> {
        buffered(&self.file)?;
        self.direct = false;
        Ok(())
    }
}

/// A zeroed buffer with room for `len` bytes from its first block-aligned byte, and where
/// that byte is.
fn aligned_window(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0u8; len + DIRECT_ALIGN];
    let start = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    (buf, start)
}

/// Turns `O_DIRECT` off for the rest of `file`'s use.
fn buffered(file: &File) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
    Ok(())
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let whole = data.len() - data.len() % DIRECT_ALIGN;
        if self.direct
            && self.filled == 0
            && whole > 0
            && data.as_ptr().align_offset(DIRECT_ALIGN) == 0
        {
            // Aligned already (the ingest's batches): straight to the disk, no copy.
            use std::os::unix::fs::FileExt;
            match self.file.write_all_at(&data[..whole], self.offset) {
                Ok(()) => {
                    self.offset += whole as u64;
                    return Ok(whole);
                }
                Err(e) if refuses_direct(&e) => self.refused()?,
                Err(e) => return Err(e),
            }
        }
        self.window();
        let n = data.len().min(DIRECT_CHUNK - self.filled);
        let at = self.start + self.filled;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == DIRECT_CHUNK
            && let Err(e) = self.write_out(DIRECT_CHUNK)
        {
            // Not taken: a caller that tries again must not find these bytes in twice.
            self.filled -= n;
            return Err(e);
        }
        Ok(n)
    }

    /// Does nothing: a direct write takes whole blocks only, so a partial chunk waits for
    /// `sync_all` (see [`Fs::create_uncached`]: nothing reads the file before it).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteFile for DirectFile {
    fn gathers(&self) -> bool {
        true
    }

    /// Once the file system refused direct writes, the file's bytes go through the page
    /// cache like any other's, and their writeback is started as theirs is.
    fn start_writeback(&mut self, offset: u64, len: u64) {
        if !self.direct {
            start_writeback(&self.file, offset, len);
        }
    }

    fn sync_all(&mut self) -> io::Result<()> {
        let whole = self.filled - self.filled % DIRECT_ALIGN;
        if whole > 0 {
            self.write_out(whole)?;
        }
        if self.filled > 0 {
            if self.direct {
                self.buffered()?;
            }
            self.write_out(self.filled)?;
        }
        self.file.sync_all()
    }
}

/// A file read past the page cache (`O_DIRECT`): whole aligned blocks are read into a
/// window of its own and served from there.
///
/// Why: a large object is written past the cache ([`DirectFile`]), so the push of its
/// copies that follows the write finds nothing there, and a read through the cache would
/// fill fresh pages with bytes read once. Here that cost more than the copy it fills them
/// with: a push of a 1 GiB object read through the cache took 2.5–4.2 CPU s at its
/// sender, most of it in the kernel's copy out of pages just filled; 2.0–2.1 this way. A read of a
/// direct block also takes bytes the page cache still holds (the tail, written through
/// it): the kernel keeps direct and cached I/O of one file coherent.
struct DirectReader {
    file: File,
    /// Room for `block` bytes from the first block-aligned byte, allocated at the first
    /// read.
    buf: Vec<u8>,
    /// Where the aligned window starts in `buf`.
    start: usize,
    /// Bytes read at once: a multiple of [`DIRECT_ALIGN`].
    block: usize,
    /// The file offset of the window's first byte, and how many bytes it holds.
    at: u64,
    held: usize,
    /// Where the next read starts.
    pos: u64,
    /// Still reading past the page cache (cleared if the file system refuses a read).
    direct: bool,
}

/// Bytes a direct read fetches at once, at most.
const DIRECT_READ: usize = 1 << 20;

impl DirectReader {
    /// A reader of `file` that will read about `span` bytes: its block is `span` rounded
    /// up to whole aligned blocks, from 16 KiB (a verified read's group) to [`DIRECT_READ`].
    fn new(file: File, span: u64, direct: bool) -> DirectReader {
        let span = usize::try_from(span).unwrap_or(DIRECT_READ);
        let block = span
            .clamp(4 * DIRECT_ALIGN, DIRECT_READ)
            .next_multiple_of(DIRECT_ALIGN);
        DirectReader {
            file,
            buf: Vec::new(),
            start: 0,
            block,
            at: 0,
            held: 0,
            pos: 0,
            direct,
        }
    }

    /// Reads the aligned block that holds `pos` into the window; it holds nothing of it at
    /// the end of the file.
    fn fill(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.buf.is_empty() {
            (self.buf, self.start) = aligned_window(self.block);
        }
        let at = self.pos - self.pos % DIRECT_ALIGN as u64;
        // `pos`'s place in the window: less than one block.
        let need = (self.pos - at) as usize;
        self.held = 0;
        let mut held = 0;
        // A short read that does not reach `pos` yet (not at the end of the file) reads on
        // from where it stopped: through the page cache, if that is unaligned.
        while held <= need {
            let window = self.start + held..self.start + self.block;
            match self.file.read_at(&mut self.buf[window], at + held as u64) {
                Ok(0) => break,
                Ok(n) => held += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused by this file system (an alignment it wants larger than ours):
                // go on through the page cache.
                Err(e) if self.direct && refuses_direct(&e) => {
                    metrics::counter!("store_reads_total", "path" => "refused").increment(1);
                    buffered(&self.file)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.at = at;
        self.held = held;
        Ok(())
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let in_window = |r: &DirectReader| r.pos >= r.at && r.pos < r.at + r.held as u64;
        if out.is_empty() {
            return Ok(0);
        }
        if !in_window(self) {
            self.fill()?;
            if !in_window(self) {
                return Ok(0);
            }
        }
        let from = self.start + (self.pos - self.at) as usize;
        let n = out.len().min(self.start + self.held - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DirectReader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let pos = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(d) => self.file.metadata()?.len().checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the file's start")
        })?;
        Ok(self.pos)
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

    fn create_uncached(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path);
        match direct {
            Ok(file) => Ok(Box::new(DirectFile::new(file))),
            // A file system without direct I/O (tmpfs before Linux 6.6, some FUSE ones)
            // refuses the flag at open.
            Err(e) if refuses_direct(&e) => {
                metrics::counter!("store_writes_total", "path" => "refused").increment(1);
                self.create(path)
            }
            Err(e) => Err(e),
        }
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(path)?))
    }

    fn open_uncached(&self, path: &Path, span: u64) -> io::Result<Box<dyn ReadFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path);
        let (file, direct) = match direct {
            Ok(file) => (file, true),
            Err(e) if refuses_direct(&e) => {
                metrics::counter!("store_reads_total", "path" => "refused").increment(1);
                (File::open(path)?, false)
            }
            Err(e) => return Err(e),
        };
        let read = if direct { "direct" } else { "cached" };
        metrics::counter!("store_reads_total", "path" => read).increment(1);
        Ok(Box::new(DirectReader::new(file, span, direct)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that do not repeat within the sizes tested (the block index is mixed in), so
    /// a block served from the wrong offset shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((i.wrapping_mul(0x9e37_79b9) >> 11) ^ (i >> 19).wrapping_mul(0x5bd1)) as u8)
            .collect()
    }

    /// Writes `data` in pieces of `piece` bytes through `create_uncached` in `dir`, and
    /// reads the file back.
    fn round_trip(dir: &Path, data: &[u8], piece: usize) -> Vec<u8> {
        let path = dir.join(format!("f-{}-{piece}", data.len()));
        let mut f = RealFs
            .create_uncached(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        for p in data.chunks(piece) {
            f.write_all(p).unwrap_or_else(|e| panic!("{e}"));
        }
        f.sync_all().unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        fs::read(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every length around the block and the chunk, in pieces of every shape, comes back
    /// byte for byte and no longer: the direct blocks, the tail through the cache.
    #[test]
    fn an_uncached_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sizes = [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            DIRECT_CHUNK,
            DIRECT_CHUNK + 1,
            3 * DIRECT_CHUNK + 12_345,
        ];
        for size in sizes {
            let data = pattern(size);
            for piece in [1 << 20, 777, 65_539, DIRECT_CHUNK + 5] {
                if size > 70_000 && piece == 777 {
                    continue; // slow, and says nothing the other cuts do not
                }
                let got = round_trip(dir.path(), &data, piece);
                assert!(got == data, "size {size} in pieces of {piece}");
            }
        }
    }

    /// Pieces that start aligned go to the disk as they are, mixed with pieces gathered in
    /// the window (an unaligned start, a length short of a block, a window not empty).
    #[test]
    fn aligned_pieces_go_straight_and_mix_with_gathered_ones() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let len = 3 * DIRECT_CHUNK + 5000;
        let mut room = pattern(len + DIRECT_ALIGN);
        let at = room.as_ptr().align_offset(DIRECT_ALIGN);
        let data = &mut room[at..at + len];
        data.copy_from_slice(&pattern(len));
        let cuts: [&[usize]; 3] = [
            &[DIRECT_CHUNK, DIRECT_CHUNK, DIRECT_CHUNK + 5000],
            &[
                DIRECT_ALIGN,
                100,
                DIRECT_CHUNK,
                2 * DIRECT_CHUNK - DIRECT_ALIGN + 4900,
            ],
            &[5000, DIRECT_CHUNK - 5000, 2 * DIRECT_CHUNK, 5000],
        ];
        for (i, cut) in cuts.iter().enumerate() {
            let path = dir.path().join(format!("cut-{i}"));
            let mut f = RealFs
                .create_uncached(&path)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut at = 0;
            for n in *cut {
                f.write_all(&data[at..at + n])
                    .unwrap_or_else(|e| panic!("{e}"));
                at += n;
            }
            assert_eq!(at, len);
            f.sync_all().unwrap_or_else(|e| panic!("{e}"));
            let got = fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(got == *data, "cut {cut:?}");
        }
    }

    /// Where the file system takes direct I/O, whole chunks go past the cache (the flag
    /// stays on); where it does not (tmpfs), the file is an ordinary one and holds the same.
    #[test]
    fn direct_where_the_file_system_takes_it_and_ordinary_where_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("direct");
        if let Some(mut f) = open_direct(&path) {
            let data = pattern(2 * DIRECT_CHUNK + 100);
            f.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
            assert!(f.direct, "a chunk written direct");
            // Aligned input goes as it is: nothing gathered, the window never allocated.
            let mut room = pattern(DIRECT_CHUNK + DIRECT_ALIGN);
            let at = room.as_ptr().align_offset(DIRECT_ALIGN);
            let aligned = &mut room[at..at + DIRECT_CHUNK];
            let mut g = open_direct(&dir.path().join("aligned"))
                .unwrap_or_else(|| panic!("direct I/O went away"));
            g.write_all(aligned).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (g.filled, g.offset, g.buf.len()),
                (0, DIRECT_CHUNK as u64, 0)
            );
            f.sync_all().unwrap_or_else(|e| panic!("{e}"));
            assert!(fs::read(&path).ok() == Some(data));
        } else {
            println!("{}: no direct I/O here", dir.path().display());
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let dir = tempfile::tempdir_in(shm).unwrap_or_else(|e| panic!("{e}"));
            let data = pattern(DIRECT_CHUNK + 3);
            assert!(round_trip(dir.path(), &data, 4096) == data);
        }
    }

    /// A direct write the file system refuses (here: a window one byte off its alignment)
    /// goes on through the page cache, and the file holds every byte once, in order.
    #[test]
    fn a_refused_direct_write_goes_on_through_the_cache() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("refused");
        let Some(mut f) = open_direct(&path) else {
            println!("{}: no direct I/O here", dir.path().display());
            return;
        };
        f.window();
        f.start += 1;
        let data = pattern(2 * DIRECT_CHUNK + 777);
        for piece in data.chunks(300_001) {
            f.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
        }
        if f.direct {
            // Some file systems (tmpfs since Linux 6.6, btrfs) take a misaligned buffer:
            // nothing to refuse here, but the bytes must still come back.
            println!(
                "{}: a misaligned direct write was taken",
                dir.path().display()
            );
        }
        f.sync_all().unwrap_or_else(|e| panic!("{e}"));
        assert!(fs::read(&path).ok() == Some(data));
    }

    /// Reads `path` through `open_uncached` for `span` bytes: from `at`, in reads of
    /// `piece` bytes, to the end.
    fn read_from(path: &Path, span: u64, at: u64, piece: usize) -> Vec<u8> {
        let mut f = RealFs
            .open_uncached(path, span)
            .unwrap_or_else(|e| panic!("{e}"));
        f.seek(io::SeekFrom::Start(at))
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut out, mut buf) = (Vec::new(), vec![0u8; piece]);
        loop {
            match f.read(&mut buf).unwrap_or_else(|e| panic!("{e}")) {
                0 => return out,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Every length around the block and the window, read from every kind of offset (0,
    /// mid-block, a block's last byte, past the end), in reads of every shape and with
    /// windows of every size, gives back exactly the file's bytes from there: on this
    /// file system (direct where it takes it) and on tmpfs.
    #[test]
    fn an_uncached_read_gives_back_the_file_from_anywhere() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        let dirs = std::iter::once(dir.path()).chain(shm.as_ref().map(|d| d.path()));
        for dir in dirs {
            for size in [
                0,
                1,
                DIRECT_ALIGN + 1,
                DIRECT_READ - 1,
                2 * DIRECT_READ + 777,
            ] {
                let data = pattern(size);
                let path = dir.join(format!("r-{size}"));
                fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
                let offsets = [0, 1, DIRECT_ALIGN - 1, DIRECT_READ + 5, size, size + 9];
                for at in offsets {
                    for (span, piece) in [(0, 7_000), (size as u64, 1 << 20), (70_000, 300_001)] {
                        let got = read_from(&path, span, at as u64, piece);
                        let want = data.get(at..).unwrap_or_default();
                        assert!(
                            got == want,
                            "{}: size {size} from {at}, span {span}, reads of {piece}",
                            dir.display()
                        );
                    }
                }
            }
        }
    }

    /// Reads after seeks of every kind (from the start, back into the window just read,
    /// forward past it, from the end, past the end) give the file's bytes from there.
    #[test]
    fn an_uncached_read_follows_every_seek() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = pattern(3 * DIRECT_READ + 999);
        let path = dir.path().join("seeks");
        fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
        let mut f = RealFs
            .open_uncached(&path, data.len() as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        let len = data.len() as i64;
        let seed = 0x5eed_u64;
        println!("seed {seed}");
        let mut rng = seed;
        let mut next = |n: u64| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) % n
        };
        for _ in 0..300 {
            let to = match next(4) {
                0 => io::SeekFrom::Start(next(len as u64 + 10)),
                1 => io::SeekFrom::Current(next(70_000) as i64 - 60_000),
                2 => io::SeekFrom::End(-(next(len as u64) as i64)),
                _ => io::SeekFrom::Current(0),
            };
            let Ok(pos) = f.seek(to) else {
                continue; // before the start: refused, and the position stays
            };
            let mut buf = vec![0u8; 1 + next(40_000) as usize];
            let n = f.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            let want = data.get(pos as usize..).unwrap_or_default();
            // A read may stop at the window's end, but gives something unless at the end.
            assert!(
                n <= want.len() && (n > 0 || want.is_empty()),
                "{n} at {pos}"
            );
            assert!(
                buf[..n] == want[..n],
                "{n} bytes read at {pos} after {to:?}"
            );
        }
    }

    /// A file system that refuses a direct read (here: a window one byte off its
    /// alignment) gets the same bytes through the page cache, for the rest of the file.
    #[test]
    fn a_refused_direct_read_goes_on_through_the_cache() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("refused");
        let data = pattern(3 * DIRECT_READ + 4321);
        fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(&path)
        else {
            println!("{}: no direct I/O here", dir.path().display());
            return;
        };
        let mut f = DirectReader::new(file, u64::MAX, true);
        (f.buf, f.start) = aligned_window(f.block + 1);
        f.start += 1;
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap_or_else(|e| panic!("{e}"));
        if f.direct {
            println!(
                "{}: a misaligned direct read was taken",
                dir.path().display()
            );
        }
        assert!(got == data);
    }

    /// A `DirectFile` on `path`, if the file system takes `O_DIRECT`.
    fn open_direct(path: &Path) -> Option<DirectFile> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path)
            .ok()
            .map(DirectFile::new)
    }
}
