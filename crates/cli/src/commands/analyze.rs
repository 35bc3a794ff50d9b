//! `strata analyze IMAGE` (what each layer costs, dive's numbers and CI rules) and the
//! two-image form of `strata diff`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use analyze::ci::{self, Rule, Rules, Status};
use analyze::{ImageSource, TextOptions};
use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use store::Store;

use super::Context;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    /// A report for the terminal, with bar charts
    Text,
    /// Everything, machine-readable
    Json,
    /// One self-contained page (chart and waste table), no network needed
    Html,
}

fn ratio_arg(
    parse: fn(&str) -> Result<Rule, String>,
) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| parse(s).map(|_| s.to_string())
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// An image in the store, or a docker-archive or OCI archive file (read in place, never
    /// loaded; prefix with docker-archive: or oci-archive: to force a path)
    image: String,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Write the report to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Changed files to list under each layer (largest first; text format)
    #[arg(long, default_value_t = 3, value_name = "N")]
    files: usize,
    /// Wasted copies to list (text format)
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// CI mode: check dive's three rules and exit 1 when one fails
    #[arg(long)]
    ci: bool,
    /// (with --ci) lowest allowed efficiency, a ratio 0-1, or "disabled"
    #[arg(long, alias = "lowestEfficiency", value_name = "RATIO",
          default_value = ci::DEFAULT_LOWEST_EFFICIENCY, value_parser = ratio_arg(Rule::lowest_efficiency))]
    lowest_efficiency: String,
    /// (with --ci) most bytes allowed to be wasted (20MB, 1.5GiB, 1000), or "disabled"
    #[arg(long, alias = "highestWastedBytes", value_name = "SIZE",
          default_value = ci::DEFAULT_HIGHEST_WASTED_BYTES, value_parser = ratio_arg(Rule::highest_wasted_bytes))]
    highest_wasted_bytes: String,
    /// (with --ci) most wasted bytes allowed relative to the bytes user layers add, a ratio
    /// 0-1, or "disabled"
    #[arg(long, alias = "highestUserWastedPercent", value_name = "RATIO",
          default_value = ci::DEFAULT_HIGHEST_USER_WASTED_PERCENT, value_parser = ratio_arg(Rule::highest_user_wasted_percent))]
    highest_user_wasted_percent: String,
}

/// Where an image argument points: an archive file, or an image in the store.
fn open_image(ctx: &Context, arg: &str) -> Result<(ImageSource, Option<store::StoreLock>)> {
    for prefix in ["docker-archive:", "oci-archive:", "archive:"] {
        if let Some(path) = arg.strip_prefix(prefix) {
            return Ok((ImageSource::from_archive(Path::new(path))?, None));
        }
    }
    let path = Path::new(arg);
    if path.is_file() {
        // A store image of that name wins, as docker resolves names first; but never create
        // a store just to look.
        if ctx.root.join("content").is_dir()
            && let Ok(store) = Store::open(&ctx.root)
            && let Ok(record) = store.resolve_image(arg)
        {
            let lock = store.lock_shared()?;
            return Ok((ImageSource::from_store(&store, arg, record), Some(lock)));
        }
        return Ok((ImageSource::from_archive(path)?, None));
    }
    let store = ctx.store()?;
    let lock = store.lock_shared()?;
    let record = store.resolve_image(arg)?;
    Ok((ImageSource::from_store(&store, arg, record), Some(lock)))
}

pub fn analyze(ctx: &Context, args: AnalyzeArgs) -> Result<ExitCode> {
    let rules = Rules::parse(
        &args.lowest_efficiency,
        &args.highest_wasted_bytes,
        &args.highest_user_wasted_percent,
    )
    .map_err(anyhow::Error::msg)?;
    let (source, _lock) = open_image(ctx, &args.image)?;
    let analysis =
        analyze::analyze(&source).with_context(|| format!("analyzing {}", args.image))?;
    let results = args.ci.then(|| rules.evaluate(&analysis));

    let mut report = match args.format {
        ReportFormat::Text => {
            let mut text = analyze::render_text(
                &analysis,
                &TextOptions {
                    files_per_layer: args.files,
                    offenders: args.top,
                    ..TextOptions::default()
                },
            );
            if let Some(results) = &results {
                text.push('\n');
                text.push_str(&ci::render_results(results));
            }
            text
        }
        ReportFormat::Json => {
            let mut value = serde_json::to_value(&analysis)?;
            if let (Some(results), Some(obj)) = (&results, value.as_object_mut()) {
                obj.insert(
                    "ci".to_string(),
                    serde_json::json!({
                        "passed": results.iter().all(|r| r.status != Status::Fail),
                        "rules": results,
                    }),
                );
            }
            serde_json::to_string_pretty(&value)?
        }
        ReportFormat::Html => analyze::render_html(&analysis),
    };
    if !report.ends_with('\n') {
        report.push('\n');
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(report.as_bytes())?,
    }

    let failed: Vec<&str> = results
        .iter()
        .flatten()
        .filter(|r| r.status == Status::Fail)
        .map(|r| r.rule)
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("CI rules failed: {}", failed.join(", "));
    Ok(ExitCode::FAILURE)
}

/// `strata diff IMAGE_A IMAGE_B`: shared layers, layers only in B, and what pulling B costs
/// where A already is.
pub fn diff_images(ctx: &Context, a: &str, b: &str) -> Result<()> {
    let (image_a, _lock_a) = open_image(ctx, a)?;
    let (image_b, _lock_b) = open_image(ctx, b)?;
    let diff = analyze::diff::diff(&image_a, &image_b);
    std::io::stdout()
        .lock()
        .write_all(analyze::diff::render_diff(&diff).as_bytes())?;
    Ok(())
}
