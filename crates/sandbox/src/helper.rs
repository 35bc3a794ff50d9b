//! The helper process: runs single-threaded in fresh namespaces, sets up the container's
//! filesystem, starts the command as PID 1 of the new PID namespace and cleans up after it.

use std::ffi::CStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::fd::OwnedFd;
use std::process::Stdio;

use crate::mounts::{self, Attach, Stubs};
use crate::pty;
use crate::signals::{FORWARDED, SignalFd};
use crate::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, ProcessSpec, exit_code};

/// What the helper blocks and reads from its signalfd: the forwarded signals, its child's
/// exit and terminal resizes.
const HELPER_SIGNALS: [i32; FORWARDED.len() + 2] = {
    let mut all = [libc::SIGCHLD; FORWARDED.len() + 2];
    let mut i = 0;
    while i < FORWARDED.len() {
        all[i] = FORWARDED[i];
        i += 1;
    }
    all[FORWARDED.len() + 1] = libc::SIGWINCH;
    all
};

/// A setup failure, with the step that failed.
struct Failure {
    step: String,
    error: io::Error,
    code: i32,
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            step: what(),
            error,
            code: EXIT_SETUP_FAILED,
        })
    }
}

pub(crate) fn main(spec_env: &str) -> i32 {
    // First of all, so a signal that arrives during setup is forwarded once the command runs
    // instead of killing the helper.
    let signals = match SignalFd::block(&HELPER_SIGNALS) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata sandbox: blocking signals: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let spec: ProcessSpec = match std::env::var(spec_env)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("strata sandbox: bad spec: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    if let Some(fd) = spec.ready_fd {
        // The command must not inherit the readiness pipe.
        #[allow(unsafe_code)]
        // SAFETY: fcntl(F_SETFD) on an fd number only changes its close-on-exec flag; an fd
        // that is not open makes it fail harmlessly with EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    match run(&spec, &signals) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("strata sandbox: {}: {}", f.step, f.error);
            f.code
        }
    }
}

fn run(spec: &ProcessSpec, signals: &SignalFd) -> Result<i32, Failure> {
    if spec.chroot {
        return run_chrooted(spec, signals);
    }
    mounts::make_private().step(|| "making mounts private".into())?;
    // Host-side handles, opened before pivot_root makes the host unreachable.
    let state_dir = match &spec.state_dir {
        Some(dir) => {
            Some(crate::state::open_dir(dir).step(|| format!("opening {}", dir.display()))?)
        }
        None => None,
    };
    let cgroup = match spec.resources.as_ref().filter(|r| !r.is_empty()) {
        Some(res) => {
            let (cgroup, warnings) =
                crate::cgroup::create(res).step(|| "creating the cgroup".into())?;
            for w in warnings {
                eprintln!("WARNING: {w}");
            }
            Some(cgroup)
        }
        None => None,
    };
    mounts::mount_rootfs(&spec.rootfs, &spec.scratch)
        .step(|| "mounting the root filesystem".into())?;
    let etc = write_etc_files(spec).step(|| "writing /etc/hosts, /etc/resolv.conf".into())?;
    // Host paths must be opened before pivot_root makes them unreachable.
    let mut attach: Vec<Attach> = Vec::new();
    for (source, target) in &etc {
        attach.push(
            Attach::bind(source, target, false).step(|| format!("opening {}", source.display()))?,
        );
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        match m {
            crate::Mount::Bind {
                source,
                target,
                readonly,
            } => attach.push(
                Attach::bind(source, target, *readonly)
                    .step(|| format!("opening bind source {}", source.display()))?,
            ),
            crate::Mount::Layers {
                lowers,
                upper,
                source,
                target,
                readonly,
            } => attach.push(
                Attach::layers(
                    lowers,
                    upper.as_ref(),
                    source,
                    target,
                    *readonly,
                    &spec.scratch,
                    i,
                )
                .step(|| format!("mounting the source of {target}"))?,
            ),
            crate::Mount::Tmpfs { .. } => {}
        }
    }
    let in_userns = crate::isolation::in_user_namespace();
    let host_devices = if in_userns {
        Some(mounts::open_host_devices().step(|| "opening the host's device nodes".into())?)
    } else {
        None
    };
    let old_root =
        mounts::pivot_into(&spec.rootfs.mountpoint, in_userns).step(|| "pivot_root".into())?;

    // From here on "/" is the container's root: every path resolves inside it.
    let mut stubs = Stubs::default();
    let keep_old_root = old_root.is_some();
    if let Some(old) = old_root {
        stubs.created_dir(old);
    }
    mounts::setup_dev(&mut stubs, host_devices).step(|| "setting up /dev".into())?;
    mounts::setup_sys(&mut stubs, in_userns).step(|| "mounting /sys".into())?;
    stubs
        .ensure_dir(Path::new("/proc"))
        .step(|| "creating /proc".into())?;
    for a in attach {
        let target = a.target.clone();
        a.attach(&mut stubs).step(|| format!("mounting {target}"))?;
    }
    for m in &spec.mounts {
        if let crate::Mount::Tmpfs {
            target,
            size_bytes,
            mode,
        } = m
        {
            mounts::tmpfs(&mut stubs, target, *size_bytes, *mode)
                .step(|| format!("mounting tmpfs at {target}"))?;
        }
    }
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    stubs
        .ensure_workdir(Path::new(cwd))
        .step(|| format!("creating working directory {cwd}"))?;
    if spec.readonly_rootfs {
        mounts::remount_root_readonly().step(|| "making the root filesystem read-only".into())?;
    }
    if spec.network == crate::Network::None {
        mounts::loopback_up().step(|| "bringing up loopback".into())?;
    }
    if !spec.hostname.is_empty() {
        rustix::system::sethostname(spec.hostname.as_bytes())
            .map_err(io::Error::from)
            .step(|| "setting the hostname".into())?;
    }
    let tty = if spec.tty {
        Some(pty::Pty::open().step(|| "allocating a terminal".into())?)
    } else {
        None
    };
    let launch = Launch {
        spec,
        cwd,
        signals,
        state_dir: state_dir.as_ref(),
        cgroup_procs: cgroup.as_ref().map(|c| c.procs.as_slice()).unwrap_or(&[]),
        tty: tty.as_ref(),
        keep_old_root,
        mount_proc: true,
    };
    let result = run_command(&launch);
    if let Some(c) = cgroup {
        c.remove();
    }
    let code = result?;
    mounts::cleanup(stubs);
    Ok(code)
}

/// The chroot isolation (see [`crate::chroot`]): the root filesystem is a plain directory
/// the caller filled; nothing is mounted and no namespace is made.
fn run_chrooted(spec: &ProcessSpec, signals: &SignalFd) -> Result<i32, Failure> {
    let refuse = |what: &str| Failure {
        step: what.to_string(),
        error: io::Error::new(
            io::ErrorKind::Unsupported,
            "not possible with --isolation chroot (no mounts or cgroups here)",
        ),
        code: EXIT_SETUP_FAILED,
    };
    if spec.readonly_rootfs {
        return Err(refuse("making the root filesystem read-only"));
    }
    if spec.resources.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(refuse("limiting resources"));
    }
    let state_dir = match &spec.state_dir {
        Some(dir) => {
            Some(crate::state::open_dir(dir).step(|| format!("opening {}", dir.display()))?)
        }
        None => None,
    };
    let etc = etc_files(spec);
    let sources =
        crate::chroot::open_sources(&spec.mounts).step(|| "opening the mount sources".into())?;
    let root = &spec.rootfs.mountpoint;
    rustix::process::chroot(root)
        .map_err(io::Error::from)
        .step(|| format!("chroot into {}", root.display()))?;
    std::env::set_current_dir("/").step(|| "entering the root".into())?;
    let mut placed = crate::chroot::Placed::default();
    let result = (|| {
        crate::chroot::place_devices(&mut placed).step(|| "setting up /dev".into())?;
        crate::chroot::place_etc_files(&mut placed, &etc)
            .step(|| "writing /etc/hosts, /etc/resolv.conf".into())?;
        crate::chroot::place(&mut placed, sources).step(|| "placing the mounts".into())?;
        let cwd = if spec.cwd.is_empty() {
            "/"
        } else {
            spec.cwd.as_str()
        };
        let mut stubs = Stubs::default();
        stubs
            .ensure_workdir(Path::new(cwd))
            .step(|| format!("creating working directory {cwd}"))?;
        let tty = if spec.tty {
            Some(pty::Pty::open().step(|| "allocating a terminal".into())?)
        } else {
            None
        };
        let launch = Launch {
            spec,
            cwd,
            signals,
            state_dir: state_dir.as_ref(),
            cgroup_procs: &[],
            tty: tty.as_ref(),
            keep_old_root: false,
            mount_proc: false,
        };
        run_command(&launch)
    })();
    placed.undo();
    result
}

/// The files BuildKit supplies to every RUN, as (path in the container, content).
fn etc_files(spec: &ProcessSpec) -> Vec<(String, Vec<u8>)> {
    let host = if spec.hostname.is_empty() {
        "localhost"
    } else {
        &spec.hostname
    };
    let hosts = format!("127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    vec![
        ("/etc/hosts".into(), hosts.into_bytes()),
        ("/etc/resolv.conf".into(), resolv),
        ("/etc/hostname".into(), format!("{host}\n").into_bytes()),
    ]
}

/// The files of [`etc_files`]: written to the scratch dir, bind-mounted over the container's
/// own, so they never end up in a layer.
fn write_etc_files(spec: &ProcessSpec) -> io::Result<Vec<(PathBuf, String)>> {
    std::fs::create_dir_all(&spec.scratch)?;
    let mut out = Vec::new();
    for (target, content) in etc_files(spec) {
        let name = target.trim_start_matches("/etc/");
        let path = spec.scratch.join(name);
        std::fs::write(&path, content)?;
        out.push((path, target));
    }
    Ok(out)
}

const PROC: &CStr = c"/proc";

/// What the command needs besides the spec.
struct Launch<'a> {
    spec: &'a ProcessSpec,
    cwd: &'a str,
    signals: &'a SignalFd,
    state_dir: Option<&'a OwnedFd>,
    cgroup_procs: &'a [OwnedFd],
    tty: Option<&'a pty::Pty>,
    /// The old root is still attached (user namespaces): the command detaches it once /proc
    /// is mounted.
    keep_old_root: bool,
    /// Mount /proc for the command (not in a chroot, where mounts are refused).
    mount_proc: bool,
}

fn run_command(launch: &Launch<'_>) -> Result<i32, Failure> {
    let spec = launch.spec;
    let Some((program, args)) = spec.args.split_first() else {
        return Err(Failure {
            step: "starting the command".into(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
            code: EXIT_SETUP_FAILED,
        });
    };
    let mut command = Command::new(program);
    command.args(args).env_clear().current_dir(launch.cwd);
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        command.env(k, v);
    }
    if let Some(tty) = launch.tty {
        let slave = || tty.slave().step(|| "opening the terminal".into());
        command
            .stdin(Stdio::from(slave()?))
            .stdout(Stdio::from(slave()?))
            .stderr(Stdio::from(slave()?));
    }
    let (uid, gid) = (spec.uid, spec.gid);
    let groups: Vec<rustix::process::Gid> = spec
        .additional_gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    let only_primary = groups.iter().all(|g| g.as_raw() == gid);
    let with_tty = launch.tty.is_some();
    let keep_old_root = launch.keep_old_root;
    let mount_proc = launch.mount_proc;
    let cgroup_procs = launch
        .cgroup_procs
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<io::Result<Vec<OwnedFd>>>()
        .step(|| "opening the cgroup".into())?;
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec. This helper process is single-threaded
    // (it was exec'd fresh and starts no threads), so no lock can be held by another thread at
    // fork time; the closure only makes system calls through rustix on data prepared before
    // the fork (fds opened earlier, a vector allocated earlier).
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            crate::cgroup::Cgroup::join_self(&cgroup_procs)?;
            // The helper blocks the signals it forwards; the command must not inherit that.
            crate::signals::unblock_all()?;
            // A session of its own: the terminal strata runs in never signals the container
            // directly (strata forwards), and with -t the new terminal becomes its own.
            rustix::process::setsid()?;
            if with_tty {
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            }
            if mount_proc {
                mounts::mount_proc(PROC)?;
            }
            if keep_old_root {
                mounts::detach_old_root()?;
            }
            // A user namespace that maps a single id has setgroups denied; when the only
            // groups asked for are the primary one (or none), nothing is lost.
            match rustix::thread::set_thread_groups(&groups) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) if only_primary => {}
                Err(e) => return Err(e.into()),
            }
            rustix::thread::set_thread_res_gid(
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
            )?;
            rustix::thread::set_thread_res_uid(
                rustix::process::Uid::from_raw(uid),
                rustix::process::Uid::from_raw(uid),
                rustix::process::Uid::from_raw(uid),
            )?;
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|error| {
        let code = match error.kind() {
            io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            io::ErrorKind::PermissionDenied => EXIT_NOT_EXECUTABLE,
            _ => EXIT_SETUP_FAILED,
        };
        Failure {
            step: format!("exec {program:?}"),
            error,
            code,
        }
    })?;
    // The command runs: tell whoever waits for it.
    let pid = child.id() as i32;
    if let Some(dir) = launch.state_dir {
        crate::state::write_started(dir, pid).step(|| "recording the container's pid".into())?;
    }
    if let Some(fd) = spec.ready_fd {
        #[allow(unsafe_code)]
        // SAFETY: `ready_fd` was handed to this process open for us to use, and nothing else in
        // it refers to that fd number; we take it over once, and dropping the File closes it.
        let mut ready = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = std::io::Write::write_all(&mut ready, b"ok\n");
    }
    let status = supervise_child(&mut child, launch.signals, launch.tty)
        .step(|| "waiting for the command".into())?;
    Ok(exit_code(status))
}

/// Waits for the command while forwarding signals to it and, with a terminal, copying the
/// helper's stdin to the terminal and the terminal's output to the helper's stdout.
fn supervise_child(
    child: &mut std::process::Child,
    signals: &SignalFd,
    tty: Option<&pty::Pty>,
) -> io::Result<std::process::ExitStatus> {
    use rustix::event::{PollFd, PollFlags};
    let pid = child.id() as i32;
    let stdin = rustix::stdio::stdin();
    let mut stdin_open = tty.is_some();
    let mut output_open = tty.is_some();
    if let Some(t) = tty {
        t.copy_size_from(stdin);
    }
    loop {
        if let Some(status) = child.try_wait()? {
            if let Some(t) = tty
                && output_open
            {
                t.drain_to_stdout();
            }
            return Ok(status);
        }
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::IN)];
        let (mut stdin_at, mut master_at) = (None, None);
        if let Some(t) = tty {
            if stdin_open {
                stdin_at = Some(fds.len());
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
            if output_open {
                master_at = Some(fds.len());
                fds.push(PollFd::new(t.master(), PollFlags::IN));
            }
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: Option<usize>| i.is_some_and(|i| !fds[i].revents().is_empty());
        let (stdin_ready, master_ready) = (ready(stdin_at), ready(master_at));
        drop(fds);
        while let Some(sig) = signals.read()? {
            match sig.signo {
                libc::SIGCHLD => {}
                libc::SIGWINCH => {
                    if let Some(t) = tty {
                        t.copy_size_from(stdin);
                    }
                }
                s => {
                    let _ = crate::signals::send(pid, s);
                }
            }
        }
        if let Some(t) = tty {
            if stdin_ready && !t.copy_input(stdin) {
                stdin_open = false;
            }
            if master_ready && !t.copy_output() {
                output_open = false;
            }
        }
    }
}
