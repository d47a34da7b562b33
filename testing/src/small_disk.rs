//! A real full disk for one directory: a small tmpfs mounted over it, filled on demand and
//! freed again, and unmounted when the handle drops. Mounting needs root, as the chaos
//! suite's network namespaces do; [`unavailable`] says why not, for a test to print when it
//! skips.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::HarnessError;
use crate::chaos::netns::{effective_uid, run_bounded};

/// Why a small disk cannot be mounted here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    let uid = effective_uid();
    if uid != Some(0) {
        return Some(format!(
            "a small disk needs root to mount a tmpfs (running as uid {uid:?}); run the \
             full-disk tests as root (CI does)"
        ));
    }
    // Root in a container may still be refused a mount: try one.
    let probe = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return Some(format!("a temporary directory: {e}")),
    };
    let at = probe.path().to_string_lossy().into_owned();
    if let Err(e) = run_bounded("mount", &["-t", "tmpfs", "-o", "size=64k", "tmpfs", &at]) {
        return Some(format!("mounting a tmpfs is refused here: {e}"));
    }
    match run_bounded("umount", &[&at]) {
        Ok(_) => None,
        Err(e) => Some(format!("unmounting the probe tmpfs: {e}")),
    }
}

/// A tmpfs of a few MiB mounted over a directory.
#[derive(Debug)]
pub struct SmallDisk {
    at: PathBuf,
}

/// The file that fills the disk.
const FILLER: &str = "filler";

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` over `dir` and copies what `dir` held onto it, so a
    /// stopped node's directory moves onto the small disk as it was.
    pub fn mount_over(dir: &Path, bytes: u64) -> Result<SmallDisk, HarnessError> {
        let aside = dir.with_extension("before-small-disk");
        std::fs::rename(dir, &aside).map_err(HarnessError::io("moving the directory aside"))?;
        std::fs::create_dir(dir).map_err(HarnessError::io("making the mount point"))?;
        let at = dir.to_string_lossy().into_owned();
        run_bounded(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", &at],
        )?;
        let disk = SmallDisk {
            at: dir.to_path_buf(),
        };
        let from = format!("{}/.", aside.to_string_lossy());
        run_bounded("cp", &["-a", &from, &at])?;
        Ok(disk)
    }

    /// Writes a file until the disk refuses a byte more (ENOSPC); returns its size.
    pub fn fill(&self) -> Result<u64, HarnessError> {
        let mut f = std::fs::File::create(self.at.join(FILLER))
            .map_err(HarnessError::io("creating the filler"))?;
        let mut written = 0u64;
        for chunk in [64 * 1024, 1] {
            let block = vec![0xaa; chunk];
            loop {
                match f.write(&block) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => return Err(HarnessError::io("filling the disk")(e)),
                }
            }
        }
        Ok(written)
    }

    /// Removes the filler: the disk has room again.
    pub fn free(&self) -> Result<(), HarnessError> {
        std::fs::remove_file(self.at.join(FILLER)).map_err(HarnessError::io("removing the filler"))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a node still running there (a failed test) must not keep it mounted.
        let at = self.at.to_string_lossy().into_owned();
        if let Err(e) = run_bounded("umount", &["-l", &at]) {
            eprintln!("small disk: unmounting {at}: {e}");
        }
    }
}
