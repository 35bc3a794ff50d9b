//! A container's runtime state on disk, in a directory the caller owns:
//!
//! - `lock`: held exclusively (flock) by the process that supervises the container for as
//!   long as it runs, so "is it running?" never depends on a pid that could be reused, and a
//!   supervisor killed outright releases it;
//! - `pid`: written by the helper once the command runs: its host pid and start time;
//! - `exit`: written by the supervisor when the command is gone: exit code and time.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

const LOCK: &str = "lock";
const PID: &str = "pid";
const EXIT: &str = "exit";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Started {
    pub pid: i32,
    pub started_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exited {
    pub exit_code: i32,
    pub finished_ns: i64,
}

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Never started (or starting right now).
    Created,
    /// The command runs as `pid` (in the host's PID namespace).
    Running { pid: i32, started_ns: i64 },
    /// The command is gone. An exit code of 255 with no time means its supervisor was killed
    /// before it could record one.
    Exited {
        exit_code: i32,
        started_ns: Option<i64>,
        finished_ns: Option<i64>,
    },
}

impl Status {
    pub fn is_running(&self) -> bool {
        matches!(self, Status::Running { .. })
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Writes `name` in the directory `dir` atomically (temp file and rename), relative to a
/// directory fd so it works after pivot_root too.
pub(crate) fn write_at(dir: &impl AsFd, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!(".{name}.tmp");
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rustix::io::write(&fd, rest)?;
        rest = &rest[n..];
    }
    drop(fd);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
    Ok(())
}

pub(crate) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    std::fs::create_dir_all(dir)?;
    Ok(rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub(crate) fn write_started(dir: &impl AsFd, pid: i32) -> io::Result<()> {
    let s = Started {
        pid,
        started_ns: now_ns(),
    };
    write_at(dir, PID, &serde_json::to_vec(&s).map_err(io::Error::other)?)
}

pub(crate) fn write_exited(dir: &Path, exit_code: i32) -> io::Result<()> {
    let e = Exited {
        exit_code,
        finished_ns: now_ns(),
    };
    let fd = open_dir(dir)?;
    write_at(
        &fd,
        EXIT,
        &serde_json::to_vec(&e).map_err(io::Error::other)?,
    )
}

/// The supervision lock: held for the container's whole run.
pub(crate) fn lock(dir: &Path) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK))?;
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the container is already running",
            )
        } else {
            io::Error::from(e)
        }
    })?;
    Ok(file)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn lock_is_held(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK)) else {
        return false;
    };
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared).is_err()
}

/// The state recorded in `dir` (see the module docs).
pub fn status(dir: &Path) -> Status {
    let running = lock_is_held(dir);
    let started: Option<Started> = read_json(&dir.join(PID));
    if running {
        return match started {
            Some(s) => Status::Running {
                pid: s.pid,
                started_ns: s.started_ns,
            },
            // Supervised but the command is not up yet.
            None => Status::Created,
        };
    }
    match (read_json::<Exited>(&dir.join(EXIT)), started) {
        (Some(e), s) => Status::Exited {
            exit_code: e.exit_code,
            started_ns: s.map(|s| s.started_ns),
            finished_ns: Some(e.finished_ns),
        },
        (None, Some(s)) => Status::Exited {
            exit_code: 255,
            started_ns: Some(s.started_ns),
            finished_ns: None,
        },
        (None, None) if dir.join(LOCK).exists() => Status::Exited {
            exit_code: 255,
            started_ns: None,
            finished_ns: None,
        },
        (None, None) => Status::Created,
    }
}

/// Blocks until nobody supervises the container any more, or `timeout` passes. Returns
/// whether it stopped.
pub fn wait_stopped(dir: &Path, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if !lock_is_held(dir) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sends a signal to the container's PID 1, if it runs.
pub fn kill(dir: &Path, signal: i32) -> io::Result<bool> {
    match status(dir) {
        Status::Running { pid, .. } => {
            crate::signals::send(pid, signal)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
