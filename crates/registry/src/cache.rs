//! Build caches in a registry (`--cache-to type=registry,ref=R`, `--cache-from …`): a
//! [`store::CacheBundle`] pushed as an OCI image manifest (its layers the cached blobs, its
//! config the records) under a tag, and read back.
//!
//! A push sends only the blobs the repository lacks (existence check, cross-repository mount,
//! then upload, as for images); the layers of an import are fetched one by one, when the build
//! reaches a step that uses them, and verified like any pulled layer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use oci::{Digest, MediaType, Reference};
use store::{CacheBundle, CacheRecord, CachedLayer, MAX_CACHE_CONFIG_SIZE, Store};
use ureq::http::Method;

use crate::auth::Scope;
use crate::client::{BlobPush, Exchange, RegistryClient, reference_part};
use crate::error::{RegistryError, Result};
use crate::progress::{Event, Progress};
use crate::pull::parallel;
use crate::upload::with_query;

/// What a cache export did.
#[derive(Debug)]
pub struct CachePushed {
    /// The digest of the cache manifest the tag now points at.
    pub digest: Digest,
    /// What happened to each blob (layers, then the config).
    pub blobs: Vec<(Digest, BlobPush)>,
}

impl CachePushed {
    /// Blobs that were sent (not found in the repository, not mounted).
    pub fn uploaded(&self) -> usize {
        self.blobs
            .iter()
            .filter(|(_, b)| *b == BlobPush::Uploaded)
            .count()
    }
}

/// Uploads a blob held in memory (the cache config) unless the repository has it: one `PUT`.
fn push_bytes(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<BlobPush> {
    let scopes = [Scope::push(repository)];
    if client.blob_exists(repository, digest, &scopes)? {
        return Ok(BlobPush::Exists);
    }
    let session = client.start_upload(repository, &scopes)?;
    let mut ex = Exchange::new(
        Method::PUT,
        with_query(&session, "digest", &digest.to_string()),
        &scopes,
    )
    .header("content-type", "application/octet-stream");
    ex.body = bytes;
    ex.retry = false;
    let resp = client.execute(&ex, Some(repository))?;
    match resp.status().as_u16() {
        201 | 204 => Ok(BlobPush::Uploaded),
        _ => Err(client.status_error(resp, "PUT", repository, &format!("blob upload {digest}"))),
    }
}

/// Pushes a cache bundle to `target` (`registry/repository:tag`): the layer blobs and config
/// the repository lacks, then the manifest under the tag (replacing what it pointed at).
pub fn push_cache(
    client: &RegistryClient,
    store: &Store,
    target: &Reference,
    bundle: &CacheBundle,
    progress: &dyn Progress,
) -> Result<CachePushed> {
    let repository = target.path();
    if target.digest().is_some() {
        return Err(RegistryError::Unsupported(format!(
            "cannot export a build cache to a digest ({target}): name a tag"
        )));
    }
    let tag = target.tag().unwrap_or("latest");
    let outcomes: Mutex<Vec<(Digest, BlobPush)>> = Mutex::new(Vec::new());
    parallel(&bundle.layers, client.options().parallel, |layer| {
        let sources = store.blob_sources(&layer.digest)?;
        let outcome = client.push_blob(repository, layer, store, &sources, progress)?;
        progress.event(Event::Blob {
            digest: layer.digest.clone(),
            size: layer.size,
            status: outcome.status(),
        });
        if let Ok(mut o) = outcomes.lock() {
            o.push((layer.digest.clone(), outcome));
        }
        Ok(())
    })?;
    let mut blobs = outcomes.into_inner().unwrap_or_default();
    let order = |d: &Digest| bundle.layers.iter().position(|l| &l.digest == d);
    blobs.sort_by_key(|(d, _)| order(d));
    let config = &bundle.config_descriptor;
    blobs.push((
        config.digest.clone(),
        push_bytes(client, repository, &config.digest, &bundle.config)?,
    ));
    let digest = client.put_manifest(repository, tag, &MediaType::OciManifest, &bundle.manifest)?;
    let layers: Vec<Digest> = bundle.layers.iter().map(|l| l.digest.clone()).collect();
    store.add_blob_sources(&layers, &target.name())?;
    Ok(CachePushed { digest, blobs })
}

/// Reads the cache records `reference` holds; `None` when the registry has no such tag (or
/// repository), which an import treats as an empty cache, as BuildKit does.
pub fn fetch_cache(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<Option<BTreeMap<Digest, CacheRecord>>> {
    let repository = reference.path();
    let (_, bytes) = match client.fetch_manifest(repository, &reference_part(reference)) {
        Ok(found) => found,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let what = reference.to_string();
    let manifest = CacheBundle::parse_manifest(&bytes, &what)?;
    let config =
        client.fetch_small_blob_limited(repository, &manifest.config, MAX_CACHE_CONFIG_SIZE)?;
    Ok(Some(CacheBundle::parse_config(&config, &manifest, &what)?))
}

/// Brings one cached layer from the cache's repository into the store (unless it is there),
/// verified by digest, size and diff id.
pub fn fetch_cached_layer(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    layer: &CachedLayer,
    progress: &dyn Progress,
) -> Result<()> {
    if !store.has_blob(&layer.blob.digest) {
        client.fetch_blob(reference.path(), &layer.blob, store, progress)?;
        store.add_blob_sources(std::slice::from_ref(&layer.blob.digest), &reference.name())?;
    }
    store.check_cached_layer(layer)?;
    Ok(())
}
