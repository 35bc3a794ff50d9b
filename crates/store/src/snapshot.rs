use std::io::BufReader;
use std::path::{Path, PathBuf};

use oci::{ChainId, Descriptor, DiffId, chain_ids};

use crate::{ImageRecord, IoContext, LayerInfo, Result, Store, StoreError};

/// An unpacked layer stack member: the directory `snapshots-v2/<chain id>/fs` holds one layer's
/// files in overlay format (whiteouts as 0/0 character devices, opaque directories marked with
/// the `user.overlay.opaque` xattr), ready to be an overlayfs lower directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub chain_id: ChainId,
    pub path: PathBuf,
}

/// A snapshot being prepared in `tmp/`; becomes visible only through [`Store::commit_snapshot`].
pub struct PendingSnapshot {
    dir: tempfile::TempDir,
}

impl PendingSnapshot {
    /// The directory to fill: the future snapshot's `fs`.
    pub fn fs(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Store {
    fn snapshot_dir(&self, chain: &ChainId) -> PathBuf {
        self.snapshots_dir().join(chain.hex())
    }

    pub fn snapshot(&self, chain: &ChainId) -> Option<Snapshot> {
        let path = self.snapshot_dir(chain).join("fs");
        path.is_dir().then(|| Snapshot {
            chain_id: chain.clone(),
            path,
        })
    }

    pub fn new_pending_snapshot(&self) -> Result<PendingSnapshot> {
        let dir = tempfile::Builder::new()
            .prefix("snap-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| "creating a snapshot directory".to_string())?;
        std::fs::create_dir(dir.path().join("fs")).ctx(|| "creating a snapshot".to_string())?;
        Ok(PendingSnapshot { dir })
    }

    /// Makes a prepared snapshot visible under its chain id (an atomic rename). If another
    /// process committed the same chain id first, theirs is kept and ours dropped.
    ///
    /// The snapshot's files are not flushed to disk first: like containerd's overlay
    /// snapshotter, strata treats snapshots as derived data, while the layer blob they are
    /// derived from is fsynced on ingest. A `syncfs` here flushed every other process's dirty
    /// data as well, and cost seconds per step on a busy machine.
    pub fn commit_snapshot(&self, pending: PendingSnapshot, chain: &ChainId) -> Result<Snapshot> {
        let target = self.snapshot_dir(chain);
        let ctx = || format!("committing snapshot {chain}");
        let source = pending.dir.keep();
        match std::fs::rename(&source, &target) {
            Ok(()) => crate::sync_dir(&self.snapshots_dir())?,
            Err(_) if target.join("fs").is_dir() => {
                remove_tree(&source);
            }
            Err(e) => {
                remove_tree(&source);
                return Err(e).ctx(ctx);
            }
        }
        self.snapshot(chain)
            .ok_or_else(|| StoreError::Invalid(format!("snapshot {chain} vanished")))
    }

    /// The image's layers unpacked, bottom first; unpacks the ones not yet on disk (each at
    /// most once, shared with every image that has the same stack below it).
    pub fn ensure_snapshots(&self, image: &ImageRecord) -> Result<Vec<Snapshot>> {
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.manifest.layers.len() {
            return Err(StoreError::Invalid(format!(
                "image {} has {} layers but its config lists {} diff ids",
                image.id(),
                image.manifest.layers.len(),
                diff_ids.len()
            )));
        }
        chain_ids(diff_ids)
            .iter()
            .zip(image.manifest.layers.iter().zip(diff_ids))
            .map(|(chain, (blob, diff_id))| self.ensure_snapshot(chain, blob, diff_id))
            .collect()
    }

    /// The snapshot of `chain` (the stack ending with `blob`), unpacked from the blob when it
    /// is not on disk; the blob's uncompressed digest must be `diff_id`.
    pub fn ensure_snapshot(
        &self,
        chain: &ChainId,
        blob: &Descriptor,
        diff_id: &DiffId,
    ) -> Result<Snapshot> {
        if let Some(s) = self.snapshot(chain) {
            return Ok(s);
        }
        tracing::debug!("unpacking {} into snapshot {chain}", blob.digest);
        let pending = self.new_pending_snapshot()?;
        let reader = BufReader::with_capacity(1 << 20, self.open_blob(&blob.digest)?);
        let stats =
            layer::apply(reader, &pending.fs(), layer::ApplyMode::Overlay).map_err(|source| {
                StoreError::Layer {
                    blob: blob.digest.clone(),
                    source,
                }
            })?;
        if &stats.diff_id != diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: blob.digest.clone(),
                expected: diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        self.put_layer_info(
            &blob.digest,
            &LayerInfo {
                diff_id: stats.diff_id,
                uncompressed_size: stats.uncompressed_size,
            },
        )?;
        self.commit_snapshot(pending, chain)
    }

    /// Chain ids of every snapshot on disk.
    pub(crate) fn snapshot_ids(&self) -> Result<Vec<ChainId>> {
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            if let Some(Ok(d)) = entry.file_name().to_str().map(oci::Digest::parse_hex) {
                out.push(ChainId(d));
            }
        }
        Ok(out)
    }

    pub(crate) fn remove_snapshot(&self, chain: &ChainId) -> Result<u64> {
        let dir = self.snapshot_dir(chain);
        let size = tree_size(&dir);
        std::fs::remove_dir_all(&dir).ctx(|| format!("removing snapshot {chain}"))?;
        Ok(size)
    }
}

/// Best effort: used on paths strata itself created in `tmp/`.
pub(crate) fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
}

/// Bytes used by regular files under `path` (each inode once).
pub(crate) fn tree_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    total
}
