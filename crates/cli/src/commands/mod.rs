mod analyze;
mod archives;
mod build;
mod containers;
mod debug;
mod images;
mod lint;
mod prune;
mod registry;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use store::Store;

/// What every verb gets from the global flags.
pub struct Context {
    pub root: PathBuf,
    pub quiet: bool,
    pub isolation: sandbox::isolation::Isolation,
}

impl Context {
    /// Containers need namespaces and mounts; under the chroot isolation only builds run.
    pub fn need_namespaces(&self, what: &str) -> Result<()> {
        if self.isolation.can_mount() {
            return Ok(());
        }
        anyhow::bail!(
            "{what} needs mount and PID namespaces, which this environment refuses \
             (isolation chroot: an unprivileged container)\n  hint: builds, pushes and pulls \
             work here; run the image where namespaces are allowed (as root on a host, \
             rootless as a user, or in a container started with --privileged)"
        )
    }

    /// Says once, for the verbs that run steps, which isolation is used when it gives up
    /// anything.
    pub fn announce_isolation(&self) {
        if !self.isolation.can_mount() {
            eprintln!(
                "strata: isolation chroot (namespaces and mounts are not permitted here): {}",
                sandbox::chroot::GIVES_UP
            );
        }
    }

    pub fn store(&self) -> Result<Store> {
        check_store_owner(&self.root, self.isolation)?;
        Store::open(&self.root)
            .with_context(|| format!("opening the store at {}", self.root.display()))
    }
}

/// A store belongs to the one user whose ids its files carry: root's holds files owned by
/// host uids, a rootless user's holds files owned through that user's id mapping. Either one
/// read by the other would give wrong owners in every layer (and fail to write), so it is
/// refused before anything is touched.
fn check_store_owner(
    root: &std::path::Path,
    isolation: sandbox::isolation::Isolation,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(root) else {
        return Ok(());
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() == me {
        return Ok(());
    }
    let (whose, hint) = if isolation.is_rootless() {
        (
            "a user other than you (root's, or another user's: its owner is not mapped into your \
             user namespace)"
                .to_string(),
            "use a store of your own: drop --root/STRATA_ROOT (the default is \
             $XDG_DATA_HOME/strata), or choose a directory you own",
        )
    } else {
        (
            format!(
                "uid {} (a rootless user's store: its files are owned through that user's \
                 subordinate ids)",
                meta.uid()
            ),
            "run strata as that user, or use another --root for root's builds",
        )
    };
    anyhow::bail!(
        "the store at {} belongs to {whose}\n  hint: {hint}",
        root.display()
    )
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Create a one-layer image from a root filesystem tarball or directory (like docker import)
    Import(archives::ImportArgs),
    /// Load images from a docker-archive, an OCI archive or an OCI layout directory
    Load(archives::LoadArgs),
    /// Save images to a docker-archive or OCI archive
    Save(archives::SaveArgs),
    /// Write a container's filesystem (or an image's, flattened) as a tar
    Export(archives::ExportArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(images::TagArgs),
    /// Remove one or more images
    Rmi(images::RmiArgs),
    /// Display detailed information on one or more images
    Inspect(images::InspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Remove dangling images and every blob and snapshot nothing references
    Prune(prune::PruneArgs),
    /// Download an image from a registry
    Pull(registry::PullArgs),
    /// Upload an image to a registry
    Push(registry::PushArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Run a command in a new container
    Run(Box<containers::RunArgs>),
    /// List containers
    Ps(containers::PsArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Fetch the output of a detached container
    Logs(containers::LogsArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(containers::DiffArgs),
    /// Create a new image from a container's changes
    Commit(containers::CommitArgs),
    /// Manage volumes
    Volume(volumes::VolumeArgs),
    /// Tools for reporting bugs: parser dumps
    Debug(debug::DebugArgs),
    /// Show what each layer of an image costs: changes, wasted space, efficiency
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Check a Dockerfile: BuildKit's build checks and strata's layering rules
    Lint(Box<lint::LintArgs>),
}

pub fn run(ctx: &Context, command: Command) -> Result<ExitCode> {
    match command {
        Command::Build(a) => build::build(ctx, *a),
        Command::Import(a) => archives::import(ctx, a),
        Command::Load(a) => archives::load(ctx, a),
        Command::Save(a) => archives::save(ctx, a),
        Command::Export(a) => archives::export(ctx, a),
        Command::Images(a) => images::images(ctx, a),
        Command::Tag(a) => images::tag(ctx, a),
        Command::Rmi(a) => images::rmi(ctx, a),
        Command::Inspect(a) => images::inspect(ctx, a),
        Command::History(a) => images::history(ctx, a),
        Command::Prune(a) => prune::prune(ctx, a),
        Command::Pull(a) => registry::pull(ctx, a),
        Command::Push(a) => registry::push(ctx, a),
        Command::Login(a) => registry::login(ctx, a),
        Command::Logout(a) => registry::logout(ctx, a),
        Command::Run(a) => {
            ctx.need_namespaces("strata run")?;
            return containers::run(ctx, *a);
        }
        Command::Ps(a) => containers::ps(ctx, a),
        Command::Stop(a) => containers::stop(ctx, a),
        Command::Rm(a) => containers::rm(ctx, a),
        Command::Logs(a) => containers::logs(ctx, a),
        Command::Diff(a) => containers::diff(ctx, a),
        Command::Commit(a) => containers::commit(ctx, a),
        Command::Volume(a) => volumes::volume(ctx, a),
        Command::Debug(a) => debug::debug(a),
        Command::Analyze(a) => return analyze::analyze(ctx, *a),
        Command::Lint(a) => return lint::lint(ctx, *a),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// The current time in seconds, for "… ago" columns.
pub fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}
