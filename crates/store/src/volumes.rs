//! Named volumes: `volumes-v1/<name>/_data` is the directory containers mount (docker's
//! layout), `volumes-v1/<name>/meta.json` when and how it was made. Volumes outlive the
//! containers that use them; `prune` never touches them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::containers::is_valid_name;
use crate::{IoContext, Result, Store, StoreError, read_dir_if_exists};

pub(crate) const VOLUMES_DIR: &str = "volumes-v1";
const META: &str = "meta.json";

/// What the store records about a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeMeta {
    /// RFC 3339.
    pub created_at: String,
    /// Made for a container without a name being given (`-v /path`, an image's VOLUME).
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume and its data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub mountpoint: PathBuf,
    pub meta: VolumeMeta,
}

impl Store {
    fn volumes_dir(&self) -> PathBuf {
        self.root().join(VOLUMES_DIR)
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        let dir = self.volumes_dir().join(name);
        let data = dir.join("_data");
        if !data.is_dir() {
            return Ok(None);
        }
        let meta = std::fs::read(dir.join(META))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        Ok(Some(Volume {
            name: name.to_string(),
            mountpoint: data,
            meta,
        }))
    }

    /// Returns the volume, creating it first when it does not exist.
    pub fn ensure_volume(&self, name: &str, meta: VolumeMeta) -> Result<Volume> {
        if !is_valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        if let Some(v) = self.volume(name)? {
            return Ok(v);
        }
        let dir = self.volumes_dir().join(name);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let data = serde_json::to_vec(&meta)
            .map_err(|e| StoreError::Invalid(format!("serializing volume metadata: {e}")))?;
        std::fs::write(dir.join(META), data).ctx(|| format!("creating volume {name}"))?;
        let mountpoint = dir.join("_data");
        match std::fs::create_dir(&mountpoint) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("creating volume {name}")),
        }
        Ok(Volume {
            name: name.to_string(),
            mountpoint,
            meta,
        })
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<Volume>> {
        let dir = self.volumes_dir();
        let Some(entries) = read_dir_if_exists(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str()
                && let Some(v) = self.volume(name)?
            {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names of the containers that mount the volume.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|c| c.id)
            .collect())
    }

    /// Removes a volume and its data; refuses while a container uses it. Returns the bytes
    /// freed.
    pub fn remove_volume(&self, name: &str) -> Result<u64> {
        if self.volume(name)?.is_none() {
            return Err(StoreError::Invalid(format!("get {name}: no such volume")));
        }
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(StoreError::Invalid(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = self.volumes_dir().join(name);
        let bytes = crate::snapshot::tree_size(&dir);
        std::fs::remove_dir_all(&dir).ctx(|| format!("removing volume {name}"))?;
        Ok(bytes)
    }
}
