//! The local store: everything strata keeps on disk about images.
//!
//! It owns the folder layout under the store root (`content/` as an OCI image layout,
//! `snapshots-v2/`, `meta-v1/`, `tmp/`), content-addressed blob ingest and verified reads, the
//! named-image records (`content/index.json`), unpacked snapshots (one per chain id, shared by
//! every image that has that layer stack), the lock that lets several strata processes share one
//! store, and garbage collection.
//!
//! It never talks to a network, never runs a process and never parses a Dockerfile. It knows
//! image formats only as far as it must to find what a named image references.

mod blob;
mod cache;
mod cache_bundle;
mod containers;
mod gc;
mod images;
mod layers;
mod lock;
mod repo_meta;
mod snapshot;
mod volumes;

use std::io;
use std::path::{Path, PathBuf};

pub use blob::{BlobWriter, VerifiedReader};
pub use cache::{CacheRecord, CachedLayer};
pub use cache_bundle::{
    CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE, CacheBundle, CacheLayout, MAX_CACHE_CONFIG_SIZE,
};
pub use containers::{
    ContainerPaths, ContainerRecord, ContainersLock, HostConfig, MountPoint, is_valid_name,
};
pub use gc::{PruneReport, Removed};
pub use images::{ImageRecord, NamedImage};
pub use layers::LayerInfo;
pub use lock::StoreLock;
pub use snapshot::{PendingSnapshot, Snapshot};
pub use volumes::{Volume, VolumeMeta};

use oci::Digest;

/// Everything that can go wrong in the store, each naming the object involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not in the store")]
    BlobNotFound { digest: Digest },
    #[error(
        "content mismatch: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)"
    )]
    DigestMismatch {
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error(
        "layer {blob}: its uncompressed content is {actual}, but the image config says {expected}"
    )]
    DiffIdMismatch {
        blob: Digest,
        expected: oci::DiffId,
        actual: oci::DiffId,
    },
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("invalid {what} {digest}: {source}")]
    BadJson {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("unpacking layer {blob}: {source}")]
    Layer {
        blob: Digest,
        #[source]
        source: layer::LayerError,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

oci::io_context!(StoreError);

const CONTENT_DIR: &str = "content";
/// v2: opaque directories carry `user.overlay.opaque` (v1 had `trusted.overlay.opaque`).
const SNAPSHOTS_DIR: &str = "snapshots-v2";
const META_DIR: &str = "meta-v1";
const TMP_DIR: &str = "tmp";

/// A handle on a store root. Cheap to clone; holds no lock by itself (see [`Store::lock`]).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating its layout on first use.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [
            store.blobs_dir(),
            store.root.join(SNAPSHOTS_DIR),
            store.root.join(META_DIR).join("layers"),
            store.tmp_dir(),
        ] {
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        images::init_layout(&store)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `content/`: a valid OCI image layout that tools such as skopeo can read directly.
    pub fn content_dir(&self) -> PathBuf {
        self.root.join(CONTENT_DIR)
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.content_dir().join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Scratch space on the store's filesystem, so finished work can be renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR)
    }

    pub(crate) fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    pub(crate) fn meta_layers_dir(&self) -> PathBuf {
        self.root.join(META_DIR).join("layers")
    }
}

/// Writes a small file atomically: a temp file beside it, fsynced, renamed over the target, and
/// the directory fsynced, so a reader sees the old content or the new, never a mix.
pub(crate) fn write_atomic(store: &Store, target: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let ctx = || format!("writing {}", target.display());
    let mut tmp = tempfile::NamedTempFile::new_in(store.tmp_dir()).ctx(ctx)?;
    tmp.write_all(data).ctx(ctx)?;
    tmp.as_file().sync_all().ctx(ctx)?;
    tmp.persist(target).map_err(|e| e.error).ctx(ctx)?;
    if let Some(dir) = target.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("syncing {}", dir.display()))
}

/// The entries of one of the store's record directories (containers, volumes, cache keys);
/// `None` when it has not been made yet. Any other failure names the directory.
pub(crate) fn read_dir_if_exists(dir: &Path) -> Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("listing {}", dir.display())),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        (dir, store)
    }

    /// A container record made from `image`, enough for garbage collection to see it.
    pub fn container_for(image: &oci::Descriptor) -> ContainerRecord {
        ContainerRecord {
            id: "c".repeat(64),
            name: "user".into(),
            created: "2026-01-01T00:00:00Z".into(),
            path: "sh".into(),
            args: Vec::new(),
            image: String::new(),
            image_name: "b".into(),
            image_manifest: image.clone(),
            config: Default::default(),
            host_config: Default::default(),
            mounts: Vec::new(),
        }
    }
}
