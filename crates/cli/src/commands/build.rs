use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use build::context::BuildContext;
use build::plan::PlanOptions;
use clap::Args;
use dockerfile::{Dockerfile, IgnoreMatcher};
use layer::{Compression, DiffOptions};
use oci::{Platform, Reference};
use store::Store;

use super::Context;
use super::archives::{parse_compression, source_date_epoch};
use crate::progress::{ProgressMode, Renderer};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The build context: a directory, or - for a tar on stdin
    context: String,
    /// Name and optionally a tag (name:tag); repeatable
    #[arg(short, long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; - for stdin)
    #[arg(short, long = "file", value_name = "FILE")]
    file: Option<String>,
    /// Set a build-time variable: KEY=VALUE, or KEY to take it from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build
    #[arg(long)]
    target: Option<String>,
    /// Do not use the cache
    #[arg(long)]
    no_cache: bool,
    /// Networking for RUN steps: none (default) or host
    #[arg(long, default_value = "none", value_parser = ["none", "host", "default"])]
    network: String,
    /// Progress output: auto, tty, plain, json, quiet
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Write the image id to the file
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Set metadata for the image (KEY=VALUE); repeatable
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE (or env=VAR); repeatable
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// An ssh-agent for RUN --mount=type=ssh: default (the agent at $SSH_AUTH_SOCK) or
    /// ID=SOCKET; repeatable
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Target platform (only the host's is supported)
    #[arg(long)]
    platform: Option<String>,
    /// Also export the result: type=docker|oci|tar,dest=FILE or type=local,dest=DIR
    #[arg(short, long = "output", value_name = "type=…,dest=…")]
    outputs: Vec<String>,
    /// Layer compression: none (default: layers stay uncompressed in the store, as docker
    /// keeps them, and are gzip-compressed once when pushed), gzip or zstd
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
    /// After the build, list every step that missed the cache and why
    #[arg(long)]
    explain_cache: bool,
    /// Collapse the layers this build adds into one, on top of the base image's layers
    #[arg(long, conflicts_with = "squash_all")]
    squash: bool,
    /// Collapse the whole image into one layer
    #[arg(long)]
    squash_all: bool,
    /// The most layers the image may have
    #[arg(long, default_value_t = build::DEFAULT_MAX_LAYERS, value_name = "N")]
    max_layers: usize,
    /// --pull, --cache-from, --cache-to, --insecure-registry
    #[command(flatten)]
    remote: super::registry::BuildNetArgs,
}

/// Where the build reads its files from, and the scratch copy for a context on stdin.
struct ContextSource {
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn context_source(store: &Store, arg: &str) -> Result<ContextSource> {
    if arg != "-" {
        let dir = std::fs::canonicalize(arg)
            .with_context(|| format!("unable to prepare context: path {arg:?} not found"))?;
        if !dir.is_dir() {
            bail!("unable to prepare context: {arg:?} is not a directory");
        }
        return Ok(ContextSource { dir, _tmp: None });
    }
    let tmp = tempfile::Builder::new()
        .prefix("context-")
        .tempdir_in(store.tmp_dir())
        .context("creating a directory for the context")?;
    layer::apply(
        BufReader::new(std::io::stdin().lock()),
        tmp.path(),
        layer::ApplyMode::Flatten,
    )
    .context("reading the build context (a tar) from stdin")?;
    Ok(ContextSource {
        dir: tmp.path().to_path_buf(),
        _tmp: Some(tmp),
    })
}

/// The Dockerfile's bytes and its name (for error messages and its `.dockerignore`).
fn read_dockerfile(
    file: Option<&str>,
    context: &Path,
    context_arg: &str,
) -> Result<(Vec<u8>, PathBuf)> {
    match file {
        Some("-") => {
            if context_arg == "-" {
                bail!("the Dockerfile and the context cannot both come from stdin");
            }
            let mut data = Vec::new();
            std::io::stdin().lock().read_to_end(&mut data)?;
            Ok((data, PathBuf::from("Dockerfile")))
        }
        Some(f) => {
            let path = PathBuf::from(f);
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((data, path))
        }
        None => {
            for name in ["Dockerfile", "dockerfile"] {
                let path = context.join(name);
                if let Ok(data) = std::fs::read(&path) {
                    return Ok((data, path));
                }
            }
            bail!(
                "no Dockerfile in {} (use -f to name one)",
                context.display()
            )
        }
    }
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`.
fn ignore_matcher(dockerfile: &Path, context: &Path) -> Result<IgnoreMatcher> {
    let mut beside = dockerfile.as_os_str().to_owned();
    beside.push(".dockerignore");
    for path in [PathBuf::from(beside), context.join(".dockerignore")] {
        if let Ok(data) = std::fs::read(&path) {
            return IgnoreMatcher::from_dockerignore(&data)
                .map_err(|e| anyhow!("{}: {e}", path.display()));
        }
    }
    Ok(IgnoreMatcher::new(Vec::<String>::new())?)
}

fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `id=ID,src=FILE` (also `source=`), or `id=ID,env=VAR`, or `id=ID` (the env var `ID`).
fn parse_secrets(specs: &[String], scratch: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid secret {spec:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let id = id.ok_or_else(|| anyhow!("invalid secret {spec:?}: id= is required"))?;
        let path = match src {
            Some(p) => p,
            None => {
                let var = env.unwrap_or_else(|| id.clone());
                let value = std::env::var(&var).with_context(|| {
                    format!("secret {id}: environment variable {var} is not set")
                })?;
                let p = scratch.join(format!("secret-{i}"));
                std::fs::write(&p, value)?;
                p
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// `ID` (the agent at `$SSH_AUTH_SOCK`) or `ID=SOCKET`. docker also takes private key files
/// and runs an agent for them; strata forwards running agents only, so a key must be loaded
/// into one (`ssh-add`) first.
fn parse_ssh(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = HashMap::new();
    for spec in specs {
        let (id, socket) = match spec.split_once('=') {
            Some((id, path)) => (id, PathBuf::from(path)),
            None => (
                spec.as_str(),
                std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from).ok_or_else(|| {
                    anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set; start ssh-agent or pass {spec}=SOCKET")
                })?,
            ),
        };
        if id.is_empty() || socket.as_os_str().is_empty() || socket.to_string_lossy().contains(',')
        {
            bail!("invalid --ssh {spec:?}: expected default or ID=SOCKET");
        }
        let kind = std::fs::metadata(&socket)
            .with_context(|| format!("--ssh {id}: {}", socket.display()))?
            .file_type();
        if !kind.is_socket() {
            bail!(
                "--ssh {id}: {} is not an ssh-agent socket (strata forwards running agents only: load the key with ssh-add and pass the agent's socket)",
                socket.display()
            );
        }
        out.insert(id.to_string(), socket);
    }
    Ok(out)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

pub fn build(ctx: &Context, args: BuildArgs) -> Result<()> {
    ctx.announce_isolation();
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let host = Platform::host();
    if let Some(p) = &args.platform {
        let wanted = Platform::parse(p)
            .ok_or_else(|| anyhow!("invalid platform {p:?} (os/arch[/variant])"))?;
        if !wanted.matches(&host) {
            bail!(
                "platform {wanted} is not supported: strata builds for the host ({host}) for now"
            );
        }
    }
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let source = context_source(&store, &args.context)?;
    let (dockerfile_bytes, dockerfile_path) =
        read_dockerfile(args.file.as_deref(), &source.dir, &args.context)?;
    let dockerfile = Dockerfile::parse(&dockerfile_bytes).map_err(|e| {
        let report = e.render(&dockerfile_path.display().to_string(), &dockerfile_bytes);
        anyhow!(
            report
                .strip_prefix("error: ")
                .unwrap_or(&report)
                .to_string()
        )
    })?;
    let ignore = ignore_matcher(&dockerfile_path, &source.dir)?;
    let lint_warnings = lint_before_build(ctx, &args, &dockerfile, &dockerfile_bytes, &ignore)?;
    let identity = format!("{}\0{}", source.dir.display(), dockerfile_path.display());
    let stat_cache = store
        .root()
        .join("cache-v1")
        .join("stat")
        .join(oci::Digest::of(source.dir.to_string_lossy().as_bytes()).hex());
    let context = BuildContext::scan(
        &source.dir,
        &ignore,
        (args.context != "-").then_some(stat_cache),
    )?;
    // Only env secrets need a scratch file; a build without any creates nothing (on a busy
    // disk, even a directory created and removed waits on the filesystem journal).
    let scratch = match args.secrets.is_empty() {
        true => None,
        false => Some(
            tempfile::Builder::new()
                .prefix("build-")
                .tempdir_in(store.tmp_dir())?,
        ),
    };
    let mode = if ctx.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let renderer = Renderer::new(mode);
    for message in lint_warnings {
        build::Progress::event(&renderer, build::ProgressEvent::Warning { message });
    }
    let mut remote = super::registry::BuildRemote::new(&args.remote, &renderer)?;
    remote.import_caches();
    let request = build::BuildRequest {
        store: &store,
        dockerfile: &dockerfile,
        context: Some(&context),
        options: PlanOptions {
            build_args: parse_build_args(&args.build_args)?,
            target: args.target.clone(),
            platform: host,
        },
        no_cache: args.no_cache,
        network: if args.network == "host" {
            sandbox::Network::Host
        } else {
            sandbox::Network::None
        },
        secrets: match &scratch {
            Some(dir) => parse_secrets(&args.secrets, dir.path())?,
            None => HashMap::new(),
        },
        ssh: parse_ssh(&args.ssh)?,
        source_date_epoch: source_date_epoch()?,
        compression: args.compression,
        labels: parse_labels(&args.labels)?,
        progress: &remote,
        identity,
        resolver: Some(&remote),
        pull: remote.pull,
        fetcher: Some(&remote),
        squash: match (args.squash, args.squash_all) {
            (_, true) => build::Squash::All,
            (true, _) => build::Squash::Build,
            _ => build::Squash::No,
        },
        max_layers: args.max_layers,
        cache_from: remote.cache_source(),
    };
    let result = build::build(&request);
    tracing::info!(
        "build context: {} entries, {} files read to hash them",
        context.entries().len(),
        context.files_read()
    );
    context.save_stat_cache(now_ns())?;
    let output = result.map_err(|e| render_build_error(e, &dockerfile_path, &dockerfile_bytes))?;
    let record = store.image_record(output.descriptor.clone(), tags.clone())?;
    let id = record.id().clone();
    let export_id = renderer.next_id();
    renderer.note(export_id, "exporting to image");
    if tags.is_empty() {
        store.add_unnamed(&output.descriptor)?;
    }
    renderer.note(export_id, &format!("writing image {id} done"));
    for t in &tags {
        store.set_name(t, &output.descriptor)?;
        renderer.note(export_id, &format!("naming to {t} done"));
    }
    for spec in &args.outputs {
        export_output(&store, &record, spec, &tags)?;
        renderer.note(export_id, &format!("exporting to {spec} done"));
    }
    renderer.note(export_id, "DONE 0.0s");
    remote.export_caches(&store, &output.cache_keys, &record, export_id + 1)?;
    if let Some(f) = &args.iidfile {
        std::fs::write(f, id.to_string()).with_context(|| format!("writing {}", f.display()))?;
    }
    if args.explain_cache {
        let misses = renderer.explain();
        let mut err = std::io::stderr().lock();
        if misses.is_empty() {
            writeln!(err, "every step came from the cache")?;
        }
        for (step, why) in misses {
            writeln!(err, "{step}\n    cache miss: {why}")?;
        }
    }
    if ctx.quiet {
        println!("{id}");
    }
    Ok(())
}

/// `strata lint`'s findings, as warnings to show before the build starts (as BuildKit shows
/// its checks); with `# check=error=true` they stop the build.
fn lint_before_build(
    ctx: &Context,
    args: &BuildArgs,
    df: &Dockerfile,
    source: &[u8],
    ignore: &IgnoreMatcher,
) -> Result<Vec<String>> {
    use dockerfile::lint;
    let build_args = parse_build_args(&args.build_args)?;
    let host = Platform::host();
    let mut options = lint::LintOptions {
        check: build_args.get("BUILDKIT_DOCKERFILE_CHECK").cloned(),
        ignore: Vec::new(),
        build_args,
        target_os: host.os,
        target_arch: host.architecture,
        target_variant: host.variant,
        bases: BTreeMap::new(),
        dockerignore: Some(ignore),
        target: args.target.clone(),
    };
    options.bases = super::lint::describe_bases(ctx, &lint::base_images(df, &options));
    let config = lint::check_config(df, &options)?;
    let findings = lint::lint(df, source, &options);
    if config.error
        && let Some(message) = lint::violation_error(&findings)
    {
        bail!("{message}");
    }
    let mut warnings = Vec::new();
    if !findings.is_empty() {
        let n = findings.len();
        warnings.push(format!(
            " {n} warning{} found:",
            if n == 1 { "" } else { "s" }
        ));
        for f in &findings {
            warnings.push(format!(" - {}: {} (line {})", f.rule, f.message, f.line()));
        }
    }
    Ok(warnings)
}

/// Build errors that point into the Dockerfile show `file:line:column`, the line with a caret
/// under the offending part, and what was expected (see `dockerfile::Diagnostic`).
fn render_build_error(e: build::BuildError, path: &Path, source: &[u8]) -> anyhow::Error {
    use dockerfile::{Diagnostic, Subject};
    let diagnostic = match &e {
        build::BuildError::Plan(p) => {
            // The planner names the instruction; its message says which part is at fault.
            let m = p.message.as_str();
            let subjects: &[Subject<'_>] = if m.starts_with("cannot copy from stage")
                || m.starts_with("invalid stage index")
                || m.contains("--from")
            {
                &[Subject::Flag("from"), Subject::Flag("mount")]
            } else if m.starts_with("invalid chmod") {
                &[Subject::Flag("chmod")]
            } else if m.contains("checksum") {
                &[Subject::Flag("checksum")]
            } else if m.contains("platform") {
                &[Subject::Flag("platform")]
            } else if m.contains("mount") {
                &[Subject::Flag("mount")]
            } else if m.starts_with("base ")
                || m.starts_with("circular dependency")
                || m.to_lowercase().contains("onbuild trigger")
            {
                &[Subject::Argument(0)]
            } else if m.contains("isn't allowed here") {
                &[Subject::Keyword]
            } else {
                &[Subject::Arguments]
            };
            let span = p.span.map(|span| {
                subjects
                    .iter()
                    .fold(span, |span, subject| match span.focus {
                        Some(_) => span,
                        None => dockerfile::locate(source, span, *subject),
                    })
            });
            let mut help = Vec::new();
            let stages = || {
                Dockerfile::parse(source)
                    .map(|df| df.stages)
                    .unwrap_or_default()
            };
            if let (Some(span), Some(Subject::Flag("from"))) = (p.span, subjects.first())
                && !m.starts_with("variable expansion")
            {
                let stages = stages();
                let current = stages
                    .iter()
                    .rposition(|s| s.from.span.start <= span.start)
                    .unwrap_or(0);
                let earlier: Vec<String> = stages[..current]
                    .iter()
                    .enumerate()
                    .map(|(i, s)| match s.name() {
                        Some(name) => format!("{name} ({i})"),
                        None => i.to_string(),
                    })
                    .collect();
                help.push(if earlier.is_empty() {
                    "no stage comes before this one: expected an image reference".into()
                } else {
                    format!(
                        "expected an earlier stage by name or index, {}; or an image reference",
                        earlier.join(", ")
                    )
                });
            }
            if p.span.is_none() && m.starts_with("target stage") {
                let names: Vec<String> = stages()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_string))
                    .collect();
                help.push(if names.is_empty() {
                    "no stage has a name: --target takes the name given by FROM … AS <name>".into()
                } else {
                    format!("expected one of the stage names: {}", names.join(", "))
                });
            }
            Diagnostic {
                message: p.message.clone(),
                span,
                label: None,
                help,
            }
        }
        build::BuildError::Step { line, .. } => Diagnostic {
            message: e.to_string(),
            span: Some(dockerfile::Span::line(*line)),
            ..Diagnostic::default()
        },
        _ => return anyhow!("{e}"),
    };
    // main prints "Error: " before the message; the report's own header would repeat it.
    let report = diagnostic.render(&path.display().to_string(), source);
    anyhow!(
        report
            .strip_prefix("error: ")
            .unwrap_or(&report)
            .to_string()
    )
}

/// `--output type=docker|oci|tar,dest=FILE` or `type=local,dest=DIR`.
fn export_output(
    store: &Store,
    record: &store::ImageRecord,
    spec: &str,
    tags: &[Reference],
) -> Result<()> {
    let mut kind = None;
    let mut dest = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("invalid --output {spec:?}: expected type=…,dest=…"),
        }
    }
    let dest = dest.ok_or_else(|| anyhow!("--output {spec:?} needs dest="))?;
    let kind = kind.unwrap_or_else(|| "local".into());
    match kind.as_str() {
        "docker" | "oci" => {
            let format = if kind == "docker" {
                archive::ArchiveFormat::Docker
            } else {
                archive::ArchiveFormat::Oci
            };
            let items = [archive::SaveItem {
                image: record.clone(),
                names: tags.to_vec(),
            }];
            let file = std::fs::File::create(&dest)
                .with_context(|| format!("creating {}", dest.display()))?;
            let mut w = archive::save(store, &items, format, std::io::BufWriter::new(file))?;
            w.flush()?;
        }
        "tar" | "local" => {
            let snapshots = store.ensure_snapshots(record)?;
            let lowers: Vec<&Path> = snapshots.iter().rev().map(|s| s.path.as_path()).collect();
            let opts = DiffOptions {
                compression: Compression::None,
                source_date_epoch: None,
            };
            if kind == "tar" {
                let file = std::fs::File::create(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                let (_, mut w) =
                    layer::write_merged(&lowers, &opts, std::io::BufWriter::new(file))?;
                w.flush()?;
            } else {
                std::fs::create_dir_all(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                let (reader, writer) = std::io::pipe()?;
                std::thread::scope(|s| -> Result<()> {
                    let producer =
                        s.spawn(move || layer::write_merged(&lowers, &opts, writer).map(|_| ()));
                    layer::apply(reader, &dest, layer::ApplyMode::Flatten)?;
                    producer
                        .join()
                        .map_err(|_| anyhow!("exporting the filesystem panicked"))??;
                    Ok(())
                })?;
            }
        }
        other => bail!("unknown --output type {other:?} (docker, oci, tar, local)"),
    }
    Ok(())
}
