//! Build checks: BuildKit's documented checks, with their names and messages, and strata's
//! layering rules that none of them covers, in one pass over a parsed Dockerfile.
//!
//! The rules live here rather than in `analyze` because they are pure functions of the
//! Dockerfile's text (no I/O, like the rest of this crate), they need the parser's records
//! (keyword casing, comments, flag positions) and the word expander, and `build` already
//! depends on this crate, so `strata build` prints the same findings as `strata lint` without
//! pulling in the image analyser. What a rule would like to know about base images (their
//! environment, platform, layer count) is handed in by the caller through [`LintOptions`].
//!
//! Configuration follows BuildKit: the `# check=skip=A,B;error=true;experimental=C` parser
//! directive (or the `BUILDKIT_DOCKERFILE_CHECK` build arg, which replaces it), where
//! experimental checks run only when named in `experimental=` (or `all`), and `skip=all`
//! turns every other check off. `LintOptions::ignore` removes rules on top of that.

mod buildkit;
mod shell;
mod strata;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::error::{ErrorKind, ParseError, Span};
use crate::{Dockerfile, IgnoreMatcher};

/// Who defined a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// One of BuildKit's build checks (same name, same message).
    BuildKit,
    /// One of strata's layering rules.
    Strata,
}

/// A rule's fixed facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule name, as `# check=skip=` and `--ignore` take it.
    pub id: &'static str,
    /// What the rule is about (BuildKit's description for BuildKit's checks).
    pub description: &'static str,
    /// How to fix a finding, in one line.
    pub fix: &'static str,
    /// Experimental checks run only when enabled with `# check=experimental=`.
    pub experimental: bool,
    pub origin: Origin,
}

impl RuleInfo {
    /// The documentation page (BuildKit's checks only).
    pub fn url(&self) -> Option<String> {
        if self.origin != Origin::BuildKit {
            return None;
        }
        let mut kebab = String::new();
        for (i, c) in self.id.chars().enumerate() {
            if c.is_ascii_uppercase() {
                // "JSONArgs…" → "json-args…": a capital starts a word unless it continues an
                // acronym (the next letter is a capital too, or there is none).
                let prev_upper = i > 0 && self.id.as_bytes()[i - 1].is_ascii_uppercase();
                let next_lower = self
                    .id
                    .as_bytes()
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_lowercase());
                if i > 0 && (!prev_upper || next_lower) {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            } else {
                kebab.push(c);
            }
        }
        Some(format!(
            "https://docs.docker.com/go/dockerfile/rule/{kebab}/"
        ))
    }
}

const fn bk(id: &'static str, description: &'static str, fix: &'static str) -> RuleInfo {
    RuleInfo {
        id,
        description,
        fix,
        experimental: false,
        origin: Origin::BuildKit,
    }
}

const fn st(id: &'static str, description: &'static str, fix: &'static str) -> RuleInfo {
    RuleInfo {
        id,
        description,
        fix,
        experimental: false,
        origin: Origin::Strata,
    }
}

/// Every rule, BuildKit's first (in the order of BuildKit's documentation), then strata's.
pub const RULES: &[RuleInfo] = &[
    bk(
        "StageNameCasing",
        "Stage names should be lowercase",
        "write the stage name in lowercase",
    ),
    bk(
        "FromAsCasing",
        "The 'as' keyword should match the case of the 'from' keyword",
        "write AS in the case of FROM (`FROM x AS y`, or `from x as y`)",
    ),
    bk(
        "NoEmptyContinuation",
        "Empty continuation lines will become errors in a future release",
        "remove the empty line inside the continued instruction (or turn it into a comment)",
    ),
    bk(
        "ConsistentInstructionCasing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "write every instruction keyword in the same case (uppercase is the convention)",
    ),
    bk(
        "DuplicateStageName",
        "Stage names should be unique",
        "give each stage its own name",
    ),
    bk(
        "ReservedStageName",
        "Reserved words should not be used as stage names",
        "rename the stage: `scratch` and `context` mean something else to the builder",
    ),
    bk(
        "JSONArgsRecommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "use the exec form (`CMD [\"program\", \"arg\"]`) so the process receives signals, or set SHELL explicitly",
    ),
    bk(
        "MaintainerDeprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "replace it with `LABEL org.opencontainers.image.authors=\"name <email>\"`",
    ),
    bk(
        "UndefinedArgInFrom",
        "FROM command must use declared ARGs",
        "declare the ARG before the first FROM (`ARG NAME=default`)",
    ),
    bk(
        "WorkdirRelativePath",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        "set an absolute WORKDIR first (`WORKDIR /app`)",
    ),
    bk(
        "UndefinedVar",
        "Variables should be defined before their use",
        "declare the variable with ARG or ENV before this line, or fix its name",
    ),
    bk(
        "MultipleInstructionsDisallowed",
        "Multiple instructions of the same type should not be used in the same stage",
        "keep only the last one: the earlier ones have no effect",
    ),
    bk(
        "LegacyKeyValueFormat",
        "Legacy key/value format with whitespace separator should not be used",
        "write `KEY=value` (quote values that contain spaces)",
    ),
    bk(
        "RedundantTargetPlatform",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "remove `--platform=$TARGETPLATFORM`: it is the default",
    ),
    bk(
        "SecretsUsedInArgOrEnv",
        "Sensitive data should not be used in the ARG or ENV commands",
        "pass secrets with `RUN --mount=type=secret` (`strata build --secret`): ARG and ENV values stay in the image config and history",
    ),
    bk(
        "InvalidDefaultArgInFrom",
        "Default value for global ARG results in an empty or invalid base image name",
        "give the ARG a default that makes a valid image reference (`ARG TAG=3.20`)",
    ),
    bk(
        "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use a constant value",
        "use `--platform=$BUILDPLATFORM` or an ARG; if the constant is deliberate, name the stage after the platform",
    ),
    RuleInfo {
        experimental: true,
        ..bk(
            "CopyIgnoredFile",
            "Attempting to Copy file that is excluded by .dockerignore",
            "stop copying the file, or remove it from .dockerignore",
        )
    },
    bk(
        "InvalidBaseImagePlatform",
        "Base image platform does not match expected target platform",
        "use a base image built for the target platform, or set --platform",
    ),
    RuleInfo {
        experimental: true,
        ..bk(
            "InvalidDefinitionDescription",
            "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
            "start the comment with the name (`# NAME description`), or put an empty line between it and the instruction",
        )
    },
    bk(
        "ExposeProtoCasing",
        "Protocol in EXPOSE instruction should be lowercase",
        "write the protocol in lowercase (`80/tcp`)",
    ),
    bk(
        "ExposeInvalidFormat",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        "EXPOSE only the container port (`EXPOSE 80`); map host ports when running (`-p 8080:80`)",
    ),
    st(
        "StrataContextCopiedBeforeInstall",
        "The whole build context is copied before a dependency install, so every source change invalidates the install's cache",
        "copy only the dependency manifests (package.json + lock file, requirements.txt, go.mod/go.sum, Cargo.toml/Cargo.lock, …) first, install, then `COPY . .`",
    ),
    st(
        "StrataDeleteInLaterLayer",
        "Files an earlier layer added and a later RUN deletes still take their full size in the image (delete doesn't delete)",
        "download, extract, use and delete in one RUN, or fetch in a build stage and COPY only the result",
    ),
    st(
        "StrataPackageCacheLeft",
        "A package manager leaves its cache or index in the layer",
        "clean up in the same RUN, or mount the cache: `RUN --mount=type=cache,target=<cache dir> …`",
    ),
    st(
        "StrataConsecutiveRuns",
        "Consecutive RUN instructions that could be one",
        "join them into one RUN with `&&` (or a heredoc): one layer instead of several, and files a later step deletes never reach it",
    ),
    st(
        "StrataAddInsteadOfCopy",
        "ADD used where COPY does the same",
        "use COPY; keep ADD for URLs, git sources and tar archives it should unpack",
    ),
    st(
        "StrataUnpinnedBase",
        "The base image is untagged or uses :latest, so builds are not reproducible",
        "pin a version tag, ideally with its digest (`image:1.2@sha256:…`)",
    ),
    st(
        "StrataSecretValueInArgOrEnv",
        "A credential is written into an ARG default or an ENV value",
        "remove it (and rotate it); pass secrets at build time with `RUN --mount=type=secret`",
    ),
    st(
        "StrataLastUserRoot",
        "The image's last USER is root",
        "end with `USER <non-root user>` after the steps that need root",
    ),
    st(
        "StrataCopyWholeFilesystem",
        "COPY --from copies another stage's whole filesystem into one layer",
        "copy only what that stage built (`COPY --from=build /app/bin/ /usr/local/bin/`), or build FROM that stage",
    ),
    st(
        "StrataTooManyLayers",
        "The image would have more than 127 layers",
        "merge RUN instructions, or build with --squash (strata build --max-layers N allows more)",
    ),
];

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule id.
    pub rule: &'static str,
    /// The instruction's lines, narrowed to the part at fault when known.
    pub span: Span,
    /// Why: for BuildKit's checks, BuildKit's message.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl Finding {
    /// The line to show (`file:line`).
    pub fn line(&self) -> usize {
        self.span.focus_line()
    }

    /// The rule's facts.
    pub fn info(&self) -> Option<&'static RuleInfo> {
        rule(self.rule)
    }
}

/// What is known about a base image (typically read from the local store by the caller).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// Its `Env`, as `NAME=value` pairs.
    pub env: Vec<(String, String)>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// How many layers it has.
    pub layers: usize,
    /// Its config sets a SHELL.
    pub has_shell: bool,
    /// Its config `User`.
    pub user: String,
}

/// What the caller knows beyond the Dockerfile.
#[derive(Clone, Debug)]
pub struct LintOptions<'a> {
    /// The `BUILDKIT_DOCKERFILE_CHECK` value, which replaces the `# check=` directive.
    pub check: Option<String>,
    /// Rules to leave out (`--ignore`), on top of the directive.
    pub ignore: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The platform being built for.
    pub target_os: String,
    pub target_arch: String,
    pub target_variant: Option<String>,
    /// Base images by the name a FROM line gives (after ARG expansion). A stage whose base
    /// is not here and is not `scratch` or another stage has an unknown environment, so
    /// UndefinedVar stays silent in it rather than guess.
    pub bases: BTreeMap<String, BaseImage>,
    /// The context's `.dockerignore`, for CopyIgnoredFile.
    pub dockerignore: Option<&'a IgnoreMatcher>,
    /// The stage being built (`--target`); the last one by default.
    pub target: Option<String>,
}

impl Default for LintOptions<'_> {
    fn default() -> Self {
        LintOptions {
            check: None,
            ignore: Vec::new(),
            build_args: BTreeMap::new(),
            target_os: "linux".to_string(),
            target_arch: host_arch().to_string(),
            target_variant: None,
            bases: BTreeMap::new(),
            dockerignore: None,
            target: None,
        }
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The `# check=` configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip: Vec<String>,
    pub skip_all: bool,
    pub experimental: Vec<String>,
    pub experimental_all: bool,
    /// `error=true`: findings fail the build.
    pub error: bool,
}

/// A `# check=` value that BuildKit would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse check options: {0}")]
pub struct CheckConfigError(pub String);

fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn rule_list(value: &str) -> (bool, Vec<String>) {
    let value = value.trim();
    if value == "all" {
        return (true, Vec::new());
    }
    (
        false,
        value.split(',').map(|r| r.trim().to_string()).collect(),
    )
}

impl CheckConfig {
    /// Parses a `check` directive value as BuildKit's `ParseLintOptions` does.
    pub fn parse(value: &str) -> Result<CheckConfig, CheckConfigError> {
        let value = value.trim();
        let mut config = CheckConfig::default();
        if value.is_empty() {
            return Ok(config);
        }
        for part in value.splitn(3, ';') {
            let Some((key, v)) = part.split_once('=') else {
                return Err(CheckConfigError(format!(
                    "invalid check option {}",
                    crate::go_quote(part)
                )));
            };
            match key.trim() {
                "skip" => (config.skip_all, config.skip) = rule_list(v),
                "experimental" => (config.experimental_all, config.experimental) = rule_list(v),
                "error" => {
                    config.error = go_parse_bool(v.trim()).ok_or_else(|| {
                        CheckConfigError(format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::go_quote(part),
                            crate::go_quote(v.trim())
                        ))
                    })?;
                }
                other => {
                    return Err(CheckConfigError(format!(
                        "invalid check option {}",
                        crate::go_quote(other)
                    )));
                }
            }
        }
        Ok(config)
    }

    /// Whether a rule runs under this configuration.
    pub fn enabled(&self, rule: &RuleInfo) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.id)
        } else {
            !(self.skip_all || self.skip.iter().any(|r| r == rule.id))
        }
    }
}

/// The check configuration in force: the `BUILDKIT_DOCKERFILE_CHECK` value if given, else
/// the `# check=` directive.
pub fn check_config(
    df: &Dockerfile,
    options: &LintOptions<'_>,
) -> Result<CheckConfig, CheckConfigError> {
    let value = options.check.clone().or_else(|| {
        df.directives
            .iter()
            .find(|d| d.name == "check")
            .map(|d| d.value.clone())
    });
    CheckConfig::parse(value.as_deref().unwrap_or(""))
}

/// Runs every enabled rule. An invalid `# check=` directive is treated as absent here; call
/// [`check_config`] first to refuse it as BuildKit does.
pub fn lint(df: &Dockerfile, source: &[u8], options: &LintOptions<'_>) -> Vec<Finding> {
    let config = check_config(df, options).unwrap_or_default();
    let ast = crate::parser::parse(source).ok();
    let mut findings = buildkit::run(df, ast.as_ref(), options);
    findings.extend(strata::run(df, ast.as_ref(), options));
    findings.retain(|f| {
        rule(f.rule).is_some_and(|r| config.enabled(r))
            && !options.ignore.iter().any(|i| i == f.rule)
    });
    findings.sort_by_key(|f| f.span.start);
    findings
}

/// The images the stages are built on (FROM lines after ARG expansion that name neither
/// `scratch` nor another stage), so a caller can describe them in [`LintOptions::bases`].
pub fn base_images(df: &Dockerfile, options: &LintOptions<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for base in buildkit::bases(df, options) {
        if let buildkit::Base::Image(name) = base
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

/// BuildKit's error when `error=true` and something was found:
/// `lint violation found for rules: A, B`.
pub fn violation_error(findings: &[Finding]) -> Option<String> {
    if findings.is_empty() {
        return None;
    }
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
    rules.sort_unstable();
    rules.dedup();
    Some(format!(
        "lint violation found for rules: {}",
        rules.join(", ")
    ))
}

/// Findings for a Dockerfile that did not parse because of something BuildKit reports as a
/// check (two stages with one name).
pub fn findings_for_error(error: &ParseError) -> Vec<Finding> {
    match (&error.kind, error.span) {
        (ErrorKind::DuplicateStageName { name }, Some(span)) => vec![finding(
            "DuplicateStageName",
            span,
            format!(
                "Duplicate stage name {}, stage names should be unique",
                crate::go_quote(name)
            ),
        )],
        _ => Vec::new(),
    }
}

pub(crate) fn finding(rule_id: &'static str, span: Span, message: String) -> Finding {
    Finding {
        rule: rule_id,
        span,
        message,
        fix: rule(rule_id).map(|r| r.fix.to_string()).unwrap_or_default(),
    }
}
