//! A private mount namespace for one thread: how the builder mounts a stage's layers to copy
//! files in or out without starting a container, and without the mounts being visible to the
//! rest of the process or the host.
//!
//! Linux lets a thread leave its process's filesystem context (`CLONE_FS`: root, cwd, umask)
//! and mount namespace (`CLONE_NEWNS`) on its own. The work runs in a fresh thread that does
//! exactly that; when the thread ends, its namespace and every mount in it go away, even if
//! the work panicked.

use std::io;
use std::path::{Path, PathBuf};

use crate::RootFs;

/// Runs `work` in a new thread with its own root directory and a private mount namespace.
pub fn in_private_mounts<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                leave_shared_namespaces()?;
                crate::mounts::make_private()?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `work` in a forked child process and returns its result: for the chroot isolation,
/// where a thread may not take a filesystem context of its own (seccomp refuses every
/// unshare), so [`enter_root`] inside `work` must change the root of a whole process. The
/// child has one thread and exits with `_exit` when `work` returns; its error text comes back
/// through a pipe.
pub fn in_forked_process<F>(work: F) -> io::Result<Result<(), String>>
where
    F: FnOnce() -> Result<(), String>,
{
    use std::io::{Read, Write};
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    #[allow(unsafe_code)]
    // SAFETY: after fork only this thread exists in the child. `work` is strata's own file
    // copying code: it allocates (glibc's malloc takes its locks around fork, so they are
    // free in the child), makes system calls and may start threads of its own, but takes no
    // lock another thread of the parent could have held at the fork (no stdout, no logging,
    // no progress reporting). The child never returns into the caller's frames: it leaves
    // through `_exit`, running no destructors or atexit handlers of the parent's state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err("the copy panicked".to_string()));
        let code = match outcome {
            Ok(()) => 0,
            Err(message) => {
                let mut pipe = std::fs::File::from(write);
                let _ = pipe.write_all(message.as_bytes());
                1
            }
        };
        #[allow(unsafe_code)]
        // SAFETY: _exit ends the child at once; nothing of the parent's state is touched.
        unsafe {
            libc::_exit(code)
        }
    }
    drop(write);
    let mut message = String::new();
    let _ = std::fs::File::from(read).read_to_string(&mut message);
    let mut status = 0;
    loop {
        #[allow(unsafe_code)]
        // SAFETY: waitpid on the child just forked, with a valid pointer to a local int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else if message.is_empty() {
            Err(format!("the copy process failed (wait status {status})"))
        } else {
            Err(message)
        },
    )
}

fn leave_shared_namespaces() -> io::Result<()> {
    let flags = rustix::thread::UnshareFlags::FS | rustix::thread::UnshareFlags::NEWNS;
    #[allow(unsafe_code)]
    // SAFETY: `unshare_unsafe` is unsafe because other threads may rely on sharing the
    // unshared state with this one. This is a fresh thread owned by `in_private_mounts`; no
    // other thread shares its root/cwd expectations or looks at its mounts, and the thread
    // ends as soon as `work` returns, taking the namespace with it.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

/// Mounts a stack of snapshot directories (top first) at `target`: read-write through
/// `upper`/`work` when given, read-only otherwise. Only meaningful inside
/// [`in_private_mounts`].
pub fn mount_layers(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    scratch: &Path,
) -> io::Result<()> {
    let rootfs = RootFs {
        lowers: lowers.to_vec(),
        upper: upper.map(|(u, _)| u.to_path_buf()),
        work: upper.map(|(_, w)| w.to_path_buf()),
        mountpoint: target.to_path_buf(),
    };
    crate::mounts::mount_rootfs(&rootfs, scratch)
}

/// Makes `dir` this thread's root directory (and cwd), so every absolute path and symlink
/// resolves inside it. Only inside [`in_private_mounts`], whose thread owns its root. The
/// guard can step back out (some work, such as the layer extractor, needs `/proc`).
pub fn enter_root(dir: &Path) -> io::Result<RootGuard> {
    let old = rustix::fs::open(
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::process::chroot(dir).map_err(io::Error::from)?;
    std::env::set_current_dir("/")?;
    Ok(RootGuard { old })
}

/// The thread's previous root, kept open while it is chrooted elsewhere.
pub struct RootGuard {
    old: std::os::fd::OwnedFd,
}

impl RootGuard {
    /// Returns to the previous root.
    pub fn leave(self) -> io::Result<()> {
        rustix::process::fchdir(&self.old).map_err(io::Error::from)?;
        rustix::process::chroot(".").map_err(io::Error::from)?;
        std::env::set_current_dir("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_stay_inside_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work, mnt) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("mnt"),
        );
        for d in [&lower, &upper, &work, &mnt] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(lower.join("a"), "from lower").unwrap();
        let seen = in_private_mounts(|| {
            mount_layers(
                std::slice::from_ref(&lower),
                Some((&upper, &work)),
                &mnt,
                dir.path(),
            )
            .unwrap();
            std::fs::write(mnt.join("b"), "new").unwrap();
            let guard = enter_root(&mnt).unwrap();
            let seen = std::fs::read_to_string("/a").unwrap();
            guard.leave().unwrap();
            assert!(Path::new("/proc/self").exists(), "back at the old root");
            seen
        })
        .unwrap();
        assert_eq!(seen, "from lower");
        assert_eq!(std::fs::read_to_string(upper.join("b")).unwrap(), "new");
        assert!(!mnt.join("a").exists(), "the mount is gone with the thread");
        assert!(
            Path::new("/proc/self").exists(),
            "the calling thread's root is untouched"
        );
    }
}
