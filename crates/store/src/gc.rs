use std::collections::HashSet;

use oci::{ChainId, Descriptor, Digest, ImageConfig, Index, Manifest, Reference, chain_ids};

use crate::snapshot::{remove_tree, tree_size};
use crate::{IoContext, Result, Store};

/// One thing garbage collection removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// A name removed from an image no container uses (`prune --all`).
    Untagged(Reference),
    /// An image record that had no name (its top-level digest).
    DanglingImage(Digest),
    Blob {
        digest: Digest,
        bytes: u64,
    },
    Snapshot {
        chain_id: ChainId,
        bytes: u64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<Removed>,
    /// Bytes freed on disk (blobs, snapshots and leftovers in `tmp/`).
    pub reclaimed: u64,
}

/// What garbage collection must keep, found by walking from the roots.
#[derive(Default)]
struct Marks {
    blobs: HashSet<Digest>,
    snapshots: HashSet<ChainId>,
}

impl Store {
    /// Removes dangling image records (but not those a container uses), then every blob and
    /// snapshot that no named image, container or build cache record references, and whatever interrupted work left in `tmp/`. Holds the store lock
    /// exclusively, so it waits for other strata processes and they wait for it.
    pub fn prune(&self) -> Result<PruneReport> {
        self.prune_images(false)
    }

    /// [`Store::prune`]; with `all_unused`, every image no container uses goes too, named or
    /// not, as with docker's `image prune --all`: its names first, then the image.
    pub fn prune_images(&self, all_unused: bool) -> Result<PruneReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        // An image a container was made from stays, named or not, as docker keeps it.
        let in_use: HashSet<Digest> = self
            .containers()?
            .into_iter()
            .map(|c| c.image_manifest.digest)
            .collect();
        if all_unused {
            let untagged = self.untag_all_but(&in_use)?;
            report
                .removed
                .extend(untagged.into_iter().map(Removed::Untagged));
        }
        for desc in self.remove_dangling()? {
            if in_use.contains(&desc.digest) {
                self.add_unnamed(&desc)?;
                continue;
            }
            report.removed.push(Removed::DanglingImage(desc.digest));
        }
        let mut marks = self.mark()?;
        self.mark_gzip_twins(&mut marks);
        self.sweep_blobs(&marks, &mut report)?;
        self.sweep_snapshots(&marks, &mut report)?;
        report.reclaimed += self.clear_tmp()?;
        Ok(report)
    }

    fn mark(&self) -> Result<Marks> {
        let mut marks = Marks::default();
        for entry in self.named_images()? {
            self.mark_descriptor(&entry.descriptor, &mut marks, 0)?;
        }
        // Containers keep the image they run on (its blobs and unpacked snapshots).
        for container in self.containers()? {
            self.mark_descriptor(&container.image_manifest, &mut marks, 0)?;
        }
        for (_, record) in self.cache_records()? {
            if let Some(layer) = record.layer {
                marks.blobs.insert(layer.blob.digest);
            }
        }
        Ok(marks)
    }

    /// Marks a blob and everything it references that is present. Unknown media types are
    /// sniffed, so an index or manifest written with a missing media type is still followed.
    fn mark_descriptor(&self, desc: &Descriptor, marks: &mut Marks, depth: usize) -> Result<()> {
        if depth > 8 || !self.has_blob(&desc.digest) || !marks.blobs.insert(desc.digest.clone()) {
            return Ok(());
        }
        if desc.media_type.is_layer() {
            return Ok(());
        }
        let Ok(value) = self.read_json::<serde_json::Value>(&desc.digest, "manifest") else {
            return Ok(());
        };
        if value.get("manifests").is_some() {
            if let Ok(index) = serde_json::from_value::<Index>(value) {
                for child in &index.manifests {
                    self.mark_descriptor(child, marks, depth + 1)?;
                }
            }
        } else if value.get("config").is_some()
            && let Ok(manifest) = serde_json::from_value::<Manifest>(value)
        {
            marks.blobs.insert(manifest.config.digest.clone());
            marks
                .blobs
                .extend(manifest.layers.iter().map(|l| l.digest.clone()));
            if let Ok(config) = self.read_json::<ImageConfig>(&manifest.config.digest, "config") {
                marks.snapshots.extend(chain_ids(&config.rootfs.diff_ids));
            }
        }
        Ok(())
    }

    fn sweep_blobs(&self, marks: &Marks, report: &mut PruneReport) -> Result<()> {
        let dir = self.blobs_dir();
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let digest = name.to_str().and_then(|n| Digest::parse_hex(n).ok());
            if digest.as_ref().is_some_and(|d| marks.blobs.contains(d)) {
                continue;
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(entry.path())
                .ctx(|| format!("removing {}", entry.path().display()))?;
            report.reclaimed += bytes;
            if let Some(digest) = digest {
                self.remove_layer_info(&digest);
                report.removed.push(Removed::Blob { digest, bytes });
            }
        }
        self.sweep_orphan_layer_info(marks)
    }

    /// Keeps the gzip twins (see `Store::gzip_twin`) of the layers that stay, and forgets the
    /// twins of the layers that go.
    fn mark_gzip_twins(&self, marks: &mut Marks) {
        let dir = self.meta_dir().join("gzip");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in rd.flatten() {
            let source = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse_hex(hex).ok());
            let twin = std::fs::read(entry.path())
                .ok()
                .and_then(|d| serde_json::from_slice::<Descriptor>(&d).ok());
            match (source, twin) {
                (Some(s), Some(t)) if marks.blobs.contains(&s) => {
                    marks.blobs.insert(t.digest);
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    fn sweep_orphan_layer_info(&self, marks: &Marks) -> Result<()> {
        let dir = self.meta_layers_dir();
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| Digest::parse_hex(hex).ok())
                .is_some_and(|d| marks.blobs.contains(&d));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn sweep_snapshots(&self, marks: &Marks, report: &mut PruneReport) -> Result<()> {
        for chain_id in self.snapshot_ids()? {
            if marks.snapshots.contains(&chain_id) {
                continue;
            }
            let bytes = self.remove_snapshot(&chain_id)?;
            report.reclaimed += bytes;
            report.removed.push(Removed::Snapshot { chain_id, bytes });
        }
        Ok(())
    }

    fn clear_tmp(&self) -> Result<u64> {
        let dir = self.tmp_dir();
        let mut freed = 0;
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            freed += tree_size(&path);
            if path.is_dir() && !path.is_symlink() {
                remove_tree(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;
    use oci::{MediaType, Reference};

    #[test]
    fn prune_keeps_named_content_and_removes_the_rest() {
        let (_d, store) = temp_store();
        let layer = store.put_blob(b"pretend layer").unwrap();
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        let desc = store
            .put_image(
                &config,
                vec![Descriptor::new(MediaType::OciLayer, layer.clone(), 13)],
            )
            .unwrap();
        store
            .set_name(&Reference::parse("kept").unwrap(), &desc)
            .unwrap();
        let stray = store.put_blob(b"nobody references me").unwrap();
        std::fs::write(store.tmp_dir().join("leftover"), b"xx").unwrap();

        let report = store.prune().unwrap();
        assert!(store.has_blob(&layer));
        assert!(store.has_blob(&desc.digest));
        assert!(!store.has_blob(&stray));
        assert!(report.removed.contains(&Removed::Blob {
            digest: stray,
            bytes: 20
        }));
        assert_eq!(report.reclaimed, 22);
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn prune_all_removes_named_images_too_but_not_what_containers_use() {
        let (_d, store) = temp_store();
        let image = |arch: &str| {
            let config = ImageConfig {
                architecture: arch.into(),
                ..Default::default()
            };
            store.put_image(&config, Vec::new()).unwrap()
        };
        let unused = image("amd64");
        let used = image("arm64");
        for (name, desc) in [("a:1", &unused), ("a:2", &unused), ("b", &used)] {
            store
                .set_name(&Reference::parse(name).unwrap(), desc)
                .unwrap();
        }
        let kept = store.prune().unwrap();
        assert!(kept.removed.is_empty(), "{:?}", kept.removed);
        std::fs::create_dir_all(store.containers_dir()).unwrap();
        store
            .create_container(&crate::test_support::container_for(&used))
            .unwrap();

        let report = store.prune_images(true).unwrap();
        let untagged: Vec<String> = report
            .removed
            .iter()
            .filter_map(|r| match r {
                Removed::Untagged(name) => Some(name.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(untagged, ["docker.io/library/a:1", "docker.io/library/a:2"]);
        let deleted = report
            .removed
            .iter()
            .filter(|r| matches!(r, Removed::DanglingImage(_)))
            .count();
        assert_eq!(deleted, 1, "one image, once: {:?}", report.removed);
        assert!(!store.has_blob(&unused.digest));
        assert!(store.has_blob(&used.digest));
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn prune_removes_dangling_images() {
        let (_d, store) = temp_store();
        let config = ImageConfig::default();
        let desc = store.put_image(&config, Vec::new()).unwrap();
        store.add_unnamed(&desc).unwrap();
        let report = store.prune().unwrap();
        assert!(
            report
                .removed
                .contains(&Removed::DanglingImage(desc.digest.clone()))
        );
        assert!(!store.has_blob(&desc.digest));
        assert!(store.images().unwrap().is_empty());
    }
}
