//! File-descriptor-relative filesystem helpers on top of rustix.
//!
//! Everything here works on a directory fd plus one name, never on a whole path, so no path
//! component is ever resolved by the kernel behind our back: callers decide how each parent
//! was reached (openat2 `RESOLVE_IN_ROOT` when applying, a plain walk when writing).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

/// The metadata strata cares about, copied out of `stat`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeInfo {
    pub file_type: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
}

impl NodeInfo {
    fn from_stat(st: &rustix::fs::Stat) -> Self {
        NodeInfo {
            file_type: FileType::from_raw_mode(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            #[allow(clippy::useless_conversion)] // nlink_t is u32 on some targets
            nlink: u64::from(st.st_nlink),
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// overlayfs marks a deleted name with a character device numbered 0/0.
    pub fn is_whiteout(&self) -> bool {
        self.file_type == FileType::CharacterDevice && self.rdev == 0
    }
}

/// A filesystem object named relative to an open directory; an empty name means the object
/// the fd itself refers to.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a [u8],
}

impl<'a> At<'a> {
    pub fn new(dir: BorrowedFd<'a>, name: &'a [u8]) -> Self {
        At { dir, name }
    }

    /// The object `fd` refers to (a directory, or an open regular file).
    pub fn itself(fd: BorrowedFd<'a>) -> Self {
        At { dir: fd, name: b"" }
    }

    /// `/proc/self/fd/<dir>/<name>`: the path-based xattr calls need a path, and going through
    /// the fd's magic link pins the parent we already resolved safely; the `l*` variants then
    /// leave the final component unfollowed. This is the only way to reach xattrs of symlinks
    /// and device nodes, which cannot (or must not) be opened.
    fn proc_path(&self) -> Vec<u8> {
        let mut p = format!("/proc/self/fd/{}/", self.dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(self.name);
        p
    }

    pub fn stat(&self) -> io::Result<NodeInfo> {
        let st = if self.name.is_empty() {
            rustix::fs::fstat(self.dir)?
        } else {
            rustix::fs::statat(self.dir, self.name, AtFlags::SYMLINK_NOFOLLOW)?
        };
        Ok(NodeInfo::from_stat(&st))
    }

    /// `stat`, with "nothing there" as `None`.
    pub fn stat_if_exists(&self) -> io::Result<Option<NodeInfo>> {
        match self.stat() {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of all extended attributes, in the order the filesystem lists them.
    pub fn xattr_names(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; 256];
        loop {
            let res = if self.name.is_empty() {
                rustix::fs::flistxattr(self.dir, &mut buf[..])
            } else {
                rustix::fs::llistxattr(self.proc_path(), &mut buf[..])
            };
            match res {
                Ok(n) => {
                    return Ok(buf[..n]
                        .split(|&b| b == 0)
                        .filter(|s| !s.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect());
                }
                Err(Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
                // A filesystem without xattr support has none to report.
                Err(Errno::NOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The value of one extended attribute, `None` when it is not set.
    pub fn xattr(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 256];
        loop {
            let res = if self.name.is_empty() {
                rustix::fs::fgetxattr(self.dir, key, &mut buf[..])
            } else {
                rustix::fs::lgetxattr(self.proc_path(), key, &mut buf[..])
            };
            match res {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                // xattr values are at most 64 KiB on Linux.
                Err(Errno::RANGE) if buf.len() < (1 << 17) => buf.resize(buf.len() * 4, 0),
                Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every extended attribute, sorted by name.
    pub fn xattrs(&self) -> io::Result<crate::header::Pairs> {
        let mut out = Vec::new();
        for name in self.xattr_names()? {
            // Removed between list and get: nothing to record.
            if let Some(value) = self.xattr(&name)? {
                out.push((name, value));
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn set_xattr(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let key = OsStr::from_bytes(key);
        if self.name.is_empty() {
            rustix::fs::fsetxattr(self.dir, key, value, XattrFlags::empty())?;
        } else {
            rustix::fs::lsetxattr(self.proc_path(), key, value, XattrFlags::empty())?;
        }
        Ok(())
    }

    /// Whether the object (stat as `info`) is an overlayfs whiteout: a 0/0 character device,
    /// or an xattr whiteout (see [`At::make_whiteout`]).
    pub fn is_whiteout(&self, info: &NodeInfo) -> io::Result<bool> {
        if info.is_whiteout() {
            return Ok(true);
        }
        if info.file_type != FileType::RegularFile || info.size != 0 {
            return Ok(false);
        }
        Ok(self.xattr(XATTR_WHITEOUT)?.is_some())
    }

    /// Leaves a whiteout at this (free) name: a 0/0 character device, or where the filesystem
    /// refuses one (an overlayfs, such as the root of the container strata runs in), an xattr
    /// whiteout as overlayfs reads it since Linux 6.7: an empty file with
    /// `user.overlay.whiteout`, in a directory whose `user.overlay.opaque` is `x` (unless it is
    /// already opaque, `y`, which hides everything below anyway).
    pub fn make_whiteout(&self) -> io::Result<()> {
        match rustix::fs::mknodat(
            self.dir,
            self.name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::PERM | Errno::NOTSUP | Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let file = rustix::fs::openat(
            self.dir,
            self.name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsetxattr(
            &file,
            OsStr::from_bytes(XATTR_WHITEOUT),
            b"y",
            XattrFlags::empty(),
        )?;
        let parent = At::itself(self.dir);
        if parent.xattr(crate::OPAQUE_XATTR.as_bytes())?.is_none() {
            parent.set_xattr(crate::OPAQUE_XATTR.as_bytes(), b"x")?;
        }
        Ok(())
    }

    /// Opens a directory without following a symlink in its place.
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        let name: &[u8] = if self.name.is_empty() {
            b"."
        } else {
            self.name
        };
        Ok(rustix::fs::openat(
            self.dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens a regular file for reading without following a symlink in its place.
    pub fn open_file(&self) -> io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            self.dir,
            self.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(self.dir, self.name, Vec::new())?.into_bytes())
    }

    /// Removes whatever is at this name, recursively for directories; a missing name is fine.
    pub fn remove_all(&self) -> io::Result<()> {
        match rustix::fs::unlinkat(self.dir, self.name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = self.open_dir()?;
        for child in list_dir(dir.as_fd())? {
            At::new(dir.as_fd(), &child).remove_all()?;
        }
        match rustix::fs::unlinkat(self.dir, self.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The xattr that makes an empty regular file an overlayfs whiteout (with `userxattr`).
pub(crate) const XATTR_WHITEOUT: &[u8] = b"user.overlay.whiteout";

/// Opens a directory given by a host path (the root of a tree or of an apply target).
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The names in a directory, without `.` and `..`, in no particular order.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Is this errno the one an io::Error carries?
pub(crate) fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_on_symlinks_go_through_the_parent_fd() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent", tmp.path().join("l")).unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let dir = open_dir_path(tmp.path()).unwrap();
        let link = At::new(dir.as_fd(), b"l");
        link.set_xattr(b"trusted.test", b"on-link").unwrap();
        assert_eq!(
            link.xattr(b"trusted.test").unwrap().as_deref(),
            Some(&b"on-link"[..])
        );
        assert_eq!(link.xattr(b"trusted.absent").unwrap(), None);
        let file = At::new(dir.as_fd(), b"f");
        assert_eq!(file.xattr(b"trusted.test").unwrap(), None);
        let root = At::itself(dir.as_fd());
        root.set_xattr(b"trusted.d", b"1").unwrap();
        assert!(root.xattr_names().unwrap().contains(&b"trusted.d".to_vec()));
    }

    #[test]
    fn remove_all_handles_trees_files_and_absence() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("d/e/f")).unwrap();
        std::fs::write(tmp.path().join("d/e/file"), b"x").unwrap();
        std::fs::write(tmp.path().join("plain"), b"x").unwrap();
        let dir = open_dir_path(tmp.path()).unwrap();
        At::new(dir.as_fd(), b"d").remove_all().unwrap();
        At::new(dir.as_fd(), b"plain").remove_all().unwrap();
        At::new(dir.as_fd(), b"absent").remove_all().unwrap();
        assert!(list_dir(dir.as_fd()).unwrap().is_empty());
    }
}
