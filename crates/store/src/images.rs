use std::collections::{BTreeMap, HashSet};

use oci::{
    Descriptor, Digest, ImageConfig, Index, Manifest, MediaType, Platform, Reference, annotations,
};

use crate::{IoContext, Result, Store, StoreError, write_atomic};

/// One entry of `content/index.json`: a top-level descriptor and the name it carries, if any.
/// An image with several names has several entries; an untagged (dangling) image has one entry
/// without a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedImage {
    pub name: Option<Reference>,
    pub descriptor: Descriptor,
}

/// A named image with its manifest and config read and verified.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// Every name that points at this image, in index order.
    pub names: Vec<Reference>,
    /// What `index.json` records (a manifest, or an index for multi-platform images).
    pub descriptor: Descriptor,
    /// The platform manifest in use (the same as `descriptor` unless that is an index).
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl ImageRecord {
    /// The image id, as docker defines it: the digest of the config blob.
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }

    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_descriptor.digest
    }

    /// Layer blobs bottom first, paired with their diff ids from the config.
    pub fn layers(&self) -> impl Iterator<Item = (&Descriptor, &oci::DiffId)> {
        self.manifest
            .layers
            .iter()
            .zip(self.config.rootfs.diff_ids.iter())
    }
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub(crate) fn init_layout(store: &Store) -> Result<()> {
    let layout = store.content_dir().join("oci-layout");
    if !layout.exists() {
        write_atomic(store, &layout, OCI_LAYOUT)?;
    }
    if !store.index_path().exists() {
        let _guard = store.lock_index()?;
        if !store.index_path().exists() {
            let data = oci::canonical_json_pretty(&Index::default())
                .map_err(|e| StoreError::Invalid(format!("serializing index.json: {e}")))?;
            write_atomic(store, &store.index_path(), &data)?;
        }
    }
    Ok(())
}

fn name_of(desc: &Descriptor) -> Option<Reference> {
    let full = desc.annotations.get(annotations::CONTAINERD_IMAGE_NAME)?;
    Reference::parse(full).ok()
}

fn named_descriptor(mut desc: Descriptor, name: &Reference) -> Descriptor {
    desc.annotations
        .retain(|k, _| k != annotations::CONTAINERD_IMAGE_NAME && k != annotations::REF_NAME);
    desc.annotations.insert(
        annotations::CONTAINERD_IMAGE_NAME.to_string(),
        name.to_string(),
    );
    if let Some(tag) = name.tag() {
        desc.annotations
            .insert(annotations::REF_NAME.to_string(), tag.to_string());
    }
    desc
}

fn unnamed_descriptor(mut desc: Descriptor) -> Descriptor {
    desc.annotations
        .retain(|k, _| k != annotations::CONTAINERD_IMAGE_NAME && k != annotations::REF_NAME);
    desc
}

impl Store {
    fn index_path(&self) -> std::path::PathBuf {
        self.content_dir().join("index.json")
    }

    pub(crate) fn read_index(&self) -> Result<Index> {
        Ok(self.read_index_bytes()?.0)
    }

    /// The index and the bytes it was read from.
    fn read_index_bytes(&self) -> Result<(Index, Vec<u8>)> {
        let path = self.index_path();
        let data = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        let index = serde_json::from_slice(&data)
            .map_err(|e| StoreError::Invalid(format!("{} is corrupt: {e}", path.display())))?;
        Ok((index, data))
    }

    /// Read-modify-write of `index.json` under the index lock. A change that changes nothing
    /// (re-tagging a rebuilt image with its name) writes nothing: the write's fsyncs wait on
    /// every earlier write to the disk, and a no-op rebuild would pay for them.
    fn update_index<T>(&self, change: impl FnOnce(&mut Vec<Descriptor>) -> T) -> Result<T> {
        let _guard = self.lock_index()?;
        let (mut index, before) = self.read_index_bytes()?;
        let out = change(&mut index.manifests);
        let data = oci::canonical_json_pretty(&index)
            .map_err(|e| StoreError::Invalid(format!("serializing index.json: {e}")))?;
        if data != before {
            write_atomic(self, &self.index_path(), &data)?;
        }
        Ok(out)
    }

    /// Every entry of the index, named or not.
    pub fn named_images(&self) -> Result<Vec<NamedImage>> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .map(|descriptor| NamedImage {
                name: name_of(&descriptor),
                descriptor,
            })
            .collect())
    }

    /// Points `name` at `desc`. An image that loses its last name stays as a dangling
    /// (`<none>`) entry, as docker keeps it, until `prune` removes it.
    pub fn set_name(&self, name: &Reference, desc: &Descriptor) -> Result<()> {
        let entry = named_descriptor(desc.clone(), name);
        self.update_index(|entries| {
            let old: Vec<Descriptor> = entries
                .iter()
                .filter(|d| name_of(d).as_ref() == Some(name))
                .cloned()
                .collect();
            entries.retain(|d| {
                name_of(d).as_ref() != Some(name)
                    && !(d.digest == desc.digest && name_of(d).is_none())
            });
            for o in old {
                if o.digest != desc.digest && !entries.iter().any(|d| d.digest == o.digest) {
                    entries.push(unnamed_descriptor(o));
                }
            }
            entries.push(entry);
        })
    }

    /// Records an image without a name (unless it already has an entry).
    pub fn add_unnamed(&self, desc: &Descriptor) -> Result<()> {
        self.update_index(|entries| {
            if !entries.iter().any(|d| d.digest == desc.digest) {
                entries.push(unnamed_descriptor(desc.clone()));
            }
        })
    }

    /// Removes one name. Returns whether the image it pointed to has no name left.
    pub fn remove_name(&self, name: &Reference) -> Result<Option<(Descriptor, bool)>> {
        self.update_index(|entries| {
            let pos = entries
                .iter()
                .position(|d| name_of(d).as_ref() == Some(name))?;
            let removed = entries.remove(pos);
            let orphaned = !entries.iter().any(|d| d.digest == removed.digest);
            Some((removed, orphaned))
        })
    }

    /// Removes every entry (named or not) for a top-level digest.
    pub fn remove_image(&self, digest: &Digest) -> Result<Vec<Reference>> {
        self.update_index(|entries| {
            let names = entries
                .iter()
                .filter(|d| &d.digest == digest)
                .filter_map(name_of)
                .collect();
            entries.retain(|d| &d.digest != digest);
            names
        })
    }

    /// Removes every unnamed entry; returns their descriptors.
    pub(crate) fn remove_dangling(&self) -> Result<Vec<Descriptor>> {
        self.update_index(|entries| {
            let (dangling, named): (Vec<_>, Vec<_>) =
                entries.drain(..).partition(|d| name_of(d).is_none());
            *entries = named;
            dangling
        })
    }

    /// Removes the names of every image whose digest is not in `keep`, leaving each as one
    /// unnamed entry (for [`Store::prune_images`] to remove); returns the names removed.
    pub(crate) fn untag_all_but(&self, keep: &HashSet<Digest>) -> Result<Vec<Reference>> {
        self.update_index(|entries| {
            let mut untagged = Vec::new();
            let mut out: Vec<Descriptor> = Vec::new();
            for desc in entries.drain(..) {
                let name = name_of(&desc);
                let stays = name.is_none() || keep.contains(&desc.digest);
                untagged.extend(name.filter(|_| !stays));
                let desc = if stays {
                    desc
                } else {
                    unnamed_descriptor(desc)
                };
                if stays || !out.iter().any(|d| d.digest == desc.digest) {
                    out.push(desc);
                }
            }
            *entries = out;
            untagged
        })
    }

    /// All images, one record per distinct top-level digest, in index order.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut order: Vec<Digest> = Vec::new();
        let mut groups: BTreeMap<Digest, (Descriptor, Vec<Reference>)> = BTreeMap::new();
        for entry in self.named_images()? {
            let group = groups
                .entry(entry.descriptor.digest.clone())
                .or_insert_with(|| {
                    order.push(entry.descriptor.digest.clone());
                    (unnamed_descriptor(entry.descriptor.clone()), Vec::new())
                });
            group.1.extend(entry.name);
        }
        order
            .iter()
            .filter_map(|d| groups.remove(d))
            .map(|(desc, names)| self.image_record(desc, names))
            .collect()
    }

    /// Reads a top-level descriptor into a record: an index resolves to the host's platform.
    pub fn image_record(
        &self,
        descriptor: Descriptor,
        names: Vec<Reference>,
    ) -> Result<ImageRecord> {
        let manifest_descriptor = self.platform_manifest(&descriptor, &Platform::host())?;
        let manifest: Manifest = self.read_json(&manifest_descriptor.digest, "manifest")?;
        let config: ImageConfig = self.read_json(&manifest.config.digest, "image config")?;
        Ok(ImageRecord {
            names,
            descriptor,
            manifest_descriptor,
            manifest,
            config,
        })
    }

    /// Reads and parses a small JSON blob, verifying its digest.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T> {
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).map_err(|source| StoreError::BadJson {
            what,
            digest: digest.clone(),
            source,
        })
    }

    /// Follows indexes down to the manifest for `platform`.
    pub fn platform_manifest(&self, desc: &Descriptor, platform: &Platform) -> Result<Descriptor> {
        let mut current = desc.clone();
        for _ in 0..8 {
            let is_index = match &current.media_type {
                m if m.is_index() => true,
                m if m.is_manifest() => false,
                _ => {
                    let v: serde_json::Value = self.read_json(&current.digest, "manifest")?;
                    v.get("manifests").is_some()
                }
            };
            if !is_index {
                return Ok(current);
            }
            let index: Index = self.read_json(&current.digest, "image index")?;
            current = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| p.matches(platform))
                        && (m.media_type.is_manifest() || m.media_type.is_index())
                })
                .cloned()
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "image index {} has no manifest for platform {platform}",
                        current.digest
                    ))
                })?;
        }
        Err(StoreError::Invalid(format!(
            "image index {} nests too deeply",
            desc.digest
        )))
    }

    /// Finds an image as docker does: by name (default tag `latest`), by `name@digest`, or by
    /// an image id or a unique prefix of one (`sha256:` optional, at least 4 hex digits…
    /// docker accepts any unique prefix; we ask for a few so a short tag is not taken as an id).
    pub fn resolve_image(&self, query: &str) -> Result<ImageRecord> {
        let entries = self.named_images()?;
        if let Ok(reference) = Reference::parse(query) {
            if let Some(digest) = reference.digest() {
                let hit = entries.iter().find(|e| {
                    &e.descriptor.digest == digest
                        && e.name.as_ref().map(|n| n.name()) == Some(reference.name())
                });
                if let Some(hit) = hit {
                    return self.record_for(&entries, &hit.descriptor);
                }
            } else if let Some(hit) = entries.iter().find(|e| e.name.as_ref() == Some(&reference)) {
                return self.record_for(&entries, &hit.descriptor);
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() >= 4
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            let mut found: Vec<ImageRecord> = Vec::new();
            for image in self.images()? {
                let matches = image.id().hex().starts_with(hex)
                    || (hex.len() == 64 && image.descriptor.digest.hex() == hex);
                if matches && !found.iter().any(|f| f.id() == image.id()) {
                    found.push(image);
                }
            }
            match found.len() {
                0 => {}
                1 => return Ok(found.remove(0)),
                _ => {
                    return Err(StoreError::Ambiguous(format!(
                        "{query} matches more than one image; give more digits"
                    )));
                }
            }
        }
        Err(StoreError::ImageNotFound(query.to_string()))
    }

    fn record_for(&self, entries: &[NamedImage], desc: &Descriptor) -> Result<ImageRecord> {
        let names = entries
            .iter()
            .filter(|e| e.descriptor.digest == desc.digest)
            .filter_map(|e| e.name.clone())
            .collect();
        self.image_record(unnamed_descriptor(desc.clone()), names)
    }

    /// Stores a config and a manifest for it, returning the manifest's descriptor.
    pub fn put_image(&self, config: &ImageConfig, layers: Vec<Descriptor>) -> Result<Descriptor> {
        let config_bytes = canonical(config)?;
        let config_digest = self.put_blob(&config_bytes)?;
        let manifest = Manifest::oci(
            Descriptor::new(
                MediaType::OciConfig,
                config_digest,
                config_bytes.len() as u64,
            ),
            layers,
        );
        let manifest_bytes = canonical(&manifest)?;
        let digest = self.put_blob(&manifest_bytes)?;
        Ok(Descriptor::new(
            MediaType::OciManifest,
            digest,
            manifest_bytes.len() as u64,
        ))
    }
}

/// Serializes a blob strata creates, so equal content always gets an equal digest.
pub(crate) fn canonical<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    oci::canonical_json(value).map_err(|e| StoreError::Invalid(format!("serializing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    fn tiny_image(store: &Store, marker: &str) -> Descriptor {
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            author: Some(marker.into()),
            ..Default::default()
        };
        store.put_image(&config, Vec::new()).unwrap()
    }

    #[test]
    fn names_point_at_images_and_old_ones_become_dangling() {
        let (_d, store) = temp_store();
        let a = tiny_image(&store, "a");
        let b = tiny_image(&store, "b");
        let name = Reference::parse("app:1").unwrap();
        store.set_name(&name, &a).unwrap();
        store
            .set_name(&Reference::parse("app:2").unwrap(), &a)
            .unwrap();
        let images = store.images().unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names.len(), 2);

        store.set_name(&name, &b).unwrap();
        let r = store.resolve_image("app:1").unwrap();
        assert_eq!(r.descriptor.digest, b.digest);
        assert_eq!(store.images().unwrap().len(), 2);

        let (removed, orphaned) = store
            .remove_name(&Reference::parse("app:2").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(removed.digest, a.digest);
        assert!(orphaned);
    }

    #[test]
    fn resolve_by_id_prefix_and_digest() {
        let (_d, store) = temp_store();
        let a = tiny_image(&store, "a");
        store.set_name(&Reference::parse("x").unwrap(), &a).unwrap();
        let rec = store.resolve_image("x").unwrap();
        let id = rec.id().hex();
        assert_eq!(store.resolve_image(&id[..8]).unwrap().id(), rec.id());
        assert_eq!(
            store.resolve_image(&format!("sha256:{id}")).unwrap().id(),
            rec.id()
        );
        let by_digest = format!("x@{}", a.digest);
        assert_eq!(store.resolve_image(&by_digest).unwrap().id(), rec.id());
        assert!(matches!(
            store.resolve_image("nope"),
            Err(StoreError::ImageNotFound(_))
        ));
    }

    #[test]
    fn storing_what_is_there_already_writes_nothing() {
        use std::os::unix::fs::MetadataExt;
        let (_d, store) = temp_store();
        let a = tiny_image(&store, "a");
        let name = Reference::parse("app:1").unwrap();
        store.set_name(&name, &a).unwrap();
        let inode = || std::fs::metadata(store.index_path()).unwrap().ino();
        let before = inode();
        store.set_name(&name, &a).unwrap();
        assert_eq!(inode(), before, "index.json was not replaced");
        store
            .set_name(&Reference::parse("app:2").unwrap(), &a)
            .unwrap();
        assert_ne!(inode(), before, "a real change is written");

        let blob = store.put_blob(b"config").unwrap();
        let written = std::fs::metadata(store.blob_path(&blob)).unwrap().ino();
        store.put_blob(b"config").unwrap();
        assert_eq!(
            std::fs::metadata(store.blob_path(&blob)).unwrap().ino(),
            written
        );
    }

    #[test]
    fn index_json_is_a_valid_oci_layout_index() {
        let (_d, store) = temp_store();
        let a = tiny_image(&store, "a");
        store
            .set_name(&Reference::parse("busybox").unwrap(), &a)
            .unwrap();
        let raw = std::fs::read_to_string(store.content_dir().join("index.json")).unwrap();
        assert!(raw.contains(r#""io.containerd.image.name": "docker.io/library/busybox:latest""#));
        assert!(raw.contains(r#""org.opencontainers.image.ref.name": "latest""#));
    }
}
