use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct DebugArgs {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(Subcommand, Debug)]
enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's dump format (for parser bug reports)
    Parse {
        /// The Dockerfile (- for stdin)
        file: PathBuf,
    },
}

pub fn debug(args: DebugArgs) -> Result<()> {
    match args.command {
        DebugCommand::Parse { file } => parse(&file),
    }
}

fn parse(file: &std::path::Path) -> Result<()> {
    let data = if file == std::path::Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let dump = dockerfile::debug_parse(&data).map_err(|e| {
        // main prints "Error: " before the message; the report's own header would repeat it.
        let name = if file == std::path::Path::new("-") {
            "<stdin>".to_string()
        } else {
            file.display().to_string()
        };
        let report = e.render(&name, &data);
        let report = report
            .strip_prefix("error: ")
            .unwrap_or(&report)
            .to_string();
        anyhow!(report)
    })?;
    std::io::stdout().lock().write_all(dump.as_bytes())?;
    Ok(())
}
