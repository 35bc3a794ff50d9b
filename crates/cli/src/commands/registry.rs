//! `pull`, `push`, `login` and `logout`: wiring of the `registry` crate, and docker's output.
//!
//! Progress goes to stdout as docker's plain lines (`<id>: Pull complete`), or, when stderr is
//! a terminal, as one progress bar per layer on stderr. `STRATA_PUSH_CHUNK_SIZE` (bytes)
//! tunes the size above which blobs are uploaded in chunks, and the chunk size.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::Mutex;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci::{Digest, Platform, Reference};
use registry::{ClientOptions, ConfigPaths, Credentials, Event, Progress, RegistryClient, Status};

use super::Context;

#[derive(Args, Debug)]
pub struct NetArgs {
    /// Allow plain HTTP for this registry (HOST[:PORT]); repeatable. Loopback registries
    /// (localhost, 127.0.0.0/8, ::1) never need it
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    image: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant]; default: this host's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// NAME[:TAG]
    image: String,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry to log in to (default: docker.io)
    server: Option<String>,
    /// Username
    #[arg(short, long)]
    username: Option<String>,
    /// Password (insecure: it shows in the process list; use --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry to log out from (default: docker.io)
    server: Option<String>,
}

fn options(net: &NetArgs) -> Result<ClientOptions> {
    let mut options = ClientOptions::new(ConfigPaths::from_env())?;
    options
        .insecure_registries
        .extend(net.insecure_registry.iter().cloned());
    if let Ok(v) = std::env::var("STRATA_PUSH_CHUNK_SIZE") {
        options.chunk_size =
            v.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                format!("STRATA_PUSH_CHUNK_SIZE={v:?} is not a positive number")
            })?;
    }
    Ok(options)
}

/// The first 12 hex digits, as docker names layers in its progress.
fn short(d: &Digest) -> String {
    d.short()
}

/// Renders transfer events: docker's lines on stdout, or bars on a terminal's stderr.
enum Render {
    Quiet,
    Lines {
        out: Mutex<()>,
    },
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<Digest, ProgressBar>>,
    },
}

impl Render {
    fn new(quiet: bool) -> Render {
        if quiet {
            Render::Quiet
        } else if std::io::stderr().is_terminal() {
            Render::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Render::Lines {
                out: Mutex::new(()),
            }
        }
    }

    fn bar(&self, digest: &Digest, size: u64) -> Option<ProgressBar> {
        let Render::Bars { multi, bars } = self else {
            return None;
        };
        let mut bars = bars.lock().ok()?;
        Some(
            bars.entry(digest.clone())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(size));
                    let style = ProgressStyle::with_template(
                        "{prefix}: {msg:<18} [{bar:30}] {bytes:>9}/{total_bytes:<9}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    bar.set_prefix(short(digest));
                    bar
                })
                .clone(),
        )
    }

    /// Prints a summary line (stdout), keeping bars intact.
    fn line(&self, text: &str) {
        match self {
            Render::Bars { multi, .. } => {
                multi.suspend(|| println!("{text}"));
            }
            _ => println!("{text}"),
        }
    }

    fn finish(&self) {
        if let Render::Bars { bars, .. } = self
            && let Ok(bars) = bars.lock()
        {
            for bar in bars.values() {
                bar.abandon();
            }
        }
    }
}

impl Progress for Render {
    fn event(&self, event: Event) {
        match (self, event) {
            (Render::Quiet, _) => {}
            (Render::Lines { .. }, Event::Bytes { .. }) => {}
            (Render::Lines { out }, Event::Blob { digest, status, .. }) => {
                if matches!(status, Status::Downloading | Status::Pushing) {
                    return;
                }
                let _guard = out.lock();
                println!("{}: {}", short(&digest), status.docker_text());
            }
            (
                Render::Bars { .. },
                Event::Blob {
                    digest,
                    size,
                    status,
                },
            ) => {
                if let Some(bar) = self.bar(&digest, size) {
                    if matches!(
                        status,
                        Status::AlreadyExists
                            | Status::PullComplete
                            | Status::LayerAlreadyExists
                            | Status::Pushed
                            | Status::MountedFrom(_)
                    ) {
                        bar.set_position(size);
                    }
                    bar.set_message(status.docker_text());
                }
            }
            (
                Render::Bars { .. },
                Event::Bytes {
                    digest,
                    done,
                    total,
                },
            ) => {
                if let Some(bar) = self.bar(&digest, total) {
                    bar.set_position(done);
                }
            }
        }
    }
}

/// docker's "Pulling from" tag part: the tag, or the digest for a pull by digest.
fn tag_or_digest(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".into(),
    }
}

pub fn pull(ctx: &Context, args: PullArgs) -> Result<()> {
    let reference = Reference::parse(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Some(Platform::parse(p).with_context(|| {
            format!("invalid platform {p:?}: expected os/arch[/variant], such as linux/arm64")
        })?),
        None => None,
    };
    let options = options(&args.net)?;
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let client = RegistryClient::for_reference(&reference, &options)?;
    let render = Render::new(ctx.quiet);
    let defaulted = Reference::parse_exact(&args.image)
        .is_ok_and(|r| r.tag().is_none() && r.digest().is_none());
    if !ctx.quiet {
        if defaulted {
            render.line("Using default tag: latest");
        }
        render.line(&format!(
            "{}: Pulling from {}",
            tag_or_digest(&reference),
            reference.path()
        ));
    }
    let result = registry::pull_image(&client, &store, &reference, platform.as_ref(), &render);
    render.finish();
    let pulled = result?;
    if ctx.quiet {
        println!("{reference}");
        return Ok(());
    }
    render.line(&format!("Digest: {}", pulled.digest));
    let shown = if reference.digest().is_some() {
        reference.familiar()
    } else {
        pulled.name.familiar()
    };
    if pulled.updated || pulled.downloaded > 0 {
        render.line(&format!("Status: Downloaded newer image for {shown}"));
    } else {
        render.line(&format!("Status: Image is up to date for {shown}"));
    }
    render.line(&reference.to_string());
    Ok(())
}

pub fn push(ctx: &Context, args: PushArgs) -> Result<()> {
    let target = Reference::parse(&args.image)?;
    if target.digest().is_some() {
        bail!(
            "cannot push a digest reference ({}): push a tag",
            args.image
        );
    }
    let options = options(&args.net)?;
    let store = ctx.store()?;
    let _lock = store.lock_shared()?;
    let image = match store.resolve_image(&target.to_string()) {
        Ok(i) => i,
        Err(store::StoreError::ImageNotFound(_)) => {
            bail!(
                "An image does not exist locally with the tag: {}",
                target.familiar_name()
            )
        }
        Err(e) => return Err(e.into()),
    };
    let client = RegistryClient::for_reference(&target, &options)?;
    let render = Render::new(ctx.quiet);
    if !ctx.quiet {
        render.line(&format!(
            "The push refers to repository [{}]",
            target.familiar_name()
        ));
    }
    let result = registry::push_image(&client, &store, &image, &target, &render);
    render.finish();
    let pushed = result?;
    let label = pushed.tag.clone().unwrap_or_else(|| "latest".into());
    if ctx.quiet {
        println!("{}", target.familiar());
    } else {
        render.line(&format!(
            "{label}: digest: {} size: {}",
            pushed.digest, pushed.size
        ));
    }
    Ok(())
}

/// `docker login`'s server argument: a host, or a URL (`https://index.docker.io/v1/`).
fn registry_name(server: Option<&str>) -> String {
    let Some(s) = server.map(str::trim).filter(|s| !s.is_empty()) else {
        return "docker.io".into();
    };
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

pub fn login(ctx: &Context, args: LoginArgs) -> Result<()> {
    let registry = registry_name(args.server.as_deref());
    let interactive = std::io::stdin().is_terminal();
    if args.password_stdin && args.username.is_none() {
        bail!("Must provide --username with --password-stdin");
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None if interactive => {
            eprint!("Username: ");
            let term = console::Term::stderr();
            term.read_line().context("reading the username")?
        }
        None => bail!("Cannot perform an interactive login from a non TTY device"),
    };
    let username = username.trim().to_string();
    if username.is_empty() {
        bail!("Error: Non-null Username Required");
    }
    let password = if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if interactive {
        eprint!("Password: ");
        console::Term::stderr()
            .read_secure_line()
            .context("reading the password")?
    } else {
        bail!("Cannot perform an interactive login from a non TTY device");
    };
    if password.is_empty() {
        bail!("Error: Password Required");
    }
    let mut options = options(&args.net)?;
    let credentials = Credentials::basic(&username, &password);
    options.credentials = Some(credentials.clone());
    options.lookup_credentials = false;
    let client = RegistryClient::new(&registry, &options)?;
    client
        .check_login()
        .with_context(|| format!("login to {registry} failed"))?;
    registry::credentials::save(&options.paths, &registry, &credentials)?;
    if !ctx.quiet {
        println!("Login Succeeded");
    }
    Ok(())
}

pub fn logout(ctx: &Context, args: LogoutArgs) -> Result<()> {
    let registry = registry_name(args.server.as_deref());
    let paths = ConfigPaths::from_env();
    let removed = registry::credentials::remove(&paths, &registry)?;
    if !ctx.quiet {
        if removed {
            println!("Removing login credentials for {registry}");
        } else {
            println!("Not logged in to {registry}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The network side of `strata build`: pulling bases, `ADD <url>`, and build caches kept in a
// registry or an OCI layout directory.

/// `strata build`'s registry flags.
#[derive(Args, Debug)]
pub struct BuildNetArgs {
    /// Always pull a newer version of the base images (re-resolve their tags)
    #[arg(long)]
    pub pull: bool,
    /// Import a build cache: type=registry,ref=REF or type=local,src=DIR[,tag=TAG] (or just
    /// REF); repeatable
    #[arg(long = "cache-from", value_name = "type=…")]
    cache_from: Vec<String>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max] or
    /// type=local,dest=DIR[,mode=min|max][,tag=TAG]; repeatable
    #[arg(long = "cache-to", value_name = "type=…")]
    cache_to: Vec<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// Where a build cache is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CacheLocation {
    Registry(Reference),
    Local {
        dir: std::path::PathBuf,
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// One `--cache-from` or `--cache-to`, as docker buildx spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheSpec {
    location: CacheLocation,
    /// `mode=max`: every step of every stage; `min` (the default): the final image's layers.
    max: bool,
    /// `ignore-error=true`: an export that fails is a warning.
    ignore_error: bool,
}

fn parse_cache_spec(spec: &str, export: bool) -> Result<CacheSpec> {
    let flag = if export { "--cache-to" } else { "--cache-from" };
    if !spec.contains('=') {
        return Ok(CacheSpec {
            location: CacheLocation::Registry(
                Reference::parse(spec).with_context(|| format!("{flag} {spec:?}"))?,
            ),
            max: false,
            ignore_error: false,
        });
    }
    let mut kind = None;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            bail!("invalid {flag} {spec:?}: {field:?} is not KEY=VALUE");
        };
        if k == "type" {
            kind = Some(v);
        } else if fields.insert(k, v).is_some() {
            bail!("invalid {flag} {spec:?}: {k} is given twice");
        }
    }
    let kind = kind.unwrap_or("registry");
    let (allowed, location): (&[&str], CacheLocation) = match (kind, export) {
        ("registry", _) => {
            let r = fields
                .get("ref")
                .with_context(|| format!("{flag} {spec:?}: type=registry needs ref=NAME:TAG"))?;
            let allowed: &[&str] = if export {
                &[
                    "ref",
                    "mode",
                    "ignore-error",
                    "image-manifest",
                    "oci-mediatypes",
                ]
            } else {
                &["ref"]
            };
            (
                allowed,
                CacheLocation::Registry(
                    Reference::parse(r).with_context(|| format!("{flag} {spec:?}"))?,
                ),
            )
        }
        ("local", true) => {
            let dest = fields
                .get("dest")
                .with_context(|| format!("{flag} {spec:?}: type=local needs dest=DIR"))?;
            (
                &[
                    "dest",
                    "tag",
                    "mode",
                    "ignore-error",
                    "image-manifest",
                    "oci-mediatypes",
                ],
                CacheLocation::Local {
                    dir: dest.into(),
                    tag: fields.get("tag").unwrap_or(&"latest").to_string(),
                },
            )
        }
        ("local", false) => {
            let src = fields
                .get("src")
                .with_context(|| format!("{flag} {spec:?}: type=local needs src=DIR"))?;
            (
                &["src", "tag", "digest"],
                CacheLocation::Local {
                    dir: src.into(),
                    tag: fields.get("tag").unwrap_or(&"latest").to_string(),
                },
            )
        }
        (other, _) => {
            bail!("{flag} {spec:?}: cache type {other:?} is not supported (registry and local are)")
        }
    };
    for k in fields.keys() {
        if !allowed.contains(k) {
            bail!(
                "{flag} {spec:?}: option {k:?} is not supported here (type={kind} takes {})",
                allowed.join(", ")
            );
        }
    }
    if fields.contains_key("digest") {
        bail!("{flag} {spec:?}: digest= is not supported; name the cache by tag=");
    }
    let max = match fields.get("mode").copied() {
        None | Some("min") => false,
        Some("max") => true,
        Some(other) => bail!("{flag} {spec:?}: mode must be min or max, not {other:?}"),
    };
    let flag_value = |k: &str| -> Result<bool> {
        match fields.get(k).copied() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => bail!("{flag} {spec:?}: {k} must be true or false, not {other:?}"),
        }
    };
    flag_value("image-manifest")?;
    flag_value("oci-mediatypes")?;
    Ok(CacheSpec {
        location,
        max,
        ignore_error: flag_value("ignore-error")?,
    })
}

/// A cache imported with `--cache-from`: its records, and where their blobs are.
struct ImportedCache {
    location: CacheLocation,
    records: std::collections::BTreeMap<Digest, store::CacheRecord>,
    client: Option<std::sync::Arc<RegistryClient>>,
}

/// Everything network-facing a build needs, and the progress numbering that puts vertices of
/// its own (cache imports, pulls) before the solver's: the solver numbers its steps from 1,
/// and this shifts them past the vertices already shown.
pub struct BuildRemote<'a> {
    renderer: &'a crate::progress::Renderer,
    options: ClientOptions,
    fetcher: registry::HttpFetcher,
    clients: Mutex<HashMap<String, std::sync::Arc<RegistryClient>>>,
    /// Vertices shown before the solver's.
    own: std::sync::atomic::AtomicUsize,
    imports: Vec<ImportedCache>,
    exports: Vec<CacheSpec>,
    pub pull: bool,
}

/// Sends registry transfer events as log lines of one build vertex.
struct VertexLog<'a> {
    renderer: &'a crate::progress::Renderer,
    id: usize,
}

impl VertexLog<'_> {
    fn line(&self, text: &str) {
        build::Progress::event(
            self.renderer,
            build::ProgressEvent::Log {
                id: self.id,
                data: format!("{text}\n").into_bytes(),
            },
        );
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2}GB", n as f64 / 1e9),
        n if n >= 1 << 20 => format!("{:.2}MB", n as f64 / 1e6),
        n if n >= 1 << 10 => format!("{:.2}kB", n as f64 / 1e3),
        n => format!("{n}B"),
    }
}

impl Progress for VertexLog<'_> {
    fn event(&self, event: Event) {
        if let Event::Blob {
            digest,
            size,
            status,
        } = event
        {
            match status {
                Status::Waiting | Status::Downloading | Status::Preparing | Status::Pushing => {}
                Status::DownloadComplete => {
                    self.line(&format!("{digest} {} done", human_size(size)))
                }
                Status::PullComplete => {}
                other => self.line(&format!(
                    "{digest} {} {}",
                    human_size(size),
                    other.docker_text().to_lowercase()
                )),
            }
        }
    }
}

impl<'a> BuildRemote<'a> {
    pub fn new(args: &BuildNetArgs, renderer: &'a crate::progress::Renderer) -> Result<Self> {
        let options = options(&args.net)?;
        let exports = args
            .cache_to
            .iter()
            .map(|s| parse_cache_spec(s, true))
            .collect::<Result<Vec<_>>>()?;
        let mut remote = BuildRemote {
            renderer,
            fetcher: registry::HttpFetcher::new(options.paths.clone()),
            options,
            clients: Mutex::new(HashMap::new()),
            own: std::sync::atomic::AtomicUsize::new(0),
            imports: Vec::new(),
            exports,
            pull: args.pull,
        };
        for spec in &args.cache_from {
            let spec = parse_cache_spec(spec, false)?;
            remote.imports.push(ImportedCache {
                location: spec.location,
                records: Default::default(),
                client: None,
            });
        }
        Ok(remote)
    }

    fn client(&self, reference: &Reference) -> Result<std::sync::Arc<RegistryClient>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(reference.domain()) {
            return Ok(c.clone());
        }
        let client = std::sync::Arc::new(RegistryClient::for_reference(reference, &self.options)?);
        clients.insert(reference.domain().to_string(), client.clone());
        Ok(client)
    }

    /// Starts a vertex of our own before the solver's.
    fn own_vertex(&self, name: String) -> VertexLog<'a> {
        let id = self.own.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        build::Progress::event(self.renderer, build::ProgressEvent::Started { id, name });
        VertexLog {
            renderer: self.renderer,
            id,
        }
    }

    fn finish_vertex(&self, v: &VertexLog<'_>, started: std::time::Instant, error: Option<String>) {
        let event = match error {
            None => build::ProgressEvent::Done {
                id: v.id,
                seconds: started.elapsed().as_secs_f64(),
            },
            Some(message) => build::ProgressEvent::Failed { id: v.id, message },
        };
        build::Progress::event(self.renderer, event);
    }

    fn warn(&self, message: String) {
        build::Progress::event(self.renderer, build::ProgressEvent::Warning { message });
    }

    /// Reads the `--cache-from` caches (their records; blobs come when a step needs them).
    /// A cache that is missing or unreadable is a warning, never a failed build.
    pub fn import_caches(&mut self) {
        let mut imports = std::mem::take(&mut self.imports);
        for import in &mut imports {
            let started = std::time::Instant::now();
            let v = self.own_vertex(format!("importing cache manifest from {}", import.location));
            let read: Result<Option<_>> = match &import.location {
                CacheLocation::Registry(r) => self.client(r).and_then(|client| {
                    let records = registry::fetch_cache(&client, r)?;
                    import.client = Some(client);
                    Ok(records)
                }),
                CacheLocation::Local { dir, tag } => store::CacheLayout::new(dir)
                    .read(tag)
                    .map_err(anyhow::Error::from),
            };
            match read {
                Ok(Some(records)) => {
                    v.line(&format!("{} cache records", records.len()));
                    import.records = records;
                    self.finish_vertex(&v, started, None);
                }
                Ok(None) => {
                    v.line("no cache there yet");
                    self.finish_vertex(&v, started, None);
                }
                Err(e) => {
                    let message = format!("importing cache from {}: {e:#}", import.location);
                    self.finish_vertex(&v, started, Some(message.clone()));
                    self.warn(format!("WARNING: {message}"));
                }
            }
        }
        self.imports = imports;
    }

    /// The imported caches for the solver, if any.
    pub fn cache_source(&self) -> Option<&dyn build::solve::CacheSource> {
        (!self.imports.is_empty()).then_some(self as &dyn build::solve::CacheSource)
    }

    /// Exports the build cache to every `--cache-to`: the records of the keys the build used
    /// (`mode=min`: those whose layer is in the image).
    pub fn export_caches(
        &self,
        store: &store::Store,
        cache_keys: &[Digest],
        image: &store::ImageRecord,
        first_id: usize,
    ) -> Result<()> {
        let in_image: std::collections::HashSet<&Digest> =
            image.manifest.layers.iter().map(|l| &l.digest).collect();
        for (i, spec) in self.exports.iter().enumerate() {
            let started = std::time::Instant::now();
            let id = first_id + i;
            let kind = match spec.location {
                CacheLocation::Registry(_) => "registry",
                CacheLocation::Local { .. } => "local",
            };
            build::Progress::event(
                self.renderer,
                build::ProgressEvent::Started {
                    id,
                    name: format!("exporting cache to {kind} {}", spec.location),
                },
            );
            let v = VertexLog {
                renderer: self.renderer,
                id,
            };
            let result = (|| -> Result<()> {
                let mut records = store.cache_records_for(cache_keys)?;
                if !spec.max {
                    records.retain(|_, r| {
                        r.layer
                            .as_ref()
                            .is_some_and(|l| in_image.contains(&l.blob.digest))
                    });
                }
                let bundle = store::CacheBundle::new(records)?;
                v.line(&format!(
                    "preparing build cache for export: {} records, {} layers",
                    bundle.records.len(),
                    bundle.layers.len()
                ));
                match &spec.location {
                    CacheLocation::Registry(r) => {
                        let client = self.client(r)?;
                        let pushed = registry::push_cache(&client, store, r, &bundle, &v)?;
                        v.line(&format!(
                            "writing config {} done",
                            bundle.config_descriptor.digest
                        ));
                        v.line(&format!(
                            "writing cache manifest {} done ({} blobs uploaded)",
                            pushed.digest,
                            pushed.uploaded()
                        ));
                    }
                    CacheLocation::Local { dir, tag } => {
                        let written = store::CacheLayout::new(dir).write(store, &bundle, tag)?;
                        v.line(&format!(
                            "writing cache manifest {} done ({written} blobs written)",
                            bundle.manifest_descriptor.digest
                        ));
                    }
                }
                Ok(())
            })();
            match result {
                Ok(()) => self.finish_vertex(&v, started, None),
                Err(e) => {
                    let message = format!("exporting cache to {}: {e:#}", spec.location);
                    self.finish_vertex(&v, started, Some(message.clone()));
                    if !spec.ignore_error {
                        bail!(message);
                    }
                    self.warn(format!("WARNING: {message}"));
                }
            }
        }
        Ok(())
    }
}

impl build::Progress for BuildRemote<'_> {
    fn event(&self, event: build::ProgressEvent) {
        use build::ProgressEvent as E;
        let shift = self.own.load(std::sync::atomic::Ordering::SeqCst);
        let event = match event {
            E::Started { id, name } => E::Started {
                id: id + shift,
                name,
            },
            E::Cached { id } => E::Cached { id: id + shift },
            E::Miss { id, reason } => E::Miss {
                id: id + shift,
                reason,
            },
            E::Log { id, data } => E::Log {
                id: id + shift,
                data,
            },
            E::Done { id, seconds } => E::Done {
                id: id + shift,
                seconds,
            },
            E::Failed { id, message } => E::Failed {
                id: id + shift,
                message,
            },
            w @ E::Warning { .. } => w,
        };
        build::Progress::event(self.renderer, event);
    }
}

impl build::ImageResolver for BuildRemote<'_> {
    /// Pulls a base image the store lacks (or every one, with `--pull`); the pull shows as a
    /// vertex of its own, one line per layer.
    fn resolve(
        &self,
        store: &store::Store,
        reference: &str,
    ) -> std::result::Result<store::ImageRecord, String> {
        let r = Reference::parse(reference).map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let v = self.own_vertex(format!("[internal] pull {r}"));
        let pulled = self
            .client(&r)
            .and_then(|client| Ok(registry::pull_image(&client, store, &r, None, &v)?));
        match pulled {
            Ok(p) => {
                v.line(&format!("resolve {}@{} done", r.name(), p.digest));
                self.finish_vertex(&v, started, None);
                Ok(p.image)
            }
            Err(e) => {
                let message = format!("{e:#}");
                self.finish_vertex(&v, started, Some(message.clone()));
                Err(message)
            }
        }
    }
}

impl build::UrlFetcher for BuildRemote<'_> {
    fn fetch(&self, url: &str) -> std::result::Result<(Box<dyn Read + Send>, Option<i64>), String> {
        let fetched = self.fetcher.fetch(url).map_err(|e| e.to_string())?;
        Ok((fetched.body, fetched.last_modified))
    }
}

impl build::solve::CacheSource for BuildRemote<'_> {
    /// The first imported cache with a record for the key whose layer can be brought in.
    fn lookup(
        &self,
        store: &store::Store,
        key: &Digest,
        log: &dyn Fn(&str),
    ) -> Option<store::CacheRecord> {
        for import in &self.imports {
            let Some(record) = import.records.get(key) else {
                continue;
            };
            let Some(layer) = &record.layer else {
                return Some(record.clone());
            };
            let brought = match (&import.location, &import.client) {
                _ if store.has_blob(&layer.blob.digest) => {
                    store.check_cached_layer(layer).map_err(anyhow::Error::from)
                }
                (CacheLocation::Registry(r), Some(client)) => {
                    log(&format!(
                        "importing cache layer {} ({}) from {r}",
                        layer.blob.digest,
                        human_size(layer.blob.size)
                    ));
                    registry::fetch_cached_layer(client, store, r, layer, &registry::NoProgress)
                        .map_err(anyhow::Error::from)
                }
                (CacheLocation::Local { dir, .. }, _) => store::CacheLayout::new(dir)
                    .import_layer(store, layer)
                    .map_err(anyhow::Error::from),
                (CacheLocation::Registry(r), None) => Err(anyhow::anyhow!("{r} was not read")),
            };
            match brought {
                Ok(()) => return Some(record.clone()),
                Err(e) => log(&format!(
                    "WARNING: cache layer {} from {}: {e:#}",
                    layer.blob.digest, import.location
                )),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs_parse_as_buildx_spells_them() {
        let reg = |r: &str| CacheLocation::Registry(Reference::parse(r).unwrap());
        let spec =
            parse_cache_spec("type=registry,ref=localhost:5000/app:cache,mode=max", true).unwrap();
        assert_eq!(spec.location, reg("localhost:5000/app:cache"));
        assert!(spec.max && !spec.ignore_error);
        let spec = parse_cache_spec("localhost:5000/app:cache", false).unwrap();
        assert_eq!(spec.location, reg("localhost:5000/app:cache"));
        assert!(!spec.max);
        let spec = parse_cache_spec(
            "type=local,dest=/tmp/c,ignore-error=true,image-manifest=true,oci-mediatypes=true",
            true,
        )
        .unwrap();
        assert_eq!(
            spec.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert!(spec.ignore_error);
        let spec = parse_cache_spec("type=local,src=/tmp/c,tag=v2", false).unwrap();
        assert_eq!(
            spec.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "v2".into()
            }
        );
        for (bad, export, says) in [
            ("type=gha", true, "not supported"),
            ("type=registry", true, "needs ref="),
            ("type=local,src=/x", true, "needs dest="),
            ("type=local,dest=/x", false, "needs src="),
            (
                "type=registry,ref=a/b,mode=all",
                true,
                "mode must be min or max",
            ),
            (
                "type=registry,ref=a/b,mode=max",
                false,
                "\"mode\" is not supported",
            ),
            (
                "type=registry,ref=a/b,colour=red",
                true,
                "\"colour\" is not supported",
            ),
            ("type=registry,ref=a/b,ref=c/d", true, "given twice"),
            ("type=registry,ref=a/b,junk", true, "not KEY=VALUE"),
        ] {
            let err = format!("{:#}", parse_cache_spec(bad, export).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn login_server_names_normalize_like_docker() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(
            registry_name(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_name(Some("localhost:5000")), "localhost:5000");
        assert_eq!(
            registry_name(Some("http://127.0.0.1:5000/v2/")),
            "127.0.0.1:5000"
        );
    }
}
