//! `push`: a named image in the store → a repository in a registry.

use std::sync::Mutex;

use oci::{Descriptor, Digest, Index, Manifest, Reference};
use store::{ImageRecord, Store};

use crate::client::{BlobPush, RegistryClient};
use crate::error::{RegistryError, Result};
use crate::progress::{Event, Progress, Status};
use crate::pull::parallel;

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
    /// The digest of the manifest (or index) the tag now points at.
    pub digest: Digest,
    /// Its size in bytes, as docker prints it.
    pub size: u64,
    /// The tag pushed (`None` for a push by digest).
    pub tag: Option<String>,
    /// What happened to each blob, layers first.
    pub blobs: Vec<(Digest, BlobPush)>,
}

/// The documents to push: child manifests (for a complete index) and the top one, each with
/// its bytes and parsed manifest (none for the index).
struct Plan {
    top: (Descriptor, Vec<u8>),
    children: Vec<(Descriptor, Vec<u8>)>,
    manifests: Vec<Manifest>,
}

fn plan(store: &Store, image: &ImageRecord) -> Result<Plan> {
    let single = || -> Result<Plan> {
        if let Some(compressed) = compressed_manifest(store, image)? {
            return Ok(compressed);
        }
        let desc = Descriptor::new(
            image.manifest_descriptor.media_type.clone(),
            image.manifest_descriptor.digest.clone(),
            image.manifest_descriptor.size,
        );
        let bytes = store.read_blob(&desc.digest)?;
        Ok(Plan {
            top: (desc, bytes),
            children: Vec::new(),
            manifests: vec![image.manifest.clone()],
        })
    };
    if !image.descriptor.media_type.is_index() {
        return single();
    }
    // An index is pushed whole when the store has every image of it; otherwise (a pull keeps
    // one platform) the platform manifest in use is pushed, as docker does.
    let index: Index = store.read_json(&image.descriptor.digest, "image index")?;
    let mut children = Vec::new();
    let mut manifests = Vec::new();
    for child in &index.manifests {
        if !child.media_type.is_manifest() || !store.has_blob(&child.digest) {
            return single();
        }
        let bytes = store.read_blob(&child.digest)?;
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            return single();
        };
        let complete = std::iter::once(&m.config)
            .chain(m.layers.iter())
            .all(|d| store.has_blob(&d.digest));
        if !complete {
            return single();
        }
        children.push((child.clone(), bytes));
        manifests.push(m);
    }
    let bytes = store.read_blob(&image.descriptor.digest)?;
    Ok(Plan {
        top: (
            Descriptor::new(
                image.descriptor.media_type.clone(),
                image.descriptor.digest.clone(),
                image.descriptor.size,
            ),
            bytes,
        ),
        children,
        manifests,
    })
}

/// strata keeps the layers it builds uncompressed (as docker does); like docker, it sends
/// them gzip-compressed. The manifest pushed then names the compressed twins (made once and
/// kept by the store), so its digest differs from the local one while the image id (the
/// config) stays the same.
fn compressed_manifest(store: &Store, image: &ImageRecord) -> Result<Option<Plan>> {
    let uncompressed =
        |m: &oci::MediaType| matches!(m, oci::MediaType::OciLayer | oci::MediaType::DockerLayer);
    if !image
        .manifest
        .layers
        .iter()
        .any(|l| uncompressed(&l.media_type))
    {
        return Ok(None);
    }
    let mut manifest = image.manifest.clone();
    for l in &mut manifest.layers {
        *l = store.gzip_twin(l)?;
    }
    let bytes = oci::canonical_json(&manifest)
        .map_err(|e| RegistryError::Unsupported(format!("serializing a manifest: {e}")))?;
    let digest = store.put_blob(&bytes)?;
    let desc = Descriptor::new(
        image.manifest_descriptor.media_type.clone(),
        digest,
        bytes.len() as u64,
    );
    Ok(Some(Plan {
        top: (desc, bytes),
        children: Vec::new(),
        manifests: vec![manifest],
    }))
}

/// Pushes `image` to `target` (`registry/repository:tag`): every layer and config the
/// registry lacks (existence check, then a cross-repository mount where the store knows the
/// blob from another repository of the same registry, then an upload read through the store's
/// verified reader), child manifests of an index, and the tagged manifest last.
pub fn push_image(
    client: &RegistryClient,
    store: &Store,
    image: &ImageRecord,
    target: &Reference,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let repository = target.path();
    let plan = plan(store, image)?;

    let mut layers: Vec<Descriptor> = Vec::new();
    let mut configs: Vec<Descriptor> = Vec::new();
    for m in &plan.manifests {
        for l in &m.layers {
            if !layers.iter().any(|x| x.digest == l.digest) {
                layers.push(l.clone());
            }
        }
        if !configs.iter().any(|x| x.digest == m.config.digest) {
            configs.push(m.config.clone());
        }
    }
    for l in &layers {
        progress.event(Event::Blob {
            digest: l.digest.clone(),
            size: l.size,
            status: Status::Preparing,
        });
    }
    let outcomes: Mutex<Vec<(Digest, BlobPush)>> = Mutex::new(Vec::new());
    let push_one = |desc: &Descriptor, report: bool| -> Result<()> {
        let sources = store.blob_sources(&desc.digest)?;
        let outcome = client.push_blob(repository, desc, store, &sources, progress)?;
        if report {
            progress.event(Event::Blob {
                digest: desc.digest.clone(),
                size: desc.size,
                status: outcome.status(),
            });
        }
        if let Ok(mut o) = outcomes.lock() {
            o.push((desc.digest.clone(), outcome));
        }
        Ok(())
    };
    parallel(&layers, client.options().parallel, |l| push_one(l, true))?;
    for c in &configs {
        push_one(c, false)?;
    }

    for (child, bytes) in &plan.children {
        client.put_manifest(
            repository,
            &child.digest.to_string(),
            &child.media_type,
            bytes,
        )?;
    }
    let (top, top_bytes) = &plan.top;
    let tag = target.tag().map(str::to_string);
    let at = match (&tag, target.digest()) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) if d == &top.digest => d.to_string(),
        (None, Some(d)) => {
            return Err(RegistryError::Unsupported(format!(
                "cannot push {} to digest {d}: the image's manifest is {}",
                target.familiar_name(),
                top.digest
            )));
        }
        (None, None) => "latest".into(),
    };
    let digest = client.put_manifest(repository, &at, &top.media_type, top_bytes)?;

    let mut blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
    blobs.extend(configs.iter().map(|c| c.digest.clone()));
    blobs.extend(plan.children.iter().map(|(d, _)| d.digest.clone()));
    blobs.push(top.digest.clone());
    store.add_blob_sources(&blobs, &target.name())?;
    let repo_ref = Reference::parse_exact(&target.name())
        .map_err(|e| RegistryError::Unsupported(e.to_string()))?
        .with_digest(digest.clone());
    store.add_repo_digest(&image.descriptor.digest, &repo_ref)?;

    let mut blobs = outcomes.into_inner().unwrap_or_default();
    let order = |d: &Digest| {
        layers
            .iter()
            .position(|l| &l.digest == d)
            .unwrap_or(usize::MAX)
    };
    blobs.sort_by_key(|(d, _)| order(d));
    Ok(Pushed {
        digest,
        size: top_bytes.len() as u64,
        tag,
        blobs,
    })
}
