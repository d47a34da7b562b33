//! [`ChildProc`]: a child process the harness started, with its output in files, signals,
//! bounded waits for its exit, and SIGKILL on drop.
//!
//! Dropping a `ChildProc` SIGKILLs the process and then its own children (found through
//! `/proc` before the parent dies, so `macronode devnet`'s nodes go too), and reaps it: a
//! failing test leaves nothing running. If the thread is panicking (a failed assertion), the
//! tail of the process's log is printed first, where `cargo test` shows it with the failure.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::HarnessError;

/// Log lines printed per process when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// Set to print every process's log tail on drop, failing or not.
pub const LOGS_ENV: &str = "MACRONODE_TEST_LOGS";

/// A running (or exited) child process and its log files.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    log: PathBuf,
    stdout: PathBuf,
}

fn append(path: &Path) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(HarnessError::io(format!("opening {}", path.display())))
}

impl ChildProc {
    /// Starts `cmd` as `name`: stderr appends to `<log_dir>/<name>.log`, stdout to
    /// `<log_dir>/<name>.stdout`, stdin is closed.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<ChildProc, HarnessError> {
        let log = log_dir.join(format!("{name}.log"));
        let stdout = log_dir.join(format!("{name}.stdout"));
        let mut log_file = append(&log)?;
        let _ = writeln!(log_file, "=== harness: starting {name}: {cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(append(&stdout)?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .map_err(HarnessError::io(format!("starting {name}: {cmd:?}")))?;
        Ok(ChildProc {
            name: name.to_string(),
            child,
            exit: None,
            log,
            stdout,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .map_err(HarnessError::io(format!("checking on {}", self.name)))?;
        }
        Ok(self.exit)
    }

    /// `Err(Exited)` if the process is no longer running.
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        match self.try_exit()? {
            None => Ok(()),
            Some(status) => Err(HarnessError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
            }),
        }
    }

    /// Sends `sig` to the process (only to it, not to its children).
    pub fn signal(&mut self, sig: Signal) -> Result<(), HarnessError> {
        if self.try_exit()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid() as i32);
        signal::kill(pid, sig).map_err(|source| HarnessError::Signal {
            name: self.name.clone(),
            source,
        })
    }

    /// Asks for a graceful shutdown.
    pub fn sigterm(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGTERM)
    }

    /// Kills the process (not its children) and reaps it.
    pub fn sigkill(&mut self) -> Result<ExitStatus, HarnessError> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        crate::wait::poll_until_ok(
            &format!("{} to exit", self.name),
            timeout,
            Duration::from_millis(10),
            || self.try_exit(),
        )
    }

    /// The process's children, read from `/proc` (empty where there is no `/proc`).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid() as i32)
    }

    /// Prints the last lines of the log to stderr, under a header naming the process and
    /// whether (and how) it ended: a crash and an outside kill read differently.
    pub fn print_log_tail(&mut self) {
        let state = match self.try_exit() {
            Ok(None) => "running".to_string(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("state unknown: {e}"),
        };
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {} (pid {}, {state}), last {} lines of {} -----",
            self.name,
            self.pid(),
            lines.len() - from,
            self.log.display()
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(LOGS_ENV).is_some() {
            self.print_log_tail();
        }
        if matches!(self.try_exit(), Ok(Some(_))) {
            return;
        }
        // Children first in the list, read while the parent still owns them.
        let children = self.children();
        let _ = signal::kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        for c in children {
            let _ = signal::kill(Pid::from_raw(c), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Pids whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if parent_of(&e.path()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Pids of processes adopted by init (parent 1, their starter gone) whose command line
/// contains `marker`: what a harness killed without running its destructors left behind.
pub fn orphans_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        if parent_of(&e.path()) == Some(1) {
            out.push(pid);
        }
    }
    out
}

/// The parent pid of the process whose `/proc` directory is `proc_dir`.
fn parent_of(proc_dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<i32>().ok())
}
