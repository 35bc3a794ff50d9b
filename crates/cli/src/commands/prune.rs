use anyhow::Result;
use clap::Args;
use store::Removed;

use super::Context;
use crate::format::human_size;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove every image no container uses, named or not (docker's `image prune --all`),
    /// not only dangling ones
    #[arg(short, long)]
    all: bool,
}

/// Unlike the other verbs this takes the store lock exclusively (inside `Store::prune`), so it
/// must not hold the shared one.
pub fn prune(ctx: &Context, args: PruneArgs) -> Result<()> {
    let store = ctx.store()?;
    let report = store.prune_images(args.all)?;
    let mut untagged = Vec::new();
    let mut images = Vec::new();
    let mut blobs = 0usize;
    let mut snapshots = 0usize;
    for removed in &report.removed {
        match removed {
            Removed::Untagged(name) => untagged.push(name),
            Removed::DanglingImage(d) => images.push(d),
            Removed::Blob { .. } => blobs += 1,
            Removed::Snapshot { .. } => snapshots += 1,
        }
    }
    if !ctx.quiet {
        if !images.is_empty() || !untagged.is_empty() {
            println!("Deleted Images:");
            for name in untagged {
                println!("untagged: {}", name.familiar());
            }
            for d in images {
                println!("deleted: {d}");
            }
            println!();
        }
        for removed in &report.removed {
            match removed {
                Removed::Blob { digest, bytes } => {
                    println!("deleted blob: {digest} ({})", human_size(*bytes))
                }
                Removed::Snapshot { chain_id, bytes } => {
                    println!("deleted snapshot: {chain_id} ({})", human_size(*bytes))
                }
                Removed::DanglingImage(_) | Removed::Untagged(_) => {}
            }
        }
        if blobs + snapshots > 0 {
            println!();
        }
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(())
}
