//! What the store remembers about registries: the digest each image has in a repository (docker's
//! `RepoDigests`), and which repositories a blob is known to exist in (so a push to another
//! repository on the same registry can mount it instead of uploading it).
//!
//! Both live in one small JSON file, `meta-v1/repositories.json`, rewritten atomically under the
//! index lock. Entries for blobs or images the store no longer has are dropped on every write
//! and ignored on every read, so garbage collection needs no extra step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use oci::{Digest, Reference};
use serde::{Deserialize, Serialize};

use crate::{IoContext, Result, Store, write_atomic};

/// At most this many source repositories are remembered per blob (the most recent first).
const MAX_SOURCES: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
struct RepoMeta {
    /// Top-level image digest (what `index.json` names) → `repository@digest` references.
    #[serde(default)]
    repo_digests: BTreeMap<Digest, BTreeSet<String>>,
    /// Blob digest → repositories (`registry/path`) known to hold it, most recent first.
    #[serde(default)]
    blob_sources: BTreeMap<Digest, Vec<String>>,
}

impl Store {
    fn repo_meta_path(&self) -> PathBuf {
        self.root().join(crate::META_DIR).join("repositories.json")
    }

    fn read_repo_meta(&self) -> Result<RepoMeta> {
        let path = self.repo_meta_path();
        match std::fs::read(&path) {
            // A damaged file loses hints, never content: start over rather than fail a pull.
            Ok(data) => Ok(serde_json::from_slice(&data).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RepoMeta::default()),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
        }
    }

    fn update_repo_meta(&self, change: impl FnOnce(&mut RepoMeta)) -> Result<()> {
        let _guard = self.lock_index()?;
        let mut meta = self.read_repo_meta()?;
        change(&mut meta);
        meta.repo_digests
            .retain(|image, refs| !refs.is_empty() && self.has_blob(image));
        meta.blob_sources
            .retain(|blob, repos| !repos.is_empty() && self.has_blob(blob));
        let data = crate::images::canonical(&meta)?;
        write_atomic(self, &self.repo_meta_path(), &data)
    }

    /// Records that the image whose top-level descriptor is `image` is `repo_digest`
    /// (`registry/path@sha256:…`) in a registry.
    pub fn add_repo_digest(&self, image: &Digest, repo_digest: &Reference) -> Result<()> {
        let Some(digest) = repo_digest.digest() else {
            return Ok(());
        };
        let entry = format!("{}@{digest}", repo_digest.name());
        self.update_repo_meta(|meta| {
            let set = meta.repo_digests.entry(image.clone()).or_default();
            // One digest per repository, as docker keeps it: a newer push or pull replaces it.
            let prefix = format!("{}@", repo_digest.name());
            set.retain(|e| !e.starts_with(&prefix));
            set.insert(entry);
        })
    }

    /// The `repository@digest` references recorded for an image, sorted.
    pub fn repo_digests(&self, image: &Digest) -> Result<Vec<Reference>> {
        let meta = self.read_repo_meta()?;
        Ok(meta
            .repo_digests
            .get(image)
            .into_iter()
            .flatten()
            .filter_map(|r| Reference::parse_exact(r).ok())
            .collect())
    }

    /// Records that every blob in `blobs` exists in `repository` (`registry/path`).
    pub fn add_blob_sources(&self, blobs: &[Digest], repository: &str) -> Result<()> {
        self.update_repo_meta(|meta| {
            for blob in blobs {
                let repos = meta.blob_sources.entry(blob.clone()).or_default();
                repos.retain(|r| r != repository);
                repos.insert(0, repository.to_string());
                repos.truncate(MAX_SOURCES);
            }
        })
    }

    /// The repositories (`registry/path`) a blob is known to exist in, most recent first.
    pub fn blob_sources(&self, blob: &Digest) -> Result<Vec<String>> {
        if !self.has_blob(blob) {
            return Ok(Vec::new());
        }
        Ok(self
            .read_repo_meta()?
            .blob_sources
            .remove(blob)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::temp_store;
    use oci::Reference;

    #[test]
    fn repo_digests_and_sources_round_trip_and_forget_missing_content() {
        let (_d, store) = temp_store();
        let image = store.put_blob(b"pretend manifest").unwrap();
        let blob = store.put_blob(b"pretend layer").unwrap();
        let r1 = Reference::parse(&format!("localhost:5000/a@{image}")).unwrap();
        store.add_repo_digest(&image, &r1).unwrap();
        store.add_repo_digest(&image, &r1).unwrap();
        assert_eq!(store.repo_digests(&image).unwrap(), vec![r1.clone()]);

        store
            .add_blob_sources(std::slice::from_ref(&blob), "localhost:5000/a")
            .unwrap();
        store
            .add_blob_sources(std::slice::from_ref(&blob), "localhost:5000/b")
            .unwrap();
        assert_eq!(
            store.blob_sources(&blob).unwrap(),
            vec!["localhost:5000/b", "localhost:5000/a"]
        );

        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        assert!(store.blob_sources(&blob).unwrap().is_empty());
        store.add_repo_digest(&image, &r1).unwrap();
        let raw = std::fs::read_to_string(store.repo_meta_path()).unwrap();
        assert!(!raw.contains(&blob.hex()), "{raw}");
    }
}
