//! Mounts for the container: the overlay root, /dev, /sys, /proc, binds and tmpfs, and the
//! mount-point stubs that must not survive into a layer.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::RootFs;

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// Our mounts must never propagate back to the host's mount namespace.
pub(crate) fn make_private() -> io::Result<()> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(io_err)
}

/// Mounts the root filesystem at `rootfs.mountpoint`.
pub(crate) fn mount_rootfs(rootfs: &RootFs, scratch: &Path) -> io::Result<()> {
    let mut lowers = rootfs.lowers.clone();
    if rootfs.upper.is_none() && lowers.len() == 1 {
        rustix::mount::mount_bind(&lowers[0], &rootfs.mountpoint).map_err(io_err)?;
        return rustix::mount::mount_remount(
            &rootfs.mountpoint,
            MountFlags::BIND | MountFlags::RDONLY,
            "",
        )
        .map_err(io_err);
    }
    if lowers.is_empty() {
        // overlayfs needs a lower layer; an image with no layers (FROM scratch) gets an
        // empty one.
        let empty = scratch.join("empty-lower");
        fs::create_dir_all(&empty)?;
        lowers.push(empty);
    }
    match mount_overlay_new_api(rootfs, &lowers) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            mount_overlay_legacy(rootfs, &lowers)
        }
        Err(e) => Err(e),
    }
}

/// Options that keep the upper directory a plain diff: no redirects or metacopy-only
/// copy-ups, which a layer tar could not express.
const OVERLAY_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
    ("index", "off"),
];
/// overlayfs keeps its markers (opaque directories) in `user.overlay.*` xattrs, which a
/// process in a user namespace may set, instead of `trusted.overlay.*`, which it may not: so
/// snapshots have one format whether root or a rootless user made them (see
/// `layer::OPAQUE_XATTR`).
const OVERLAY_FLAG: &str = "userxattr";

/// The new mount API takes each lower directory as its own parameter (`lowerdir+`, Linux 6.8),
/// so the stack is not limited by the one-page option string of mount(2): images deeper than
/// ~40 layers need it.
fn mount_overlay_new_api(rootfs: &RootFs, lowers: &[PathBuf]) -> io::Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(io_err)?;
    for lower in lowers {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower).map_err(io_err)?;
    }
    if let (Some(upper), Some(work)) = (&rootfs.upper, &rootfs.work) {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", upper).map_err(io_err)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", work).map_err(io_err)?;
    }
    for (k, v) in OVERLAY_OPTIONS {
        rustix::mount::fsconfig_set_string(&fs, k, v).map_err(io_err)?;
    }
    rustix::mount::fsconfig_set_flag(&fs, OVERLAY_FLAG).map_err(io_err)?;
    rustix::mount::fsconfig_create(&fs).map_err(io_err)?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(io_err)?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        &rootfs.mountpoint,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(io_err)
}

/// mount(2) with the classic option string, for kernels without `lowerdir+`.
fn mount_overlay_legacy(rootfs: &RootFs, lowers: &[PathBuf]) -> io::Result<()> {
    let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut data = format!("lowerdir={}", joined.join(":"));
    if let (Some(upper), Some(work)) = (&rootfs.upper, &rootfs.work) {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    for (k, v) in OVERLAY_OPTIONS {
        data.push_str(&format!(",{k}={v}"));
    }
    data.push_str(&format!(",{OVERLAY_FLAG}"));
    let data = std::ffi::CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a layer path"))?;
    rustix::mount::mount(
        "overlay",
        &rootfs.mountpoint,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(io_err)
}

/// Where the host's root stays reachable for a moment in a user namespace (see
/// [`pivot_into`]).
pub(crate) const OLD_ROOT: &CStr = c"/.strata-old-root";

/// Makes `dir` the root: the pivot_root(".", ".") idiom, then the old root is lazily detached.
///
/// In a user namespace the kernel lets a process mount procfs or sysfs only while a fully
/// visible instance of it is in its mount namespace: there the old root is kept at
/// [`OLD_ROOT`] (returned, to be detached with [`detach_old_root`] once /proc is mounted).
pub(crate) fn pivot_into(dir: &Path, keep_old_root: bool) -> io::Result<Option<PathBuf>> {
    std::env::set_current_dir(dir)?;
    if !keep_old_root {
        rustix::process::pivot_root(".", ".").map_err(io_err)?;
        rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(io_err)?;
        std::env::set_current_dir("/")?;
        return Ok(None);
    }
    let old = PathBuf::from(OLD_ROOT.to_string_lossy().trim_start_matches('/'));
    fs::DirBuilder::new().mode(0o700).create(&old)?;
    rustix::process::pivot_root(".", &old).map_err(io_err)?;
    std::env::set_current_dir("/")?;
    Ok(Some(Path::new("/").join(old)))
}

/// Detaches the old root kept by [`pivot_into`]. Only system calls on static paths: it runs
/// between fork and exec.
pub(crate) fn detach_old_root() -> io::Result<()> {
    rustix::mount::unmount(OLD_ROOT, UnmountFlags::DETACH).map_err(io_err)
}

/// What the helper created or mounted inside the container, undone in reverse after the
/// command exits so that mount points the image did not have never end up in the layer.
#[derive(Default)]
pub(crate) struct Stubs {
    created: Vec<(PathBuf, bool)>,
    mounted: Vec<PathBuf>,
}

impl Stubs {
    /// Creates missing directories down to `path`, remembering each one created.
    pub fn ensure_dir(&mut self, path: &Path) -> io::Result<()> {
        self.ensure_dirs(path, true)
    }

    /// Like `ensure_dir`, but what it creates stays: a missing working directory is created
    /// for good, as docker does.
    pub fn ensure_workdir(&mut self, path: &Path) -> io::Result<()> {
        self.ensure_dirs(path, false)
    }

    fn ensure_dirs(&mut self, path: &Path, record: bool) -> io::Result<()> {
        create_missing_dirs(path, &mut |made| {
            if record {
                self.created.push((made.to_path_buf(), true));
            }
        })
    }

    /// Creates an empty file at `path` (and its parents) when missing.
    pub fn ensure_file(&mut self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        if fs::symlink_metadata(path).is_err() {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)?;
            self.created.push((path.to_path_buf(), false));
        }
        Ok(())
    }

    /// Records a directory the helper made itself, to be removed at cleanup.
    pub fn created_dir(&mut self, path: PathBuf) {
        self.created.push((path, true));
    }

    fn mounted(&mut self, path: &Path) {
        self.mounted.push(path.to_path_buf());
    }
}

/// Creates the missing directories down to `path` (an absolute path inside the current
/// root; symlinks to directories are followed), telling `made` of each one created.
pub(crate) fn create_missing_dirs(path: &Path, made: &mut dyn FnMut(&Path)) -> io::Result<()> {
    let mut current = PathBuf::from("/");
    for component in path.components().skip(1) {
        current.push(component);
        match fs::metadata(&current) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", current.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&current)?;
                made(&current);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Unmounts what the helper mounted and removes the stubs it created, newest first. Best
/// effort: a stub the command filled with content stays.
pub(crate) fn cleanup(mut stubs: Stubs) {
    stubs.mounted.push(PathBuf::from("/proc"));
    // Still attached only if the command never started (see `pivot_into`).
    let _ = detach_old_root();
    for target in stubs.mounted.iter().rev() {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
    }
    for (path, is_dir) in stubs.created.iter().rev() {
        if *is_dir {
            let _ = fs::remove_dir(path);
        } else if fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(path);
        }
    }
}

/// A host directory or file opened as a detached mount before pivot_root, attached at its
/// target inside the container afterwards.
pub(crate) struct Attach {
    tree: OwnedFd,
    pub target: String,
    readonly: bool,
    is_dir: bool,
}

impl Attach {
    pub fn bind(source: &Path, target: &str, readonly: bool) -> io::Result<Attach> {
        let is_dir = fs::metadata(source)?.is_dir();
        let tree = rustix::mount::open_tree(
            CWD,
            source,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(io_err)?;
        Ok(Attach {
            tree,
            target: target.to_string(),
            readonly,
            is_dir,
        })
    }

    /// Mounts a stack of directories (see [`crate::Mount::Layers`]) in the helper's own
    /// namespace, then takes `source` inside it — resolved inside the stack, so a symlink in
    /// an image cannot point it at the host — as a detached tree to attach later.
    pub fn layers(
        lowers: &[PathBuf],
        upper: Option<&(PathBuf, PathBuf)>,
        source: &str,
        target: &str,
        readonly: bool,
        scratch: &Path,
        index: usize,
    ) -> io::Result<Attach> {
        let mountpoint = scratch.join(format!("layers-{index}"));
        fs::create_dir_all(&mountpoint)?;
        let rootfs = RootFs {
            lowers: lowers.to_vec(),
            upper: upper.map(|(u, _)| u.clone()),
            work: upper.map(|(_, w)| w.clone()),
            mountpoint: mountpoint.clone(),
        };
        mount_rootfs(&rootfs, scratch)?;
        let root = rustix::fs::open(
            &mountpoint,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(io_err)?;
        let rel = source.trim_start_matches('/');
        let node = rustix::fs::openat2(
            &root,
            if rel.is_empty() { "." } else { rel },
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::IN_ROOT,
        )
        .map_err(io_err)?;
        let is_dir = rustix::fs::fstat(&node)
            .map(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
            })
            .map_err(io_err)?;
        let tree = rustix::mount::open_tree(
            &node,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(io_err)?;
        Ok(Attach {
            tree,
            target: target.to_string(),
            readonly,
            is_dir,
        })
    }

    pub fn attach(self, stubs: &mut Stubs) -> io::Result<()> {
        let target = Path::new(&self.target);
        if self.is_dir {
            stubs.ensure_dir(target)?;
        } else {
            stubs.ensure_file(target)?;
        }
        rustix::mount::move_mount(
            &self.tree,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(io_err)?;
        stubs.mounted(target);
        if self.readonly {
            remount_readonly(target)?;
        }
        Ok(())
    }
}

pub(crate) fn tmpfs(
    stubs: &mut Stubs,
    target: &str,
    size: Option<u64>,
    mode: Option<u32>,
) -> io::Result<()> {
    let target = Path::new(target);
    stubs.ensure_dir(target)?;
    let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    let data =
        std::ffi::CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(io_err)?;
    stubs.mounted(target);
    Ok(())
}

/// The character devices every container gets, as (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// In a user namespace device nodes cannot be made (mknod needs CAP_MKNOD in the host's
/// namespace): the host's own nodes are bind-mounted instead, as rootless runc does. They
/// must be opened before pivot_root.
pub(crate) fn open_host_devices() -> io::Result<Vec<Attach>> {
    DEVICES
        .iter()
        .map(|(name, _, _)| {
            Attach::bind(
                Path::new(&format!("/dev/{name}")),
                &format!("/dev/{name}"),
                false,
            )
        })
        .collect()
}

/// A minimal /dev, as runc makes it: a tmpfs with the standard character devices (made, or
/// the host's bound in `host_devices`), a private devpts instance, /dev/shm and the usual
/// symlinks.
pub(crate) fn setup_dev(stubs: &mut Stubs, host_devices: Option<Vec<Attach>>) -> io::Result<()> {
    let dev = Path::new("/dev");
    stubs.ensure_dir(dev)?;
    rustix::mount::mount(
        "tmpfs",
        dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        c"mode=755,size=65536k",
    )
    .map_err(io_err)?;
    stubs.mounted(dev);
    match host_devices {
        Some(binds) => {
            for bind in binds {
                bind.attach(stubs)?;
            }
        }
        None => make_device_nodes(dev)?,
    }
    fs::DirBuilder::new().mode(0o755).create("/dev/pts")?;
    rustix::mount::mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(io_err)?;
    fs::DirBuilder::new().mode(0o1777).create("/dev/shm")?;
    rustix::mount::mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"mode=1777,size=65536k",
    )
    .map_err(io_err)?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link)?;
    }
    Ok(())
}

fn make_device_nodes(dev: &Path) -> io::Result<()> {
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        rustix::fs::mknodat(
            CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(io_err)?;
        // mknod is subject to the umask; the nodes must be world-usable.
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o666)).map_err(io_err)?;
    }
    Ok(())
}

/// A fresh, read-only sysfs (no host submounts such as cgroups come with it). A user
/// namespace that does not own its network namespace (host networking, rootless) may not
/// mount one: /sys then stays empty, as with rootless podman's `--network host` without
/// privileges.
pub(crate) fn setup_sys(stubs: &mut Stubs, in_user_namespace: bool) -> io::Result<()> {
    let sys = Path::new("/sys");
    stubs.ensure_dir(sys)?;
    match rustix::mount::mount(
        "sysfs",
        sys,
        "sysfs",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) if in_user_namespace => return Ok(()),
        Err(e) => return Err(io_err(e)),
    }
    stubs.mounted(sys);
    Ok(())
}

pub(crate) fn remount_root_readonly() -> io::Result<()> {
    remount_readonly(Path::new("/"))
}

/// Makes a bind mount read-only, keeping the flags it has: in a user namespace the flags of
/// a mount that came from the host (nosuid, nodev, noexec) are locked, and a remount that
/// would clear them is refused.
fn remount_readonly(target: &Path) -> io::Result<()> {
    let have = rustix::fs::statvfs(target).map_err(io_err)?.f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (st, mf) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (rustix::fs::StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (
            rustix::fs::StatVfsMountFlags::NODIRATIME,
            MountFlags::NODIRATIME,
        ),
        (
            rustix::fs::StatVfsMountFlags::RELATIME,
            MountFlags::RELATIME,
        ),
    ] {
        if have.contains(st) {
            flags |= mf;
        }
    }
    rustix::mount::mount_remount(target, flags, "").map_err(io_err)
}

/// Mounts /proc for the PID namespace of the caller (PID 1 of the container), then makes the
/// parts that reach the host kernel read-only and hides the ones that leak host secrets, as
/// runc does. Only system calls on static paths: it runs between fork and exec.
pub(crate) fn mount_proc(proc_dir: &CStr) -> io::Result<()> {
    rustix::mount::mount(
        "proc",
        proc_dir,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(io_err)?;
    for path in [
        c"/proc/sys",
        c"/proc/sysrq-trigger",
        c"/proc/irq",
        c"/proc/bus",
    ] {
        if rustix::mount::mount_bind(path, path).is_ok() {
            rustix::mount::mount_remount(path, MountFlags::BIND | MountFlags::RDONLY, c"")
                .map_err(io_err)?;
        }
    }
    for path in [
        c"/proc/kcore",
        c"/proc/keys",
        c"/proc/timer_list",
        c"/proc/sched_debug",
    ] {
        let _ = rustix::mount::mount_bind(c"/dev/null", path);
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the new network namespace (it starts down).
pub(crate) fn loopback_up() -> io::Result<()> {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(io_err)?;
    let mut req: libc::ifreq = {
        #[allow(unsafe_code)]
        // SAFETY: ifreq is a plain C struct (a name array and a union of integers and
        // addresses) for which all-zero bytes are a valid value.
        unsafe {
            std::mem::zeroed()
        }
    };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write a `struct ifreq`, which `req` is, and
    // the kernel does not keep the pointer past the call. The union field written is the
    // flags field these two requests use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
