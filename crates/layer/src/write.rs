//! Writing layer tars: a directory (an overlay upper dir or a plain tree) becomes a
//! deterministic tar, and a stack of overlay-format snapshots becomes the tar of its merged
//! view.
//!
//! One walker serves all three: it visits a stack of directories (a single one for
//! `write_diff`) depth-first with names sorted bytewise, and a [`Policy`] says what whiteouts
//! and opaque directories mean for this source. The walk keeps one open fd per level of the
//! current path and one directory listing per level, so memory follows the tree's shape,
//! never the size of the files.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci::DiffId;
use rustix::fs::FileType;

use crate::compression::Encoder;
use crate::fsx::{self, At, NodeInfo};
use crate::hashing::ParallelHashingWriter;
use crate::header::{self, EntryKind, EntryMeta, ExactReader, Pairs};
use crate::{Compression, LayerError, LayerStats, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// How to write a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffOptions {
    pub compression: Compression,
    /// Clamp every mtime to at most this (seconds since the epoch), for reproducible builds.
    pub source_date_epoch: Option<i64>,
}

/// The directory a layer is made from.
#[derive(Clone, Copy, Debug)]
pub enum DiffSource<'a> {
    /// The upper dir of an overlay mount after a step: 0/0 character devices become
    /// `.wh.NAME` entries and opaque directories get a `.wh..wh..opq` marker.
    OverlayUpper(&'a Path),
    /// A plain directory tree, written as it is (e.g. a COPY snapshot or an imported rootfs).
    Tree(&'a Path),
}

/// What whiteouts and opaque directories in the source mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Nothing is special: a 0/0 char device is a device.
    Literal,
    /// One overlay upper dir: turn overlay's markers into OCI whiteout entries.
    OverlayUpper,
    /// A stack of overlay-format layers: apply the markers, as the kernel would.
    Merge,
}

const OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// overlay features whose upper dirs a plain walk would misread (renamed dirs point at their
/// lower origin; metacopy files have no data in the upper dir). The sandbox mounts without
/// them; if they show up anyway we must fail rather than write a wrong layer.
const UNSUPPORTED_OVERLAY_XATTRS: [&[u8]; 4] = [
    b"trusted.overlay.redirect",
    b"trusted.overlay.metacopy",
    b"user.overlay.redirect",
    b"user.overlay.metacopy",
];
/// Host-specific MAC labels, not image content: they would make digests vary between hosts
/// (docker and containerd relabel at run time anyway).
const HOST_XATTRS: [&[u8]; 1] = [b"security.selinux"];

/// Writes the layer tar of `src` (compressed per `opts`) into `out`. The diff id (sha256 of
/// the uncompressed tar) is computed in the same streaming pass. Returns the writer back.
pub fn write_diff<W: Write>(
    src: DiffSource<'_>,
    opts: &DiffOptions,
    out: W,
) -> Result<(LayerStats, W), LayerError> {
    match src {
        DiffSource::OverlayUpper(dir) => write_layers(&[dir], Policy::OverlayUpper, opts, out),
        DiffSource::Tree(dir) => write_layers(&[dir], Policy::Literal, opts, out),
    }
}

/// The flattened filesystem of a stack of overlay-format snapshot dirs (top first) as a tar
/// (compressed per `opts`), computed without mounting: whiteouts and opaque directories hide
/// lower entries and a non-directory hides lower directories, as in overlayfs. No whiteout
/// appears in the output.
pub fn write_merged<W: Write>(
    lowers_top_first: &[&Path],
    opts: &DiffOptions,
    out: W,
) -> Result<(LayerStats, W), LayerError> {
    write_layers(lowers_top_first, Policy::Merge, opts, out)
}

fn write_layers<W: Write>(
    roots: &[&Path],
    policy: Policy,
    opts: &DiffOptions,
    out: W,
) -> Result<(LayerStats, W), LayerError> {
    let encoder = opts.compression.encoder(out)?;
    // Batches the tar crate's 512-byte headers and 8 KiB data chunks before hashing (on its
    // own thread) and compressing, whatever buffering `out` has.
    let mut sink = TarSink {
        builder: tar::Builder::new(ParallelHashingWriter::new(encoder)),
        first_path_of_inode: HashMap::new(),
        source_date_epoch: opts.source_date_epoch,
    };
    let walker = Walker { roots, policy };
    walker.walk(&mut sink)?;

    let finishing = |e| LayerError::io("finishing the layer tar", e);
    let hashing = sink.builder.into_inner().map_err(finishing)?;
    let (digest, uncompressed_size, encoder) = hashing.finish().map_err(finishing)?;
    let out = encoder.finish().map_err(finishing)?;
    Ok((
        LayerStats {
            diff_id: DiffId(digest),
            uncompressed_size,
        },
        out,
    ))
}

/// One directory level of the walk.
struct Frame {
    /// The tar path of this directory with a trailing `/`; empty at the root.
    prefix: Vec<u8>,
    /// This directory in every layer that contributes to it, top first: (layer index, fd).
    layers: Vec<(usize, OwnedFd)>,
    /// Children still to visit, sorted by tar name, reversed so `pop` yields the next one.
    pending: Vec<Child>,
}

struct Child {
    /// The name written to the tar (`.wh.NAME` for a converted whiteout).
    tar_name: Vec<u8>,
    /// The name on disk.
    src_name: Vec<u8>,
    /// Index into the frame's `layers` of the topmost layer holding this name.
    slot: usize,
    info: NodeInfo,
    whiteout: bool,
}

struct Walker<'a> {
    roots: &'a [&'a Path],
    policy: Policy,
}

impl Walker<'_> {
    fn walk<W: Write>(&self, sink: &mut TarSink<W>) -> Result<(), LayerError> {
        let root_layers = self.root_layers()?;
        let pending = self.children(&root_layers, b"")?;
        let mut stack = vec![Frame {
            prefix: Vec::new(),
            layers: root_layers,
            pending,
        }];

        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.pending.pop() else {
                stack.pop();
                continue;
            };
            let mut path = frame.prefix.clone();
            path.extend_from_slice(&child.tar_name);
            let (layer, fd) = &frame.layers[child.slot];
            let at = At::new(fd.as_fd(), &child.src_name);

            if self.policy == Policy::OverlayUpper && child.whiteout {
                sink.marker(path, &child.info)?;
                continue;
            }
            if !child.info.is_dir() {
                sink.node(at, &child.info, path, self.roots[*layer], self.policy)?;
                continue;
            }

            let dir_fd = at.open_dir().map_err(|e| self.err(*layer, &path, e))?;
            let dir_at = At::itself(dir_fd.as_fd());
            path.push(b'/');
            sink.node(
                dir_at,
                &child.info,
                path.clone(),
                self.roots[*layer],
                self.policy,
            )?;
            let opaque = self.policy != Policy::Literal
                && is_opaque(dir_at).map_err(|e| self.err(*layer, &path, e))?;
            if opaque && self.policy == Policy::OverlayUpper {
                let mut marker = path.clone();
                marker.extend_from_slice(WHITEOUT_OPAQUE);
                sink.marker(marker, &child.info)?;
            }

            let mut layers = vec![(*layer, dir_fd)];
            if self.policy == Policy::Merge && !opaque {
                let below = &frame.layers[child.slot + 1..];
                layers.extend(self.lower_dirs(below, &child.src_name, &path)?);
            }
            let pending = self.children(&layers, &path)?;
            stack.push(Frame {
                prefix: path,
                layers,
                pending,
            });
        }
        Ok(())
    }

    /// The root of every layer. overlayfs ignores the opaque xattr on a layer's root (checked
    /// against a real mount), so we do too, in both directions: the merged view shows every
    /// layer's root, and an upper root's opaque xattr writes no marker.
    fn root_layers(&self) -> Result<Vec<(usize, OwnedFd)>, LayerError> {
        self.roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                fsx::open_dir_path(root)
                    .map(|fd| (i, fd))
                    .map_err(|e| self.err(i, b"", e))
            })
            .collect()
    }

    /// The directories named `name` in the layers below the one that showed it, as overlayfs
    /// merges them: missing is skipped, a non-directory (or whiteout) ends the merge, and an
    /// opaque directory is the last one merged.
    fn lower_dirs(
        &self,
        below: &[(usize, OwnedFd)],
        name: &[u8],
        path: &[u8],
    ) -> Result<Vec<(usize, OwnedFd)>, LayerError> {
        let mut out = Vec::new();
        for (layer, fd) in below {
            let at = At::new(fd.as_fd(), name);
            let Some(info) = at.stat_if_exists().map_err(|e| self.err(*layer, path, e))? else {
                continue;
            };
            if !info.is_dir() {
                break;
            }
            let dir_fd = at.open_dir().map_err(|e| self.err(*layer, path, e))?;
            let opaque =
                is_opaque(At::itself(dir_fd.as_fd())).map_err(|e| self.err(*layer, path, e))?;
            out.push((*layer, dir_fd));
            if opaque {
                break;
            }
        }
        Ok(out)
    }

    /// The visible children of a directory given by its layers (top first), sorted by tar
    /// name and reversed for popping.
    fn children(
        &self,
        layers: &[(usize, OwnedFd)],
        dir_path: &[u8],
    ) -> Result<Vec<Child>, LayerError> {
        let mut topmost: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (slot, (layer, fd)) in layers.iter().enumerate() {
            let names = fsx::list_dir(fd.as_fd()).map_err(|e| self.err(*layer, dir_path, e))?;
            for name in names {
                topmost.entry(name).or_insert(slot);
            }
        }
        let mut children = Vec::with_capacity(topmost.len());
        for (src_name, slot) in topmost {
            let (layer, fd) = &layers[slot];
            let at = At::new(fd.as_fd(), &src_name);
            let fail = |e| self.err(*layer, &join(dir_path, &src_name), e);
            let info = at.stat().map_err(fail)?;
            let whiteout = self.policy != Policy::Literal && at.is_whiteout(&info).map_err(fail)?;
            let tar_name = match self.policy {
                Policy::Merge if whiteout => continue,
                Policy::OverlayUpper if whiteout => {
                    let mut n = WHITEOUT_PREFIX.to_vec();
                    n.extend_from_slice(&src_name);
                    n
                }
                _ => src_name.clone(),
            };
            children.push(Child {
                tar_name,
                src_name,
                slot,
                info,
                whiteout,
            });
        }
        children.sort_by(|a, b| b.tar_name.cmp(&a.tar_name));
        Ok(children)
    }

    fn err(&self, layer: usize, path: &[u8], e: io::Error) -> LayerError {
        reading(
            self.roots.get(layer).copied().unwrap_or(Path::new("")),
            path,
            e,
        )
    }
}

/// An I/O failure on `path` inside the source directory `origin`.
fn reading(origin: &Path, path: &[u8], source: io::Error) -> LayerError {
    LayerError::io(
        format!(
            "reading {} for a layer",
            origin
                .join(String::from_utf8_lossy(path).as_ref())
                .display()
        ),
        source,
    )
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.extend_from_slice(name);
    p
}

fn is_opaque(at: At<'_>) -> io::Result<bool> {
    for key in OPAQUE_XATTRS {
        if at.xattr(key)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The tar being written, plus what it must remember across entries.
struct TarSink<W: Write> {
    builder: tar::Builder<ParallelHashingWriter<Encoder<W>>>,
    /// (dev, inode) → the tar path it was first written at, for hardlinks.
    first_path_of_inode: HashMap<(u64, u64), Vec<u8>>,
    source_date_epoch: Option<i64>,
}

impl<W: Write> TarSink<W> {
    fn mtime(&self, mtime: i64) -> i64 {
        match self.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }

    /// An empty regular file standing for a whiteout or opaque marker, owned like the object
    /// it stands for.
    fn marker(&mut self, path: Vec<u8>, like: &NodeInfo) -> Result<(), LayerError> {
        let meta = EntryMeta::empty_file(
            path,
            like.mode & 0o777,
            u64::from(like.uid),
            u64::from(like.gid),
            self.mtime(like.mtime),
        );
        self.append(&meta, io::empty())
    }

    /// One filesystem object (directories: just their own entry). Sockets are skipped: they
    /// cannot be archived and mean nothing in an image.
    fn node(
        &mut self,
        at: At<'_>,
        info: &NodeInfo,
        path: Vec<u8>,
        origin: &Path,
        policy: Policy,
    ) -> Result<(), LayerError> {
        let ctx = |e| reading(origin, &path, e);
        let mut kind = match info.file_type {
            FileType::RegularFile => EntryKind::File { size: info.size },
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink {
                target: at.read_link().map_err(ctx)?,
            },
            FileType::CharacterDevice => EntryKind::CharDevice {
                major: rustix::fs::major(info.rdev),
                minor: rustix::fs::minor(info.rdev),
            },
            FileType::BlockDevice => EntryKind::BlockDevice {
                major: rustix::fs::major(info.rdev),
                minor: rustix::fs::minor(info.rdev),
            },
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket | FileType::Unknown => {
                tracing::debug!(path = %String::from_utf8_lossy(&path), "skipping socket");
                return Ok(());
            }
        };
        if kind != EntryKind::Dir && info.nlink > 1 {
            match self.first_path_of_inode.get(&(info.dev, info.ino)) {
                Some(first) => {
                    kind = EntryKind::Hardlink {
                        target: first.clone(),
                    }
                }
                None => {
                    self.first_path_of_inode
                        .insert((info.dev, info.ino), path.clone());
                }
            }
        }
        let xattrs = match kind {
            // Extractors take a hardlink's metadata from its first path.
            EntryKind::Hardlink { .. } => Vec::new(),
            _ => layer_xattrs(at.xattrs().map_err(ctx)?, policy, &path)?,
        };
        let meta = EntryMeta {
            kind,
            mode: info.mode,
            uid: u64::from(info.uid),
            gid: u64::from(info.gid),
            mtime: self.mtime(info.mtime),
            xattrs,
            path,
        };
        match meta.kind {
            EntryKind::File { size } => {
                let file = at.open_file().map_err(|e| reading(origin, &meta.path, e))?;
                self.append(&meta, ExactReader::new(file, size))
            }
            _ => self.append(&meta, io::empty()),
        }
    }

    fn append<R: io::Read>(&mut self, meta: &EntryMeta, data: R) -> Result<(), LayerError> {
        header::append_entry(&mut self.builder, meta, data).map_err(|e| {
            LayerError::io(
                format!("writing tar entry {}", String::from_utf8_lossy(&meta.path)),
                e,
            )
        })
    }
}

/// The xattrs that belong in a layer: overlay's own bookkeeping and host labels are dropped;
/// overlay features the tar format cannot express are refused.
fn layer_xattrs(all: Pairs, policy: Policy, path: &[u8]) -> Result<Pairs, LayerError> {
    let mut kept = Vec::with_capacity(all.len());
    for (name, value) in all {
        if policy == Policy::OverlayUpper && UNSUPPORTED_OVERLAY_XATTRS.contains(&&name[..]) {
            return Err(LayerError::Unsupported {
                path: String::from_utf8_lossy(path).into_owned(),
                reason: format!(
                    "the overlay upper dir uses {} (mount overlay without redirect_dir and \
                     metacopy to make layers from it)",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        let internal = OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p));
        if !internal && !HOST_XATTRS.contains(&&name[..]) {
            kept.push((name, value));
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_bookkeeping_xattrs_never_reach_a_layer() {
        let all = vec![
            (b"security.capability".to_vec(), vec![1]),
            (b"security.selinux".to_vec(), b"label".to_vec()),
            (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
            (b"trusted.overlay.origin".to_vec(), vec![0]),
            (b"user.overlay.impure".to_vec(), b"y".to_vec()),
            (b"user.mine".to_vec(), b"v".to_vec()),
        ];
        let kept = layer_xattrs(all, Policy::Literal, b"p").unwrap();
        let names: Vec<&[u8]> = kept.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, vec![&b"security.capability"[..], b"user.mine"]);
    }

    #[test]
    fn redirect_dirs_in_an_upper_dir_are_refused() {
        let all = vec![(b"trusted.overlay.redirect".to_vec(), b"/old".to_vec())];
        assert!(layer_xattrs(all.clone(), Policy::OverlayUpper, b"d/").is_err());
        assert!(layer_xattrs(all, Policy::Merge, b"d/").unwrap().is_empty());
    }

    #[test]
    fn clamping_only_lowers_times() {
        let sink = TarSink {
            builder: tar::Builder::new(ParallelHashingWriter::new(
                Compression::None.encoder(Vec::new()).unwrap(),
            )),
            first_path_of_inode: HashMap::new(),
            source_date_epoch: Some(100),
        };
        assert_eq!(sink.mtime(50), 50);
        assert_eq!(sink.mtime(150), 100);
    }
}
