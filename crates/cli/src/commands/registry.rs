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

#[cfg(test)]
mod tests {
    use super::*;

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
