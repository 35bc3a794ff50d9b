//! The `strata` command: argument parsing, wiring of the library crates, and output for people.
//!
//! It owns docker-compatible verbs, flags, table layouts and exit codes, and the only place
//! errors are rendered (once, with hints). It never implements image logic itself: that lives
//! in the library crates it calls.

mod commands;
mod format;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A fast, daemonless container image builder and layer store.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// Store location (default /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise)
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Only print what the verb's quiet form prints (image ids for images/history)
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Log level: error, warn, info, debug, trace
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    log_level: String,

    /// How RUN steps and containers are isolated: auto (namespaces as root, rootless through
    /// a user namespace as an ordinary user, chroot where namespaces are refused),
    /// namespaces, rootless or chroot
    #[arg(
        long,
        global = true,
        env = "STRATA_ISOLATION",
        default_value = "auto",
        value_name = "MODE"
    )]
    isolation: sandbox::isolation::Requested,

    #[command(subcommand)]
    command: commands::Command,
}

fn default_root(isolation: sandbox::isolation::Isolation) -> PathBuf {
    if !isolation.is_rootless() {
        return PathBuf::from("/var/lib/strata");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("strata")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// docker's exit status for a command line it could not parse.
const USAGE_EXIT: u8 = 125;

fn main() -> ExitCode {
    // Before anything else: this binary is also the sandbox's helper and supervisor.
    sandbox::maybe_run_helper();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(USAGE_EXIT),
            };
        }
    };
    // Before any thread starts: a rootless user's command runs again inside a user namespace.
    let isolation = match sandbox::isolation::enter(cli.isolation) {
        Ok(sandbox::isolation::Entered::Here(isolation)) => isolation,
        Ok(sandbox::isolation::Entered::Exited(code)) => {
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Err(e) => {
            eprintln!("Error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("  hint: {hint}");
            }
            return ExitCode::from(USAGE_EXIT);
        }
    };
    init_logging(&cli.log_level);
    let ctx = commands::Context {
        root: cli.root.clone().unwrap_or_else(|| default_root(isolation)),
        quiet: cli.quiet,
        isolation,
    };
    match commands::run(&ctx, cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {}", format::render_error(&err));
            ExitCode::FAILURE
        }
    }
}
