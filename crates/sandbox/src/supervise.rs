//! Supervision: the process that owns a container's run. It holds the state directory's lock,
//! starts the helper, forwards the signals it receives and records the exit.
//!
//! In the foreground that is the calling process ([`run_attached`]). For a detached container
//! ([`start_detached`]) it is a small supervisor: `/proc/self/exe` re-executed in a session
//! of its own, with its output going to the container's log file, so the container outlives
//! the command that started it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::signals::{FORWARDED, SI_KERNEL, SignalFd};
use crate::{EXIT_SETUP_FAILED, ProcessSpec, SandboxError, exit_code, spawn};

/// argv[0] of the re-executed supervisor of a detached container.
pub(crate) const SUPERVISOR_ARGV0: &str = "strata-sandbox-supervisor";
/// Environment variable carrying the supervisor's job.
pub(crate) const SUPERVISOR_ENV: &str = "STRATA_SANDBOX_SUPERVISE";
/// The fd number the readiness pipe gets in the supervisor and the helper.
const READY_FD: i32 = 3;

#[derive(Serialize, Deserialize)]
struct Job {
    spec: ProcessSpec,
    remove_on_exit: Vec<PathBuf>,
}

fn state_dir(spec: &ProcessSpec) -> Result<&Path, SandboxError> {
    spec.state_dir.as_deref().ok_or_else(|| {
        SandboxError::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "supervision needs a state directory",
        ))
    })
}

/// Runs `spec` to completion in the calling process: holds the state lock, forwards the
/// signals this process receives to the container's PID 1 (Ctrl-C, `kill`), and records the
/// exit code, which it returns.
///
/// Signals the kernel sends to the whole foreground process group (a terminal's Ctrl-C) reach
/// the helper directly, so only those sent to this process with kill(2) are forwarded. The
/// forwarded signals stay blocked in the calling thread afterwards: call it from the main
/// thread of a process that exits soon after.
pub fn run_attached(
    spec: &ProcessSpec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<i32, SandboxError> {
    let dir = state_dir(spec)?;
    let _lock = crate::state::lock(dir).map_err(SandboxError::Spawn)?;
    let signals = SignalFd::block(&FORWARDED).map_err(SandboxError::Spawn)?;
    let mut child = spawn(spec, stdin, stdout, stderr)?;
    let code = wait_forwarding(&mut child, &signals)?;
    crate::state::write_exited(dir, code).map_err(SandboxError::Spawn)?;
    Ok(code)
}

fn wait_forwarding(
    child: &mut std::process::Child,
    signals: &SignalFd,
) -> Result<i32, SandboxError> {
    use rustix::event::{PollFd, PollFlags};
    let io = SandboxError::Spawn;
    let pid = child.id() as i32;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        .transpose()
        .map_err(|e| io(e.into()))?;
    loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            return Ok(exit_code(status));
        }
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::IN)];
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io(e.into())),
        }
        while let Some(sig) = signals.read().map_err(io)? {
            if sig.code != SI_KERNEL {
                let _ = crate::signals::send(pid, sig.signo);
            }
        }
    }
}

/// How a detached start went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// The command runs under its supervisor.
    Running,
    /// The container could not start (or exited at once); the log says why.
    Exited(i32),
}

/// Starts `spec` in the background under a supervisor whose stdout and stderr (and so the
/// container's, without a terminal) go to `log`. Returns once the command runs or has failed
/// to start. When the command ends the supervisor records its exit and removes
/// `remove_on_exit` (docker's `--rm`).
pub fn start_detached(
    spec: &ProcessSpec,
    log: &Path,
    remove_on_exit: &[PathBuf],
) -> Result<Started, SandboxError> {
    let io = SandboxError::Spawn;
    state_dir(spec)?;
    let mut spec = spec.clone();
    spec.ready_fd = Some(READY_FD);
    let job = Job {
        spec,
        remove_on_exit: remove_on_exit.to_vec(),
    };
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let (ready_r, ready_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| io(e.into()))?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(SUPERVISOR_ARGV0)
        .env_clear()
        .env(SUPERVISOR_ENV, serde_json::to_string(&job)?)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(io)?)
        .stderr(log_file);
    let ready_raw = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec, and only makes system calls (setsid,
    // dup2, fcntl) on an fd number captured before the fork: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setsid()?;
            let r = if ready_raw == READY_FD {
                libc::fcntl(READY_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(ready_raw, READY_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut supervisor = command.spawn().map_err(io)?;
    drop(ready_w);
    let mut answer = Vec::new();
    let mut reader = std::fs::File::from(ready_r);
    let mut buf = [0u8; 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if answer == b"ok\n" {
        // The supervisor lives on; it is reparented when this process exits.
        return Ok(Started::Running);
    }
    let status = supervisor.wait().map_err(io)?;
    let code = match crate::state::status(state_dir(&job.spec)?) {
        crate::Status::Exited { exit_code, .. } => exit_code,
        _ => exit_code(status),
    };
    Ok(Started::Exited(code))
}

/// The supervisor process of a detached container.
pub(crate) fn supervisor_main() -> i32 {
    let job: Job = match std::env::var(SUPERVISOR_ENV)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(job) => job,
        Err(e) => {
            eprintln!("strata supervisor: bad job: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let code = match run_attached(&job.spec, Stdio::null(), Stdio::inherit(), Stdio::inherit()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata supervisor: {e}");
            if let Some(dir) = &job.spec.state_dir {
                let _ = crate::state::write_exited(dir, EXIT_SETUP_FAILED);
            }
            EXIT_SETUP_FAILED
        }
    };
    for path in &job.remove_on_exit {
        let _ = std::fs::remove_dir_all(path);
    }
    code
}
