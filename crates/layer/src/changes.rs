//! The copying snapshotter's two halves, for where overlayfs cannot be mounted (an
//! unprivileged container): a stack of snapshots copied out into one plain directory
//! ([`materialize`]), and, after a step changed that directory, its changes written as an
//! overlay upper directory ([`TreeState::write_upper`]) — the same upper dir the kernel would
//! have left, so the layer written from it has the same bytes as with overlayfs.
//!
//! What "changed" means follows what makes overlayfs copy a file up: any change of content,
//! mode, owner, times or links changes a file's ctime, so a file counts as changed when its
//! inode or any of its stat fields differ. A directory counts as changed when its inode, mode,
//! owner or mtime differ (its ctime moves when a helper restores its times, which overlayfs
//! would not have seen as a change). Every ancestor of a changed path is in the upper dir,
//! as copy-up puts it there. A removed path becomes a whiteout; a directory that is there
//! again with another inode (removed and made anew, or made where a file was) is opaque.
//!
//! One difference is left: a file opened for writing but not written is copied up by
//! overlayfs and not seen here.
//!
//! Paths are walked by name inside a directory strata made; the step that ran there is
//! finished, and ran with every right it could have used to read the same files.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use crate::{LayerError, OPAQUE_XATTR};

/// What the copying snapshotter remembers of one filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// Birth time, where the filesystem records one: an inode number can be reused at once
    /// (ext4 does), so a directory removed and made again is only told apart by this.
    btime: Option<(i64, u32)>,
    rdev: u64,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, LayerError> {
        use rustix::fs::{StatxFlags, statx};
        let st = statx(
            CWD,
            path,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(|e| io_err("reading", path, e.into()))?;
        let t = |ts: rustix::fs::StatxTimestamp| (ts.tv_sec, i64::from(ts.tv_nsec));
        Ok(Stamp {
            ino: st.stx_ino,
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            mtime: t(st.stx_mtime),
            ctime: t(st.stx_ctime),
            btime: StatxFlags::from_bits_retain(st.stx_mask)
                .contains(StatxFlags::BTIME)
                .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec)),
            rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        })
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Same,
    Changed,
    /// Another object stands at the path (or, for a directory, one made anew).
    Replaced,
    New,
}

/// The state of a directory tree, to find later what a step changed in it.
#[derive(Debug, Default)]
pub struct TreeState {
    stamps: HashMap<Vec<u8>, Stamp>,
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Paths whose ctime is not compared (see [`TreeState::relax`]).
    relaxed: std::collections::HashSet<Vec<u8>>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn sorted_names(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

fn io_err(what: &str, path: &Path, e: io::Error) -> LayerError {
    LayerError::io(format!("{what} {}", path.display()), e)
}

impl TreeState {
    /// Records every object under `root`.
    pub fn record(root: &Path) -> Result<TreeState, LayerError> {
        let mut state = TreeState::default();
        state.stamps.insert(Vec::new(), Stamp::of(root)?);
        state.record_dir(root, Vec::new())?;
        Ok(state)
    }

    fn record_dir(&mut self, dir: &Path, rel: Vec<u8>) -> Result<(), LayerError> {
        let names = sorted_names(dir).map_err(|e| io_err("listing", dir, e))?;
        for name in &names {
            let path = dir.join(OsStr::from_bytes(name));
            let stamp = Stamp::of(&path)?;
            let child = join(&rel, name);
            self.stamps.insert(child.clone(), stamp);
            if stamp.is_dir() {
                self.record_dir(&path, child)?;
            }
        }
        self.children.insert(rel, names);
        Ok(())
    }

    /// Stops comparing the ctime of `path` (relative to the root, `/`-separated): the
    /// chroot helper moves an object that a mount would have covered aside and back, which
    /// moves its ctime and nothing else.
    pub fn relax(&mut self, path: &str) {
        let rel = path.trim_matches('/').as_bytes().to_vec();
        self.relaxed.insert(rel);
    }

    fn status(&self, rel: &[u8], now: &Stamp) -> Status {
        let Some(old) = self.stamps.get(rel) else {
            return Status::New;
        };
        if old.ino != now.ino || old.btime != now.btime || old.file_type() != now.file_type() {
            return Status::Replaced;
        }
        let same = if now.is_dir() || self.relaxed.contains(rel) {
            (old.mode, old.uid, old.gid, old.mtime) == (now.mode, now.uid, now.gid, now.mtime)
        } else {
            old == now
        };
        if same { Status::Same } else { Status::Changed }
    }

    /// Writes what changed under `root` since [`TreeState::record`] into `upper` (an empty
    /// directory), in overlay upper format: changed and new objects copied with their
    /// metadata, their ancestors as directories, 0/0 character devices for removed names,
    /// and `user.overlay.opaque` on directories made anew.
    pub fn write_upper(&self, root: &Path, upper: &Path) -> Result<(), LayerError> {
        let mut writer = UpperWriter {
            old: self,
            links: HashMap::new(),
        };
        writer.dir(b"", root, upper, false)?;
        Ok(())
    }
}

struct UpperWriter<'a> {
    old: &'a TreeState,
    /// Hardlinked files already copied, by inode: later names link to the first copy.
    links: HashMap<u64, PathBuf>,
}

impl UpperWriter<'_> {
    /// Writes the changes inside directory `src` (at `rel`) into `dst`, which exists; with
    /// `all`, everything in it (the directory is new or opaque). Returns whether anything was
    /// written.
    fn dir(&mut self, rel: &[u8], src: &Path, dst: &Path, all: bool) -> Result<bool, LayerError> {
        let names = sorted_names(src).map_err(|e| io_err("listing", src, e))?;
        let mut wrote = false;
        for name in &names {
            let child_rel = join(rel, name);
            let child_src = src.join(OsStr::from_bytes(name));
            let child_dst = dst.join(OsStr::from_bytes(name));
            let meta =
                fs::symlink_metadata(&child_src).map_err(|e| io_err("reading", &child_src, e))?;
            let status = if all {
                Status::New
            } else {
                self.old.status(&child_rel, &Stamp::of(&child_src)?)
            };
            if meta.is_dir() {
                make_dir(&child_dst)?;
                if status == Status::Replaced {
                    set_opaque(&child_dst)?;
                }
                let whole = matches!(status, Status::New | Status::Replaced);
                let inner = self.dir(&child_rel, &child_src, &child_dst, whole)?;
                if inner || status != Status::Same {
                    copy_meta(&child_src, &child_dst, &meta)?;
                    wrote = true;
                } else {
                    fs::remove_dir(&child_dst).map_err(|e| io_err("removing", &child_dst, e))?;
                }
            } else if status != Status::Same {
                self.copy_node(&child_src, &child_dst, &meta)?;
                wrote = true;
            }
        }
        if !all && let Some(old_names) = self.old.children.get(rel) {
            let dst_fd = crate::fsx::open_dir_path(dst).map_err(|e| io_err("opening", dst, e))?;
            for gone in old_names.iter().filter(|n| names.binary_search(n).is_err()) {
                crate::fsx::At::new(std::os::fd::AsFd::as_fd(&dst_fd), gone)
                    .make_whiteout()
                    .map_err(|e| {
                        io_err(
                            "writing the whiteout",
                            &dst.join(OsStr::from_bytes(gone)),
                            e,
                        )
                    })?;
                wrote = true;
            }
        }
        Ok(wrote)
    }

    fn copy_node(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), LayerError> {
        let ft = meta.file_type();
        if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&meta.ino()) {
                    return fs::hard_link(first, dst).map_err(|e| io_err("linking", dst, e));
                }
                self.links.insert(meta.ino(), dst.to_path_buf());
            }
            fs::copy(src, dst).map_err(|e| io_err("copying", src, e))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| io_err("reading", src, e))?;
            std::os::unix::fs::symlink(target, dst).map_err(|e| io_err("writing", dst, e))?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_socket() {
                // Sockets mean nothing in an image; the layer writer skips them too.
                return Ok(());
            }
            let kind = FileType::from_raw_mode(meta.mode());
            rustix::fs::mknodat(
                CWD,
                dst,
                kind,
                Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| io_err("writing", dst, e.into()))?;
        }
        copy_meta(src, dst, meta)
    }
}

fn make_dir(path: &Path) -> Result<(), LayerError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| io_err("creating", path, e))
}

fn set_opaque(dir: &Path) -> Result<(), LayerError> {
    rustix::fs::lsetxattr(dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
        .map_err(|e| io_err("marking opaque", dir, e.into()))
}

/// Owner, mode, xattrs and times of `src` onto `dst` (in that order: chown clears set-id
/// bits, and every change moves the times).
fn copy_meta(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), LayerError> {
    let writing = |e: io::Error| io_err("setting metadata of", dst, e);
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| writing(e.into()))?;
    if !meta.file_type().is_symlink() {
        rustix::fs::chmod(dst, Mode::from_raw_mode(meta.mode() & 0o7777))
            .map_err(|e| writing(e.into()))?;
    }
    copy_xattrs(src, dst).map_err(writing)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| writing(e.into()))
}

/// The xattrs a layer can carry (overlay's own and host labels stay behind).
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(src, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut value = vec![0u8; 65536];
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.")
            || name.starts_with(b"user.overlay.")
            || name == b"security.selinux"
        {
            continue;
        }
        let len = rustix::fs::lgetxattr(src, name, &mut value)?;
        rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Copies the merged view of a stack of overlay-format snapshots (top first) into `dest`,
/// an empty directory: whiteouts and opaque directories applied, owners, modes, times,
/// xattrs and hardlinks kept. Streams a merged tar through a pipe into a flattening apply.
pub fn materialize(lowers_top_first: &[&Path], dest: &Path) -> Result<(), LayerError> {
    let (reader, writer) = io::pipe().map_err(|e| LayerError::io("creating a pipe", e))?;
    let opts = crate::DiffOptions {
        compression: crate::Compression::None,
        source_date_epoch: None,
    };
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let (_, mut out) =
                crate::write_merged(lowers_top_first, &opts, io::BufWriter::new(writer))?;
            io::Write::flush(&mut out).map_err(|e| LayerError::io("writing the merged tree", e))
        });
        let applied = crate::apply(reader, dest, crate::ApplyMode::Flatten);
        let produced = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        applied?;
        produced
    })?;
    copy_root_meta(lowers_top_first.first().copied(), dest)
}

/// The root directory looks like the top snapshot's root (a fresh directory is 0700, which
/// would lock every other user out of the whole tree).
fn copy_root_meta(top: Option<&Path>, dest: &Path) -> Result<(), LayerError> {
    let (mode, uid, gid) = match top.map(fs::symlink_metadata) {
        Some(Ok(m)) => (m.mode() & 0o7777, m.uid(), m.gid()),
        _ => (0o755, 0, 0),
    };
    rustix::fs::chownat(
        CWD,
        dest,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::empty(),
    )
    .map_err(|e| io_err("setting the owner of", dest, e.into()))?;
    rustix::fs::chmod(dest, Mode::from_raw_mode(mode))
        .map_err(|e| io_err("setting the mode of", dest, e.into()))
}
