//! Where an analysed image comes from: the local store, or an image archive file read in
//! place (a docker-archive from `docker save`/`strata save`, or an OCI archive), never
//! loaded into the store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use layer::tar::{Kind, TarReader, clean_path};
use oci::{DiffId, Digest, ImageConfig, Index, Manifest, MediaType, Platform, annotations};
use serde::Deserialize;
use store::{ImageRecord, Store};

use crate::{AnalyzeError, Result};

/// One layer of an image, as its manifest describes it.
#[derive(Clone, Debug)]
pub struct LayerInput {
    /// The blob's digest (for a docker-archive layer without one, the digest of the
    /// uncompressed tar, which is what the archive holds).
    pub digest: Digest,
    pub media_type: MediaType,
    /// Bytes of the blob as stored and transferred.
    pub compressed_size: u64,
    /// What the image config says the uncompressed tar hashes to.
    pub diff_id: Option<DiffId>,
}

/// An image ready to be analysed.
pub struct ImageSource {
    /// How the user named it.
    pub name: String,
    /// The image id (config digest).
    pub id: Digest,
    /// "store" or the archive's path.
    pub origin: String,
    pub config: ImageConfig,
    /// Bytes of the config blob (transferred with the image).
    pub config_size: u64,
    pub layers: Vec<LayerInput>,
    /// Other images an archive holds (only the first is analysed).
    pub others: Vec<String>,
    backend: Backend,
}

enum Backend {
    Store(Store),
    Archive {
        path: PathBuf,
        /// Archive path of each layer's data: (offset, length).
        sections: Vec<(u64, u64)>,
    },
}

impl ImageSource {
    /// An image in the store.
    pub fn from_store(store: &Store, name: &str, record: ImageRecord) -> ImageSource {
        let diff_ids = record.config.rootfs.diff_ids.clone();
        let layers = record
            .manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| LayerInput {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                compressed_size: d.size,
                diff_id: diff_ids.get(i).cloned(),
            })
            .collect();
        ImageSource {
            name: name.to_string(),
            id: record.id().clone(),
            origin: "store".to_string(),
            config_size: record.manifest.config.size,
            config: record.config,
            layers,
            others: Vec::new(),
            backend: Backend::Store(store.clone()),
        }
    }

    /// The first image of an archive file, read in place.
    pub fn from_archive(path: &Path) -> Result<ImageSource> {
        ArchiveIndex::open(path)?.image(path)
    }

    /// The layer's blob as stored (possibly compressed).
    pub fn open_layer(&self, index: usize) -> Result<Box<dyn Read + '_>> {
        let layer = self
            .layers
            .get(index)
            .ok_or_else(|| AnalyzeError::Invalid {
                what: self.name.clone(),
                reason: format!("no layer {index}"),
            })?;
        match &self.backend {
            Backend::Store(store) => Ok(Box::new(store.open_blob(&layer.digest)?)),
            Backend::Archive { path, sections } => {
                let (offset, len) = sections[index];
                let mut file = File::open(path).map_err(|e| io_err(path, e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| io_err(path, e))?;
                Ok(Box::new(file.take(len)))
            }
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> AnalyzeError {
    AnalyzeError::Io {
        context: format!("reading {}", path.display()),
        source,
    }
}

fn archive_err(path: &Path, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::Archive {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Small JSON files are read into memory; cap them.
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// The entries of an archive file: where each file's data sits, and the links between them.
struct ArchiveIndex {
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
    file: File,
}

impl ArchiveIndex {
    fn open(path: &Path) -> Result<ArchiveIndex> {
        let mut file = File::open(path).map_err(|e| io_err(path, e))?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(|e| io_err(path, e))?;
        if magic[..n].starts_with(&[0x1f, 0x8b]) || magic[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(archive_err(
                path,
                "the archive is compressed; decompress it first (gunzip/zstd -d) so its layers can be read in place",
            ));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
        let input =
            BufReader::with_capacity(64 << 10, file.try_clone().map_err(|e| io_err(path, e))?);
        let mut walker = TarReader::seeking(input).map_err(|e| io_err(path, e))?;
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        while let Some(entry) = walker
            .next_entry()
            .map_err(|e| archive_err(path, format!("not a readable tar: {e}")))?
        {
            let Some(name) = clean_path(&entry.path) else {
                continue;
            };
            match entry.kind {
                Kind::File => {
                    files.insert(name, (walker.position(), entry.size));
                }
                Kind::Symlink | Kind::Hardlink => {
                    let target = String::from_utf8_lossy(&entry.link).into_owned();
                    let target = if entry.kind == Kind::Symlink {
                        match name.rsplit_once('/') {
                            Some((parent, _)) => format!("{parent}/{target}"),
                            None => target,
                        }
                    } else {
                        target
                    };
                    if let Some(t) = clean_path(target.as_bytes()) {
                        links.insert(name, t);
                    }
                }
                _ => {}
            }
        }
        Ok(ArchiveIndex { files, links, file })
    }

    fn resolve(&self, name: &str) -> Option<(u64, u64)> {
        let mut p = clean_path(name.as_bytes())?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Some(*f);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }

    fn read(&self, archive: &Path, name: &str) -> Result<Vec<u8>> {
        let (offset, len) = self
            .resolve(name)
            .ok_or_else(|| archive_err(archive, format!("it has no {name}")))?;
        if len > MAX_METADATA_BYTES {
            return Err(archive_err(archive, format!("{name} is implausibly large")));
        }
        let mut file = self.file.try_clone().map_err(|e| io_err(archive, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_err(archive, e))?;
        let mut data = Vec::with_capacity(len as usize);
        BufReader::new(file)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|e| io_err(archive, e))?;
        Ok(data)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, archive: &Path, name: &str) -> Result<T> {
        let data = self.read(archive, name)?;
        serde_json::from_slice(&data).map_err(|e| archive_err(archive, format!("{name}: {e}")))
    }

    fn image(self, path: &Path) -> Result<ImageSource> {
        if self.resolve("manifest.json").is_some() {
            self.docker_image(path)
        } else if self.resolve("index.json").is_some() {
            self.oci_image(path)
        } else {
            Err(archive_err(
                path,
                "it has neither manifest.json (docker save) nor index.json (OCI)",
            ))
        }
    }

    fn docker_image(self, path: &Path) -> Result<ImageSource> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.json(path, "manifest.json")?;
        let names: Vec<String> = entries
            .iter()
            .map(|e| {
                e.repo_tags
                    .as_ref()
                    .and_then(|t| t.first().cloned())
                    .unwrap_or_else(|| e.config.clone())
            })
            .collect();
        let entry = entries
            .into_iter()
            .next()
            .ok_or_else(|| archive_err(path, "manifest.json lists no image"))?;
        let config_bytes = self.read(path, &entry.config)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| archive_err(path, format!("{}: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(archive_err(
                path,
                format!(
                    "the image has {} layers but its config lists {} diff ids",
                    entry.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        let mut sections = Vec::new();
        for (i, name) in entry.layers.iter().enumerate() {
            let section = self
                .resolve(name)
                .ok_or_else(|| archive_err(path, format!("it has no layer {name}")))?;
            let diff_id = config.rootfs.diff_ids[i].clone();
            let digest = blob_digest(name).unwrap_or_else(|| diff_id.digest().clone());
            layers.push(LayerInput {
                digest,
                media_type: MediaType::DockerLayer,
                compressed_size: section.1,
                diff_id: Some(diff_id),
            });
            sections.push(section);
        }
        let id = Digest::of(&config_bytes);
        Ok(archive_source(
            path,
            names,
            id,
            &config_bytes,
            config,
            layers,
            sections,
        ))
    }

    fn blob(&self, path: &Path, digest: &Digest) -> Result<Vec<u8>> {
        self.read(
            path,
            &format!("blobs/{}/{}", digest.algorithm(), digest.hex()),
        )
    }

    fn oci_image(self, path: &Path) -> Result<ImageSource> {
        let index: Index = self.json(path, "index.json")?;
        let names: Vec<String> = index
            .manifests
            .iter()
            .map(|d| {
                d.annotations
                    .get(annotations::CONTAINERD_IMAGE_NAME)
                    .or_else(|| d.annotations.get(annotations::REF_NAME))
                    .cloned()
                    .unwrap_or_else(|| d.digest.to_string())
            })
            .collect();
        let mut desc = index
            .manifests
            .first()
            .cloned()
            .ok_or_else(|| archive_err(path, "index.json lists no image"))?;
        let host = Platform::host();
        let mut manifest: Option<Manifest> = None;
        for _ in 0..8 {
            let data = self.blob(path, &desc.digest)?;
            let value: serde_json::Value = serde_json::from_slice(&data)
                .map_err(|e| archive_err(path, format!("manifest {}: {e}", desc.digest)))?;
            if value.get("manifests").is_some() {
                let nested: Index = serde_json::from_value(value)
                    .map_err(|e| archive_err(path, format!("index {}: {e}", desc.digest)))?;
                desc = nested
                    .manifests
                    .iter()
                    .find(|m| m.platform.as_ref().is_some_and(|p| p.matches(&host)))
                    .or_else(|| nested.manifests.first())
                    .cloned()
                    .ok_or_else(|| archive_err(path, format!("index {} is empty", desc.digest)))?;
                continue;
            }
            manifest = Some(
                serde_json::from_value(value)
                    .map_err(|e| archive_err(path, format!("manifest {}: {e}", desc.digest)))?,
            );
            break;
        }
        let manifest =
            manifest.ok_or_else(|| archive_err(path, "image indexes nest too deeply"))?;
        let config_bytes = self.blob(path, &manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| archive_err(path, format!("config {}: {e}", manifest.config.digest)))?;
        let mut layers = Vec::new();
        let mut sections = Vec::new();
        for (i, d) in manifest.layers.iter().enumerate() {
            let name = format!("blobs/{}/{}", d.digest.algorithm(), d.digest.hex());
            let section = self
                .resolve(&name)
                .ok_or_else(|| archive_err(path, format!("it has no layer {name}")))?;
            layers.push(LayerInput {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                compressed_size: section.1,
                diff_id: config.rootfs.diff_ids.get(i).cloned(),
            });
            sections.push(section);
        }
        let id = manifest.config.digest.clone();
        Ok(archive_source(
            path,
            names,
            id,
            &config_bytes,
            config,
            layers,
            sections,
        ))
    }
}

/// An image read from an archive: the first of `names` is the one analysed.
fn archive_source(
    path: &Path,
    mut names: Vec<String>,
    id: Digest,
    config_bytes: &[u8],
    config: ImageConfig,
    layers: Vec<LayerInput>,
    sections: Vec<(u64, u64)>,
) -> ImageSource {
    let name = names.remove(0);
    ImageSource {
        name,
        id,
        origin: path.display().to_string(),
        config_size: config_bytes.len() as u64,
        config,
        layers,
        others: names,
        backend: Backend::Archive {
            path: path.to_path_buf(),
            sections,
        },
    }
}

/// `blobs/sha256/<hex>` names its digest.
fn blob_digest(name: &str) -> Option<Digest> {
    let rest = clean_path(name.as_bytes())?;
    let hex = rest.strip_prefix("blobs/sha256/")?;
    Digest::parse_hex(hex).ok()
}
