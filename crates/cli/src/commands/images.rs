use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use oci::{DiffId, Reference};
use serde::Serialize;
use store::{ImageRecord, Store};

use super::{Context, now_seconds};
use crate::format::{Table, ellipsis, human_size, since};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag)
    repository: Option<String>,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
}

/// Uncompressed size of the image's layers, as docker reports SIZE.
fn image_size(store: &Store, image: &ImageRecord) -> Result<u64> {
    let mut total = 0;
    for (blob, _) in image.layers() {
        total += store.layer_info_or_compute(&blob.digest)?.uncompressed_size;
    }
    Ok(total)
}

fn matches_filter(name: &Reference, filter: &str) -> bool {
    let Ok(wanted) = Reference::parse_exact(filter) else {
        return false;
    };
    wanted.name() == name.name() && wanted.tag().is_none_or(|t| Some(t) == name.tag())
}

/// docker's RepoDigests: `repository@digest` for each repository the image was pulled from or
/// pushed to, and each name given by digest.
fn repo_digests(store: &Store, image: &ImageRecord) -> Result<Vec<Reference>> {
    let mut out = store.repo_digests(&image.descriptor.digest)?;
    for name in &image.names {
        if name.tag().is_none() && name.digest().is_some() && !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

fn display_id(id: &oci::Digest, no_trunc: bool) -> String {
    if no_trunc { id.to_string() } else { id.short() }
}

pub fn images(ctx: &Context, args: ImagesArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let mut images = store.images()?;
    images.sort_by_key(|i| {
        std::cmp::Reverse(crate::format::unix_seconds(i.config.created.as_deref()))
    });
    let now = now_seconds();
    let mut table = if args.digests {
        Table::new(&["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"])
    } else {
        Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])
    };
    for image in &images {
        let rows: Vec<(String, String)> = if image.names.is_empty() {
            if args.repository.is_some() {
                continue;
            }
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .names
                .iter()
                .filter(|n| {
                    args.repository
                        .as_deref()
                        .is_none_or(|f| matches_filter(n, f))
                })
                .filter(|n| {
                    // A name by digest only shows when its repository has no tag here.
                    n.tag().is_some()
                        || !image
                            .names
                            .iter()
                            .any(|o| o.tag().is_some() && o.name() == n.name())
                })
                .map(|n| (n.familiar_name(), n.tag().unwrap_or("<none>").to_string()))
                .collect()
        };
        if rows.is_empty() {
            continue;
        }
        let id = display_id(image.id(), args.no_trunc);
        if ctx.quiet {
            for _ in &rows {
                println!("{id}");
            }
            continue;
        }
        let size = human_size(image_size(&store, image)?);
        let created = since(image.config.created.as_deref(), now);
        let digests = if args.digests {
            repo_digests(&store, image)?
        } else {
            Vec::new()
        };
        for (repo, tag) in rows {
            if args.digests {
                let digest = digests
                    .iter()
                    .find(|d| d.familiar_name() == repo)
                    .and_then(|d| d.digest())
                    .map_or_else(|| "<none>".to_string(), |d| d.to_string());
                table.row(vec![
                    repo,
                    tag,
                    digest,
                    id.clone(),
                    created.clone(),
                    size.clone(),
                ]);
            } else {
                table.row(vec![repo, tag, id.clone(), created.clone(), size.clone()]);
            }
        }
    }
    if !ctx.quiet {
        print!("{}", table.render());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG] or an image id
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

pub fn tag(ctx: &Context, args: TagArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let image = store.resolve_image(&args.source)?;
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    store.set_name(&target, &image.descriptor)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Images to remove, by name or id
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image by id even when several names point at it
    #[arg(short, long)]
    force: bool,
}

pub fn rmi(ctx: &Context, args: RmiArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let mut failed = 0;
    for query in &args.images {
        if let Err(e) = remove_one(&store, query, args.force) {
            eprintln!("Error: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could not be removed",
            args.images.len()
        );
    }
    Ok(())
}

/// docker's rmi: a name untags (and deletes the image when that was its last name); an id
/// deletes the image, refusing when several names point at it unless forced.
fn remove_one(store: &Store, query: &str, force: bool) -> Result<()> {
    let image = store.resolve_image(query)?;
    super::containers::check_image_unused(store, &image, query, force)?;
    if let Ok(name) = Reference::parse(query)
        && image.names.contains(&name)
    {
        if let Some((_, orphaned)) = store.remove_name(&name)? {
            println!("Untagged: {}", name.familiar());
            if orphaned {
                println!("Deleted: {}", image.id());
            }
        }
        return Ok(());
    }
    if image.names.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            image.id().short()
        );
    }
    for name in store.remove_image(&image.descriptor.digest)? {
        println!("Untagged: {}", name.familiar());
    }
    println!("Deleted: {}", image.id());
    Ok(())
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images by name or id
    #[arg(required = true)]
    images: Vec<String>,
}

/// docker's image inspect object, plus `History` and the manifest `Descriptor` (as docker
/// shows it with the containerd image store).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectView<'a> {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: &'static str,
    comment: String,
    created: &'a str,
    author: &'a str,
    config: Option<&'a oci::ContainerConfig>,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: RootFsView,
    history: &'a [oci::History],
    descriptor: &'a oci::Descriptor,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFsView {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

fn inspect_view<'a>(store: &Store, image: &'a ImageRecord) -> Result<InspectView<'a>> {
    let c = &image.config;
    Ok(InspectView {
        id: image.id().to_string(),
        repo_tags: image
            .names
            .iter()
            .filter(|n| n.tag().is_some())
            .map(Reference::familiar)
            .collect(),
        repo_digests: repo_digests(store, image)?
            .iter()
            .map(Reference::familiar)
            .collect(),
        parent: "",
        comment: c
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default(),
        created: c.created.as_deref().unwrap_or("0001-01-01T00:00:00Z"),
        author: c.author.as_deref().unwrap_or(""),
        config: c.config.as_ref(),
        architecture: &c.architecture,
        variant: c.variant.as_deref(),
        os: &c.os,
        size: image_size(store, image)?,
        root_fs: RootFsView {
            kind: c.rootfs.kind.clone(),
            layers: c.rootfs.diff_ids.iter().map(DiffId::to_string).collect(),
        },
        history: &c.history,
        descriptor: &image.manifest_descriptor,
    })
}

pub fn inspect(ctx: &Context, args: InspectArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for query in &args.images {
        match store.resolve_image(query) {
            Ok(image) => found.push(image),
            Err(store::StoreError::ImageNotFound(q)) => missing.push(q),
            Err(e) => return Err(e.into()),
        }
    }
    let views = found
        .iter()
        .map(|i| inspect_view(&store, i))
        .collect::<Result<Vec<_>>>()?;
    println!("{}", to_docker_json(&views)?);
    if !missing.is_empty() {
        return Err(anyhow!("No such image: {}", missing.join(", ")));
    }
    Ok(())
}

/// JSON indented with four spaces, as docker inspect prints it.
fn to_docker_json<T: Serialize>(value: &T) -> Result<String> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(out)?)
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Image by name or id
    image: String,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
}

pub fn history(ctx: &Context, args: HistoryArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let image = store.resolve_image(&args.image)?;
    let sizes: HashMap<&DiffId, u64> = image
        .layers()
        .map(|(blob, diff)| {
            let size = store.layer_info_or_compute(&blob.digest)?.uncompressed_size;
            Ok((diff, size))
        })
        .collect::<Result<_>>()?;
    let now = now_seconds();
    let id = display_id(image.id(), args.no_trunc);
    let mut table = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    for (i, (entry, layer)) in image.config.history_with_layers().iter().rev().enumerate() {
        let row_id = if i == 0 {
            id.clone()
        } else {
            "<missing>".to_string()
        };
        if ctx.quiet {
            println!("{row_id}");
            continue;
        }
        let size = layer.and_then(|l| sizes.get(l)).copied().unwrap_or(0);
        let created_by = entry.created_by.as_deref().unwrap_or("").replace('\t', " ");
        let created = if args.human {
            since(entry.created.as_deref(), now)
        } else {
            entry.created.clone().unwrap_or_default()
        };
        table.row(vec![
            row_id,
            created,
            if args.no_trunc {
                created_by
            } else {
                ellipsis(&created_by, 45)
            },
            if args.human {
                human_size(size)
            } else {
                size.to_string()
            },
            entry.comment.clone().unwrap_or_default(),
        ]);
    }
    if !ctx.quiet {
        print!("{}", table.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_filter_matches_like_docker() {
        let name = Reference::parse("busybox:1.36").unwrap();
        assert!(matches_filter(&name, "busybox"));
        assert!(matches_filter(&name, "docker.io/library/busybox:1.36"));
        assert!(!matches_filter(&name, "busybox:latest"));
        assert!(!matches_filter(&name, "alpine"));
    }
}
