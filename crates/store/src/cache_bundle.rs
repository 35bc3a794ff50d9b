//! Build cache export and import (`--cache-to`, `--cache-from`): the records of some step keys
//! and their layer blobs, as an OCI image manifest whose config blob holds the records and whose
//! layers are the cached blobs. Any OCI registry stores that form (it is an ordinary image
//! manifest with a strata config media type), and on disk it is an OCI image layout directory
//! ([`CacheLayout`]).
//!
//! ```text
//! manifest  application/vnd.oci.image.manifest.v1+json, artifactType = CACHE_ARTIFACT_TYPE
//!   config  CACHE_CONFIG_MEDIA_TYPE: {"schemaVersion":1,"records":[{"key":…,"record":…},…]}
//!   layers  every cached layer blob, once, as its record describes it
//! ```
//!
//! Everything is written in a canonical form (records sorted by key, JSON keys sorted), so
//! exporting the same records twice gives the same digests and sends nothing new.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci::{Descriptor, Digest, Index, Manifest, MediaType, annotations};
use serde::{Deserialize, Serialize};

use crate::cache::CacheRecord;
use crate::{IoContext, Result, Store, StoreError};

/// The `artifactType` of a cache manifest.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.strata.build-cache.v1";
/// The media type of a cache manifest's config (the records).
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.build-cache.config.v1+json";
/// The largest cache config strata reads.
pub const MAX_CACHE_CONFIG_SIZE: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheConfig {
    schema_version: u32,
    records: Vec<CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    key: Digest,
    record: CacheRecord,
}

/// Cache records ready to export: the config and manifest bytes, and the layers they name.
#[derive(Clone, Debug)]
pub struct CacheBundle {
    pub records: BTreeMap<Digest, CacheRecord>,
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    /// The layer blobs, each once, in key order.
    pub layers: Vec<Descriptor>,
    pub manifest: Vec<u8>,
    pub manifest_descriptor: Descriptor,
}

fn invalid(what: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("{what}: {reason}"))
}

impl CacheBundle {
    /// A bundle of these records. Their `inputs` are left out: they explain a local miss, and
    /// they hold the values of build args and environment variables, which must not leave
    /// the machine.
    pub fn new(records: BTreeMap<Digest, CacheRecord>) -> Result<CacheBundle> {
        let records: BTreeMap<Digest, CacheRecord> = records
            .into_iter()
            .map(|(k, r)| {
                (
                    k,
                    CacheRecord {
                        inputs: Vec::new(),
                        ..r
                    },
                )
            })
            .collect();
        let config = CacheConfig {
            schema_version: 1,
            records: records
                .iter()
                .map(|(key, record)| CacheEntry {
                    key: key.clone(),
                    record: record.clone(),
                })
                .collect(),
        };
        let config_bytes = crate::images::canonical(&config)?;
        let config_descriptor = Descriptor::new(
            MediaType::Other(CACHE_CONFIG_MEDIA_TYPE.into()),
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let mut seen = BTreeSet::new();
        let mut layers = Vec::new();
        for layer in records.values().filter_map(|r| r.layer.as_ref()) {
            if seen.insert(layer.blob.digest.clone()) {
                layers.push(Descriptor::new(
                    layer.blob.media_type.clone(),
                    layer.blob.digest.clone(),
                    layer.blob.size,
                ));
            }
        }
        let mut manifest = Manifest::oci(config_descriptor.clone(), layers.clone());
        manifest.artifact_type = Some(CACHE_ARTIFACT_TYPE.into());
        let manifest_bytes = crate::images::canonical(&manifest)?;
        let mut manifest_descriptor = Descriptor::new(
            MediaType::OciManifest,
            Digest::of(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        manifest_descriptor.artifact_type = Some(CACHE_ARTIFACT_TYPE.into());
        Ok(CacheBundle {
            records,
            config: config_bytes,
            config_descriptor,
            layers,
            manifest: manifest_bytes,
            manifest_descriptor,
        })
    }

    /// Reads a cache manifest; `what` names it in errors. A manifest that is not a strata
    /// cache (another kind of image) is an error that says so.
    pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| invalid(what, format!("not a manifest: {e}")))?;
        if manifest.config.media_type.as_str() != CACHE_CONFIG_MEDIA_TYPE {
            return Err(invalid(
                what,
                format!(
                    "not a strata build cache (its config is {}, not {CACHE_CONFIG_MEDIA_TYPE})",
                    manifest.config.media_type.as_str()
                ),
            ));
        }
        if manifest.config.size > MAX_CACHE_CONFIG_SIZE {
            return Err(invalid(what, "the cache config is too large"));
        }
        Ok(manifest)
    }

    /// Reads a cache config: the records, by key. Records whose layer the manifest does not
    /// list are dropped (an importer could not fetch their blob).
    pub fn parse_config(
        bytes: &[u8],
        manifest: &Manifest,
        what: &str,
    ) -> Result<BTreeMap<Digest, CacheRecord>> {
        let config: CacheConfig = serde_json::from_slice(bytes)
            .map_err(|e| invalid(what, format!("not a strata cache config: {e}")))?;
        if config.schema_version != 1 {
            return Err(invalid(
                what,
                format!(
                    "cache schema version {} is not supported (this strata reads 1)",
                    config.schema_version
                ),
            ));
        }
        let listed: BTreeSet<&Digest> = manifest.layers.iter().map(|l| &l.digest).collect();
        Ok(config
            .records
            .into_iter()
            .filter(|e| {
                e.record
                    .layer
                    .as_ref()
                    .is_none_or(|l| listed.contains(&l.blob.digest))
            })
            .map(|e| (e.key, e.record))
            .collect())
    }
}

impl Store {
    /// The usable local records (layer blob present) of these keys.
    pub fn cache_records_for(&self, keys: &[Digest]) -> Result<BTreeMap<Digest, CacheRecord>> {
        let mut out = BTreeMap::new();
        for key in keys {
            if out.contains_key(key) {
                continue;
            }
            if let Some(record) = self.cache_get(key)? {
                out.insert(key.clone(), record);
            }
        }
        Ok(out)
    }

    /// Brings a cached layer blob into the store from a reader (a file, a download), verified
    /// against its descriptor, and checks its uncompressed content against the record's diff id.
    pub fn import_cached_layer(
        &self,
        reader: &mut dyn Read,
        layer: &crate::CachedLayer,
    ) -> Result<()> {
        if !self.has_blob(&layer.blob.digest) {
            let mut w = self.blob_writer()?;
            std::io::copy(reader, &mut w)
                .ctx(|| format!("importing cached layer {}", layer.blob.digest))?;
            w.commit(Some((&layer.blob.digest, Some(layer.blob.size))))?;
        }
        self.check_cached_layer(layer)
    }

    /// Whether a cached layer's blob has the diff id its record says.
    pub fn check_cached_layer(&self, layer: &crate::CachedLayer) -> Result<()> {
        let info = self.layer_info_or_compute(&layer.blob.digest)?;
        if info.diff_id != layer.diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: layer.blob.digest.clone(),
                expected: layer.diff_id.clone(),
                actual: info.diff_id,
            });
        }
        Ok(())
    }
}

/// A build cache kept in an OCI image layout directory (`type=local,dest=DIR`), under a tag
/// (`org.opencontainers.image.ref.name` in `index.json`; BuildKit's default is `latest`).
#[derive(Clone, Debug)]
pub struct CacheLayout {
    dir: PathBuf,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl CacheLayout {
    pub fn new(dir: &Path) -> CacheLayout {
        CacheLayout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    fn index(&self) -> Result<Option<Index>> {
        let path = self.dir.join("index.json");
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| invalid(&path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
        }
    }

    /// Writes a file atomically inside the layout (temp file beside it, fsync, rename).
    fn write_file(&self, target: &Path, source: &mut dyn Read) -> Result<()> {
        let ctx = || format!("writing {}", target.display());
        let mut tmp = tempfile::Builder::new()
            .prefix(".strata-tmp-")
            .tempfile_in(&self.dir)
            .ctx(ctx)?;
        std::io::copy(source, &mut tmp).ctx(ctx)?;
        tmp.flush().ctx(ctx)?;
        // Readable by all, as OCI layouts usually are (a CI cache may be shared).
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .ctx(ctx)?;
        tmp.as_file().sync_all().ctx(ctx)?;
        tmp.persist(target).map_err(|e| e.error).ctx(ctx)?;
        Ok(())
    }

    /// Writes the bundle under `tag`: the blobs the directory lacks (layers read verified from
    /// the store), the config and manifest, and `index.json` with the tag's entry replaced.
    /// Blobs nothing in `index.json` reaches any more are removed, so the directory does not
    /// grow with every export. Returns the number of blobs written.
    pub fn write(&self, store: &Store, bundle: &CacheBundle, tag: &str) -> Result<usize> {
        let blobs = self.blobs();
        std::fs::create_dir_all(&blobs).ctx(|| format!("creating {}", blobs.display()))?;
        let mut written = 0;
        for layer in &bundle.layers {
            let path = self.blob_path(&layer.digest);
            if path.is_file() {
                continue;
            }
            let mut reader = store.open_blob(&layer.digest)?;
            self.write_file(&path, &mut reader)?;
            written += 1;
        }
        for (desc, bytes) in [
            (&bundle.config_descriptor, &bundle.config),
            (&bundle.manifest_descriptor, &bundle.manifest),
        ] {
            let path = self.blob_path(&desc.digest);
            if !path.is_file() {
                self.write_file(&path, &mut bytes.as_slice())?;
                written += 1;
            }
        }
        crate::sync_dir(&blobs)?;
        self.write_file(&self.dir.join("oci-layout"), &mut &OCI_LAYOUT[..])?;
        let mut index = self.index()?.unwrap_or_default();
        index
            .manifests
            .retain(|m| m.annotations.get(annotations::REF_NAME).map(String::as_str) != Some(tag));
        let mut entry = bundle.manifest_descriptor.clone();
        entry
            .annotations
            .insert(annotations::REF_NAME.into(), tag.to_string());
        index.manifests.push(entry);
        let data =
            oci::canonical_json_pretty(&index).map_err(|e| invalid("serializing index.json", e))?;
        self.write_file(&self.dir.join("index.json"), &mut data.as_slice())?;
        crate::sync_dir(&self.dir)?;
        self.remove_unreachable(&index)?;
        Ok(written)
    }

    /// Removes the blobs `index` does not reach (following manifests and indexes).
    fn remove_unreachable(&self, index: &Index) -> Result<()> {
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        let mut todo: Vec<Descriptor> = index.manifests.clone();
        while let Some(desc) = todo.pop() {
            if !keep.insert(desc.digest.clone()) || desc.media_type.is_layer() {
                continue;
            }
            let Ok(data) = std::fs::read(self.blob_path(&desc.digest)) else {
                continue;
            };
            if data.len() as u64 > MAX_CACHE_CONFIG_SIZE {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            if value.get("manifests").is_some() {
                if let Ok(i) = serde_json::from_value::<Index>(value) {
                    todo.extend(i.manifests);
                }
            } else if value.get("config").is_some()
                && let Ok(m) = serde_json::from_value::<Manifest>(value)
            {
                keep.insert(m.config.digest.clone());
                keep.extend(m.layers.iter().map(|l| l.digest.clone()));
                keep.extend(m.subject.iter().map(|s| s.digest.clone()));
            }
        }
        let blobs = self.blobs();
        for entry in std::fs::read_dir(&blobs)
            .ctx(|| format!("listing {}", blobs.display()))?
            .flatten()
        {
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(|n| Digest::parse_hex(n).ok()) else {
                continue;
            };
            if !keep.contains(&digest) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// The records under `tag`, or `None` when the directory has no cache under it.
    pub fn read(&self, tag: &str) -> Result<Option<BTreeMap<Digest, CacheRecord>>> {
        let Some(index) = self.index()? else {
            return Ok(None);
        };
        let Some(entry) = index
            .manifests
            .iter()
            .find(|m| m.annotations.get(annotations::REF_NAME).map(String::as_str) == Some(tag))
        else {
            return Ok(None);
        };
        let what = format!("cache {}:{tag}", self.dir.display());
        let manifest_bytes = self.read_verified(&entry.digest, entry.size, &what)?;
        let manifest = CacheBundle::parse_manifest(&manifest_bytes, &what)?;
        let config = self.read_verified(&manifest.config.digest, manifest.config.size, &what)?;
        CacheBundle::parse_config(&config, &manifest, &what).map(Some)
    }

    fn read_verified(&self, digest: &Digest, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_CACHE_CONFIG_SIZE {
            return Err(invalid(what, format!("blob {digest} is too large")));
        }
        let path = self.blob_path(digest);
        let data = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        if Digest::of(&data) != *digest || data.len() as u64 != size {
            return Err(invalid(what, format!("blob {digest} is corrupt")));
        }
        Ok(data)
    }

    /// Copies a cached layer from the directory into the store, verified.
    pub fn import_layer(&self, store: &Store, layer: &crate::CachedLayer) -> Result<()> {
        if store.has_blob(&layer.blob.digest) {
            return store.check_cached_layer(layer);
        }
        let path = self.blob_path(&layer.blob.digest);
        let mut file = std::fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        store.import_cached_layer(&mut file, layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CachedLayer;
    use crate::test_support::temp_store;
    use oci::DiffId;

    fn layer(store: &Store, tar: &[u8]) -> CachedLayer {
        let blob = store.put_blob(tar).unwrap();
        CachedLayer {
            blob: Descriptor::new(MediaType::OciLayer, blob, tar.len() as u64),
            diff_id: DiffId(Digest::of(tar)),
        }
    }

    fn record(layer: Option<CachedLayer>) -> CacheRecord {
        CacheRecord {
            layer,
            created: "2024-01-01T00:00:00Z".into(),
            inputs: Vec::new(),
        }
    }

    #[test]
    fn a_bundle_is_canonical_and_parses_back() {
        let (_d, store) = temp_store();
        let a = layer(&store, b"tar a");
        let b = layer(&store, b"tar b");
        let mut records = BTreeMap::new();
        records.insert(Digest::of(b"k2"), record(Some(b.clone())));
        records.insert(Digest::of(b"k1"), record(Some(a.clone())));
        records.insert(Digest::of(b"k3"), record(Some(a.clone())));
        let bundle = CacheBundle::new(records.clone()).unwrap();
        assert_eq!(bundle.layers.len(), 2, "a shared blob is listed once");
        let again = CacheBundle::new(records.clone()).unwrap();
        assert_eq!(again.manifest, bundle.manifest);
        let manifest = CacheBundle::parse_manifest(&bundle.manifest, "m").unwrap();
        assert_eq!(manifest.artifact_type.as_deref(), Some(CACHE_ARTIFACT_TYPE));
        let parsed = CacheBundle::parse_config(&bundle.config, &manifest, "m").unwrap();
        assert_eq!(parsed, records);

        let image = Manifest::oci(
            Descriptor::new(MediaType::OciConfig, Digest::of(b"c"), 1),
            Vec::new(),
        );
        let err = CacheBundle::parse_manifest(&serde_json::to_vec(&image).unwrap(), "img:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("img:1: not a strata build cache"), "{err}");
    }

    #[test]
    fn a_layout_round_trips_and_drops_what_a_new_export_no_longer_needs() {
        let (_d, store) = temp_store();
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(&dir.path().join("cache"));
        assert!(layout.read("latest").unwrap().is_none());
        let a = layer(&store, b"tar a");
        let b = layer(&store, b"tar b");
        let mut records = BTreeMap::new();
        records.insert(Digest::of(b"k1"), record(Some(a.clone())));
        records.insert(Digest::of(b"k2"), record(Some(b.clone())));
        let bundle = CacheBundle::new(records.clone()).unwrap();
        assert_eq!(layout.write(&store, &bundle, "latest").unwrap(), 4);
        assert_eq!(layout.write(&store, &bundle, "latest").unwrap(), 0);
        assert_eq!(layout.read("latest").unwrap(), Some(records.clone()));
        assert!(layout.read("other").unwrap().is_none());

        // Into another store, verified.
        let (_d2, fresh) = temp_store();
        layout.import_layer(&fresh, &a).unwrap();
        assert!(fresh.has_blob(&a.blob.digest));
        let mut lying = b.clone();
        lying.diff_id = DiffId(Digest::of(b"something else"));
        assert!(matches!(
            layout.import_layer(&fresh, &lying),
            Err(StoreError::DiffIdMismatch { .. })
        ));

        // A new export under the same tag replaces the entry; b's blob goes.
        records.remove(&Digest::of(b"k2"));
        let smaller = CacheBundle::new(records.clone()).unwrap();
        layout.write(&store, &smaller, "latest").unwrap();
        assert!(!layout.blob_path(&b.blob.digest).exists());
        assert!(layout.blob_path(&a.blob.digest).exists());
        assert!(
            !layout
                .blob_path(&bundle.manifest_descriptor.digest)
                .exists()
        );
        assert_eq!(layout.read("latest").unwrap(), Some(records));
        let index: Index =
            serde_json::from_slice(&std::fs::read(layout.dir().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index.manifests.len(), 1);

        // A corrupt blob in the directory is refused.
        std::fs::write(layout.blob_path(&a.blob.digest), b"tampered").unwrap();
        let (_d3, other) = temp_store();
        assert!(layout.import_layer(&other, &a).is_err());
        assert!(!other.has_blob(&a.blob.digest));
    }
}
