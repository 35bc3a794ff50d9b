//! Helpers shared by the layer integration tests: tar builders for hand-made (and hostile)
//! layers, tree snapshots for comparing directories, and overlay mounts.
// Each test binary uses a different subset; helpers panic on failure like the tests do.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

/// Builds tars entry by entry with the tar crate's low-level header API, so that names and
/// link targets can be anything (the high-level helpers refuse `..`).
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
    pending_pax: Vec<(String, Vec<u8>)>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
            pending_pax: Vec::new(),
        }
    }

    /// PAX records for the next entry.
    pub fn pax(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.pending_pax.push((key.to_string(), value.to_vec()));
        self
    }

    pub fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }

    /// Any entry: raw type flag, name and link bytes, data, mode.
    pub fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        if name.len() > 100 {
            self.pending_pax.push(("path".into(), name.to_vec()));
        }
        if link.len() > 100 {
            self.pending_pax.push(("linkpath".into(), link.to_vec()));
        }
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_cksum();
        if !self.pending_pax.is_empty() {
            let recs = std::mem::take(&mut self.pending_pax);
            self.b
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), &v[..])))
                .unwrap();
        }
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(tar::EntryType::Regular, name.as_bytes(), b"", data, 0o644)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(tar::EntryType::Directory, name.as_bytes(), b"", b"", 0o755)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        self.raw(tar::EntryType::Char, name.as_bytes(), b"", b"", 0o600);
        // Patch the device numbers into the header just written.
        let buf = self.b.get_mut();
        let start = buf.len() - 512;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&buf[start..]);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        buf[start..].copy_from_slice(h.as_bytes());
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// What a test compares about one filesystem object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For objects visible at two or more paths: the first of them, bytewise.
    pub hardlink_group: Option<String>,
}

/// Every object under `root` (the root itself excluded), keyed by relative path. Overlay's
/// own xattrs and SELinux labels are left out.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    for paths in inodes.values() {
        if paths.len() > 1 {
            let first = paths.iter().min().unwrap().clone();
            for p in paths {
                out.get_mut(p).unwrap().hardlink_group = Some(first.clone());
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let md = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = FileType::from_raw_mode(md.mode());
        let kind = match ft {
            FileType::RegularFile => "file",
            FileType::Directory => "dir",
            FileType::Symlink => "symlink",
            FileType::CharacterDevice => "char",
            FileType::BlockDevice => "block",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::Unknown => "unknown",
        };
        let node = Node {
            kind,
            mode: md.permissions().mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            content: (kind == "file").then(|| fs::read(&path).unwrap()),
            link: (kind == "symlink").then(|| {
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: matches!(kind, "char" | "block")
                .then(|| (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()))),
            xattrs: xattrs_of(&path),
            hardlink_group: None,
        };
        if kind != "dir" {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        out.insert(rel, node);
        if kind == "dir" {
            walk(root, &path, out, inodes);
        }
    }
}

pub fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.")
            || name.starts_with(b"user.overlay.")
            || name == b"security.selinux"
        {
            continue;
        }
        let mut val = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name, &mut val[..]).unwrap();
        out.push((name.to_vec(), val[..len].to_vec()));
    }
    out.sort();
    out
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut val = vec![0u8; 65536];
    rustix::fs::lgetxattr(path, name, &mut val[..])
        .ok()
        .map(|len| val[..len].to_vec())
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 123_456_789,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn mknod(path: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        path,
        ft,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// The entries of a tar as the tar crate reads them: (path, type flag byte).
pub fn tar_listing(bytes: &[u8]) -> Vec<(String, u8)> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}

/// An overlay mount, unmounted on drop.
pub struct OverlayMount {
    pub target: PathBuf,
}

impl OverlayMount {
    /// Mounts `lowers` (top first), with an upper and work dir when given. redirect_dir,
    /// index and metacopy are off, as strata's sandbox mounts them.
    pub fn new(lowers: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> Self {
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut opts =
            format!("lowerdir={lower},redirect_dir=nofollow,index=off,metacopy=off,userxattr");
        if let Some((upper, work)) = upper {
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay with {opts}");
        OverlayMount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

pub fn mkdirs(root: &Path, dirs: &[&str]) {
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}
