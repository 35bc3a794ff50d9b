//! Containers on disk: `containers-v1/<id>/` holds the container's record (`config.json`,
//! docker-like fields), its init layer (`init/`), its copy-on-write layer (`upper/`, overlay's
//! `work/`), the mount point
//! of its root filesystem (`rootfs/`), per-run scratch files (`scratch/`), its runtime state
//! (`state/`, owned by the sandbox) and its output (`log`).
//!
//! The store keeps records and directories; starting and stopping containers is the
//! `runtime` crate's job. A record names the image it was created from, so garbage collection
//! keeps that image's blobs and snapshots for as long as the container exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci::{ContainerConfig, Descriptor};
use serde::{Deserialize, Serialize};

use crate::{IoContext, Result, Store, StoreError, read_dir_if_exists};

/// The lock on the set of container names, released when dropped.
#[derive(Debug)]
pub struct ContainersLock {
    _file: std::fs::File,
}

pub(crate) const CONTAINERS_DIR: &str = "containers-v1";
const RECORD: &str = "config.json";

/// A container as docker's inspect describes it (the fields strata has), plus the image
/// manifest it was made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Without docker's leading `/`.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// The command actually run: `Path` and `Args`, as docker splits them.
    pub path: String,
    pub args: Vec<String>,
    /// The image id (`sha256:` of its config).
    pub image: String,
    /// The image as the user named it.
    pub image_name: String,
    /// The image's manifest: a garbage-collection root.
    pub image_manifest: Descriptor,
    /// The container's effective configuration (image defaults merged with the flags).
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub mounts: Vec<MountPoint>,
}

/// The flags that shape the container's environment rather than its process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub hostname: String,
    pub network_mode: String,
    pub readonly_rootfs: bool,
    pub auto_remove: bool,
    pub tty: bool,
    pub open_stdin: bool,
    /// Bytes; 0 when unlimited.
    pub memory: u64,
    pub nano_cpus: u64,
    pub pids_limit: i64,
    /// `--tmpfs` and `--mount type=tmpfs` targets with their options.
    pub tmpfs: BTreeMap<String, String>,
}

/// A mount of the container, as docker's inspect lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path (binds and volumes).
    pub source: String,
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Size and mode options (tmpfs only), in docker's `size=…,mode=…` form.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
    /// An anonymous volume, removed with the container when it was run with `--rm`.
    #[serde(default)]
    pub anonymous: bool,
}

/// The directories of one container.
#[derive(Clone, Debug)]
pub struct ContainerPaths {
    pub dir: PathBuf,
    /// docker's init layer: the mount points every container gets (`/etc/hosts`, `/proc`…),
    /// a lower directory between the image and `upper`, so they never show up as changes.
    pub init: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub scratch: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// docker's container and volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Store {
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root().join(CONTAINERS_DIR)
    }

    pub fn container_paths(&self, id: &str) -> ContainerPaths {
        let dir = self.containers_dir().join(id);
        ContainerPaths {
            init: dir.join("init"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            scratch: dir.join("scratch"),
            state: dir.join("state"),
            log: dir.join("log"),
            dir,
        }
    }

    /// Held around name checks and record writes, so two `run --name x` never both win.
    pub fn lock_containers(&self) -> Result<ContainersLock> {
        let dir = self.containers_dir();
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".lock");
        let ctx = || format!("locking {}", path.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(ctx)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(std::io::Error::from)
            .ctx(ctx)?;
        Ok(ContainersLock { _file: file })
    }

    /// Creates the container's directories and writes its record. Fails when the id or the
    /// name is taken (call under [`Store::lock_containers`]).
    pub fn create_container(&self, record: &ContainerRecord) -> Result<ContainerPaths> {
        if !is_hex_id(&record.id) {
            return Err(StoreError::Invalid(format!(
                "invalid container id {:?}",
                record.id
            )));
        }
        if let Some(other) = self
            .containers()?
            .into_iter()
            .find(|c| c.name == record.name)
        {
            return Err(StoreError::Invalid(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                record.name, other.id
            )));
        }
        let paths = self.container_paths(&record.id);
        std::fs::create_dir(&paths.dir).ctx(|| format!("creating {}", paths.dir.display()))?;
        for d in [
            &paths.init,
            &paths.upper,
            &paths.work,
            &paths.rootfs,
            &paths.scratch,
            &paths.state,
        ] {
            std::fs::create_dir(d).ctx(|| format!("creating {}", d.display()))?;
        }
        self.write_container(record)?;
        Ok(paths)
    }

    pub fn write_container(&self, record: &ContainerRecord) -> Result<()> {
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::Invalid(format!("serializing a container record: {e}")))?;
        let path = self.container_paths(&record.id).dir.join(RECORD);
        // Not fsynced: a container record is as durable as the container's upper directory,
        // which is not fsynced either; the rename keeps it whole.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, data).ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).ctx(|| format!("writing {}", path.display()))
    }

    /// Every container record, oldest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let dir = self.containers_dir();
        let Some(entries) = read_dir_if_exists(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().filter(|n| is_hex_id(n)) else {
                continue;
            };
            // A directory without a readable record is a container being created or removed.
            if let Ok(data) = std::fs::read(entry.path().join(RECORD))
                && let Ok(record) = serde_json::from_slice::<ContainerRecord>(&data)
                && record.id == id
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds a container as docker does: full id, exact name, or a unique id prefix.
    pub fn find_container(&self, query: &str) -> Result<Option<ContainerRecord>> {
        let query = query.strip_prefix('/').unwrap_or(query);
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.id == query || c.name == query) {
            return Ok(Some(c.clone()));
        }
        if query.is_empty() {
            return Ok(None);
        }
        let mut hits = all.into_iter().filter(|c| c.id.starts_with(query));
        match (hits.next(), hits.next()) {
            (Some(c), None) => Ok(Some(c)),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous(format!(
                "multiple containers found with provided prefix: {query}"
            ))),
        }
    }

    /// Removes the container's directory (record, layer, state, log).
    pub fn remove_container(&self, id: &str) -> Result<()> {
        if !is_hex_id(id) {
            return Err(StoreError::Invalid(format!("invalid container id {id:?}")));
        }
        let dir = self.container_paths(id).dir;
        // The record goes first, so a half-removed container is never listed.
        let _ = std::fs::remove_file(dir.join(RECORD));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", dir.display())),
        }
    }
}
