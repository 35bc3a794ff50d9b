use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Write};

use oci::{Descriptor, Digest, Index, Reference, annotations, chain_ids};
use serde::Serialize;
use store::{ImageRecord, Store, VerifiedReader};

use crate::{ArchiveError, IoContext, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s layout: `manifest.json`, `<config>.json`, `<layer>/layer.tar`
    /// (uncompressed), `repositories`. Loads in `docker load` of any version and `podman load`.
    Docker,
    /// An OCI image layout in a tar (`skopeo`'s `oci-archive:`), blobs as stored.
    Oci,
}

/// An image to save and the names to write for it (none: saved by id, untagged).
pub struct SaveItem {
    pub image: ImageRecord,
    pub names: Vec<Reference>,
}

/// Writes the images as one archive. Every blob is verified while it is copied out; on a
/// mismatch the error comes before the archive is finished, so a bad store never yields a
/// plausible-looking archive.
pub fn save<W: Write>(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    out: W,
) -> Result<W> {
    let mut tar = TarOut::new(out);
    match format {
        ArchiveFormat::Docker => save_docker(store, items, &mut tar)?,
        ArchiveFormat::Oci => save_oci(store, items, &mut tar)?,
    }
    tar.finish()
}

/// A tar writer with normalized headers (root-owned, mtime 0), so archives are reproducible.
struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    dirs: HashSet<String>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut {
            builder: tar::Builder::new(out),
            dirs: HashSet::new(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if self.dirs.insert(path.to_string()) {
            let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
            self.builder
                .append_data(&mut h, format!("{path}/"), std::io::empty())
                .ctx(|| format!("writing {path}/"))?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, size: u64, data: impl Read) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, size);
        self.builder
            .append_data(&mut h, path, data)
            .ctx(|| format!("writing {path}"))
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.file(path, data.len() as u64, data)
    }

    fn finish(self) -> Result<W> {
        self.builder
            .into_inner()
            .ctx(|| "finishing the archive".to_string())
    }
}

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| ArchiveError::Format(format!("serializing: {e}")))
}

/// Copies a stored blob into the archive, verifying its digest as it streams.
fn copy_blob<W: Write>(
    store: &Store,
    tar: &mut TarOut<W>,
    path: &str,
    digest: &Digest,
) -> Result<()> {
    let size = store.blob_size(digest)?;
    let reader = BufReader::with_capacity(1 << 20, store.open_blob(digest)?);
    tar.file(path, size, reader)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn save_docker<W: Write>(store: &Store, items: &[SaveItem], tar: &mut TarOut<W>) -> Result<()> {
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: HashSet<String> = HashSet::new();
    for item in items {
        let image = &item.image;
        let chains = chain_ids(&image.config.rootfs.diff_ids);
        let mut layer_paths = Vec::new();
        for ((blob, diff_id), chain) in image.layers().zip(&chains) {
            let dir = chain.hex();
            let path = format!("{dir}/layer.tar");
            if written.insert(path.clone()) {
                tar.dir(&dir)?;
                write_uncompressed_layer(store, tar, &path, blob, diff_id)?;
                tar.bytes(&format!("{dir}/VERSION"), b"1.0")?;
            }
            layer_paths.push(path);
        }
        let config_path = format!("{}.json", image.id().hex());
        if written.insert(config_path.clone()) {
            copy_blob(store, tar, &config_path, image.id())?;
        }
        let tags: Vec<String> = item.names.iter().map(Reference::familiar).collect();
        if let Some(top) = chains.last() {
            for name in &item.names {
                if let Some(tag) = name.tag() {
                    repositories
                        .entry(name.familiar_name())
                        .or_default()
                        .insert(tag.to_string(), top.hex());
                }
            }
        }
        manifest.push(DockerManifestEntry {
            config: config_path,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers: layer_paths,
        });
    }
    tar.bytes("manifest.json", &json_bytes(&manifest)?)?;
    if !repositories.is_empty() {
        tar.bytes("repositories", &json_bytes(&repositories)?)?;
    }
    Ok(())
}

/// docker-archive layers are uncompressed: decompress the stored blob on the fly, checking the
/// blob digest and the diff id (and so the size announced in the tar header) as it streams.
fn write_uncompressed_layer<W: Write>(
    store: &Store,
    tar: &mut TarOut<W>,
    path: &str,
    blob: &Descriptor,
    diff_id: &oci::DiffId,
) -> Result<()> {
    let info = store.layer_info_or_compute(&blob.digest)?;
    let compressed = BufReader::with_capacity(1 << 20, store.open_blob(&blob.digest)?);
    let tar_stream = layer::decompress(compressed).map_err(|source| store::StoreError::Layer {
        blob: blob.digest.clone(),
        source,
    })?;
    let verified = VerifiedReader::new(
        tar_stream,
        diff_id.digest().clone(),
        Some(info.uncompressed_size),
    );
    tar.file(path, info.uncompressed_size, verified)
}

fn save_oci<W: Write>(store: &Store, items: &[SaveItem], tar: &mut TarOut<W>) -> Result<()> {
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    let mut written: HashSet<Digest> = HashSet::new();
    let mut index = Index::default();
    for item in items {
        let image = &item.image;
        let mut blobs: Vec<&Digest> = vec![&image.descriptor.digest];
        if image.descriptor.digest != *image.manifest_digest() {
            blobs.push(image.manifest_digest());
        }
        blobs.push(image.id());
        blobs.extend(image.manifest.layers.iter().map(|l| &l.digest));
        for digest in blobs {
            if written.insert(digest.clone()) {
                copy_blob(
                    store,
                    tar,
                    &format!("blobs/sha256/{}", digest.hex()),
                    digest,
                )?;
            }
        }
        if item.names.is_empty() {
            index.manifests.push(image.descriptor.clone());
        }
        for name in &item.names {
            let mut desc = image.descriptor.clone();
            desc.annotations
                .insert(annotations::CONTAINERD_IMAGE_NAME.into(), name.to_string());
            if let Some(tag) = name.tag() {
                desc.annotations
                    .insert(annotations::REF_NAME.into(), tag.to_string());
            }
            index.manifests.push(desc);
        }
    }
    let index_bytes = oci::canonical_json(&index)
        .map_err(|e| ArchiveError::Format(format!("serializing index.json: {e}")))?;
    tar.bytes("index.json", &index_bytes)
}
