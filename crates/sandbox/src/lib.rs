//! Runs one process in a container: new mount, PID, UTS, IPC and (unless host networking is
//! asked for) network namespaces, over an overlayfs stack of snapshot directories.
//!
//! This crate owns every privileged operation strata performs: namespaces, mounts, pivot_root,
//! device nodes, dropping to the container user. It is the only crate allowed `unsafe`, and
//! each block says why it is sound.
//!
//! How: the caller (possibly multi-threaded) spawns `/proc/self/exe` under a reserved argv[0],
//! unsharing namespaces just before the exec. That fresh, single-threaded process (the
//! *helper*) finds its job in an environment variable, mounts the root filesystem, pivots into
//! it and starts the command as PID 1 of the new PID namespace, then waits for it, removes the
//! mount-point stubs it had to create, and exits with the command's status. Every binary that
//! uses this crate must call [`maybe_run_helper`] first thing in `main`.
//!
//! It never decides *what* to run or where layers come from: it gets directories and a spec.

mod cgroup;
pub mod chroot;
mod helper;
pub mod isolation;
mod mounts;
mod pty;
mod scope;
mod signals;
mod state;
mod supervise;
pub mod users;

pub use cgroup::Resources;
pub use pty::RawTerminal;
pub use scope::{RootGuard, enter_root, in_forked_process, in_private_mounts, mount_layers};
pub use signals::parse_signal;
pub use state::{Status, kill, status, wait_stopped};
pub use supervise::{Started, run_attached, start_detached};

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

/// argv[0] of the re-executed helper process.
const HELPER_ARGV0: &str = "strata-sandbox-helper";
/// Environment variable carrying the JSON spec to the helper.
const SPEC_ENV: &str = "STRATA_SANDBOX_SPEC";
/// Exit status the helper uses when it fails before the command starts (docker's 125-127
/// convention: 125 for the runtime's own failure, 126 not executable, 127 not found).
pub const EXIT_SETUP_FAILED: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the sandbox: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("serializing the sandbox spec: {0}")]
    Spec(#[from] serde_json::Error),
}

/// Network namespace choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A new network namespace with only loopback, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// The root filesystem: overlayfs of `lowers` (top first) with `upper`/`work` for writes, or
/// read-only when there is no upper directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// An empty directory to mount the root filesystem on (in the store's `tmp/`).
    pub mountpoint: PathBuf,
}

/// A mount inside the container, on top of the root filesystem.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Mount {
    /// A host directory or file at `target`.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
        mode: Option<u32>,
    },
    /// A stack of directories (top first) merged with overlayfs — another stage's or image's
    /// snapshots, or the build context under a throwaway upper directory — with `source`
    /// (a path inside it, resolved inside it) mounted at `target`. With `upper` (an upper and
    /// a work directory) it is writable and the writes land there, to be discarded.
    Layers {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
        source: String,
        target: String,
        readonly: bool,
    },
}

/// Everything the helper needs to start one process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Working directory inside the container; created when missing.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    pub rootfs: RootFs,
    pub mounts: Vec<Mount>,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// A scratch directory where the helper writes `/etc/hosts`, `/etc/resolv.conf` and
    /// `/etc/hostname` for the container (bind-mounted, so they never land in a layer).
    pub scratch: PathBuf,
    /// Run the command on a new pseudo-terminal of the container's own (docker's `-t`); the
    /// helper copies its stdin to it and its output to the helper's stdout.
    #[serde(default)]
    pub tty: bool,
    /// Limits enforced through a cgroup made for the command (none is made without limits).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Where the run's state is kept (see [`status`]): the helper records the command's host
    /// pid there once it runs. Required by [`run_attached`] and [`start_detached`].
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// An inherited fd the helper writes `ok\n` to (and closes) once the command runs; set by
    /// [`start_detached`].
    #[serde(default)]
    pub ready_fd: Option<i32>,
    /// The chroot isolation: `rootfs.mountpoint` already holds the whole root filesystem;
    /// chroot into it, make no namespace and mount nothing (see [`chroot`]).
    #[serde(default)]
    pub chroot: bool,
}

/// If this process is a sandbox helper, does the helper's job and exits; otherwise returns at
/// once. Call it before anything else in `main` (before threads, before argument parsing).
pub fn maybe_run_helper() {
    let is_helper = std::env::args_os()
        .next()
        .is_some_and(|a| a == HELPER_ARGV0);
    if is_helper {
        std::process::exit(helper::main(SPEC_ENV));
    }
    let is_supervisor = std::env::args_os()
        .next()
        .is_some_and(|a| a == supervise::SUPERVISOR_ARGV0);
    if is_supervisor {
        std::process::exit(supervise::supervisor_main());
    }
}

/// Starts the helper for `spec`. The returned child's exit status is the command's (or 128 +
/// signal, or one of the `EXIT_*` codes when setup failed; the helper says why on stderr).
///
/// The helper forwards the signals it receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2,
/// …) to the command, which runs as PID 1 of its PID namespace in a session of its own.
pub fn spawn(
    spec: &ProcessSpec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Child, SandboxError> {
    let json = serde_json::to_string(spec)?;
    let mut flags = if spec.chroot {
        rustix::thread::UnshareFlags::empty()
    } else {
        rustix::thread::UnshareFlags::NEWNS
            | rustix::thread::UnshareFlags::NEWPID
            | rustix::thread::UnshareFlags::NEWUTS
            | rustix::thread::UnshareFlags::NEWIPC
    };
    if spec.network == Network::None && !spec.chroot {
        flags |= rustix::thread::UnshareFlags::NEWNET;
    }
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(HELPER_ARGV0)
        .env_clear()
        .env(SPEC_ENV, json)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It only makes two raw system
    // calls (unshare, prctl) through rustix: no allocation, no locks, nothing that could be
    // held by another thread of the parent at fork time, so it is async-signal-safe.
    // `unshare_unsafe` is unsafe because unsharing file tables or namespaces under running
    // threads can confuse them; this process has exactly one thread and execs right after.
    unsafe {
        command.pre_exec(move || {
            if !flags.is_empty() {
                rustix::thread::unshare_unsafe(flags)?;
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    command.spawn().map_err(SandboxError::Spawn)
}

/// Runs the spec to completion with inherited stdio; returns the exit code.
pub fn run(spec: &ProcessSpec) -> Result<i32, SandboxError> {
    let mut child = spawn(spec, Stdio::inherit(), Stdio::inherit(), Stdio::inherit())?;
    let status = child.wait().map_err(SandboxError::Spawn)?;
    Ok(exit_code(status))
}

/// A shell-style exit code: the code, or 128 + the signal that ended the process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(EXIT_SETUP_FAILED)
}
