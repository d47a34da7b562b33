//! The store's index on disk, so a start does not walk every file.
//!
//! A snapshot is every (id, size) the store held when it was written, checksummed and
//! written atomically (temp file, fsync, rename, directory fsync) on a clean shutdown, after
//! a walk, and now and then while the index changes. It is a hint, never the truth: a start
//! loads it in one read and serves at once, while a walk of the files in the background
//! (`Store::reconcile`) adds what was written after it and drops what was removed; until
//! that walk ends, an id the snapshot lacks is looked up on disk, so no object is reported
//! missing because a snapshot was old.
//!
//! Format: `MNIX0001`, the entry count (u64 LE), the entries (32-byte id, u64 LE size) in
//! id order, and the BLAKE3 hash of everything before it. Anything else is ignored (and the
//! walk rebuilds the index).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use super::Hash;
use super::fs::Fs;

const MAGIC: &[u8; 8] = b"MNIX0001";
const ENTRY: usize = 40;

/// The snapshot at `path`, if there is a valid one.
pub(crate) fn load(fs: &dyn Fs, path: &Path) -> Option<BTreeMap<Hash, u64>> {
    let mut bytes = Vec::new();
    fs.open(path).ok()?.read_to_end(&mut bytes).ok()?;
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum || body.get(..8)? != MAGIC {
        tracing::warn!(file = %path.display(), "index snapshot is damaged; walking the store");
        return None;
    }
    let count = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?) as usize;
    let entries = body.get(16..)?;
    if entries.len() != count.checked_mul(ENTRY)? {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for e in entries.chunks_exact(ENTRY) {
        let mut h = [0u8; 32];
        h.copy_from_slice(&e[..32]);
        pairs.push((h, u64::from_le_bytes(e[32..].try_into().ok()?)));
    }
    // Built in bulk from entries already in id order (a sort that finds them sorted, then
    // one pass), not by a million inserts: a third of a second at 10^6 objects, before the
    // node could answer anything.
    Some(BTreeMap::from_iter(pairs))
}

/// Writes `index` as the snapshot at `path`, atomically. Blocking.
pub(crate) fn write(fs: &dyn Fs, path: &Path, index: &BTreeMap<Hash, u64>) -> io::Result<()> {
    let mut body = Vec::with_capacity(16 + index.len() * ENTRY + 32);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for (h, size) in index {
        body.extend_from_slice(h);
        body.extend_from_slice(&size.to_le_bytes());
    }
    let sum = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&sum);
    // A leftover of a crash here is swept at open like every `.tmp` file.
    let tmp = path.with_file_name(".tmp-index.snap");
    let written = fs.create(&tmp).and_then(|mut f| {
        f.write_all(&body)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs.rename(&tmp, path)) {
        // On a full disk a half-written snapshot would hold the space others need.
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    match path.parent() {
        Some(dir) => fs.sync_dir(dir),
        None => Ok(()),
    }
}
