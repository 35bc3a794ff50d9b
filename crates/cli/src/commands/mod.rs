mod archives;
mod debug;
mod images;
mod prune;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use store::Store;

/// What every verb gets from the global flags.
pub struct Context {
    pub root: PathBuf,
    pub quiet: bool,
}

impl Context {
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("opening the store at {}", self.root.display()))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a one-layer image from a root filesystem tarball or directory (like docker import)
    Import(archives::ImportArgs),
    /// Load images from a docker-archive, an OCI archive or an OCI layout directory
    Load(archives::LoadArgs),
    /// Save images to a docker-archive or OCI archive
    Save(archives::SaveArgs),
    /// Write an image's flattened filesystem as a tar
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
    /// Tools for reporting bugs: parser dumps
    Debug(debug::DebugArgs),
}

pub fn run(ctx: &Context, command: Command) -> Result<ExitCode> {
    match command {
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
        Command::Debug(a) => debug::debug(a),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// The current time in seconds, for "… ago" columns.
pub fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}
