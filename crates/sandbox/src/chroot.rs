//! The chroot isolation: where namespaces and mounts are refused (an unprivileged container
//! under the engine's default seccomp profile), the command runs chrooted into a plain
//! directory that already holds its root filesystem (the caller copied it there), and what
//! mounts would have provided is placed into that directory and taken out again afterwards.
//!
//! What it gives up, and says so (see [`GIVES_UP`]): no PID, network, UTS or IPC namespace
//! (RUN steps see the container's processes and network), no /proc or /sys, and mounts are
//! emulated: a bind of a directory is moved in and back (it must be on the same filesystem),
//! a file is copied in, a tmpfs is an empty directory.
//!
//! The tree it leaves must match what the namespaced helper leaves in an overlay upper dir,
//! so that both give the same layer: stubs for missing mount points are made and removed as
//! there; a target that exists is moved aside and back, and its parent's times restored, as a
//! mount over it would not have touched them.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, Timespec, Timestamps};

use crate::Mount;

/// What the chroot isolation cannot do, for the one line strata prints when it chooses it.
pub const GIVES_UP: &str = "RUN steps run in a chroot of a copied root filesystem: no PID, \
    network or mount namespace of their own (they share this container's processes and \
    network, and have no /proc), and snapshots are made by copying";

/// Names under /dev every command gets, as (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What the chroot helper changed in the root, undone in reverse by [`Placed::undo`].
#[derive(Default)]
pub(crate) struct Placed {
    steps: Vec<Undo>,
}

enum Undo {
    /// Made here; removed (recursively for a directory the command may have filled).
    Created(PathBuf),
    /// Moved in from the host (from `name` in the directory `parent`); moved back.
    MovedIn {
        inside: PathBuf,
        parent: std::os::fd::OwnedFd,
        name: std::ffi::OsString,
    },
    /// An object of the image moved aside to `aside`; moved back.
    Hidden { path: PathBuf, aside: PathBuf },
    /// A directory's times, put back (a mount would not have changed them).
    Times { dir: PathBuf, times: Timestamps },
}

fn times_of(meta: &fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    }
}

impl Placed {
    /// Creates missing directories down to `dir` (inside the chroot), each one recorded.
    fn ensure_dir(&mut self, dir: &Path) -> io::Result<()> {
        crate::mounts::create_missing_dirs(dir, &mut |made| {
            self.steps.push(Undo::Created(made.to_path_buf()));
        })
    }

    /// Makes room at `target`: its parent exists, and an object already there is moved aside
    /// (with its parent's times remembered). Returns whether something was hidden.
    fn make_room(&mut self, target: &Path, index: usize) -> io::Result<()> {
        if let Some(parent) = target.parent() {
            self.ensure_dir(parent)?;
        }
        if fs::symlink_metadata(target).is_err() {
            return Ok(());
        }
        let parent = target.parent().unwrap_or(Path::new("/"));
        let times = times_of(&fs::metadata(parent)?);
        let aside = PathBuf::from(format!("/.strata-hidden-{index}"));
        fs::rename(target, &aside)?;
        self.steps.push(Undo::Times {
            dir: parent.to_path_buf(),
            times,
        });
        self.steps.push(Undo::Hidden {
            path: target.to_path_buf(),
            aside,
        });
        Ok(())
    }

    /// Undoes everything, newest first; best effort, as the namespaced helper's cleanup.
    pub(crate) fn undo(self) {
        for step in self.steps.into_iter().rev() {
            let _ = match step {
                Undo::Created(path) => match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                    Ok(_) => fs::remove_file(&path),
                    Err(e) => Err(e),
                },
                Undo::MovedIn {
                    inside,
                    parent,
                    name,
                } => rustix::fs::renameat(CWD, &inside, &parent, &name).map_err(Into::into),
                Undo::Hidden { path, aside } => fs::rename(&aside, &path),
                Undo::Times { dir, times } => {
                    rustix::fs::utimensat(CWD, &dir, &times, AtFlags::empty()).map_err(Into::into)
                }
            };
        }
    }
}

/// A mount's source, opened before the chroot hides the host.
pub(crate) enum Source {
    /// A directory, moved in by name from this parent directory (a socket: linked in).
    Dir {
        parent: std::os::fd::OwnedFd,
        name: std::ffi::OsString,
        host: PathBuf,
        link: bool,
    },
    /// A file, copied in.
    File(fs::File),
    Tmpfs {
        mode: u32,
    },
}

/// Opens the sources of `mounts` (host paths) before the chroot.
pub(crate) fn open_sources(mounts: &[Mount]) -> io::Result<Vec<(Source, String)>> {
    let mut out = Vec::new();
    for m in mounts {
        match m {
            Mount::Bind { source, target, .. } => {
                let meta = fs::metadata(source)?;
                let src = if !meta.is_file() {
                    let parent = source.parent().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "a bind of the host's /")
                    })?;
                    let name = source
                        .file_name()
                        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                    Source::Dir {
                        parent: rustix::fs::open(
                            parent,
                            rustix::fs::OFlags::PATH
                                | rustix::fs::OFlags::DIRECTORY
                                | rustix::fs::OFlags::CLOEXEC,
                            Mode::empty(),
                        )?,
                        name: name.to_os_string(),
                        host: source.clone(),
                        link: !meta.is_dir(),
                    }
                } else {
                    Source::File(fs::File::open(source)?)
                };
                out.push((src, target.clone()));
            }
            Mount::Tmpfs { target, mode, .. } => {
                out.push((
                    Source::Tmpfs {
                        mode: mode.unwrap_or(0o1777),
                    },
                    target.clone(),
                ));
            }
            Mount::Layers { target, .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "a mount of layers at {target} needs mount namespaces (the caller \
                         must copy them out first with --isolation chroot)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Places the opened sources at their targets inside the chroot.
pub(crate) fn place(placed: &mut Placed, sources: Vec<(Source, String)>) -> io::Result<()> {
    for (i, (source, target)) in sources.into_iter().enumerate() {
        let target = PathBuf::from(&target);
        placed.make_room(&target, i)?;
        match source {
            Source::Dir {
                parent,
                name,
                host,
                link: true,
            } => {
                rustix::fs::linkat(&parent, &name, CWD, &target, AtFlags::empty())
                    .map_err(|e| moved_in_error(&host, e.into()))?;
                placed.steps.push(Undo::Created(target));
            }
            Source::Dir {
                parent, name, host, ..
            } => {
                rustix::fs::renameat(&parent, &name, CWD, &target)
                    .map_err(|e| moved_in_error(&host, e.into()))?;
                placed.steps.push(Undo::MovedIn {
                    inside: target,
                    parent,
                    name,
                });
            }
            Source::File(mut file) => {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&target)?;
                placed.steps.push(Undo::Created(target.clone()));
                io::copy(&mut file, &mut out)?;
                let mode = file.metadata()?.mode() & 0o7777;
                fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            }
            Source::Tmpfs { mode } => {
                fs::DirBuilder::new().mode(0o700).create(&target)?;
                placed.steps.push(Undo::Created(target.clone()));
                fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            }
        }
    }
    Ok(())
}

fn moved_in_error(host: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EXDEV) {
        io::Error::new(
            e.kind(),
            format!(
                "{} is on another filesystem than the build's root: with --isolation chroot \
                 a mounted directory is moved in",
                host.display()
            ),
        )
    } else {
        e
    }
}

/// The standard character devices in /dev, and stubs for /proc and /sys, as the namespaced
/// helper makes them (an existing /dev keeps its times: there a tmpfs covers it).
pub(crate) fn place_devices(placed: &mut Placed) -> io::Result<()> {
    let dev = Path::new("/dev");
    match fs::metadata(dev) {
        Ok(meta) => placed.steps.push(Undo::Times {
            dir: dev.to_path_buf(),
            times: times_of(&meta),
        }),
        Err(_) => placed.ensure_dir(dev)?,
    }
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        rustix::fs::mknodat(
            CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )?;
        placed.steps.push(Undo::Created(path.clone()));
        rustix::fs::chmod(&path, Mode::from_raw_mode(0o666))?;
    }
    placed.ensure_dir(Path::new("/proc"))?;
    placed.ensure_dir(Path::new("/sys"))
}

/// /etc/hosts, /etc/resolv.conf and /etc/hostname where the image has none (where it has
/// one, the command sees the image's: without mounts it cannot be covered).
pub(crate) fn place_etc_files(placed: &mut Placed, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (target, content) in files {
        let target = Path::new(target);
        if fs::symlink_metadata(target).is_ok() {
            continue;
        }
        if let Some(parent) = target.parent() {
            placed.ensure_dir(parent)?;
        }
        fs::write(target, content)?;
        placed.steps.push(Undo::Created(target.to_path_buf()));
    }
    Ok(())
}
