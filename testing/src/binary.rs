//! Finding the `macronode` binary the tests run.
//!
//! Cargo only hands a package's own binaries to its tests (`CARGO_BIN_EXE_*`), and
//! `macronode` belongs to `node`. So the harness looks where Cargo puts it, beside the
//! running test or tool: the profile directory (`target/debug`, `target/release`) that
//! holds `deps/`. Once per process, if that binary is missing or older than any source or
//! manifest of `node`, `wire`, `overlay` or the workspace, it runs `cargo build -p node
//! --bin macronode` for that profile first, so a test never runs a binary older than the
//! source (`cargo test --workspace` has just built it: nothing to do). `MACRONODE_BIN`
//! overrides all of this.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// Environment variable naming a `macronode` binary to use instead of building one.
pub const BIN_ENV: &str = "MACRONODE_BIN";
/// Bound on building the binary (a cold debug build of the node takes a few minutes here).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The `macronode` binary, built for the profile of the running executable if needed.
pub fn macronode() -> Result<PathBuf, HarnessError> {
    BINARY
        .get_or_init(locate)
        .clone()
        .map_err(HarnessError::Binary)
}

/// The Cargo profile directory of the running executable (`.../target/debug`).
pub fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent", exe.display()))?;
    // Tests and benches run from `deps/`; binaries from the profile directory itself.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| format!("{} has no parent", dir.display()))?;
    }
    Ok(dir.to_path_buf())
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{BIN_ENV}={} is not a file", path.display()))
        };
    }
    let dir = profile_dir()?;
    let bin = dir.join(format!("macronode{}", std::env::consts::EXE_SUFFIX));
    let fresh = is_fresh(&bin);
    use_or_rebuild(bin, fresh, || build(&dir))
}

/// `bin` if it is fresh, else `bin` after `rebuild` succeeded. A failed rebuild is an error
/// even when an older binary exists: tests run against a binary older than the source would
/// pass or fail for the wrong code. (`MACRONODE_BIN` names a binary on purpose.)
fn use_or_rebuild(
    bin: PathBuf,
    fresh: bool,
    rebuild: impl FnOnce() -> Result<(), String>,
) -> Result<PathBuf, String> {
    if fresh {
        return Ok(bin);
    }
    rebuild().map_err(|e| {
        format!(
            "{} is missing or older than the source, and rebuilding it failed: {e} \
             (set {BIN_ENV} to test a given binary)",
            bin.display()
        )
    })?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} missing after the build", bin.display()))
    }
}

/// Whether `bin` exists and is newer than every file it is built from. Without the sources
/// (a test binary copied elsewhere) an existing binary counts as fresh.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let Some(root) = workspace_manifest().and_then(|m| m.parent().map(Path::to_path_buf)) else {
        return true;
    };
    let mut newest = None;
    for f in ["Cargo.toml", "Cargo.lock"] {
        newest = newest.max(modified(&root.join(f)));
    }
    for krate in ["node", "wire", "overlay"] {
        newest = newest.max(modified(&root.join(krate).join("Cargo.toml")));
        newest = newest.max(newest_under(&root.join(krate).join("src")));
    }
    newest.is_none_or(|n| n <= built)
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The latest modification time of any file under `dir`.
fn newest_under(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                newest = newest.max(modified(&path));
            }
        }
    }
    newest
}

/// `cargo build -p node --bin macronode` into `profile_dir`'s target directory.
fn build(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(format!("odd profile directory {}", profile_dir.display())),
    };
    let mut cmd = Command::new(cargo);
    // `cargo test` runs tests with the variables of the package under test set
    // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Some build scripts (ring's) track them, so
    // passing them on would rebuild half the dependency tree on every run.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let cargo_set = k.starts_with("CARGO_")
            && !matches!(k.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            && !k.starts_with("CARGO_BUILD_")
            && !k.starts_with("CARGO_REGISTRIES_");
        if cargo_set || k == "LD_LIBRARY_PATH" || k == "OUT_DIR" {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.args(["build", "--quiet", "-p", "node", "--bin", "macronode"])
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(manifest) = workspace_manifest() {
        cmd.arg("--manifest-path").arg(manifest);
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting cargo: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut s, &mut err);
                }
                return Err(format!("cargo build exited with {status}: {err}"));
            }
            Ok(None) if started.elapsed() > BUILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cargo build took longer than {BUILD_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    }
}

/// The workspace's `Cargo.toml`, found from this crate's manifest directory at compile time.
fn workspace_manifest() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.parent()?.join("Cargo.toml");
    root.is_file().then_some(root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_failed_rebuild_is_an_error_even_with_an_old_binary_present() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("macronode");
        std::fs::write(&bin, b"an old build").unwrap();
        let got = use_or_rebuild(bin.clone(), false, || Err("compile error".into()));
        let err = got.expect_err("a stale binary was used after a failed rebuild");
        assert!(
            err.contains("compile error") && err.contains(BIN_ENV),
            "{err}"
        );
        // Fresh: no rebuild is attempted; stale and rebuilt: the binary is used.
        let used = use_or_rebuild(bin.clone(), true, || panic!("rebuilt a fresh binary"));
        assert_eq!(used.unwrap(), bin);
        assert_eq!(use_or_rebuild(bin.clone(), false, || Ok(())).unwrap(), bin);
        std::fs::remove_file(&bin).unwrap();
        let gone = use_or_rebuild(bin, false, || Ok(()));
        assert!(gone.is_err_and(|e| e.contains("missing after the build")));
    }
}
