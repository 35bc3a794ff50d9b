//! `strata lint [Dockerfile]`: BuildKit's build checks and strata's layering rules.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use dockerfile::lint::{self, BaseImage, Finding, LintOptions, Origin, RULES};
use dockerfile::{Dockerfile, IgnoreMatcher};
use serde_json::json;
use store::Store;

use super::Context;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LintFormat {
    /// file:line, rule, why and how to fix
    Human,
    /// The findings as JSON
    Json,
    /// SARIF 2.1.0, for code-scanning tools
    Sarif,
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The Dockerfile (default: ./Dockerfile; - reads standard input)
    file: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    format: LintFormat,
    /// Leave a rule out (repeatable)
    #[arg(long = "ignore", value_name = "RULE")]
    ignore: Vec<String>,
    /// Exit 1 when anything is found (as `# check=error=true` does)
    #[arg(long)]
    strict: bool,
    /// A build-time variable (KEY=VALUE), as `strata build` takes it; BUILDKIT_DOCKERFILE_CHECK
    /// replaces the `# check=` directive
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The stage that would be built (for the rules about the final image)
    #[arg(long)]
    target: Option<String>,
    /// The build context, for .dockerignore (default: the Dockerfile's directory)
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
}

/// What the store knows about the base images, when a store exists (it is never created).
pub(crate) fn describe_bases(ctx: &Context, names: &[String]) -> BTreeMap<String, BaseImage> {
    let mut out = BTreeMap::new();
    if !ctx.root.join("content").is_dir() {
        return out;
    }
    let Ok(store) = Store::open(&ctx.root) else {
        return out;
    };
    for name in names {
        let Ok(record) = store.resolve_image(name) else {
            continue;
        };
        let config = &record.config;
        let container = config.config.clone().unwrap_or_default();
        out.insert(
            name.clone(),
            BaseImage {
                env: container
                    .env
                    .iter()
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (e.clone(), String::new()),
                    })
                    .collect(),
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone(),
                layers: config.rootfs.diff_ids.len(),
                has_shell: !container.shell.is_empty(),
                user: container.user.clone(),
            },
        );
    }
    out
}

fn read_dockerignore(dockerfile: Option<&Path>, context: &Path) -> Result<Option<IgnoreMatcher>> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        let mut name = df.as_os_str().to_owned();
        name.push(".dockerignore");
        candidates.push(PathBuf::from(name));
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        if let Ok(data) = std::fs::read(&path) {
            let matcher = IgnoreMatcher::from_dockerignore(&data)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(Some(matcher));
        }
    }
    Ok(None)
}

/// 1-based character column of a byte offset on a line of `source`.
fn column(source: &[u8], line: usize, byte: usize) -> usize {
    let text = source
        .split(|&b| b == b'\n')
        .nth(line.saturating_sub(1))
        .unwrap_or_default();
    let upto = &text[..byte.min(text.len())];
    String::from_utf8_lossy(upto).chars().count() + 1
}

pub fn lint(ctx: &Context, args: LintArgs) -> Result<ExitCode> {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| "Dockerfile".to_string());
    let (source, path) = if file == "-" {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data)?;
        (data, None)
    } else {
        let p = PathBuf::from(&file);
        let data = std::fs::read(&p).with_context(|| format!("reading {file}"))?;
        (data, Some(p))
    };

    for rule in &args.ignore {
        if lint::rule(rule).is_none() {
            eprintln!("warning: --ignore {rule}: no rule has that name");
        }
    }
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => build_args.insert(a.clone(), std::env::var(a).unwrap_or_default()),
        };
    }
    let context = args.context.clone().unwrap_or_else(|| {
        path.as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let dockerignore = read_dockerignore(path.as_deref(), &context)?;
    let host = oci::Platform::host();
    let mut options = LintOptions {
        check: build_args.get("BUILDKIT_DOCKERFILE_CHECK").cloned(),
        ignore: args.ignore.clone(),
        build_args,
        target_os: host.os,
        target_arch: host.architecture,
        target_variant: host.variant,
        bases: BTreeMap::new(),
        dockerignore: dockerignore.as_ref(),
        target: args.target.clone(),
    };

    let df = match Dockerfile::parse(&source) {
        Ok(df) => df,
        Err(e) => {
            let findings: Vec<Finding> = lint::findings_for_error(&e)
                .into_iter()
                .filter(|f| !options.ignore.iter().any(|i| i == f.rule))
                .collect();
            print_findings(&args, &file, &source, &findings, false)?;
            bail!("{}", e.render(&file, &source));
        }
    };
    options.bases = describe_bases(ctx, &lint::base_images(&df, &options));
    let config = lint::check_config(&df, &options)?;
    let findings = lint::lint(&df, &source, &options);
    print_findings(&args, &file, &source, &findings, config.error)?;

    if config.error
        && let Some(message) = lint::violation_error(&findings)
    {
        eprintln!("Error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    if args.strict && !findings.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_findings(
    args: &LintArgs,
    file: &str,
    source: &[u8],
    findings: &[Finding],
    error: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match args.format {
        LintFormat::Human => {
            for f in findings {
                writeln!(out, "{file}:{}: {}: {}", f.line(), f.rule, f.message)?;
                writeln!(out, "  fix: {}", f.fix)?;
                if let Some(url) = f.info().and_then(|r| r.url()) {
                    writeln!(out, "  see: {url}")?;
                }
            }
            let mut rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
            rules.sort_unstable();
            rules.dedup();
            match findings.len() {
                0 => writeln!(out, "{file}: no findings")?,
                n => writeln!(
                    out,
                    "{file}: {n} finding{} ({})",
                    if n == 1 { "" } else { "s" },
                    rules.join(", ")
                )?,
            }
        }
        LintFormat::Json => {
            let items: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| {
                    let info = f.info();
                    json!({
                        "rule": f.rule,
                        "line": f.line(),
                        "end_line": f.span.end,
                        "column": f.span.focus.map(|c| column(source, c.line, c.start as usize)),
                        "message": f.message,
                        "fix": f.fix,
                        "url": info.and_then(|r| r.url()),
                        "origin": match info.map(|r| r.origin) {
                            Some(Origin::BuildKit) => "buildkit",
                            _ => "strata",
                        },
                        "experimental": info.is_some_and(|r| r.experimental),
                    })
                })
                .collect();
            let doc = json!({ "file": file, "error": error, "findings": items });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        LintFormat::Sarif => {
            let rules: Vec<serde_json::Value> = RULES
                .iter()
                .map(|r| {
                    let mut rule = json!({
                        "id": r.id,
                        "name": r.id,
                        "shortDescription": { "text": r.description },
                        "help": { "text": r.fix },
                        "defaultConfiguration": { "level": "warning" },
                        "properties": {
                            "origin": if r.origin == Origin::BuildKit { "buildkit" } else { "strata" },
                            "experimental": r.experimental,
                        },
                    });
                    if let (Some(url), Some(obj)) = (r.url(), rule.as_object_mut()) {
                        obj.insert("helpUri".into(), json!(url));
                    }
                    rule
                })
                .collect();
            let results: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| {
                    let mut region =
                        json!({ "startLine": f.line(), "endLine": f.span.end.max(f.line()) });
                    if let (Some(focus), Some(obj)) = (f.span.focus, region.as_object_mut()) {
                        obj.insert(
                            "startColumn".into(),
                            json!(column(source, focus.line, focus.start as usize)),
                        );
                        obj.insert(
                            "endColumn".into(),
                            json!(column(source, focus.line, focus.end as usize)),
                        );
                    }
                    json!({
                        "ruleId": f.rule,
                        "ruleIndex": RULES.iter().position(|r| r.id == f.rule),
                        "level": if error { "error" } else { "warning" },
                        "message": { "text": format!("{} Fix: {}", f.message, f.fix) },
                        "locations": [{
                            "physicalLocation": {
                                "artifactLocation": { "uri": file },
                                "region": region,
                            }
                        }],
                        "properties": { "fix": f.fix },
                    })
                })
                .collect();
            let doc = json!({
                "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                "version": "2.1.0",
                "runs": [{
                    "tool": {
                        "driver": {
                            "name": "strata",
                            "version": env!("CARGO_PKG_VERSION"),
                            "informationUri": "https://example.invalid/strata",
                            "rules": rules,
                        }
                    },
                    "results": results,
                }]
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
    }
    Ok(())
}
