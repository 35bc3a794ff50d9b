use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use archive::{ArchiveFormat, SaveItem};
use clap::{Args, ValueEnum};
use layer::{Compression, DiffOptions, DiffSource};
use oci::{Descriptor, History, ImageConfig, Platform, Reference, RootFs};
use store::Store;

use super::Context;

/// Where a verb's tar output goes: a file written beside its final name and renamed into place
/// only when complete (a failed save never leaves a truncated archive), or stdout.
enum Output {
    File {
        tmp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    Stdout,
}

impl Output {
    fn new(path: Option<&Path>) -> Result<Output> {
        match path {
            Some(p) if p != Path::new("-") => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = tempfile::Builder::new()
                    .prefix(".strata-")
                    .tempfile_in(dir)
                    .with_context(|| format!("creating {}", p.display()))?;
                Ok(Output::File {
                    tmp,
                    path: p.to_path_buf(),
                })
            }
            _ => {
                if std::io::stdout().is_terminal() {
                    bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
                }
                Ok(Output::Stdout)
            }
        }
    }

    fn writer(&self) -> Result<Box<dyn Write + '_>> {
        Ok(match self {
            Output::File { tmp, .. } => Box::new(BufWriter::with_capacity(1 << 20, tmp.as_file())),
            Output::Stdout => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
        })
    }

    fn commit(self) -> Result<()> {
        if let Output::File { tmp, path } = self {
            tmp.as_file().sync_all()?;
            tmp.persist(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Docker,
    Oci,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Images to save, by name or id
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to a file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format: docker (docker load) or oci (an OCI layout in a tar)
    #[arg(long, value_enum, default_value = "docker")]
    format: FormatArg,
}

pub fn save(ctx: &Context, args: SaveArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let mut items: Vec<SaveItem> = Vec::new();
    for query in &args.images {
        let image = store.resolve_image(query)?;
        let named = Reference::parse(query)
            .ok()
            .filter(|r| image.names.contains(r));
        match items.iter_mut().find(|i| i.image.id() == image.id()) {
            Some(existing) => existing.names.extend(named),
            None => items.push(SaveItem {
                image,
                names: named.into_iter().collect(),
            }),
        }
    }
    let format = match args.format {
        FormatArg::Docker => ArchiveFormat::Docker,
        FormatArg::Oci => ArchiveFormat::Oci,
    };
    let output = Output::new(args.output.as_deref())?;
    {
        let writer = output.writer()?;
        let mut writer = archive::save(&store, &items, format, writer)?;
        writer.flush()?;
    }
    output.commit()
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from an archive file or an OCI layout directory instead of stdin
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
}

pub fn load(ctx: &Context, args: LoadArgs) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let loaded = match args.input.as_deref() {
        Some(p) if p.is_dir() => archive::load_dir(&store, p)?,
        Some(p) if p != Path::new("-") => {
            let file = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            load_stream(&store, file).with_context(|| format!("loading {}", p.display()))?
        }
        _ => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            load_stream(&store, std::io::stdin().lock())?
        }
    };
    for image in loaded {
        if image.names.is_empty() {
            println!("Loaded image ID: {}", image.id);
        }
        for name in image.names {
            println!("Loaded image: {}", name.familiar());
        }
    }
    Ok(())
}

/// docker load takes compressed archives too: sniff and decompress.
fn load_stream(store: &Store, input: impl Read) -> Result<Vec<archive::Loaded>> {
    let tar = layer::decompress(BufReader::with_capacity(1 << 20, input))?;
    Ok(archive::load_tar(store, tar)?)
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A root filesystem: a tar (plain, gzip or zstd), a directory, or - for a tar on stdin
    source: String,
    /// Name for the new image, REPOSITORY[:TAG]
    name: Option<String>,
    /// Set the history comment
    #[arg(short, long)]
    message: Option<String>,
    /// Layer compression: gzip, zstd or none
    #[arg(long, default_value = "gzip", value_parser = parse_compression)]
    compression: Compression,
}

pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::parse(s).ok_or_else(|| format!("unknown compression {s:?} (gzip, zstd, none)"))
}

/// `SOURCE_DATE_EPOCH`, when set, pins every timestamp strata writes.
pub fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// RFC 3339 "now" (or the pinned epoch), as image configs record times.
pub fn created_now(epoch: Option<i64>) -> Result<String> {
    let ts = match epoch {
        Some(s) => jiff::Timestamp::from_second(s)?,
        None => jiff::Timestamp::now(),
    };
    Ok(ts.to_string())
}

pub fn import(ctx: &Context, args: ImportArgs) -> Result<()> {
    let name = args.name.as_deref().map(Reference::parse).transpose()?;
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let epoch = source_date_epoch()?;
    let opts = DiffOptions {
        compression: args.compression,
        source_date_epoch: epoch,
    };
    let source = Path::new(&args.source);
    let layer = if args.source != "-" && source.is_dir() {
        store.write_layer(DiffSource::Tree(source), &opts)?
    } else {
        import_tarball(&store, &args.source, &opts)?
    };
    let created = created_now(epoch)?;
    let host = Platform::host();
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: host.architecture,
        os: host.os,
        variant: host.variant,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.1],
        },
        history: vec![History {
            created: Some(created),
            // docker import streams local files as the request body, so the engine always
            // records "-"; the same keeps the image independent of where the tar was.
            comment: Some(
                args.message
                    .clone()
                    .unwrap_or_else(|| "Imported from -".to_string()),
            ),
            ..Default::default()
        }],
        ..Default::default()
    };
    let descriptor = store.put_image(&config, vec![layer.0])?;
    match &name {
        Some(n) => store.set_name(n, &descriptor)?,
        None => store.add_unnamed(&descriptor)?,
    }
    let record = store.image_record(descriptor, name.into_iter().collect())?;
    println!("{}", record.id());
    Ok(())
}

/// A root filesystem tar is unpacked with the safe extractor (which refuses anything escaping
/// the root), then re-written as a deterministic layer; the unpacked tree becomes the layer's
/// snapshot, so the first run or build from this image does not unpack it again.
fn import_tarball(
    store: &Store,
    source: &str,
    opts: &DiffOptions,
) -> Result<(Descriptor, oci::DiffId)> {
    let input: Box<dyn Read> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(source).with_context(|| format!("opening {source}"))?)
    };
    let pending = store.new_pending_snapshot()?;
    layer::apply(
        BufReader::with_capacity(1 << 20, input),
        &pending.fs(),
        layer::ApplyMode::Flatten,
    )
    .with_context(|| format!("reading {source}"))?;
    let (descriptor, diff_id) = store.write_layer(DiffSource::Tree(&pending.fs()), opts)?;
    store.commit_snapshot(pending, &oci::ChainId(diff_id.digest().clone()))?;
    Ok((descriptor, diff_id))
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A container (name or id), or else an image (name or id)
    image: String,
    /// Write to a file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn export(ctx: &Context, args: ExportArgs) -> Result<()> {
    let store = ctx.store()?;
    // docker export takes a container; a name that is no container is tried as an image.
    if let Some(container) = store.find_container(&args.image)? {
        let output = Output::new(args.output.as_deref())?;
        {
            let mut writer = runtime::export(&store, &container, output.writer()?)?;
            writer.flush()?;
        }
        return output.commit();
    }
    let _lock = store.lock_shared()?;
    let image = store.resolve_image(&args.image)?;
    let snapshots = store.ensure_snapshots(&image)?;
    let lowers: Vec<&Path> = snapshots.iter().rev().map(|s| s.path.as_path()).collect();
    let output = Output::new(args.output.as_deref())?;
    {
        let writer = output.writer()?;
        let opts = DiffOptions {
            compression: Compression::None,
            source_date_epoch: None,
        };
        let (_, mut writer) = layer::write_merged(&lowers, &opts, writer)?;
        writer.flush()?;
    }
    output.commit()
}
