use oci::{Descriptor, DiffId, Digest};
use serde::{Deserialize, Serialize};

use crate::{IoContext, Result, Store, read_dir_if_exists, write_atomic};

/// What one build step produced, found again by its cache key. Metadata-only steps produce
/// no record (they are recomputed, which costs nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer the step made (`None`: it made an empty change and no layer).
    pub layer: Option<CachedLayer>,
    /// When the step first ran, so a cached rebuild keeps the history it had.
    pub created: String,
    /// Human explanation of the key's inputs, for `--explain-cache` on a later miss.
    #[serde(default)]
    pub inputs: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub blob: Descriptor,
    pub diff_id: DiffId,
}

impl Store {
    fn cache_dir(&self) -> std::path::PathBuf {
        self.root().join("cache-v1").join("keys")
    }

    fn cache_path(&self, key: &Digest) -> std::path::PathBuf {
        self.cache_dir().join(format!("{}.json", key.hex()))
    }

    /// The record for a key, if it exists and its layer blob is still in the store.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let path = self.cache_path(key);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
        };
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&data) else {
            return Ok(None);
        };
        if let Some(layer) = &record.layer
            && !self.has_blob(&layer.blob.digest)
        {
            return Ok(None);
        }
        Ok(Some(record))
    }

    pub fn cache_put(&self, key: &Digest, record: &CacheRecord) -> Result<()> {
        let dir = self.cache_dir();
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let data = crate::images::canonical(record)?;
        write_atomic(self, &self.cache_path(key), &data)
    }

    /// Every cache record, for garbage collection's marking and for cache export.
    pub fn cache_records(&self) -> Result<Vec<(Digest, CacheRecord)>> {
        let dir = self.cache_dir();
        let Some(rd) = read_dir_if_exists(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|h| Digest::parse_hex(h).ok())
            else {
                continue;
            };
            if let Ok(data) = std::fs::read(entry.path())
                && let Ok(record) = serde_json::from_slice(&data)
            {
                out.push((key, record));
            }
        }
        Ok(out)
    }

    /// Drops the whole build cache (its blobs go at the next prune).
    pub fn cache_clear(&self) -> Result<usize> {
        let records = self.cache_records()?;
        for (key, _) in &records {
            let _ = std::fs::remove_file(self.cache_path(key));
        }
        Ok(records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;
    use oci::MediaType;

    #[test]
    fn records_round_trip_and_vanish_with_their_blob() {
        let (_d, store) = temp_store();
        let key = Digest::of(b"step");
        assert_eq!(store.cache_get(&key).unwrap(), None);
        let blob = store.put_blob(b"layer").unwrap();
        let record = CacheRecord {
            layer: Some(CachedLayer {
                blob: Descriptor::new(MediaType::OciLayerGzip, blob.clone(), 5),
                diff_id: DiffId(Digest::of(b"tar")),
            }),
            created: "2024-01-01T00:00:00Z".into(),
            inputs: vec![("instruction".into(), "RUN true".into())],
        };
        store.cache_put(&key, &record).unwrap();
        assert_eq!(store.cache_get(&key).unwrap(), Some(record));
        assert_eq!(store.cache_records().unwrap().len(), 1);
        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(store.cache_get(&key).unwrap(), None);
    }
}
