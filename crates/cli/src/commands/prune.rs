use anyhow::Result;
use clap::Args;
use store::Removed;

use super::Context;
use crate::format::human_size;

#[derive(Args, Debug)]
pub struct PruneArgs {}

/// Unlike the other verbs this takes the store lock exclusively (inside `Store::prune`), so it
/// must not hold the shared one.
pub fn prune(ctx: &Context, _args: PruneArgs) -> Result<()> {
    let store = ctx.store()?;
    let report = store.prune()?;
    let mut images = Vec::new();
    let mut blobs = 0usize;
    let mut snapshots = 0usize;
    for removed in &report.removed {
        match removed {
            Removed::DanglingImage(d) => images.push(d),
            Removed::Blob { .. } => blobs += 1,
            Removed::Snapshot { .. } => snapshots += 1,
        }
    }
    if !ctx.quiet {
        if !images.is_empty() {
            println!("Deleted Images:");
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
                Removed::DanglingImage(_) => {}
            }
        }
        if blobs + snapshots > 0 {
            println!();
        }
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(())
}
