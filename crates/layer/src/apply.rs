//! Applying a layer tar onto a directory, safely.
//!
//! This is hand-written on purpose: the tar crate's `unpack` (like many extractors before it)
//! has had path-traversal and symlink CVEs, and it knows nothing of whiteouts. Here every
//! parent directory is opened with openat2 `RESOLVE_IN_ROOT`, so `..` and symlinks (absolute
//! ones included) resolve as if `root` were `/`; the final component is then only ever
//! touched through `*at` calls on that parent fd that do not follow it (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `O_EXCL` creation after removing what was there). Hardlink targets
//! are resolved the same way and must already exist. Whiteout names and `..` that would
//! leave the root are refused outright, as are tar xattrs in overlay's namespaces.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use oci::DiffId;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::compression::decompress;
use crate::fsx::{self, At};
use crate::hashing::HashingReader;
use crate::tar::{Kind, RawEntry, ReadError, TarReader};
use crate::{LayerError, LayerStats, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

const OVERLAY_OPAQUE_XATTR: &[u8] = crate::OPAQUE_XATTR.as_bytes();
/// Tar xattrs in these namespaces would let a layer forge overlayfs metadata (opaque dirs,
/// redirects) in a snapshot; overlay's own markers come only from whiteout entries.
const RESERVED_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// Mode of parent directories a layer needs but does not list.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// What applying a layer produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// The snapshot format for overlayfs lower dirs: a whiteout `.wh.NAME` becomes a 0/0
    /// character device `NAME`, and `.wh..wh..opq` the xattr `user.overlay.opaque=y` on
    /// its directory. Meant for an empty directory per layer, so hardlink targets must be in
    /// the same layer (as docker and containerd require for overlay snapshots too).
    Overlay,
    /// A plain tree: whiteouts delete what lower layers put there, an opaque marker removes
    /// the directory's children that this layer did not itself create.
    Flatten,
    /// Several layers applied in turn onto one overlay-format directory (squashing): like
    /// Flatten, a whiteout or opaque marker removes what the earlier layers put there; like
    /// Overlay, it then leaves a whiteout device or the opaque xattr, so the result still
    /// hides the layers below the squashed ones.
    Squash,
}

/// Applies a layer (plain, gzip or zstd, sniffed) onto `root`, which must exist.
///
/// Returns the diff id and size of the *whole* decompressed stream: after the tar's end the
/// rest is drained, so the hash covers every byte and can be checked against the config.
pub fn apply<R: Read>(layer: R, root: &Path, mode: ApplyMode) -> Result<LayerStats, LayerError> {
    let stream = decompress(BufReader::new(layer))?;
    let mut hashed = HashingReader::new(stream);
    let root_fd = fsx::open_dir_path(root)
        .map_err(|e| LayerError::io(format!("opening {}", root.display()), e))?;
    let root_real = fd_path(root_fd.as_fd())
        .map_err(|e| LayerError::io(format!("resolving {}", root.display()), e))?;
    let mut applier = Applier {
        root: root_fd,
        root_real,
        mode,
        chown: rustix::process::geteuid().is_root(),
        claims: HashMap::new(),
        dirs: Vec::new(),
        buf: vec![0; 128 << 10],
    };

    let mut tar = TarReader::new(&mut hashed);
    let mut last_path = String::from("(start of the layer)");
    loop {
        let entry = match tar.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(read_error(&last_path, e)),
        };
        last_path = String::from_utf8_lossy(&entry.path).into_owned();
        applier.entry(&entry, &mut tar)?;
    }
    applier.finish()?;

    let rest = tar.into_inner();
    io::copy(rest, &mut io::sink())
        .map_err(|e| read_error("(after the end of the tar)", e.into()))?;
    let (digest, size, _) = hashed.finish();
    Ok(LayerStats {
        diff_id: DiffId(digest),
        uncompressed_size: size,
    })
}

/// An I/O failure while applying the named entry.
fn entry_io(shown: &str, source: io::Error) -> LayerError {
    LayerError::io(format!("applying layer entry {shown:?}"), source)
}

fn read_error(near: &str, e: ReadError) -> LayerError {
    match e {
        ReadError::Malformed(reason) => LayerError::Malformed {
            entry: near.to_string(),
            reason,
        },
        ReadError::Io(e) => LayerError::io(format!("reading the layer near {near}"), e),
    }
}

/// Whether a path was written by the layer being applied (Flatten mode only): whiteouts and
/// opaque markers apply to lower layers, never to the layer's own entries, whatever the order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    Created,
    /// An ancestor of something created.
    Ancestor,
}

/// Directory mode and mtime, set after the whole layer so that creating children neither
/// bumps the mtime nor is blocked by a read-only mode.
struct DeferredDir {
    path: Vec<Vec<u8>>,
    mode: u32,
    mtime: i64,
}

struct Applier {
    root: OwnedFd,
    /// Where the root really is, to name claimed paths by where they landed.
    root_real: Vec<u8>,
    mode: ApplyMode,
    /// Only root can give files away; unprivileged applies keep the caller's ownership.
    chown: bool,
    /// Keyed by the path where an entry really landed (symlinked parents resolved), since a
    /// whiteout may reach the same place through another spelling.
    claims: HashMap<Vec<u8>, Claim>,
    dirs: Vec<DeferredDir>,
    /// File data goes through this one buffer.
    buf: Vec<u8>,
}

/// What an entry's final name means.
enum Role<'a> {
    Node,
    Whiteout(&'a [u8]),
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: aufs bookkeeping, ignored like docker does.
    AufsMeta,
}

impl Applier {
    fn entry<R: Read>(&mut self, e: &RawEntry, tar: &mut TarReader<R>) -> Result<(), LayerError> {
        let shown = String::from_utf8_lossy(&e.path).into_owned();
        let comps = clean_path(&e.path, &shown)?;
        let bad_xattr = e
            .xattrs
            .iter()
            .find(|(name, _)| RESERVED_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)));
        if let Some((name, _)) = bad_xattr {
            return Err(LayerError::Breakout {
                entry: shown,
                reason: format!(
                    "sets the reserved xattr {} (overlayfs metadata)",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        let Some((name, parent)) = comps.split_last() else {
            return self.root_entry(e, &shown);
        };
        if parent
            .first()
            .is_some_and(|top| top.starts_with(WHITEOUT_META_PREFIX))
        {
            // Inside aufs' `.wh..wh.plnk` and the like: bookkeeping of old docker layers.
            tracing::debug!(entry = %shown, "ignoring aufs metadata entry");
            return Ok(());
        }
        match role(name, &shown)? {
            Role::AufsMeta => {
                tracing::debug!(entry = %shown, "ignoring aufs metadata entry");
                Ok(())
            }
            Role::Opaque => self.opaque(parent, &shown),
            Role::Whiteout(target) => self.whiteout(parent, target, &shown),
            Role::Node => self.node(e, parent, name, tar, &shown),
        }
    }

    /// A `./` entry: the root directory's own metadata.
    fn root_entry(&mut self, e: &RawEntry, shown: &str) -> Result<(), LayerError> {
        if e.kind != Kind::Dir {
            return Err(LayerError::Malformed {
                entry: shown.to_string(),
                reason: "a non-directory entry names the root itself".into(),
            });
        }
        let fd = self.reopen_root().map_err(|err| entry_io(shown, err))?;
        self.dir_metadata(fd.as_fd(), e, shown)?;
        self.dirs.push(DeferredDir {
            path: Vec::new(),
            mode: e.mode,
            mtime: e.mtime,
        });
        Ok(())
    }

    fn node<R: Read>(
        &mut self,
        e: &RawEntry,
        parent: &[Vec<u8>],
        name: &[u8],
        tar: &mut TarReader<R>,
        shown: &str,
    ) -> Result<(), LayerError> {
        let io_err = |err| entry_io(shown, err);
        let parent_fd = self
            .parent_dir(parent, true)
            .map_err(io_err)?
            .ok_or_else(|| entry_io(shown, io::Error::from(io::ErrorKind::NotFound)))?;
        let at = At::new(parent_fd.as_fd(), name);
        self.create(e, at, parent, tar, shown)?;
        if self.mode != ApplyMode::Overlay {
            let landed = self.landed_path(parent_fd.as_fd(), name).map_err(io_err)?;
            self.claim(&landed);
        }
        Ok(())
    }

    fn create<R: Read>(
        &mut self,
        e: &RawEntry,
        at: At<'_>,
        parent: &[Vec<u8>],
        tar: &mut TarReader<R>,
        shown: &str,
    ) -> Result<(), LayerError> {
        let io_err = |err| entry_io(shown, err);
        let name = at.name;

        if e.kind == Kind::Hardlink {
            return self.hardlink(e, at, parent, shown);
        }
        let existing = at.stat_if_exists().map_err(io_err)?;
        let was_whiteout = match &existing {
            Some(info) => at.is_whiteout(info).map_err(io_err)?,
            None => false,
        };
        if e.kind == Kind::Dir {
            match existing {
                // Directory over directory: merge, keeping what is inside.
                Some(info) if info.is_dir() => {}
                other => {
                    if other.is_some() {
                        at.remove_all().map_err(io_err)?;
                    }
                    rustix::fs::mkdirat(at.dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|err| io_err(err.into()))?;
                }
            }
            let dir = at.open_dir().map_err(io_err)?;
            if self.mode != ApplyMode::Flatten && was_whiteout {
                // The layer deleted this name and then recreated it as a directory: nothing
                // from below may show through.
                set_opaque(dir.as_fd()).map_err(io_err)?;
            }
            self.dir_metadata(dir.as_fd(), e, shown)?;
            let mut path = parent.to_vec();
            path.push(name.to_vec());
            self.dirs.push(DeferredDir {
                path,
                mode: e.mode,
                mtime: e.mtime,
            });
            return Ok(());
        }

        // Anything else replaces what is there; removing it first also means a symlink in
        // its place is never written through.
        if existing.is_some() {
            at.remove_all().map_err(io_err)?;
        }
        match e.kind {
            Kind::File => self.regular_file(e, at, tar, shown),
            Kind::Symlink => {
                if e.link.is_empty() || e.link.contains(&0) {
                    return Err(LayerError::Malformed {
                        entry: shown.to_string(),
                        reason: "symlink with an empty or NUL-containing target".into(),
                    });
                }
                rustix::fs::symlinkat(&e.link[..], at.dir, name)
                    .map_err(|err| io_err(err.into()))?;
                self.special_metadata(e, at, false, shown)
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                let file_type = match e.kind {
                    Kind::CharDevice => FileType::CharacterDevice,
                    Kind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(e.dev_major, e.dev_minor);
                rustix::fs::mknodat(at.dir, name, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|err| io_err(err.into()))?;
                self.special_metadata(e, at, true, shown)
            }
            Kind::Dir | Kind::Hardlink => Ok(()), // handled above
        }
    }

    fn regular_file<R: Read>(
        &mut self,
        e: &RawEntry,
        at: At<'_>,
        tar: &mut TarReader<R>,
        shown: &str,
    ) -> Result<(), LayerError> {
        let io_err = |err| entry_io(shown, err);
        let fd = rustix::fs::openat(
            at.dir,
            at.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| io_err(err.into()))?;
        let mut file = std::fs::File::from(fd);
        loop {
            let n = tar
                .read_data(&mut self.buf)
                .map_err(|err| read_error(shown, err))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(io_err)?;
        }
        // Ownership first: chown clears setuid bits and file capabilities.
        self.chown_fd(file.as_fd(), e, shown)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(e.mode)).map_err(|err| io_err(err.into()))?;
        set_xattrs(At::itself(file.as_fd()), &e.xattrs, shown)?;
        rustix::fs::futimens(&file, &times(e.mtime)).map_err(|err| io_err(err.into()))?;
        Ok(())
    }

    /// Owner, mode, xattrs and times of a symlink or device node, all without following it.
    fn special_metadata(
        &self,
        e: &RawEntry,
        at: At<'_>,
        chmod: bool,
        shown: &str,
    ) -> Result<(), LayerError> {
        let io_err = |err: Errno| entry_io(shown, err.into());
        if self.chown {
            let (uid, gid) = ids(e, shown)?;
            rustix::fs::chownat(
                at.dir,
                at.name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err)?;
        }
        if chmod {
            // Just created by mknodat, so not a symlink: following is harmless here, and
            // mknod's mode was reduced by the umask.
            rustix::fs::chmodat(
                at.dir,
                at.name,
                Mode::from_raw_mode(e.mode),
                AtFlags::empty(),
            )
            .map_err(io_err)?;
        }
        set_xattrs(at, &e.xattrs, shown)?;
        rustix::fs::utimensat(at.dir, at.name, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err)
    }

    /// Owner and xattrs now; mode and mtime are deferred to [`Applier::finish`].
    fn dir_metadata(
        &self,
        dir: BorrowedFd<'_>,
        e: &RawEntry,
        shown: &str,
    ) -> Result<(), LayerError> {
        self.chown_fd(dir, e, shown)?;
        set_xattrs(At::itself(dir), &e.xattrs, shown)
    }

    fn chown_fd(&self, fd: BorrowedFd<'_>, e: &RawEntry, shown: &str) -> Result<(), LayerError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = ids(e, shown)?;
        rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|err| entry_io(shown, err.into()))
    }

    fn hardlink(
        &self,
        e: &RawEntry,
        at: At<'_>,
        parent: &[Vec<u8>],
        shown: &str,
    ) -> Result<(), LayerError> {
        let target = clean_path(&e.link, shown)?;
        let Some((target_name, target_parent)) = target.split_last() else {
            return Err(LayerError::Malformed {
                entry: shown.to_string(),
                reason: "hardlink to the root directory".into(),
            });
        };
        if target_parent == parent && target_name == at.name {
            return Ok(()); // a link to itself: nothing to do
        }
        let missing = || LayerError::Malformed {
            entry: shown.to_string(),
            reason: format!(
                "hardlink target {} does not exist in the layer or below it",
                String::from_utf8_lossy(&e.link)
            ),
        };
        let target_dir = self
            .parent_dir(target_parent, false)
            .map_err(|err| entry_io(shown, err))?
            .ok_or_else(missing)?;
        let target_at = At::new(target_dir.as_fd(), target_name);
        match target_at
            .stat_if_exists()
            .map_err(|err| entry_io(shown, err))?
        {
            None => return Err(missing()),
            Some(info) if info.is_dir() => {
                return Err(LayerError::Malformed {
                    entry: shown.to_string(),
                    reason: "hardlink to a directory".into(),
                });
            }
            Some(_) => {}
        }
        if at
            .stat_if_exists()
            .map_err(|err| entry_io(shown, err))?
            .is_some()
        {
            at.remove_all().map_err(|err| entry_io(shown, err))?;
        }
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never what it points to.
        rustix::fs::linkat(
            target_at.dir,
            target_name,
            at.dir,
            at.name,
            AtFlags::empty(),
        )
        .map_err(|err| entry_io(shown, err.into()))
    }

    fn whiteout(
        &mut self,
        parent: &[Vec<u8>],
        target: &[u8],
        shown: &str,
    ) -> Result<(), LayerError> {
        let io_err = |err| entry_io(shown, err);
        match self.mode {
            ApplyMode::Overlay => {
                let parent_fd = self
                    .parent_dir(parent, true)
                    .map_err(io_err)?
                    .ok_or_else(|| entry_io(shown, io::Error::from(io::ErrorKind::NotFound)))?;
                mark_whiteout(At::new(parent_fd.as_fd(), target)).map_err(io_err)
            }
            ApplyMode::Flatten => {
                let Some(parent_fd) = self.parent_dir(parent, false).map_err(io_err)? else {
                    return Ok(()); // nothing below to delete
                };
                let rel = self
                    .landed_path(parent_fd.as_fd(), target)
                    .map_err(io_err)?;
                self.remove_lower(At::new(parent_fd.as_fd(), target), &rel)
                    .map_err(io_err)
            }
            ApplyMode::Squash => {
                let parent_fd = self
                    .parent_dir(parent, true)
                    .map_err(io_err)?
                    .ok_or_else(|| entry_io(shown, io::Error::from(io::ErrorKind::NotFound)))?;
                let at = At::new(parent_fd.as_fd(), target);
                let rel = self
                    .landed_path(parent_fd.as_fd(), target)
                    .map_err(io_err)?;
                self.remove_lower(at, &rel).map_err(io_err)?;
                mark_whiteout(at).map_err(io_err)
            }
        }
    }

    fn opaque(&mut self, dir: &[Vec<u8>], shown: &str) -> Result<(), LayerError> {
        let io_err = |err| entry_io(shown, err);
        match self.mode {
            ApplyMode::Overlay => {
                if dir.is_empty() {
                    tracing::warn!(
                        entry = %shown,
                        "opaque marker at the layer root: overlayfs ignores it, lower layers stay visible"
                    );
                }
                let fd = self
                    .parent_dir(dir, true)
                    .map_err(io_err)?
                    .ok_or_else(|| entry_io(shown, io::Error::from(io::ErrorKind::NotFound)))?;
                set_opaque(fd.as_fd()).map_err(io_err)
            }
            ApplyMode::Flatten | ApplyMode::Squash => {
                let Some(fd) = self
                    .parent_dir(dir, self.mode == ApplyMode::Squash)
                    .map_err(io_err)?
                else {
                    return Ok(());
                };
                for child in fsx::list_dir(fd.as_fd()).map_err(io_err)? {
                    let rel = self.landed_path(fd.as_fd(), &child).map_err(io_err)?;
                    self.remove_lower(At::new(fd.as_fd(), &child), &rel)
                        .map_err(io_err)?;
                }
                if self.mode == ApplyMode::Squash && !dir.is_empty() {
                    set_opaque(fd.as_fd()).map_err(io_err)?;
                }
                Ok(())
            }
        }
    }

    /// Removes what lower layers left at `at` (tar path `rel`), keeping everything this layer
    /// created: unclaimed paths go entirely, claimed directories are searched.
    fn remove_lower(&self, at: At<'_>, rel: &[u8]) -> io::Result<()> {
        if !self.claims.contains_key(rel) {
            return at.remove_all();
        }
        let Some(info) = at.stat_if_exists()? else {
            return Ok(());
        };
        if !info.is_dir() {
            // A non-directory at a claimed path is this layer's own.
            return Ok(());
        }
        let dir = at.open_dir()?;
        for child in fsx::list_dir(dir.as_fd())? {
            let mut child_rel = rel.to_vec();
            child_rel.push(b'/');
            child_rel.extend_from_slice(&child);
            self.remove_lower(At::new(dir.as_fd(), &child), &child_rel)?;
        }
        Ok(())
    }

    /// Claims a landed path and marks its ancestors.
    fn claim(&mut self, landed: &[u8]) {
        let comps: Vec<&[u8]> = landed.split(|&b| b == b'/').collect();
        let mut path = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(c);
            let claim = if i + 1 == comps.len() {
                Claim::Created
            } else {
                Claim::Ancestor
            };
            let slot = self.claims.entry(path.clone()).or_insert(claim);
            if claim == Claim::Created {
                *slot = Claim::Created;
            }
        }
    }

    /// Directory modes and mtimes, last-listed first (children before their parents, and the
    /// last entry for a directory listed twice wins). A directory replaced later in the layer
    /// is skipped (opening it without following fails).
    fn finish(&mut self) -> Result<(), LayerError> {
        let dirs = std::mem::take(&mut self.dirs);
        let mut done = HashSet::new();
        for d in dirs.iter().rev() {
            if !done.insert(&d.path) {
                continue;
            }
            let shown = String::from_utf8_lossy(&join(&d.path)).into_owned();
            let fd = match d.path.split_last() {
                None => self.reopen_root().map(Some),
                Some((name, parent)) => match self.parent_dir(parent, false) {
                    Ok(Some(p)) => match At::new(p.as_fd(), name).open_dir() {
                        Ok(fd) => Ok(Some(fd)),
                        Err(e) if is_gone(&e) => Ok(None),
                        Err(e) => Err(e),
                    },
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
            }
            .map_err(|e| entry_io(&shown, e))?;
            let Some(fd) = fd else { continue };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .and_then(|()| rustix::fs::futimens(&fd, &times(d.mtime)))
                .map_err(|e| entry_io(&shown, e.into()))?;
        }
        Ok(())
    }

    /// The path, relative to the root, where `name` in the directory `dir` really is.
    fn landed_path(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
        let dir_path = fd_path(dir)?;
        let rel = if dir_path == self.root_real {
            Vec::new()
        } else {
            let mut prefix = self.root_real.clone();
            if !prefix.ends_with(b"/") {
                prefix.push(b'/');
            }
            match dir_path.strip_prefix(&prefix[..]) {
                Some(rel) => rel.to_vec(),
                // RESOLVE_IN_ROOT makes this unreachable; never guess if it happens.
                None => {
                    return Err(io::Error::other(format!(
                        "{} resolved outside the root",
                        String::from_utf8_lossy(&dir_path)
                    )));
                }
            }
        };
        let mut out = rel;
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        Ok(out)
    }

    fn reopen_root(&self) -> io::Result<OwnedFd> {
        At::itself(self.root.as_fd()).open_dir()
    }

    /// Opens the directory at `comps` inside the root (symlinks resolved as if the root were
    /// `/`). Missing directories are created 0755 when `create`, else give `None`, as does a
    /// non-directory in the way when not creating.
    fn parent_dir(&self, comps: &[Vec<u8>], create: bool) -> io::Result<Option<OwnedFd>> {
        if comps.is_empty() {
            return self.reopen_root().map(Some);
        }
        match open_in_root(self.root.as_fd(), &join(comps)) {
            Ok(fd) => return Ok(Some(fd)),
            Err(e) if create && fsx::is_errno(&e, Errno::NOENT) => {}
            Err(e) if !create && is_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
        // Walk down, creating what is missing. Each step is resolved from the root again,
        // so a symlink met on the way is still confined to it.
        let mut dir = self.reopen_root()?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            dir = match open_in_root(self.root.as_fd(), &prefix) {
                Ok(fd) => fd,
                Err(e) if fsx::is_errno(&e, Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, &comps[i][..], Mode::from_raw_mode(0o700)) {
                        Ok(()) => {
                            let created = At::new(dir.as_fd(), &comps[i]).open_dir()?;
                            // Exact mode, whatever the umask.
                            rustix::fs::fchmod(&created, Mode::from_raw_mode(IMPLICIT_DIR_MODE))?;
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_in_root(self.root.as_fd(), &prefix)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(Some(dir))
    }
}

/// openat2 with `RESOLVE_IN_ROOT`: `..` stops at the root and absolute symlinks start from
/// it. Retried on EAGAIN, which the kernel returns when a concurrent rename may have raced
/// the lookup.
fn open_in_root(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other.map_err(Into::into),
        }
    }
}

/// Where an open directory is, from the kernel's own record of it.
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::readlink(link, Vec::new())?.into_bytes())
}

/// Errors meaning "no directory there (any more)".
fn is_gone(e: &io::Error) -> bool {
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|&errno| fsx::is_errno(e, errno))
}

fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    At::itself(dir).set_xattr(OVERLAY_OPAQUE_XATTR, b"y")
}

/// Leaves overlay's whiteout at `at`: a 0/0 character device when nothing is there. The
/// layer's own entries survive its whiteouts; a directory of its own must then hide
/// everything below it.
fn mark_whiteout(at: At<'_>) -> io::Result<()> {
    match at.stat_if_exists()? {
        Some(info) if info.is_dir() => set_opaque(at.open_dir()?.as_fd()),
        Some(_) => Ok(()),
        None => at.make_whiteout(),
    }
}

/// Sets an entry's xattrs. A filesystem that does not support one is warned about, not fatal
/// (as with docker); anything else is an error.
fn set_xattrs(at: At<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], shown: &str) -> Result<(), LayerError> {
    for (name, value) in xattrs {
        match at.set_xattr(name, value) {
            Ok(()) => {}
            Err(e) if fsx::is_errno(&e, Errno::NOTSUP) => {
                tracing::warn!(entry = %shown, xattr = %String::from_utf8_lossy(name), "xattr not supported here; skipped");
            }
            Err(e) => {
                return Err(LayerError::io(
                    format!(
                        "applying layer entry {shown:?}: setting xattr {}",
                        String::from_utf8_lossy(name)
                    ),
                    e,
                ));
            }
        }
    }
    Ok(())
}

fn ids(e: &RawEntry, shown: &str) -> Result<(Uid, Gid), LayerError> {
    // u32::MAX is -1 to chown ("leave unchanged"), so it is not a valid id either.
    let valid = |id: u64| u32::try_from(id).ok().filter(|&v| v != u32::MAX);
    match (valid(e.uid), valid(e.gid)) {
        (Some(uid), Some(gid)) => Ok((Uid::from_raw(uid), Gid::from_raw(gid))),
        _ => Err(LayerError::Malformed {
            entry: shown.to_string(),
            reason: format!("owner {}:{} is out of range", e.uid, e.gid),
        }),
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The components of an entry name, relative to the root: leading `/` and `.` components
/// are dropped and `..` is resolved lexically. A `..` that would climb above the root is
/// refused rather than clamped: no honest layer has one.
fn clean_path(raw: &[u8], shown: &str) -> Result<Vec<Vec<u8>>, LayerError> {
    if raw.contains(&0) {
        return Err(LayerError::Malformed {
            entry: shown.to_string(),
            reason: "NUL byte in a path".into(),
        });
    }
    let mut comps: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if comps.pop().is_none() {
                    return Err(LayerError::Breakout {
                        entry: shown.to_string(),
                        reason: "`..` climbs above the root".into(),
                    });
                }
            }
            name => comps.push(name.to_vec()),
        }
    }
    Ok(comps)
}

/// Classifies an entry's final name.
fn role<'a>(name: &'a [u8], shown: &str) -> Result<Role<'a>, LayerError> {
    if name == WHITEOUT_OPAQUE {
        return Ok(Role::Opaque);
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Ok(Role::AufsMeta);
    }
    let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Role::Node);
    };
    if target.is_empty() || target == b"." || target == b".." {
        return Err(LayerError::Breakout {
            entry: shown.to_string(),
            reason: "whiteout of an empty name, `.` or `..`".into(),
        });
    }
    Ok(Role::Whiteout(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<String> {
        clean_path(s.as_bytes(), s)
            .unwrap()
            .into_iter()
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
    }

    #[test]
    fn paths_are_made_relative_and_lexically_clean() {
        assert_eq!(comps("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("./a//b/./c/"), ["a", "b", "c"]);
        assert_eq!(comps("a/b/../c"), ["a", "c"]);
        assert!(comps("./").is_empty());
        assert!(matches!(
            clean_path(b"a/../../x", "x"),
            Err(LayerError::Breakout { .. })
        ));
        assert!(matches!(
            clean_path(b"../x", "x"),
            Err(LayerError::Breakout { .. })
        ));
        assert!(matches!(
            clean_path(b"a\0b", "x"),
            Err(LayerError::Malformed { .. })
        ));
    }

    #[test]
    fn whiteout_names_are_classified_and_checked() {
        assert!(matches!(role(b".wh..wh..opq", ""), Ok(Role::Opaque)));
        assert!(matches!(role(b".wh..wh.plnk", ""), Ok(Role::AufsMeta)));
        assert!(matches!(role(b".wh.foo", ""), Ok(Role::Whiteout(b"foo"))));
        assert!(matches!(role(b"foo", ""), Ok(Role::Node)));
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert!(matches!(role(bad, ""), Err(LayerError::Breakout { .. })));
        }
    }

    #[test]
    fn ids_reject_minus_one_and_overflow() {
        let mut e = RawEntry {
            kind: Kind::File,
            path: Vec::new(),
            link: Vec::new(),
            size: 0,
            mode: 0,
            uid: 1000,
            gid: 1000,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        };
        assert!(ids(&e, "").is_ok());
        e.uid = u64::from(u32::MAX);
        assert!(ids(&e, "").is_err());
        e.uid = 1 << 40;
        assert!(ids(&e, "").is_err());
    }
}
