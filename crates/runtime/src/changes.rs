//! A container's copy-on-write layer seen three ways: as docker's change list (`diff`), as a
//! new image layer (`commit`), and merged with the image as one flat tar (`export`).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use dockerfile::{CommandLine, Expander, Instruction, KeyValue};
use layer::{Compression, DiffOptions, DiffSource};
use oci::{ContainerConfig, Descriptor, EmptyObject, History, Reference};
use store::{ContainerRecord, Store};

use crate::config::replace_or_append;
use crate::{IoContext, Result, RuntimeError};

/// docker diff's `A`, `C`, `D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: String,
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// The image's snapshot directories, top first (unpacking what is missing).
fn image_lowers(store: &Store, record: &ContainerRecord) -> Result<Vec<PathBuf>> {
    let image = store.image_record(record.image_manifest.clone(), Vec::new())?;
    Ok(store
        .ensure_snapshots(&image)?
        .into_iter()
        .rev()
        .map(|s| s.path)
        .collect())
}

fn in_lowers(lowers: &[PathBuf], rel: &Path) -> bool {
    for lower in lowers {
        match std::fs::symlink_metadata(lower.join(rel)) {
            Ok(m) => return !is_whiteout(&m),
            Err(_) => continue,
        }
    }
    false
}

/// docker diff: every path of the container's layer, sorted, as added, changed (present in
/// the image) or deleted (a whiteout).
pub fn diff(store: &Store, record: &ContainerRecord) -> Result<Vec<Change>> {
    let _lock = store.lock_shared()?;
    let lowers = image_lowers(store, record)?;
    let upper = store.container_paths(&record.id).upper;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let entries = std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
            let child = rel.join(entry.file_name());
            let meta = entry
                .metadata()
                .ctx(|| format!("reading {}", entry.path().display()))?;
            let kind = if is_whiteout(&meta) {
                ChangeKind::Deleted
            } else if in_lowers(&lowers, &child) {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            };
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push(Change {
                kind,
                path: format!("/{}", child.display()),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// How to commit.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub name: Option<Reference>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    pub compression: Compression,
    /// RFC 3339 time for `created` (callers pin it with SOURCE_DATE_EPOCH).
    pub created: String,
    pub source_date_epoch: Option<i64>,
}

/// docker commit: the container's layer becomes one new layer on top of its image, with the
/// container's configuration (and the `-c` changes) as the new image's. Returns the image id.
pub fn commit(
    store: &Store,
    record: &ContainerRecord,
    opts: &CommitOptions,
) -> Result<oci::Digest> {
    let mut config = record.config.clone();
    apply_changes(&mut config, &opts.changes)?;
    let _lock = store.lock_shared()?;
    let image = store.image_record(record.image_manifest.clone(), Vec::new())?;
    let upper = store.container_paths(&record.id).upper;
    let diff_opts = DiffOptions {
        compression: opts.compression,
        source_date_epoch: opts.source_date_epoch,
    };
    let writer = store.blob_writer()?;
    let (stats, writer) = layer::write_diff(DiffSource::OverlayUpper(&upper), &diff_opts, writer)?;
    let (digest, size) = writer.commit(None)?;
    store.put_layer_info(
        &digest,
        &store::LayerInfo {
            diff_id: stats.diff_id.clone(),
            uncompressed_size: stats.uncompressed_size,
        },
    )?;
    let mut image_config = image.config.clone();
    image_config.created = Some(opts.created.clone());
    if let Some(a) = &opts.author {
        image_config.author = Some(a.clone());
    }
    image_config.config = Some(config);
    image_config.rootfs.diff_ids.push(stats.diff_id);
    image_config.history.push(History {
        created: Some(opts.created.clone()),
        created_by: Some(record.config.cmd.clone().unwrap_or_default().join(" ")),
        author: opts.author.clone(),
        comment: opts.message.clone(),
        empty_layer: false,
    });
    let mut layers = image.manifest.layers.clone();
    layers.push(Descriptor::new(opts.compression.media_type(), digest, size));
    let descriptor = store.put_image(&image_config, layers)?;
    match &opts.name {
        Some(n) => store.set_name(n, &descriptor)?,
        None => store.add_unnamed(&descriptor)?,
    }
    Ok(store.image_record(descriptor, Vec::new())?.id().clone())
}

/// docker export: the container's filesystem (its layer over the image's) as one tar.
pub fn export<W: Write>(store: &Store, record: &ContainerRecord, out: W) -> Result<W> {
    let _lock = store.lock_shared()?;
    let mut roots = vec![store.container_paths(&record.id).upper];
    roots.extend(image_lowers(store, record)?);
    let refs: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    let opts = DiffOptions {
        compression: Compression::None,
        source_date_epoch: None,
    };
    let (_, out) = layer::write_merged(&refs, &opts, out)?;
    Ok(out)
}

fn env_pairs(config: &ContainerConfig) -> Vec<(String, String)> {
    config
        .env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn command(config: &ContainerConfig, line: CommandLine) -> Vec<String> {
    if !line.shell_form {
        return line.args;
    }
    let mut argv = if config.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        config.shell.clone()
    };
    argv.extend(line.args);
    argv
}

/// Applies `commit -c` / `import -c` changes: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
/// STOPSIGNAL, USER, VOLUME and WORKDIR, expanded against the environment as it stands.
pub fn apply_changes(config: &mut ContainerConfig, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for change in changes {
        let bad = |e: String| RuntimeError::Invalid(format!("invalid change {change:?}: {e}"));
        let ast = dockerfile::parse(change.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let expander = Expander::new(ast.escape);
        for record in &ast.records {
            let instruction =
                dockerfile::parse_instruction(record).map_err(|e| bad(e.to_string()))?;
            let env = env_pairs(config);
            let expand = |s: &str| expander.process_word(s, &env).map_err(|e| bad(e.reason));
            let expand_kv =
                |kv: &KeyValue| Ok::<_, RuntimeError>((expand(&kv.key)?, expand(&kv.value)?));
            match instruction {
                Instruction::Cmd(line) => {
                    config.cmd = Some(command(config, line));
                    cmd_set = true;
                }
                Instruction::Entrypoint(line) => {
                    config.entrypoint = if line.args.is_empty() {
                        None
                    } else {
                        Some(command(config, line))
                    };
                    if !cmd_set {
                        config.cmd = None;
                    }
                }
                Instruction::Env(kvs) => {
                    let mut set = Vec::new();
                    for kv in &kvs {
                        let (k, v) = expand_kv(kv)?;
                        set.push(format!("{k}={v}"));
                    }
                    replace_or_append(&mut config.env, &set);
                }
                Instruction::Label(kvs) => {
                    for kv in &kvs {
                        let (k, v) = expand_kv(kv)?;
                        config.labels.insert(k, v);
                    }
                }
                Instruction::Expose(ports) => {
                    for p in ports {
                        let p = expand(&p)?;
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        config.exposed_ports.insert(p, EmptyObject {});
                    }
                }
                Instruction::Onbuild(o) => config.on_build.push(o.expression),
                Instruction::Stopsignal(s) => config.stop_signal = expand(&s)?,
                Instruction::User(u) => config.user = expand(&u)?,
                Instruction::Volume(vs) => {
                    for v in vs {
                        config.volumes.insert(expand(&v)?, EmptyObject {});
                    }
                }
                Instruction::Workdir(w) => {
                    let w = expand(&w)?;
                    config.working_dir = if w.starts_with('/') || config.working_dir.is_empty() {
                        Path::new("/").join(&w).display().to_string()
                    } else {
                        Path::new(&config.working_dir)
                            .join(&w)
                            .display()
                            .to_string()
                    };
                }
                other => {
                    return Err(RuntimeError::Invalid(format!(
                        "{} is not a valid change command",
                        other.keyword()
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker_commit() {
        let mut c = ContainerConfig {
            cmd: Some(vec!["old".into()]),
            env: vec!["A=1".into()],
            working_dir: "/srv".into(),
            ..Default::default()
        };
        apply_changes(
            &mut c,
            &[
                "ENV B=$A C=x".into(),
                "CMD echo hi".into(),
                "WORKDIR sub".into(),
                "EXPOSE 80 53/udp".into(),
                "LABEL k=v".into(),
                "USER nobody".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.env, ["A=1", "B=1", "C=x"]);
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.working_dir, "/srv/sub");
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        assert_eq!(c.labels["k"], "v");
        assert_eq!(c.user, "nobody");
        let mut c = ContainerConfig {
            cmd: Some(vec!["old".into()]),
            ..Default::default()
        };
        apply_changes(&mut c, &[r#"ENTRYPOINT ["/ep"]"#.into()]).unwrap();
        assert_eq!(
            (c.entrypoint.unwrap(), c.cmd),
            (vec!["/ep".to_string()], None)
        );
        assert!(apply_changes(&mut ContainerConfig::default(), &["RUN true".into()]).is_err());
        assert!(apply_changes(&mut ContainerConfig::default(), &["BOGUS x".into()]).is_err());
    }
}
