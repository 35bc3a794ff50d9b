//! The container lifecycle: create (record, copy-on-write layer, volumes), run attached or
//! detached through the sandbox, stop, remove.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sandbox::{ProcessSpec, Resources, RootFs};
use store::{ContainerPaths, ContainerRecord, HostConfig, MountPoint, Store, VolumeMeta};

use crate::config::{RunOptions, argv, merge, process_env};
use crate::mounts::MountRequest;
use crate::{IoContext, Result, RuntimeError, names, now_rfc3339};

/// Where a container is: the sandbox's view of its state directory.
pub type State = sandbox::Status;

/// A container that exists on disk and is ready to start.
#[derive(Debug)]
pub struct Created {
    pub record: ContainerRecord,
    pub paths: ContainerPaths,
    spec: ProcessSpec,
    /// Anonymous volume directories, removed with the container under `--rm`.
    anonymous_volumes: Vec<PathBuf>,
}

/// The image's lower directories, top first, as overlayfs wants them.
fn lowers_top_first(store: &Store, record_or_image: &store::ImageRecord) -> Result<Vec<PathBuf>> {
    Ok(store
        .ensure_snapshots(record_or_image)?
        .into_iter()
        .rev()
        .map(|s| s.path)
        .collect())
}

/// Reads a small file of the image's merged filesystem without mounting it: the topmost layer
/// that has the path wins, and a whiteout hides it. Symlinks are not followed.
pub(crate) fn read_image_file(lowers: &[PathBuf], rel: &str) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for lower in lowers {
        let path = lower.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return None,
            Ok(m) if m.is_file() => return std::fs::read_to_string(&path).ok(),
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// The init layer: the mount points the sandbox always uses, so creating them never copies a
/// directory of the image up into the container's layer.
fn write_init_layer(init: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for d in ["dev", "proc", "sys", "etc"] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(init.join(d))
            .ctx(|| format!("creating {}", init.join(d).display()))?;
    }
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        std::fs::write(init.join(f), b"").ctx(|| format!("creating {}", init.join(f).display()))?;
    }
    Ok(())
}

/// Sorts mounts so a parent directory is mounted before what goes inside it.
fn depth(target: &str) -> usize {
    target.split('/').filter(|c| !c.is_empty()).count()
}

fn clean_target(t: &str) -> String {
    let trimmed = t.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

/// Creates the container: resolves the image, unpacks what is missing, applies docker's
/// rules, prepares volumes and writes the record.
pub fn create(store: &Store, opts: &RunOptions) -> Result<Created> {
    let _lock = store.lock_shared()?;
    let image = store.resolve_image(&opts.image)?;
    let lowers = lowers_top_first(store, &image)?;
    let config = merge(image.config.config.as_ref(), opts)?;
    let argv = argv(&config)?;
    let id = names::new_id();
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let passwd = read_image_file(&lowers, "etc/passwd").unwrap_or_default();
    let group = read_image_file(&lowers, "etc/group").unwrap_or_default();
    let mut user = sandbox::users::resolve_exec_user(&config.user, &passwd, &group)?;
    // docker lists the primary group among the supplementary ones too (`id` shows it).
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.insert(0, user.gid);
    }

    // Mounts: the flags, then an anonymous volume for each VOLUME of the image not covered.
    let mut requests = opts.mounts.clone();
    for target in config.volumes.keys() {
        let t = clean_target(target);
        if !requests.iter().any(|r| clean_target(r.target()) == t) {
            requests.push(MountRequest::Volume {
                name: None,
                target: t,
                readonly: false,
            });
        }
    }
    let mut seen = Vec::new();
    for r in &requests {
        let t = clean_target(r.target());
        if seen.contains(&t) {
            return Err(RuntimeError::Invalid(format!("Duplicate mount point: {t}")));
        }
        seen.push(t);
    }
    requests.sort_by_key(|r| depth(r.target()));
    let mut mounts = Vec::new();
    let mut records = Vec::new();
    let mut tmpfs = BTreeMap::new();
    let mut anonymous_volumes = Vec::new();
    for r in requests {
        match r {
            MountRequest::Bind {
                source,
                target,
                readonly,
                create,
            } => {
                if create && !source.exists() {
                    std::fs::create_dir_all(&source)
                        .ctx(|| format!("creating bind source {}", source.display()))?;
                }
                records.push(MountPoint {
                    kind: "bind".into(),
                    name: String::new(),
                    source: source.display().to_string(),
                    destination: target.clone(),
                    rw: !readonly,
                    options: String::new(),
                    anonymous: false,
                });
                mounts.push(sandbox::Mount::Bind {
                    source,
                    target,
                    readonly,
                });
            }
            MountRequest::Volume {
                name,
                target,
                readonly,
            } => {
                let anonymous = name.is_none();
                let name = name.unwrap_or_else(names::new_id);
                let volume = store.ensure_volume(
                    &name,
                    VolumeMeta {
                        created_at: now_rfc3339(),
                        anonymous,
                    },
                )?;
                if anonymous && let Some(dir) = volume.mountpoint.parent() {
                    anonymous_volumes.push(dir.to_path_buf());
                }
                records.push(MountPoint {
                    kind: "volume".into(),
                    name: name.clone(),
                    source: volume.mountpoint.display().to_string(),
                    destination: target.clone(),
                    rw: !readonly,
                    options: String::new(),
                    anonymous,
                });
                mounts.push(sandbox::Mount::Bind {
                    source: volume.mountpoint,
                    target,
                    readonly,
                });
            }
            MountRequest::Tmpfs {
                target,
                size_bytes,
                mode,
            } => {
                let mut options = Vec::new();
                if let Some(s) = size_bytes {
                    options.push(format!("size={s}"));
                }
                if let Some(m) = mode {
                    options.push(format!("mode={m:o}"));
                }
                tmpfs.insert(target.clone(), options.join(","));
                records.push(MountPoint {
                    kind: "tmpfs".into(),
                    name: String::new(),
                    source: String::new(),
                    destination: target.clone(),
                    rw: true,
                    options: options.join(","),
                    anonymous: false,
                });
                mounts.push(sandbox::Mount::Tmpfs {
                    target,
                    size_bytes,
                    mode,
                });
            }
        }
    }

    let network = match opts.network {
        sandbox::Network::None => "none",
        sandbox::Network::Host => "host",
    };
    let record = ContainerRecord {
        id: id.clone(),
        name: String::new(),
        created: now_rfc3339(),
        path: argv[0].clone(),
        args: argv[1..].to_vec(),
        image: image.id().to_string(),
        image_name: opts.image.clone(),
        image_manifest: image.manifest_descriptor.clone(),
        config: config.clone(),
        host_config: HostConfig {
            hostname: hostname.clone(),
            network_mode: network.into(),
            readonly_rootfs: opts.read_only,
            auto_remove: opts.auto_remove,
            tty: opts.tty,
            open_stdin: opts.interactive,
            memory: opts.memory.unwrap_or(0),
            nano_cpus: opts.nano_cpus.unwrap_or(0),
            pids_limit: opts.pids_limit.unwrap_or(0),
            tmpfs,
        },
        mounts: records,
    };
    let (record, paths) = {
        let _names = store.lock_containers()?;
        let mut record = record;
        record.name = match &opts.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !store::is_valid_name(n) {
                    return Err(RuntimeError::Invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => {
                let taken: Vec<String> = store.containers()?.into_iter().map(|c| c.name).collect();
                names::new_name(&taken)
            }
        };
        let paths = store.create_container(&record)?;
        (record, paths)
    };

    write_init_layer(&paths.init)?;
    let mut lowers = lowers;
    lowers.insert(0, paths.init.clone());
    let resources = Resources {
        name: id.clone(),
        memory_bytes: opts.memory,
        nano_cpus: opts.nano_cpus.filter(|n| *n > 0),
        pids_limit: opts.pids_limit,
    };
    let spec = ProcessSpec {
        args: argv,
        env: process_env(&config, &hostname, opts.tty, &user.home),
        cwd: if config.working_dir.is_empty() {
            "/".into()
        } else {
            config.working_dir.clone()
        },
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids,
        hostname,
        network: opts.network,
        rootfs: RootFs {
            lowers,
            upper: Some(paths.upper.clone()),
            work: Some(paths.work.clone()),
            mountpoint: paths.rootfs.clone(),
        },
        mounts,
        readonly_rootfs: opts.read_only,
        scratch: paths.scratch.clone(),
        tty: opts.tty,
        resources: (!resources.is_empty()).then_some(resources),
        state_dir: Some(paths.state.clone()),
        ready_fd: None,
        chroot: false,
    };
    Ok(Created {
        record,
        paths,
        spec,
        anonymous_volumes,
    })
}

/// Runs the container in the foreground with the given stdio (signals to this process are
/// forwarded to it) and returns its exit code; removes it afterwards under `--rm`.
pub fn run_attached(
    store: &Store,
    created: Created,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<i32> {
    let result = sandbox::run_attached(&created.spec, stdin, stdout, stderr);
    if created.record.host_config.auto_remove {
        remove_soon(store, &created)?;
        for v in &created.anonymous_volumes {
            let _ = std::fs::remove_dir_all(v);
        }
    }
    Ok(result?)
}

/// `--rm` in the foreground: the container leaves the store at once (its directory is renamed
/// out of `containers-v1/`'s namespace of ids), and the files are deleted by a background
/// `rm -rf`, so the caller does not wait for the filesystem to free them.
fn remove_soon(store: &Store, created: &Created) -> Result<()> {
    let dir = &created.paths.dir;
    let trash = dir.with_file_name(format!(".removing-{}", created.record.id));
    if std::fs::rename(dir, &trash).is_err() {
        return Ok(store.remove_container(&created.record.id)?);
    }
    let spawned = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&trash)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() {
        std::fs::remove_dir_all(&trash).ctx(|| format!("removing {}", trash.display()))?;
    }
    Ok(())
}

/// Starts the container in the background; its output goes to its log.
pub fn start_detached(created: Created) -> Result<sandbox::Started> {
    let mut remove = Vec::new();
    if created.record.host_config.auto_remove {
        remove.push(created.paths.dir.clone());
        remove.extend(created.anonymous_volumes.iter().cloned());
    }
    Ok(sandbox::start_detached(
        &created.spec,
        &created.paths.log,
        &remove,
    )?)
}

pub fn state(store: &Store, record: &ContainerRecord) -> State {
    sandbox::status(&store.container_paths(&record.id).state)
}

/// Blocks until the container is not running.
pub fn wait_exit(store: &Store, record: &ContainerRecord) {
    let dir = store.container_paths(&record.id).state;
    while !sandbox::wait_stopped(&dir, Duration::from_secs(3600)) {}
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

fn stop_signal(record: &ContainerRecord) -> i32 {
    sandbox::parse_signal(&record.config.stop_signal).unwrap_or(SIGTERM)
}

/// docker stop: the stop signal (the image's STOPSIGNAL or SIGTERM), then SIGKILL after
/// `timeout`. Returns false when the container was not running.
pub fn stop(
    store: &Store,
    record: &ContainerRecord,
    timeout: Duration,
    signal: Option<i32>,
) -> Result<bool> {
    let dir = store.container_paths(&record.id).state;
    let signal = signal.unwrap_or_else(|| stop_signal(record));
    if !sandbox::kill(&dir, signal).ctx(|| format!("signalling container {}", record.id))? {
        return Ok(false);
    }
    if sandbox::wait_stopped(&dir, timeout) {
        return Ok(true);
    }
    sandbox::kill(&dir, SIGKILL).ctx(|| format!("killing container {}", record.id))?;
    if !sandbox::wait_stopped(&dir, Duration::from_secs(30)) {
        return Err(RuntimeError::Conflict(format!(
            "container {} did not stop after SIGKILL",
            record.id
        )));
    }
    Ok(true)
}

/// docker rm: refuses a running container unless forced (then kills it); `volumes` also
/// removes its anonymous volumes.
pub fn remove(store: &Store, record: &ContainerRecord, force: bool, volumes: bool) -> Result<()> {
    if state(store, record).is_running() {
        if !force {
            return Err(RuntimeError::Conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                record.name
            )));
        }
        stop(store, record, Duration::ZERO, Some(SIGKILL))?;
    }
    store.remove_container(&record.id)?;
    if volumes {
        for m in record.mounts.iter().filter(|m| m.anonymous) {
            let _ = store.remove_volume(&m.name);
        }
    }
    Ok(())
}
