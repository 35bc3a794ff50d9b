//! The helper process: runs single-threaded in fresh namespaces, sets up the container's
//! filesystem, starts the command as PID 1 of the new PID namespace and cleans up after it.

use std::ffi::CStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts::{self, Attach, Stubs};
use crate::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, ProcessSpec, exit_code};

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
    match run(&spec) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("strata sandbox: {}: {}", f.step, f.error);
            f.code
        }
    }
}

fn run(spec: &ProcessSpec) -> Result<i32, Failure> {
    mounts::make_private().step(|| "making mounts private".into())?;
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
    for m in &spec.mounts {
        if let crate::Mount::Bind {
            source,
            target,
            readonly,
        } = m
        {
            attach.push(
                Attach::bind(source, target, *readonly)
                    .step(|| format!("opening bind source {}", source.display()))?,
            );
        }
    }
    mounts::pivot_into(&spec.rootfs.mountpoint).step(|| "pivot_root".into())?;

    // From here on "/" is the container's root: every path resolves inside it.
    let mut stubs = Stubs::default();
    mounts::setup_dev(&mut stubs).step(|| "setting up /dev".into())?;
    mounts::setup_sys(&mut stubs).step(|| "mounting /sys".into())?;
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
    let code = run_command(spec, cwd)?;
    mounts::cleanup(stubs);
    Ok(code)
}

/// The files BuildKit supplies to every RUN: written to the scratch dir, bind-mounted over the
/// container's own, so they never end up in a layer.
fn write_etc_files(spec: &ProcessSpec) -> io::Result<Vec<(PathBuf, String)>> {
    let host = if spec.hostname.is_empty() {
        "localhost"
    } else {
        &spec.hostname
    };
    let hosts = format!("127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::create_dir_all(&spec.scratch)?;
    let files = [
        ("hosts", hosts.into_bytes()),
        ("resolv.conf", resolv),
        ("hostname", format!("{host}\n").into_bytes()),
    ];
    let mut out = Vec::new();
    for (name, content) in files {
        let path = spec.scratch.join(name);
        std::fs::write(&path, content)?;
        out.push((path, format!("/etc/{name}")));
    }
    Ok(out)
}

const PROC: &CStr = c"/proc";

fn run_command(spec: &ProcessSpec, cwd: &str) -> Result<i32, Failure> {
    let Some((program, args)) = spec.args.split_first() else {
        return Err(Failure {
            step: "starting the command".into(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
            code: EXIT_SETUP_FAILED,
        });
    };
    let mut command = Command::new(program);
    command.args(args).env_clear().current_dir(cwd);
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        command.env(k, v);
    }
    let (uid, gid) = (spec.uid, spec.gid);
    let groups: Vec<rustix::process::Gid> = spec
        .additional_gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec. This helper process is single-threaded
    // (it was exec'd fresh and starts no threads), so no lock can be held by another thread at
    // fork time; the closure only makes system calls through rustix on data prepared before
    // the fork.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            mounts::mount_proc(PROC)?;
            rustix::thread::set_thread_groups(&groups)?;
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
    let status = child.wait().step(|| "waiting for the command".into())?;
    Ok(exit_code(status))
}
