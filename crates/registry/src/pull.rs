//! `pull`: a reference in a registry → a named, verified image in the store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use oci::{Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference};
use store::{ImageRecord, LayerInfo, Store};

use crate::client::{RegistryClient, reference_part};
use crate::error::{RegistryError, Result};
use crate::progress::{Event, Progress, Status};

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    /// The image as the store now has it.
    pub image: ImageRecord,
    /// The name it was stored under (a tag, or `name@digest` for a pull by digest).
    pub name: Reference,
    /// The digest the reference has in the registry (an index's, for multi-platform images).
    pub digest: Digest,
    /// Blobs downloaded (0 when the store had everything).
    pub downloaded: usize,
    /// Whether the name points somewhere new (docker's "Downloaded newer image").
    pub updated: bool,
}

/// The entry of an index for a platform, as the store picks it: the first whose platform
/// matches and that is a manifest or an index.
pub fn select_platform<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform.as_ref().is_some_and(|p| p.matches(platform))
            && (m.media_type.is_manifest() || m.media_type.is_index())
    })
}

/// Runs `work` on every item with at most `workers` threads, stopping at the first error (work
/// already started finishes). Returns the first error.
pub(crate) fn parallel<T: Sync>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { return };
                    if let Err(e) = work(item) {
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = first_error.lock()
                            && slot.is_none()
                        {
                            *slot = Some(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn bad(client: &RegistryClient, what: String, reason: impl Into<String>) -> RegistryError {
    RegistryError::BadResponse {
        registry: client.registry().to_string(),
        what,
        reason: reason.into(),
    }
}

/// Pulls `reference` into the store and names it. With `platform` (default: the host's), an
/// index resolves to that platform's manifest. Every blob is verified (digest and size) as it
/// is written, and layer diff ids are checked against the config before anything is named;
/// a failed pull leaves no name behind and no partial blob visible. Blobs the store already
/// has are not fetched.
///
/// The caller holds the store's shared lock for the duration, so a concurrent `prune` cannot
/// remove blobs this pull has written but not named yet.
pub fn pull_image(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let repository = reference.path();
    let host = Platform::host();
    let wanted = platform.cloned().unwrap_or_else(|| host.clone());
    let (top, top_bytes) = client.fetch_manifest(repository, &reference_part(reference))?;

    // Walk indexes down to the platform's manifest, keeping every document to store later.
    let mut documents: Vec<(Descriptor, Vec<u8>)> = vec![(top.clone(), top_bytes)];
    let mut host_choice_matches = true;
    for depth in 0.. {
        let (current, bytes) = documents
            .last()
            .cloned()
            .ok_or_else(|| bad(client, "a manifest".into(), "nothing fetched"))?;
        if !current.media_type.is_index() {
            break;
        }
        if depth >= 4 {
            return Err(bad(
                client,
                format!("index {}", current.digest),
                "indexes nest too deeply",
            ));
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            bad(
                client,
                format!("index {}", current.digest),
                format!("not an image index: {e}"),
            )
        })?;
        let chosen = select_platform(&index, &wanted).ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect();
            RegistryError::NoPlatform {
                reference: reference.familiar(),
                platform: wanted.to_string(),
                available: if available.is_empty() {
                    "no platforms".into()
                } else {
                    available.join(", ")
                },
            }
        })?;
        if select_platform(&index, &host).map(|d| &d.digest) != Some(&chosen.digest) {
            host_choice_matches = false;
        }
        let (child, child_bytes) = client.fetch_manifest(repository, &chosen.digest.to_string())?;
        if child.size != chosen.size {
            return Err(crate::error::Mismatch {
                registry: client.registry().to_string(),
                repository: repository.to_string(),
                what: format!("manifest {}", chosen.digest),
                expected: chosen.digest.clone(),
                expected_size: chosen.size,
                actual: child.digest,
                actual_size: child.size,
            }
            .into());
        }
        // The index's media type for the child wins over a registry's Content-Type.
        let child = Descriptor {
            media_type: chosen.media_type.clone(),
            platform: chosen.platform.clone(),
            ..child
        };
        documents.push((child, child_bytes));
    }
    let (leaf, leaf_bytes) = documents
        .last()
        .cloned()
        .ok_or_else(|| bad(client, "a manifest".into(), "nothing fetched"))?;
    let manifest: Manifest = serde_json::from_slice(&leaf_bytes).map_err(|e| {
        bad(
            client,
            format!("manifest {}", leaf.digest),
            format!("not an image manifest: {e}"),
        )
    })?;

    // The config: small, fetched into memory, verified, then stored.
    let mut downloaded = 0usize;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest)?
    } else {
        let bytes = client.fetch_small_blob(repository, &manifest.config)?;
        store.put_blob(&bytes)?;
        downloaded += 1;
        bytes
    };
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        bad(
            client,
            format!("image config {}", manifest.config.digest),
            format!("not an image config: {e}"),
        )
    })?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(bad(
            client,
            format!("manifest {}", leaf.digest),
            format!(
                "it lists {} layers, but its config has {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }

    // Layers: what the store has is reported and checked; the rest is fetched in parallel.
    let mut missing: Vec<(usize, &Descriptor)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        if !seen.insert(&layer.digest) {
            continue;
        }
        if store.has_blob(&layer.digest) {
            progress.event(Event::Blob {
                digest: layer.digest.clone(),
                size: layer.size,
                status: Status::AlreadyExists,
            });
        } else {
            progress.event(Event::Blob {
                digest: layer.digest.clone(),
                size: layer.size,
                status: Status::Waiting,
            });
            missing.push((i, layer));
        }
    }
    let check_diff_id = |i: usize, layer: &Descriptor, info: LayerInfo| -> Result<()> {
        if info.diff_id != diff_ids[i] {
            return Err(RegistryError::DiffIdMismatch {
                registry: client.registry().to_string(),
                repository: repository.to_string(),
                blob: Box::new(layer.digest.clone()),
                expected: diff_ids[i].to_string(),
                actual: info.diff_id.to_string(),
            });
        }
        Ok(())
    };
    parallel(&missing, client.options().parallel, |(i, layer)| {
        progress.event(Event::Blob {
            digest: layer.digest.clone(),
            size: layer.size,
            status: Status::Downloading,
        });
        let info = client.fetch_blob(repository, layer, store, progress)?;
        progress.event(Event::Blob {
            digest: layer.digest.clone(),
            size: layer.size,
            status: Status::DownloadComplete,
        });
        if layer.media_type.is_layer() {
            let info = match info {
                Some(info) => info,
                None => store.layer_info_or_compute(&layer.digest)?,
            };
            check_diff_id(*i, layer, info)?;
        }
        progress.event(Event::Blob {
            digest: layer.digest.clone(),
            size: layer.size,
            status: Status::PullComplete,
        });
        Ok(())
    })?;
    downloaded += missing.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        if layer.media_type.is_layer() && !missing.iter().any(|(_, l)| l.digest == layer.digest) {
            check_diff_id(i, layer, store.layer_info_or_compute(&layer.digest)?)?;
        }
    }

    // Every blob is in and verified: store the documents, then name the image.
    for (desc, bytes) in &documents {
        if !store.has_blob(&desc.digest) {
            let stored = store.put_blob(bytes)?;
            if stored != desc.digest {
                return Err(bad(
                    client,
                    format!("manifest {}", desc.digest),
                    "digest changed",
                ));
            }
            downloaded += 1;
        }
    }
    let named = if host_choice_matches {
        top.clone()
    } else {
        Descriptor::new(leaf.media_type.clone(), leaf.digest.clone(), leaf.size)
    };
    let named = Descriptor::new(named.media_type, named.digest, named.size);
    let name = match (reference.tag(), reference.digest()) {
        (_, Some(_)) => Reference::parse_exact(&reference.name())
            .map_err(|e| bad(client, reference.to_string(), e.to_string()))?
            .with_digest(named.digest.clone()),
        (Some(tag), None) => reference.with_tag(tag),
        (None, None) => reference.with_tag("latest"),
    };
    let before = store
        .named_images()?
        .into_iter()
        .find(|e| e.name.as_ref() == Some(&name))
        .map(|e| e.descriptor.digest);
    store.set_name(&name, &named)?;
    let repo_ref = Reference::parse_exact(&reference.name())
        .map_err(|e| bad(client, reference.to_string(), e.to_string()))?
        .with_digest(top.digest.clone());
    store.add_repo_digest(&named.digest, &repo_ref)?;
    let mut blobs: Vec<Digest> = documents.iter().map(|(d, _)| d.digest.clone()).collect();
    blobs.push(manifest.config.digest.clone());
    blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    store.add_blob_sources(&blobs, &reference.name())?;
    let image = store.resolve_image(&name.to_string())?;
    Ok(Pulled {
        image,
        name,
        digest: top.digest,
        downloaded,
        updated: before.as_ref() != Some(&named.digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, marker: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(oci::MediaType::OciManifest, Digest::of(marker), 10);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        });
        d
    }

    #[test]
    fn platform_selection_takes_the_first_match() {
        let mut index = Index::default();
        let mut attestation = Descriptor::new(
            oci::MediaType::Other("application/vnd.in-toto+json".into()),
            Digest::of(b"att"),
            1,
        );
        attestation.platform = Some(Platform::parse("unknown/unknown").unwrap());
        index.manifests = vec![
            attestation,
            entry("arm", Some("v6"), b"armv6"),
            entry("arm", Some("v7"), b"armv7"),
            entry("amd64", None, b"amd64"),
            entry("arm64", Some("v8"), b"arm64"),
        ];
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).unwrap()).map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64"), Some(Digest::of(b"amd64")));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(b"arm64")));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(b"armv7")));
        assert_eq!(pick("linux/arm"), Some(Digest::of(b"armv6")));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("unknown/unknown"), None, "attestations are not images");
    }

    #[test]
    fn parallel_runs_everything_and_stops_at_the_first_error() {
        let done = AtomicUsize::new(0);
        let items: Vec<u32> = (0..20).collect();
        parallel(&items, 4, |_| {
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 20);
        let err = parallel(&items, 3, |i| {
            if *i == 5 {
                Err(RegistryError::Unsupported("five".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "five");
        parallel(&Vec::<u32>::new(), 4, |_| Ok(())).unwrap();
    }
}
