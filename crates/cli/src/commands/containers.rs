//! Container verbs: run, ps, stop, rm, logs, diff, commit (export is in archives.rs), with
//! docker's flags, output and exit codes. The work is the `runtime` crate's.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use oci::Reference;
use runtime::{RunOptions, State};
use store::{ContainerRecord, ImageRecord, Store};

use super::archives::{created_now, parse_compression, source_date_epoch};
use super::{Context, now_seconds};
use crate::format::{Table, ellipsis, human_duration, render_error, since};

/// `strata run`: docker's flags. `-h` is the hostname, as in docker, so help is `--help` only.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Bind mount a host path or mount a named volume: [HOST-DIR|NAME:]CONTAINER-DIR[:ro]
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=…,target=…[,readonly]
    #[arg(long)]
    mount: Vec<String>,
    /// Mount a tmpfs directory: PATH[:size=…,mode=…]
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Network: none (the default: only loopback) or host
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// Container host name
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Memory limit (e.g. 64m)
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// The image
    image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// docker's exit status when the runtime itself fails.
const EXIT_RUNTIME: u8 = 125;

/// `strata run`: exits with the command's exit code, or 125 when strata could not run it.
pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    match run_inner(ctx, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("Error: {}", render_error(&e));
            Ok(ExitCode::from(EXIT_RUNTIME))
        }
    }
}

fn run_options(args: &RunArgs) -> Result<RunOptions> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let lookup = |k: &str| std::env::var(k).ok();
    let mut env = Vec::new();
    for file in &args.env_file {
        let content = std::fs::read_to_string(file)
            .with_context(|| format!("open {}: no such file or directory", file.display()))?;
        env.extend(
            runtime::parse_env_file(&content, lookup)
                .with_context(|| format!("reading {}", file.display()))?,
        );
    }
    env.extend(
        args.env
            .iter()
            .filter_map(|e| runtime::resolve_env_arg(e, lookup)),
    );
    let mut mounts = Vec::new();
    for v in &args.volume {
        mounts.push(runtime::parse_volume_flag(v, &cwd)?);
    }
    for m in &args.mount {
        mounts.push(runtime::parse_mount_flag(m, &cwd)?);
    }
    for t in &args.tmpfs {
        mounts.push(runtime::parse_tmpfs_flag(t)?);
    }
    let network = match args.network.as_str() {
        "none" => sandbox::Network::None,
        "host" => sandbox::Network::Host,
        other => bail!(
            "network {other} not found: strata runs containers with --network none (loopback only) or --network host"
        ),
    };
    let memory = args
        .memory
        .as_deref()
        .map(runtime::parse_memory)
        .transpose()?;
    if memory.is_some_and(|m| m > 0 && m < 6 << 20) {
        bail!("Minimum memory limit allowed is 6MB");
    }
    Ok(RunOptions {
        image: args.image.clone(),
        name: args.name.clone(),
        args: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        mounts,
        read_only: args.read_only,
        network,
        tty: args.tty,
        interactive: args.interactive,
        auto_remove: args.rm,
        memory: memory.filter(|m| *m > 0),
        nano_cpus: args
            .cpus
            .as_deref()
            .map(runtime::parse_nano_cpus)
            .transpose()?,
        pids_limit: args.pids_limit.filter(|p| *p != 0),
    })
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_RUNTIME))
}

fn run_inner(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    if args.tty && args.interactive && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let opts = run_options(&args)?;
    let store = ctx.store()?;
    let created = runtime::create(&store, &opts)?;
    if args.detach {
        let id = created.record.id.clone();
        let log = created.paths.log.clone();
        return match runtime::start_detached(created)? {
            sandbox::Started::Running => {
                println!("{id}");
                Ok(ExitCode::SUCCESS)
            }
            sandbox::Started::Exited(code) => {
                // The container failed at once: show why, as docker run -d does.
                if let Ok(text) = std::fs::read_to_string(&log) {
                    eprint!("{text}");
                }
                Ok(exit(code))
            }
        };
    }
    let stdin = if args.interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let raw = if args.tty && args.interactive {
        sandbox::RawTerminal::enter()
    } else {
        None
    };
    let code = runtime::run_attached(&store, created, stdin, Stdio::inherit(), Stdio::inherit());
    drop(raw);
    Ok(exit(code?))
}

fn container(store: &Store, query: &str) -> Result<ContainerRecord> {
    Ok(runtime::find(store, query)?)
}

/// docker ps's COMMAND: the path and the arguments, those with spaces in single quotes.
fn command_line(c: &ContainerRecord) -> String {
    let mut out = c.path.clone();
    for a in &c.args {
        out.push(' ');
        if a.contains(' ') {
            out.push_str(&format!("'{a}'"));
        } else {
            out.push_str(a);
        }
    }
    out
}

/// Go's `strconv.Quote` for the printable strings commands are.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn seconds(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

/// docker's STATUS column.
fn status_text(state: &State, now: i64) -> String {
    match state {
        State::Created => "Created".into(),
        State::Running { started_ns, .. } => {
            format!("Up {}", human_duration(now - seconds(*started_ns)))
        }
        State::Exited {
            exit_code,
            finished_ns,
            ..
        } => match finished_ns {
            Some(f) => format!(
                "Exited ({exit_code}) {} ago",
                human_duration(now - seconds(*f))
            ),
            None => format!("Exited ({exit_code})"),
        },
    }
}

/// IMAGE as docker shows it: the name given, or the short id once that name points
/// elsewhere.
fn image_column(store: &Store, c: &ContainerRecord) -> String {
    match store.resolve_image(&c.image_name) {
        Ok(i) if i.id().to_string() == c.image => c.image_name.clone(),
        _ => c.image.strip_prefix("sha256:").unwrap_or(&c.image)[..12].to_string(),
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
}

pub fn ps(ctx: &Context, args: PsArgs) -> Result<()> {
    let store = ctx.store()?;
    let now = now_seconds();
    let mut rows = Vec::new();
    for c in store.containers()?.into_iter().rev() {
        let state = runtime::state(&store, &c);
        if !args.all && !state.is_running() {
            continue;
        }
        rows.push((c, state));
    }
    if ctx.quiet {
        for (c, _) in &rows {
            println!("{}", if args.no_trunc { &c.id } else { &c.id[..12] });
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for (c, state) in rows {
        let command = command_line(&c);
        table.row(vec![
            if args.no_trunc {
                c.id.clone()
            } else {
                c.id[..12].to_string()
            },
            image_column(&store, &c),
            go_quote(&if args.no_trunc {
                command
            } else {
                ellipsis(&command, 20)
            }),
            since(Some(&c.created), now),
            status_text(&state, now),
            String::new(),
            c.name.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    time: u64,
    /// Signal to send to the container
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Runs `each` on every argument, printing errors docker's way; fails when any failed.
fn for_each(names: &[String], mut each: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = 0;
    for n in names {
        if let Err(e) = each(n) {
            eprintln!("Error response from daemon: {}", render_error(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(anyhow!("{failed} of {} failed", names.len()));
    }
    Ok(())
}

pub fn stop(ctx: &Context, args: StopArgs) -> Result<()> {
    let store = ctx.store()?;
    let signal = match &args.signal {
        Some(s) => Some(sandbox::parse_signal(s).ok_or_else(|| anyhow!("invalid signal: {s}"))?),
        None => None,
    };
    for_each(&args.containers, |q| {
        let c = container(&store, q)?;
        runtime::stop(&store, &c, Duration::from_secs(args.time), signal)?;
        println!("{q}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(ctx: &Context, args: RmArgs) -> Result<()> {
    let store = ctx.store()?;
    for_each(&args.containers, |q| {
        let c = container(&store, q)?;
        runtime::remove(&store, &c, args.force, args.volumes)?;
        println!("{q}");
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    container: String,
}

pub fn logs(ctx: &Context, args: LogsArgs) -> Result<()> {
    let store = ctx.store()?;
    let c = container(&store, &args.container)?;
    let path = store.container_paths(&c.id).log;
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        if !args.follow {
            break;
        }
        out.flush()?;
        if !runtime::state(&store, &c).is_running() {
            // One last read: what was written between the read and the check.
            let mut rest = Vec::new();
            file.read_to_end(&mut rest)?;
            out.write_all(&rest)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    out.flush()?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// A container; or two images (IMAGE_A IMAGE_B) to compare their layers
    #[arg(required = true, num_args = 1..=2)]
    targets: Vec<String>,
}

pub fn diff(ctx: &Context, args: DiffArgs) -> Result<()> {
    if let [a, b] = args.targets.as_slice() {
        return super::analyze::diff_images(ctx, a, b);
    }
    let store = ctx.store()?;
    let c = container(&store, &args.targets[0])?;
    let mut out = std::io::stdout().lock();
    for change in runtime::diff(&store, &c)? {
        writeln!(out, "{} {}", change.kind.letter(), change.path)?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Pause container during commit (accepted; strata does not pause)
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
    /// Layer compression: gzip, zstd or none
    #[arg(long, default_value = "gzip", value_parser = parse_compression)]
    compression: layer::Compression,
    container: String,
    /// REPOSITORY[:TAG]
    name: Option<String>,
}

pub fn commit(ctx: &Context, args: CommitArgs) -> Result<()> {
    let name = args.name.as_deref().map(Reference::parse).transpose()?;
    let store = ctx.store()?;
    let c = container(&store, &args.container)?;
    let epoch = source_date_epoch()?;
    let id = runtime::commit(
        &store,
        &c,
        &runtime::CommitOptions {
            name,
            message: args.message,
            author: args.author,
            changes: args.change,
            compression: args.compression,
            created: created_now(epoch)?,
            source_date_epoch: epoch,
        },
    )?;
    println!("{id}");
    Ok(())
}

/// Containers made from `image`, with whether each runs.
fn users_of(store: &Store, image: &ImageRecord) -> Result<Vec<(ContainerRecord, bool)>> {
    let id = image.id().to_string();
    Ok(store
        .containers()?
        .into_iter()
        .filter(|c| c.image == id)
        .map(|c| {
            let running = runtime::state(store, &c).is_running();
            (c, running)
        })
        .collect())
}

/// docker rmi's refusal to remove an image a container uses: untagging its last name needs
/// `-f`; deleting it by id needs `-f` while a stopped container uses it and is refused while
/// one runs. Untagging a name when others remain is always fine.
pub fn check_image_unused(
    store: &Store,
    image: &ImageRecord,
    query: &str,
    force: bool,
) -> Result<()> {
    let by_name = Reference::parse(query).is_ok_and(|n| image.names.contains(&n));
    if by_name && image.names.len() > 1 {
        return Ok(());
    }
    let short = image.id().short();
    for (c, running) in users_of(store, image)? {
        let cid = &c.id[..12];
        if by_name && !force {
            bail!(
                "conflict: unable to remove repository reference \"{query}\" (must force) - container {cid} is using its referenced image {short}"
            );
        }
        if !by_name && running {
            bail!(
                "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {cid}"
            );
        }
        if !by_name && !force {
            bail!(
                "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {cid}"
            );
        }
    }
    Ok(())
}
