//! Resource limits through a cgroup made for one container: cgroup v2 when `/sys/fs/cgroup` is
//! the unified hierarchy, otherwise the v1 `memory`, `cpu` and `pids` hierarchies, under a
//! `strata/` parent as docker's cgroupfs driver does with `docker/`.
//!
//! The helper creates the cgroup and opens its `cgroup.procs` before pivot_root (the host's
//! cgroupfs is unreachable afterwards); the command joins it between fork and exec by writing
//! "0"; the helper removes the directory through a parent fd once the command is gone.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Limits for one container, as docker's `--memory`, `--cpus` and `--pids-limit` set them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// The cgroup's name under `strata/` (the container id).
    pub name: String,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths (docker's NanoCPUs): `--cpus 1.5` is 1_500_000_000.
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.nano_cpus.is_none() && self.pids_limit.is_none()
    }
}

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "strata";
const CFS_PERIOD: u64 = 100_000;

/// A created cgroup (one directory per v1 hierarchy, one for v2).
pub(crate) struct Cgroup {
    /// `cgroup.procs` of each directory, open for writing.
    pub procs: Vec<OwnedFd>,
    /// (parent directory, name) of each directory, to remove it afterwards.
    dirs: Vec<(OwnedFd, String)>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

fn open_procs(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir.join("cgroup.procs"),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn quota(nano_cpus: u64) -> u64 {
    (nano_cpus.saturating_mul(CFS_PERIOD) / 1_000_000_000).max(1000)
}

/// Creates the cgroup for `res` and writes its limits. Limits the machine cannot enforce are
/// reported as warnings (docker prints "Limitation discarded" and runs anyway).
pub(crate) fn create(res: &Resources) -> io::Result<(Cgroup, Vec<String>)> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        create_v2(res)
    } else {
        create_v1(res)
    }
}

fn create_v2(res: &Resources) -> io::Result<(Cgroup, Vec<String>)> {
    let root = PathBuf::from(ROOT);
    let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let mut wanted = Vec::new();
    let mut warnings = Vec::new();
    for (needed, controller, flag) in [
        (res.memory_bytes.is_some(), "memory", "--memory"),
        (res.nano_cpus.is_some(), "cpu", "--cpus"),
        (res.pids_limit.is_some(), "pids", "--pids-limit"),
    ] {
        if !needed {
            continue;
        }
        if available.split_whitespace().any(|c| c == controller) {
            wanted.push(controller);
        } else {
            warnings.push(format!(
                "the cgroup v2 {controller} controller is not available: {flag} discarded"
            ));
        }
    }
    let parent = root.join(PARENT);
    fs::create_dir_all(&parent)?;
    for dir in [&root, &parent] {
        for c in &wanted {
            // Already enabled is fine; a failure shows up below as a missing limit file.
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
    let dir = parent.join(&res.name);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let cgroup = Cgroup {
        procs: vec![open_procs(&dir)?],
        dirs: vec![(open_dir(&parent)?, res.name.clone())],
    };
    if let Some(m) = res.memory_bytes.filter(|_| wanted.contains(&"memory")) {
        write(&dir.join("memory.max"), &m.to_string())?;
        if dir.join("memory.swap.max").exists() {
            write(&dir.join("memory.swap.max"), &m.to_string())?;
        }
    }
    if let Some(n) = res.nano_cpus.filter(|_| wanted.contains(&"cpu")) {
        write(&dir.join("cpu.max"), &format!("{} {CFS_PERIOD}", quota(n)))?;
    }
    if let Some(p) = res.pids_limit.filter(|_| wanted.contains(&"pids")) {
        let v = if p <= 0 {
            "max".to_string()
        } else {
            p.to_string()
        };
        write(&dir.join("pids.max"), &v)?;
    }
    Ok((cgroup, warnings))
}

fn create_v1(res: &Resources) -> io::Result<(Cgroup, Vec<String>)> {
    let mut cgroup = Cgroup {
        procs: Vec::new(),
        dirs: Vec::new(),
    };
    let mut warnings = Vec::new();
    /// (controller, flag, files to write).
    type Setting = (&'static str, &'static str, Vec<(&'static str, String)>);
    let mut settings: Vec<Setting> = Vec::new();
    if let Some(m) = res.memory_bytes {
        settings.push((
            "memory",
            "--memory",
            vec![
                ("memory.limit_in_bytes", m.to_string()),
                (
                    "memory.memsw.limit_in_bytes",
                    m.saturating_mul(2).to_string(),
                ),
            ],
        ));
    }
    if let Some(n) = res.nano_cpus {
        settings.push((
            "cpu",
            "--cpus",
            vec![
                ("cpu.cfs_period_us", CFS_PERIOD.to_string()),
                ("cpu.cfs_quota_us", quota(n).to_string()),
            ],
        ));
    }
    if let Some(p) = res.pids_limit {
        let v = if p <= 0 {
            "max".to_string()
        } else {
            p.to_string()
        };
        settings.push(("pids", "--pids-limit", vec![("pids.max", v)]));
    }
    for (controller, flag, files) in settings {
        let base = Path::new(ROOT).join(controller);
        if !base.join("cgroup.procs").exists() {
            warnings.push(format!(
                "no cgroup {controller} controller is mounted: {flag} discarded"
            ));
            continue;
        }
        let parent = base.join(PARENT);
        fs::create_dir_all(&parent)?;
        let dir = parent.join(&res.name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        cgroup.dirs.push((open_dir(&parent)?, res.name.clone()));
        cgroup.procs.push(open_procs(&dir)?);
        for (file, value) in files {
            let path = dir.join(file);
            // memsw exists only with swap accounting; without it the memory limit alone holds.
            if file == "memory.memsw.limit_in_bytes" && !path.exists() {
                continue;
            }
            write(&path, &value)?;
        }
    }
    Ok((cgroup, warnings))
}

impl Cgroup {
    /// Joins the calling process to the cgroup. Runs between fork and exec: only write(2) on
    /// fds opened before the fork.
    pub fn join_self(procs: &[OwnedFd]) -> io::Result<()> {
        for fd in procs {
            rustix::io::write(fd.as_fd(), b"0")?;
        }
        Ok(())
    }

    /// Removes the cgroup directories once their processes are gone (they may take a moment to
    /// be reaped after PID 1 exits).
    pub fn remove(self) {
        for (parent, name) in &self.dirs {
            for _ in 0..100 {
                match rustix::fs::unlinkat(parent, name.as_str(), AtFlags::REMOVEDIR) {
                    Err(rustix::io::Errno::BUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    _ => break,
                }
            }
        }
    }
}
