use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use layer::Sniffed;
use oci::{
    Descriptor, Digest, ImageConfig, Index, Manifest, MediaType, Platform, Reference, annotations,
};
use serde::Deserialize;
use store::{LayerInfo, Store};

use crate::{ArchiveError, IoContext, Result};

/// One image an archive held, now in the store.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The names it was given (none: it is loaded untagged and shown by id).
    pub names: Vec<Reference>,
    /// The image id (config digest).
    pub id: Digest,
    pub descriptor: Descriptor,
}

/// Small metadata files are read into memory; everything else goes straight into the store as
/// a blob while streaming. This caps what one entry may make us hold.
const MAX_METADATA_BYTES: u64 = 16 << 20;
const METADATA_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

/// What the archive's entries turned into.
#[derive(Default)]
struct Ingested {
    /// Normalized path → blob digest and size.
    blobs: HashMap<String, (Digest, u64)>,
    /// Blob digest → its uncompressed identity, when it looked like a layer.
    sniffed: HashMap<Digest, Sniffed>,
    metadata: HashMap<String, Vec<u8>>,
    /// Normalized path → normalized target (symlinks and hardlinks between entries).
    links: HashMap<String, String>,
}

impl Ingested {
    fn resolve(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut p = normalize(path)?;
        for _ in 0..16 {
            if let Some(b) = self.blobs.get(&p) {
                return Some(b);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

/// Loads a docker-archive or OCI archive from a tar stream (plain; compressed archives are
/// decompressed by the caller or rejected with a clear error).
pub fn load_tar<R: Read>(store: &Store, reader: R) -> Result<Vec<Loaded>> {
    let ingested = ingest_tar(store, reader)?;
    finish(store, ingested)
}

/// Loads an OCI image layout directory.
pub fn load_dir(store: &Store, dir: &Path) -> Result<Vec<Loaded>> {
    let mut ingested = Ingested::default();
    for name in ["index.json", "oci-layout"] {
        let path = dir.join(name);
        if let Ok(data) = std::fs::read(&path) {
            ingested.metadata.insert(name.to_string(), data);
        }
    }
    if !ingested.metadata.contains_key("index.json") {
        return Err(ArchiveError::Format(format!(
            "{} has no index.json (is it an OCI image layout?)",
            dir.display()
        )));
    }
    let index = parse_metadata::<Index>(&ingested, "index.json")?;
    let mut pending: Vec<Descriptor> = index.manifests.clone();
    while let Some(desc) = pending.pop() {
        let rel = format!("blobs/{}/{}", desc.digest.algorithm(), desc.digest.hex());
        if ingested.blobs.contains_key(&rel) {
            continue;
        }
        let path = dir.join(&rel);
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        ingest_blob(store, &mut ingested, &rel, &mut file)?;
        if !desc.media_type.is_layer()
            && let Ok(data) = store.read_blob(&desc.digest)
        {
            pending.extend(referenced_descriptors(&data));
        }
    }
    finish(store, ingested)
}

/// The descriptors a manifest or index blob points at.
fn referenced_descriptors(data: &[u8]) -> Vec<Descriptor> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Vec::new();
    };
    if value.get("manifests").is_some() {
        if let Ok(index) = serde_json::from_value::<Index>(value) {
            return index.manifests;
        }
    } else if value.get("config").is_some()
        && let Ok(m) = serde_json::from_value::<Manifest>(value)
    {
        let mut v = vec![m.config];
        v.extend(m.layers);
        return v;
    }
    Vec::new()
}

fn ingest_tar<R: Read>(store: &Store, reader: R) -> Result<Ingested> {
    let mut archive = tar::Archive::new(reader);
    let mut ingested = Ingested::default();
    let entries = archive
        .entries()
        .ctx(|| "reading the archive".to_string())?;
    for entry in entries {
        let mut entry = entry.ctx(|| "reading the archive (truncated or corrupt?)".to_string())?;
        let raw_path = entry
            .path()
            .ctx(|| "reading an archive entry name".to_string())?
            .to_string_lossy()
            .into_owned();
        let Some(path) = normalize(&raw_path) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                ingest_file(store, &mut ingested, &path, &mut entry)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ctx(|| format!("reading link {raw_path}"))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                    parent.join(target).to_string_lossy().into_owned()
                } else {
                    target
                };
                if let Some(t) = normalize(&target) {
                    ingested.links.insert(path, t);
                }
            }
            _ => {}
        }
    }
    Ok(ingested)
}

fn is_metadata(path: &str) -> bool {
    METADATA_FILES.contains(&path) || path.ends_with("/VERSION") || path.ends_with("/json")
}

fn ingest_file(
    store: &Store,
    ingested: &mut Ingested,
    path: &str,
    entry: &mut impl Read,
) -> Result<()> {
    if is_metadata(path) {
        let mut data = Vec::new();
        entry
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut data)
            .ctx(|| format!("reading {path} from the archive"))?;
        if data.len() as u64 > MAX_METADATA_BYTES {
            return Err(ArchiveError::Format(format!("{path} is implausibly large")));
        }
        ingested.metadata.insert(path.to_string(), data);
        return Ok(());
    }
    ingest_blob(store, ingested, path, entry)
}

/// Streams one file into the store. Under `blobs/<alg>/<hex>` the name is the digest and is
/// checked; elsewhere (docker-archive) the digest is computed and checked later against the
/// manifest and config.
fn ingest_blob(
    store: &Store,
    ingested: &mut Ingested,
    path: &str,
    entry: &mut impl Read,
) -> Result<()> {
    let named = digest_from_blob_path(path);
    let mut writer = store.blob_writer()?;
    let sniffed = layer::copy_sniffing(entry, &mut writer, true, &|_| {})
        .map_err(layer::CopyError::into_io)
        .ctx(|| format!("reading {path} from the archive (truncated?)"))?;
    writer.flush().ctx(|| format!("storing {path}"))?;
    let (digest, size) = match &named {
        Some(expected) => writer.commit(Some((expected, None))).map_err(|e| match e {
            store::StoreError::DigestMismatch { actual, .. } => ArchiveError::WrongDigest {
                path: path.to_string(),
                expected: expected.clone(),
                actual,
            },
            other => other.into(),
        })?,
        None => writer.commit(None)?,
    };
    if let Some(s) = sniffed {
        ingested.sniffed.insert(digest.clone(), s);
    }
    ingested.blobs.insert(path.to_string(), (digest, size));
    Ok(())
}

fn digest_from_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Cleans an archive path: no leading `/` or `./`, no `..` escaping the archive root.
fn normalize(path: &str) -> Option<String> {
    layer::tar::clean_path(path.as_bytes())
}

fn parse_metadata<T: for<'de> Deserialize<'de>>(ingested: &Ingested, name: &str) -> Result<T> {
    let data = ingested.metadata.get(name).ok_or(ArchiveError::Missing {
        what: "file",
        path: name.to_string(),
    })?;
    serde_json::from_slice(data).map_err(|e| ArchiveError::Format(format!("{name}: {e}")))
}

/// Verifies what was ingested and names the images: nothing is named unless every image in
/// the archive checks out.
fn finish(store: &Store, ingested: Ingested) -> Result<Vec<Loaded>> {
    let images = if ingested.metadata.contains_key("index.json") {
        oci_images(store, &ingested)?
    } else if ingested.metadata.contains_key("manifest.json") {
        docker_images(store, &ingested)?
    } else {
        return Err(ArchiveError::Format(
            "it has neither manifest.json (docker save) nor index.json (OCI)".to_string(),
        ));
    };
    for image in &images {
        if image.names.is_empty() {
            store.add_unnamed(&image.descriptor)?;
        }
        for name in &image.names {
            store.set_name(name, &image.descriptor)?;
        }
    }
    Ok(images)
}

fn oci_images(store: &Store, ingested: &Ingested) -> Result<Vec<Loaded>> {
    let index: Index = parse_metadata(ingested, "index.json")?;
    let mut loaded: Vec<Loaded> = Vec::new();
    for desc in &index.manifests {
        check_blob(store, &desc.digest, desc.size, "manifest")?;
        let manifest_desc = store.platform_manifest(desc, &Platform::host())?;
        check_blob(store, &manifest_desc.digest, manifest_desc.size, "manifest")?;
        let manifest: Manifest = store.read_json(&manifest_desc.digest, "manifest")?;
        let id = verify_image(
            store,
            ingested,
            &manifest,
            &manifest_desc.digest.to_string(),
        )?;
        let names = oci_name(desc).into_iter().collect::<Vec<_>>();
        let mut top = desc.clone();
        top.annotations.clear();
        match loaded
            .iter_mut()
            .find(|l| l.descriptor.digest == top.digest)
        {
            Some(existing) => existing.names.extend(names),
            None => loaded.push(Loaded {
                names,
                id,
                descriptor: top,
            }),
        }
    }
    Ok(loaded)
}

/// A name from an OCI index entry: containerd's full name, else a `ref.name` that is a whole
/// reference (skopeo writes what it was given; a bare tag such as `latest` names nothing).
fn oci_name(desc: &Descriptor) -> Option<Reference> {
    if let Some(full) = desc.annotations.get(annotations::CONTAINERD_IMAGE_NAME) {
        return Reference::parse(full).ok();
    }
    let r = desc.annotations.get(annotations::REF_NAME)?;
    if r.contains(['/', ':']) {
        Reference::parse(r).ok()
    } else {
        None
    }
}

fn check_blob(store: &Store, digest: &Digest, size: u64, what: &'static str) -> Result<()> {
    match store.blob_size(digest) {
        Ok(actual) if actual == size => Ok(()),
        Ok(actual) => Err(ArchiveError::Format(format!(
            "{what} {digest} is {actual} bytes but its descriptor says {size}"
        ))),
        Err(_) => Err(ArchiveError::Missing {
            what,
            path: digest.to_string(),
        }),
    }
}

/// Checks a manifest's config and layers against what was ingested, records layer infos,
/// returns the image id.
fn verify_image(
    store: &Store,
    ingested: &Ingested,
    manifest: &Manifest,
    label: &str,
) -> Result<Digest> {
    check_blob(
        store,
        &manifest.config.digest,
        manifest.config.size,
        "config",
    )?;
    let config: ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
    let layers: Vec<(String, Digest)> = manifest
        .layers
        .iter()
        .map(|l| {
            check_blob(store, &l.digest, l.size, "layer")?;
            Ok((l.digest.to_string(), l.digest.clone()))
        })
        .collect::<Result<_>>()?;
    verify_layers(store, ingested, &config, &layers, label)?;
    Ok(manifest.config.digest.clone())
}

/// Compares each layer's uncompressed digest with the config's diff ids, in order.
fn verify_layers(
    store: &Store,
    ingested: &Ingested,
    config: &ImageConfig,
    layers: &[(String, Digest)],
    label: &str,
) -> Result<()> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(ArchiveError::Format(format!(
            "image {label} has {} layers but its config lists {} diff ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    for (index, ((path, blob), expected)) in layers.iter().zip(diff_ids).enumerate() {
        let info = match ingested.sniffed.get(blob) {
            Some(s) => LayerInfo {
                diff_id: s.diff_id.clone(),
                uncompressed_size: s.uncompressed_size,
            },
            None => store.layer_info_or_compute(blob)?,
        };
        if &info.diff_id != expected {
            return Err(ArchiveError::WrongDiffId {
                image: label.to_string(),
                index,
                path: path.clone(),
                expected: expected.clone(),
                actual: info.diff_id.to_string(),
            });
        }
        store.put_layer_info(blob, &info)?;
    }
    Ok(())
}

/// One image of a docker-archive `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_images(store: &Store, ingested: &Ingested) -> Result<Vec<Loaded>> {
    let entries: Vec<DockerArchiveImage> = parse_metadata(ingested, "manifest.json")?;
    let mut loaded = Vec::new();
    for entry in entries {
        loaded.push(docker_image(store, ingested, &entry)?);
    }
    Ok(loaded)
}

fn docker_image(store: &Store, ingested: &Ingested, entry: &DockerArchiveImage) -> Result<Loaded> {
    let missing = |what, path: &str| ArchiveError::Missing {
        what,
        path: path.to_string(),
    };
    let (config_digest, config_size) = ingested
        .resolve(&entry.config)
        .ok_or_else(|| missing("config", &entry.config))?
        .clone();
    if let Some(named) = config_name_digest(&entry.config)
        && named != config_digest
    {
        return Err(ArchiveError::WrongDigest {
            path: entry.config.clone(),
            expected: named,
            actual: config_digest,
        });
    }
    let config: ImageConfig = store.read_json(&config_digest, "image config")?;
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for path in &entry.layers {
        let (digest, size) = ingested
            .resolve(path)
            .ok_or_else(|| missing("layer", path))?
            .clone();
        let compression = ingested
            .sniffed
            .get(&digest)
            .map(|s| s.compression)
            .unwrap_or(layer::Compression::None);
        descriptors.push(Descriptor::new(
            compression.media_type(),
            digest.clone(),
            size,
        ));
        layers.push((path.clone(), digest));
    }
    verify_layers(store, ingested, &config, &layers, &entry.config)?;
    let config_desc = Descriptor::new(MediaType::OciConfig, config_digest.clone(), config_size);
    let manifest = Manifest::oci(config_desc, descriptors);
    let bytes = oci::canonical_json(&manifest)
        .map_err(|e| ArchiveError::Format(format!("serializing a manifest: {e}")))?;
    let digest = store.put_blob(&bytes)?;
    let names = entry
        .repo_tags
        .iter()
        .flatten()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArchiveError::Format(format!("manifest.json RepoTags: {e}")))?;
    Ok(Loaded {
        names,
        id: config_digest,
        descriptor: Descriptor::new(MediaType::OciManifest, digest, bytes.len() as u64),
    })
}

/// `<hex>.json` (classic docker save) or `blobs/sha256/<hex>` (docker >= 25).
fn config_name_digest(path: &str) -> Option<Digest> {
    let path = normalize(path)?;
    if let Some(d) = digest_from_blob_path(&path) {
        return Some(d);
    }
    let file = PathBuf::from(&path);
    let stem = file.file_stem()?.to_str()?;
    (file.extension()? == "json")
        .then(|| Digest::parse_hex(stem).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_contains_paths() {
        assert_eq!(normalize("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalize("/a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("./"), None);
    }

    #[test]
    fn config_names_carry_digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(config_name_digest(&format!("{hex}.json")).is_some());
        assert!(config_name_digest(&format!("blobs/sha256/{hex}")).is_some());
        assert!(config_name_digest("config.json").is_none());
    }
}
