//! `strata volume create|ls|inspect|rm|prune`, as docker's local volume driver shows them.

use std::io::{BufRead, Write};

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use serde::Serialize;
use store::{Store, Volume, VolumeMeta};

use super::Context;
use crate::format::{Table, human_size};

#[derive(Args, Debug)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Create a volume
    Create {
        /// Name (a random one when not given)
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls,
    /// Display detailed information on one or more volumes
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker compatibility (a volume in use is never removed)
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused volumes with -a)
    Prune {
        /// Remove all unused volumes, not just anonymous ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectView<'a> {
    created_at: &'a str,
    driver: &'static str,
    labels: Option<()>,
    mountpoint: String,
    name: &'a str,
    options: Option<()>,
    scope: &'static str,
}

fn view(v: &Volume) -> InspectView<'_> {
    InspectView {
        created_at: &v.meta.created_at,
        driver: "local",
        labels: None,
        mountpoint: v.mountpoint.display().to_string(),
        name: &v.name,
        options: None,
        scope: "local",
    }
}

pub fn volume(ctx: &Context, args: VolumeArgs) -> Result<()> {
    let store = ctx.store()?;
    match args.command {
        VolumeCommand::Create { name } => {
            let anonymous = name.is_none();
            let name = name.unwrap_or_else(runtime::new_id);
            let v = store.ensure_volume(
                &name,
                VolumeMeta {
                    created_at: jiff::Timestamp::now().to_string(),
                    anonymous,
                },
            )?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls => {
            let volumes = store.volumes()?;
            if ctx.quiet {
                for v in volumes {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            let mut table = Table::new(&["DRIVER", "VOLUME NAME"]);
            for v in volumes {
                table.row(vec!["local".into(), v.name]);
            }
            print!("{}", table.render());
        }
        VolumeCommand::Inspect { volumes } => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for n in &volumes {
                match store.volume(n)? {
                    Some(v) => found.push(v),
                    None => missing.push(n.clone()),
                }
            }
            let views: Vec<InspectView> = found.iter().map(view).collect();
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            views.serialize(&mut ser)?;
            println!("{}", String::from_utf8(out)?);
            if !missing.is_empty() {
                return Err(anyhow!("No such volume: {}", missing.join(", ")));
            }
        }
        VolumeCommand::Rm { volumes, .. } => {
            let mut failed = 0;
            for n in &volumes {
                match store.remove_volume(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(anyhow!(
                    "{failed} of {} volumes could not be removed",
                    volumes.len()
                ));
            }
        }
        VolumeCommand::Prune { all, force } => prune(&store, all, force)?,
    }
    Ok(())
}

fn prune(store: &Store, all: bool, force: bool) -> Result<()> {
    if !force {
        let what = if all { "all" } else { "anonymous" };
        print!(
            "WARNING! This will remove {what} local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] "
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y") {
            println!();
            return Ok(());
        }
    }
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for v in store.volumes()? {
        if (!all && !v.meta.anonymous) || !store.volume_users(&v.name)?.is_empty() {
            continue;
        }
        reclaimed += store.remove_volume(&v.name)?;
        deleted.push(v.name);
    }
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for d in &deleted {
            println!("{d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}
