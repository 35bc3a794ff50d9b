//! Layer tars: the one place where strata turns directories into layers and layers back into
//! directories.
//!
//! This crate owns:
//! - writing a layer from a directory change, either an overlay upper dir (whiteouts and
//!   opaque dirs become OCI `.wh.` entries) or a plain tree walk ([`write_diff`]), and the
//!   merged view of a stack of snapshots ([`write_merged`]), as deterministic tars: entries
//!   depth-first with names sorted bytewise, normalized headers, mtimes optionally clamped to
//!   `SOURCE_DATE_EPOCH`;
//! - applying a layer onto a directory without letting any entry escape it ([`apply`]), as an
//!   overlay-format snapshot or as a flattened tree;
//! - compression with pinned codec settings ([`Compression`]) and sniffing on read
//!   ([`decompress`]);
//! - the digests of the uncompressed stream (diff ids), computed while streaming
//!   ([`HashingWriter`], [`HashingReader`]), also while a blob is being ingested
//!   ([`copy_sniffing`]);
//! - reading tar streams from untrusted sources, bounded and with Go's archive/tar semantics
//!   ([`tar::TarReader`]), for layers and for image archives read in place.
//!
//! It never knows about the store, images, manifests or registries: callers hand it readers,
//! writers and directories. It never holds a layer in memory, and never mounts anything.

mod apply;
mod changes;
mod compression;
mod fsx;
mod hashing;
mod header;
mod sniff;
pub mod tar;
mod write;

use std::io;

pub use apply::{ApplyMode, apply};
pub use changes::{TreeState, materialize};
pub use compression::{Compression, Decompressor, Encoder, decompress};
pub use hashing::{HashingReader, HashingWriter, ParallelHashingWriter};
pub use sniff::{CopyError, Sniffed, copy_sniffing};
pub use write::{DiffOptions, DiffSource, write_diff, write_merged};

/// The OCI whiteout prefix: `.wh.NAME` deletes `NAME` from the layers below.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Names starting with this are whiteout metadata, not whiteouts of a file.
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque marker: the directory holding it hides the lower layers' contents.
pub const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// How a snapshot marks an opaque directory: overlayfs's `user.overlay.` namespace (the
/// sandbox mounts with `userxattr`), which a rootless process may set; `trusted.` needs
/// CAP_SYS_ADMIN on the host, so root and rootless snapshots could not share a format.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Leaves an overlayfs whiteout at `path` (nothing may be there): a 0/0 character device,
/// or an xattr whiteout where the filesystem refuses one (see `fsx::At::make_whiteout`).
pub fn make_whiteout(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let parent = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a whiteout needs a name"))?;
    let dir = fsx::open_dir_path(parent)?;
    fsx::At::new(std::os::fd::AsFd::as_fd(&dir), name.as_bytes()).make_whiteout()
}

/// Whether `dir` (a snapshot or upper directory) is marked opaque.
pub fn is_opaque(dir: &std::path::Path) -> bool {
    let mut buf = [0u8; 2];
    rustix::fs::lgetxattr(dir, OPAQUE_XATTR, &mut buf).is_ok_and(|n| n == 1 && buf[0] == b'y')
}

/// What a layer stream amounts to once written or applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar.
    pub diff_id: oci::DiffId,
    /// Length of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
}

/// Why a layer could not be written or applied. Every variant names the entry or path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A filesystem or stream operation failed on the named object.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The layer stream is not a valid tar, or holds an entry that makes no sense.
    #[error("malformed layer at entry {entry:?}: {reason}")]
    Malformed { entry: String, reason: String },
    /// An entry tried to reach outside the target directory or forge overlay metadata; the
    /// layer is hostile or broken, and nothing was written outside the root.
    #[error("layer entry {entry:?} refused: {reason}")]
    Breakout { entry: String, reason: String },
    /// The source directory holds something a layer cannot express.
    #[error("cannot make a layer from {path:?}: {reason}")]
    Unsupported { path: String, reason: String },
}

impl LayerError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LayerError::Io {
            context: context.into(),
            source,
        }
    }
}
