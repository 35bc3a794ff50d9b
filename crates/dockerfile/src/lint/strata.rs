//! strata's layering rules: what makes images big or builds slow because of how layers work,
//! which none of BuildKit's checks looks at.

use std::collections::BTreeSet;

use super::buildkit::{Base, Records, bases, global_args};
use super::shell::{commands, has_option, operands, option_value, program};
use super::{Finding, LintOptions, finding};
use crate::error::Span;
use crate::expand::Expander;
use crate::layout::Subject;
use crate::parser::Ast;
use crate::{Dockerfile, Instruction, RunInstruction, Spanned, Stage};

/// The most layers one overlay mount stacks (and docker's limit).
pub(crate) const MAX_LAYERS: usize = 127;

pub(crate) fn run(df: &Dockerfile, ast: Option<&Ast>, options: &LintOptions<'_>) -> Vec<Finding> {
    let mut r = Rules {
        df,
        records: Records::new(ast),
        options,
        resolved: bases(df, options),
        out: Vec::new(),
    };
    r.per_stage();
    r.unpinned_bases();
    r.secret_values();
    r.last_user_root();
    r.too_many_layers();
    r.out
}

struct Rules<'a> {
    df: &'a Dockerfile,
    records: Records<'a>,
    options: &'a LintOptions<'a>,
    resolved: Vec<Base>,
    out: Vec<Finding>,
}

/// A path an instruction put in a layer.
#[derive(Clone, Debug)]
struct Produced {
    path: String,
    line: usize,
    what: String,
    /// Deleting something inside it counts too (a download or extraction directory, or a
    /// copy into a directory of its own).
    owns_below: bool,
}

/// What a stage carries from its parent stages.
#[derive(Clone, Debug, Default)]
struct Carried {
    workdir: String,
    produced: Vec<Produced>,
    env_keys: BTreeSet<String>,
}

/// `path` made absolute against `workdir`, cleaned. `None` when it holds a variable.
fn absolute(workdir: &str, path: &str) -> Option<String> {
    if path.contains('$') || path.is_empty() {
        return None;
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{workdir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{dir}/"))
}

/// A shell glob (`*`, `?`) matched against a whole path.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Directories too general to say a COPY into them "owns" everything below.
const SHARED_DIRS: [&str; 16] = [
    "/",
    "/bin",
    "/etc",
    "/home",
    "/lib",
    "/opt",
    "/root",
    "/sbin",
    "/srv",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/local/bin",
    "/var",
];

const ARCHIVE_SUFFIXES: [&str; 14] = [
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar.zst",
    ".tzst",
    ".tar.lz",
    ".tar.lzma",
    ".taz",
    ".tz",
];

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_git(s: &str) -> bool {
    s.starts_with("git@") || s.starts_with("git://") || s.ends_with(".git") || s.contains(".git#")
}

/// A dependency install that reads the build context (or that any context change re-runs).
fn install_command(words: &[String]) -> Option<String> {
    let prog = program(words);
    let ops = operands(words);
    let first = ops.first().copied().unwrap_or("");
    let second = ops.get(1).copied().unwrap_or("");
    let hit = match prog {
        "npm" => matches!(first, "install" | "ci" | "i"),
        "yarn" => first.is_empty() || first == "install",
        "pnpm" | "bun" => matches!(first, "install" | "i"),
        "pip" | "pip3" => first == "install",
        "python" | "python3" => {
            words.iter().any(|w| w == "pip") && words.iter().any(|w| w == "install")
        }
        "poetry" | "pipenv" | "bundle" | "composer" | "gem" | "conda" => first == "install",
        "uv" => first == "sync" || (first == "pip" && second == "install"),
        "go" => (first == "mod" && second == "download") || first == "get",
        "cargo" => first == "fetch",
        "dotnet" => first == "restore",
        "mvn" | "mvnw" | "./mvnw" => ops.iter().any(|o| o.starts_with("dependency:")),
        "apt-get" | "apt" | "yum" | "dnf" | "microdnf" => first == "install",
        "apk" => first == "add",
        _ => false,
    };
    hit.then(|| {
        let mut text = prog.to_string();
        if !first.is_empty() {
            text.push(' ');
            text.push_str(first);
        }
        if prog == "go" && first == "mod" {
            text.push_str(" download");
        }
        text
    })
}

fn run_script(run: &RunInstruction) -> String {
    let mut script = run.command.args.join(" ");
    for f in &run.files {
        script.push('\n');
        script.push_str(&f.content());
    }
    script
}

/// The cache mounts of a RUN: their targets.
fn cache_mounts(run: &RunInstruction) -> Vec<String> {
    run.mounts
        .iter()
        .filter(|m| {
            m.fields
                .iter()
                .any(|(k, v)| k == "type" && v.as_deref() == Some("cache"))
        })
        .filter_map(|m| {
            m.fields
                .iter()
                .find(|(k, _)| matches!(k.as_str(), "target" | "dst" | "destination"))
                .and_then(|(_, v)| v.clone())
        })
        .collect()
}

impl Rules<'_> {
    fn report(&mut self, rule: &'static str, span: Span, message: String) {
        self.out.push(finding(rule, span, message));
    }

    fn line_of(&self, span: Span) -> usize {
        span.start
    }

    fn per_stage(&mut self) {
        let df = self.df;
        let mut finals: Vec<Carried> = Vec::new();
        for (i, stage) in df.stages.iter().enumerate() {
            let mut carried = match &self.resolved[i] {
                Base::Stage(p) => finals[*p].clone(),
                _ => Carried {
                    workdir: "/".to_string(),
                    ..Default::default()
                },
            };
            self.context_before_install(stage);
            self.consecutive_runs(stage);
            for ins in &stage.instructions {
                self.instruction(ins, &mut carried);
            }
            finals.push(carried);
        }
    }

    fn context_before_install(&mut self, stage: &Stage) {
        let mut whole: Option<&Spanned<Instruction>> = None;
        for ins in &stage.instructions {
            match &ins.value {
                Instruction::Copy(c)
                    if c.from.is_none()
                        && whole.is_none()
                        && c.files.sources.iter().any(|s| is_whole_context(s)) =>
                {
                    whole = Some(ins);
                }
                Instruction::Add(a)
                    if whole.is_none() && a.files.sources.iter().any(|s| is_whole_context(s)) =>
                {
                    whole = Some(ins);
                }
                Instruction::Run(run) => {
                    let Some(copy) = whole else { continue };
                    let install = commands(&run_script(run))
                        .iter()
                        .find_map(|w| install_command(w));
                    if let Some(install) = install {
                        let span = self.records.focus(copy.span, Subject::Arguments);
                        self.report(
                            "StrataContextCopiedBeforeInstall",
                            span,
                            format!(
                                "line {} copies the whole build context before `{install}` on line {}: any change to any file re-runs the install",
                                copy.span.start, ins.span.start
                            ),
                        );
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn consecutive_runs(&mut self, stage: &Stage) {
        let signature = |run: &RunInstruction| {
            (
                run.mounts.iter().map(|m| m.raw.clone()).collect::<Vec<_>>(),
                run.network,
                run.security,
            )
        };
        let mut group: Vec<&Spanned<Instruction>> = Vec::new();
        let flush = |group: &mut Vec<&Spanned<Instruction>>, out: &mut Vec<Finding>| {
            if group.len() >= 2 {
                let first = group[0].span;
                let last = group[group.len() - 1].span;
                let lines: Vec<String> = group.iter().map(|g| g.span.start.to_string()).collect();
                out.push(finding(
                    "StrataConsecutiveRuns",
                    Span::new(first.start, last.end),
                    format!(
                        "{} consecutive RUN instructions (lines {}) make {} layers where one would do",
                        group.len(),
                        lines.join(", "),
                        group.len()
                    ),
                ));
            }
            group.clear();
        };
        for ins in &stage.instructions {
            match &ins.value {
                Instruction::Run(run) => {
                    let same = group.last().is_some_and(|prev| match &prev.value {
                        Instruction::Run(p) => signature(p) == signature(run),
                        _ => false,
                    });
                    if !same {
                        flush(&mut group, &mut self.out);
                    }
                    group.push(ins);
                }
                _ => flush(&mut group, &mut self.out),
            }
        }
        flush(&mut group, &mut self.out);
    }

    fn instruction(&mut self, ins: &Spanned<Instruction>, carried: &mut Carried) {
        let line = self.line_of(ins.span);
        match &ins.value {
            Instruction::Workdir(path) => {
                if let Some(p) = absolute(&carried.workdir, path) {
                    carried.workdir = p;
                }
            }
            Instruction::Env(pairs) => {
                for kv in pairs {
                    carried.env_keys.insert(kv.key.clone());
                }
            }
            Instruction::Copy(copy) => {
                if let Some(from) = &copy.from {
                    for src in &copy.files.sources {
                        let cleaned = crate::clean_path(src);
                        if matches!(cleaned.as_str(), "/" | "." | "/*" | "*") {
                            let span = self.records.focus(ins.span, Subject::Arguments);
                            self.report(
                                "StrataCopyWholeFilesystem",
                                span,
                                format!(
                                    "`COPY --from={from} {src} …` copies the whole filesystem of {from}, base image included, into one new layer that shares nothing with it"
                                ),
                            );
                            break;
                        }
                    }
                }
                self.record_copy(&copy.files.sources, &copy.files.dest, "COPY", line, carried);
            }
            Instruction::Add(add) => {
                self.add_instead_of_copy(ins, add);
                self.record_copy(&add.files.sources, &add.files.dest, "ADD", line, carried);
            }
            Instruction::Run(run) => {
                let script = run_script(run);
                let cmds = commands(&script);
                self.deletes(ins.span, &cmds, carried);
                self.package_caches(ins.span, run, &cmds, carried);
                for words in &cmds {
                    carried
                        .produced
                        .extend(produced_by(words, &carried.workdir, line));
                }
            }
            _ => {}
        }
    }

    fn record_copy(
        &mut self,
        sources: &[String],
        dest: &str,
        keyword: &str,
        line: usize,
        carried: &mut Carried,
    ) {
        let Some(dest_abs) = absolute(&carried.workdir, dest) else {
            return;
        };
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        for src in sources {
            let what = format!("`{keyword} {src} {dest}`");
            let owns_below = !SHARED_DIRS.contains(&dest_abs.as_str());
            if into_dir && !is_whole_context(src) && !src.contains('$') {
                let name = if is_url(src) {
                    basename(src.split(['?', '#']).next().unwrap_or(src))
                } else {
                    basename(src)
                };
                if let Some(p) = absolute(&dest_abs, name) {
                    carried.produced.push(Produced {
                        path: p,
                        line,
                        what: what.clone(),
                        owns_below: true,
                    });
                }
            } else {
                carried.produced.push(Produced {
                    path: dest_abs.clone(),
                    line,
                    what,
                    owns_below,
                });
            }
        }
    }

    fn add_instead_of_copy(&mut self, ins: &Spanned<Instruction>, add: &crate::AddInstruction) {
        if add.checksum.is_some() || add.keep_git_dir || add.unpack.is_some() {
            return;
        }
        let plain = add.files.sources.iter().all(|s| {
            let lower = s.to_ascii_lowercase();
            !s.contains('$')
                && !is_url(s)
                && !is_git(s)
                && !ARCHIVE_SUFFIXES
                    .iter()
                    .any(|suffix| lower.ends_with(suffix))
                && !lower.contains('*') // a glob may pick up archives
        });
        if plain {
            let span = self.records.focus(ins.span, Subject::Keyword);
            self.report(
                "StrataAddInsteadOfCopy",
                span,
                "ADD of local files that are not tar archives does exactly what COPY does, with extra behaviour (URL fetching, unpacking) a reader has to rule out".to_string(),
            );
        }
    }

    fn deletes(&mut self, span: Span, cmds: &[Vec<String>], carried: &Carried) {
        let mut reported: BTreeSet<usize> = BTreeSet::new();
        for words in cmds {
            if program(words) != "rm" {
                continue;
            }
            for target in operands(words) {
                let globbed = target.contains(['*', '?']);
                let Some(abs) = absolute(&carried.workdir, target) else {
                    continue;
                };
                for p in &carried.produced {
                    if reported.contains(&p.line) {
                        continue;
                    }
                    let hit = if globbed {
                        glob_match(&abs, &p.path)
                            || p.path
                                .match_indices('/')
                                .any(|(i, _)| i > 0 && glob_match(&abs, &p.path[..i]))
                    } else {
                        under(&p.path, &abs) || (p.owns_below && under(&abs, &p.path))
                    };
                    if hit && abs != "/" {
                        reported.insert(p.line);
                        self.report(
                            "StrataDeleteInLaterLayer",
                            span,
                            format!(
                                "`rm {target}` deletes what {} on line {} put in an earlier layer: the bytes stay in that layer",
                                p.what, p.line
                            ),
                        );
                    }
                }
            }
        }
    }

    fn package_caches(
        &mut self,
        span: Span,
        run: &RunInstruction,
        cmds: &[Vec<String>],
        carried: &Carried,
    ) {
        let mounts = cache_mounts(run);
        let mounted = |dirs: &[&str]| {
            mounts.iter().any(|m| {
                dirs.iter()
                    .any(|d| under(m, d) || under(d, m.trim_end_matches('/')))
            })
        };
        let removes = |prefixes: &[&str]| {
            cmds.iter().any(|w| {
                program(w) == "rm"
                    && operands(w)
                        .iter()
                        .any(|o| prefixes.iter().any(|p| o.starts_with(p)))
            })
        };
        let runs = |prog: &[&str], sub: &[&str]| {
            cmds.iter().any(|w| {
                prog.contains(&program(w)) && operands(w).first().is_some_and(|o| sub.contains(o))
            })
        };
        let mut left: Vec<(&str, &str)> = Vec::new();

        if runs(&["apt-get", "apt"], &["update"])
            && !removes(&["/var/lib/apt/lists"])
            && !mounted(&["/var/lib/apt", "/var/cache/apt"])
        {
            left.push((
                "apt package lists (/var/lib/apt/lists)",
                "end the RUN with `rm -rf /var/lib/apt/lists/*`, or mount /var/lib/apt and /var/cache/apt as caches",
            ));
        }
        let apk_add = cmds.iter().any(|w| {
            program(w) == "apk"
                && operands(w)
                    .first()
                    .is_some_and(|o| *o == "add" || *o == "update")
                && !has_option(w, None, Some("--no-cache"))
        });
        if apk_add
            && !removes(&["/var/cache/apk"])
            && !mounted(&["/var/cache/apk", "/etc/apk/cache"])
        {
            left.push((
                "the apk index and packages (/var/cache/apk)",
                "use `apk add --no-cache`, or mount /etc/apk/cache as a cache",
            ));
        }
        let pip = cmds.iter().any(|w| {
            let prog = program(w);
            let is_pip = matches!(prog, "pip" | "pip3")
                && operands(w).first().is_some_and(|o| *o == "install");
            let is_module = matches!(prog, "python" | "python3")
                && w.iter().any(|x| x == "pip")
                && w.iter().any(|x| x == "install");
            (is_pip || is_module) && !has_option(w, None, Some("--no-cache-dir"))
        });
        let pip_purged = cmds.iter().any(|w| {
            matches!(program(w), "pip" | "pip3") && operands(w).starts_with(&["cache", "purge"])
        }) || removes(&["/root/.cache", "~/.cache", "$HOME/.cache"]);
        if pip
            && !pip_purged
            && !carried.env_keys.contains("PIP_NO_CACHE_DIR")
            && !mounted(&["/root/.cache/pip", "/root/.cache"])
            && !mounts.iter().any(|m| m.contains(".cache/pip"))
        {
            left.push((
                "pip's download cache (~/.cache/pip)",
                "use `pip install --no-cache-dir`, or `RUN --mount=type=cache,target=/root/.cache/pip`",
            ));
        }
        let npm = runs(&["npm"], &["install", "ci", "i"]);
        let npm_cleaned = cmds
            .iter()
            .any(|w| program(w) == "npm" && operands(w).starts_with(&["cache", "clean"]))
            || removes(&["/root/.npm", "~/.npm", "$HOME/.npm"]);
        if npm && !npm_cleaned && !mounts.iter().any(|m| m.contains(".npm")) {
            left.push((
                "npm's cache (~/.npm)",
                "run `npm cache clean --force` in the same RUN, or `RUN --mount=type=cache,target=/root/.npm`",
            ));
        }
        let yarn = runs(&["yarn"], &["install"])
            || cmds
                .iter()
                .any(|w| program(w) == "yarn" && operands(w).is_empty());
        let yarn_cleaned = cmds
            .iter()
            .any(|w| program(w) == "yarn" && operands(w).starts_with(&["cache", "clean"]));
        if yarn && !yarn_cleaned && !mounts.iter().any(|m| m.contains("yarn")) {
            left.push((
                "yarn's cache",
                "run `yarn cache clean` in the same RUN, or mount the yarn cache directory as a cache",
            ));
        }
        for (prog, dir) in [
            ("yum", "/var/cache/yum"),
            ("dnf", "/var/cache/dnf"),
            ("microdnf", "/var/cache/yum"),
        ] {
            let installs = runs(&[prog], &["install", "update", "upgrade"]);
            let cleaned = cmds.iter().any(|w| {
                matches!(program(w), "yum" | "dnf" | "microdnf")
                    && operands(w).starts_with(&["clean", "all"])
            }) || removes(&[dir, "/var/cache/yum", "/var/cache/dnf"]);
            if installs && !cleaned && !mounted(&[dir]) {
                left.push(if prog == "dnf" {
                    (
                        "dnf's metadata and package cache (/var/cache/dnf)",
                        "end the RUN with `dnf clean all`, or mount /var/cache/dnf as a cache",
                    )
                } else {
                    (
                        "yum's metadata and package cache (/var/cache/yum)",
                        "end the RUN with `yum clean all`, or mount /var/cache/yum as a cache",
                    )
                });
                break;
            }
        }
        for (what, fix) in left {
            let mut f = finding(
                "StrataPackageCacheLeft",
                span,
                format!("this RUN leaves {what} in its layer"),
            );
            f.fix = fix.to_string();
            self.out.push(f);
        }
    }

    fn unpinned_bases(&mut self) {
        let df = self.df;
        for (i, stage) in df.stages.iter().enumerate() {
            let Base::Image(name) = &self.resolved[i] else {
                continue;
            };
            if name.contains('@') || name.contains('$') {
                continue;
            }
            let last = name.rsplit('/').next().unwrap_or(name);
            let message = match last.split_once(':') {
                None => format!(
                    "the base image {name} has no tag: it means :latest, whatever that is on the day of the build"
                ),
                Some((_, "latest")) => {
                    format!("the base image {name} uses the :latest tag, which moves")
                }
                Some(_) => continue,
            };
            let span = self.records.focus(stage.from.span, Subject::Argument(0));
            self.report("StrataUnpinnedBase", span, message);
        }
    }

    fn secret_values(&mut self) {
        let df = self.df;
        let mut checks: Vec<(Span, String, String)> = Vec::new();
        for arg in &df.meta_args {
            for d in &arg.value.args {
                if let Some(v) = &d.default {
                    checks.push((arg.span, format!("ARG {}", d.name), v.clone()));
                }
            }
        }
        for stage in &df.stages {
            for ins in &stage.instructions {
                match &ins.value {
                    Instruction::Env(pairs) => {
                        for kv in pairs {
                            checks.push((ins.span, format!("ENV {}", kv.key), kv.value.clone()));
                        }
                    }
                    Instruction::Arg(arg) => {
                        for d in &arg.args {
                            if let Some(v) = &d.default {
                                checks.push((ins.span, format!("ARG {}", d.name), v.clone()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for (span, what, value) in checks {
            if let Some(kind) = credential_kind(&value) {
                self.report(
                    "StrataSecretValueInArgOrEnv",
                    span,
                    format!("{what} holds what looks like {kind}; it stays readable in the image config and history"),
                );
            }
        }
    }

    /// The target stage and its parent stages, target first.
    fn chain(&self) -> Vec<usize> {
        let df = self.df;
        let target = self
            .options
            .target
            .as_deref()
            .and_then(|t| df.find_stage(t).map(|(i, _)| i))
            .unwrap_or(df.stages.len().saturating_sub(1));
        let mut chain = vec![target];
        let mut current = target;
        while let Some(Base::Stage(p)) = self.resolved.get(current) {
            chain.push(*p);
            current = *p;
        }
        chain
    }

    fn last_user_root(&mut self) {
        let df = self.df;
        for i in self.chain() {
            let last = df.stages[i]
                .instructions
                .iter()
                .rev()
                .find_map(|ins| match &ins.value {
                    Instruction::User(u) => Some((ins.span, u.clone())),
                    _ => None,
                });
            if let Some((span, user)) = last {
                let name = user.split(':').next().unwrap_or("");
                if name == "root" || name == "0" {
                    let span = self.records.focus(span, Subject::Arguments);
                    self.report(
                        "StrataLastUserRoot",
                        span,
                        format!(
                            "the last USER is {user}, so containers from this image run as root"
                        ),
                    );
                }
                return;
            }
        }
    }

    fn too_many_layers(&mut self) {
        let df = self.df;
        let mut chain = self.chain();
        chain.reverse();
        let Some(&root) = chain.first() else { return };
        let global = global_args(df, self.options, true);
        let mut count = match &self.resolved[root] {
            Base::Image(name) => self.options.bases.get(name).map_or(0, |b| b.layers),
            _ => 0,
        };
        let known = match &self.resolved[root] {
            Base::Image(name) => self.options.bases.contains_key(name),
            _ => true,
        };
        let expander = Expander::new(df.escape);
        let mut workdir = "/".to_string();
        let mut over: Option<Span> = None;
        if count > MAX_LAYERS {
            over = Some(df.stages[root].from.span);
        }
        for &i in &chain {
            for ins in &df.stages[i].instructions {
                let layer = match &ins.value {
                    Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) => true,
                    Instruction::Workdir(p) => {
                        let p = expander
                            .process_word(p, &global)
                            .unwrap_or_else(|_| p.clone());
                        if let Some(abs) = absolute(&workdir, &p) {
                            workdir = abs;
                        }
                        workdir != "/"
                    }
                    _ => false,
                };
                if layer {
                    count += 1;
                    if count == MAX_LAYERS + 1 && over.is_none() {
                        over = Some(ins.span);
                    }
                }
            }
        }
        if let Some(span) = over {
            let base = if known {
                String::new()
            } else {
                " (not counting the base image's, which are unknown here)".to_string()
            };
            self.report(
                "StrataTooManyLayers",
                span,
                format!(
                    "the image would have {count} layers{base}; this instruction makes layer {}, past the {MAX_LAYERS} one overlay mount stacks",
                    MAX_LAYERS + 1
                ),
            );
        }
    }
}

fn is_whole_context(src: &str) -> bool {
    matches!(crate::clean_path(src).as_str(), "." | "/" | "*" | "/*")
}

/// Paths a command writes that a later RUN might delete.
fn produced_by(words: &[String], workdir: &str, line: usize) -> Vec<Produced> {
    let prog = program(words);
    let mut out = Vec::new();
    let mut push = |path: Option<String>, what: &str, owns_below: bool| {
        if let Some(p) = path
            && p != "/"
        {
            out.push(Produced {
                path: p,
                line,
                what: what.to_string(),
                owns_below,
            });
        }
    };
    let url_name = |w: &[String]| {
        w.iter()
            .find(|x| is_url(x))
            .map(|u| basename(u.split(['?', '#']).next().unwrap_or(u)).to_string())
    };
    match prog {
        "curl" => {
            let dir = option_value(words, None, Some("--output-dir"))
                .and_then(|d| absolute(workdir, &d))
                .unwrap_or_else(|| workdir.to_string());
            if let Some(o) = option_value(words, Some("-o"), Some("--output")) {
                push(absolute(&dir, &o), "the download (`curl -o`)", false);
            } else if has_option(words, Some('O'), Some("--remote-name")) {
                let name = url_name(words);
                push(
                    name.and_then(|n| absolute(&dir, &n)),
                    "the download (`curl -O`)",
                    false,
                );
            }
        }
        "wget" => {
            if let Some(o) = option_value(words, Some("-O"), Some("--output-document")) {
                if o != "-" {
                    push(absolute(workdir, &o), "the download (`wget -O`)", false);
                }
            } else {
                let dir = option_value(words, Some("-P"), Some("--directory-prefix"))
                    .and_then(|d| absolute(workdir, &d))
                    .unwrap_or_else(|| workdir.to_string());
                push(
                    url_name(words).and_then(|n| absolute(&dir, &n)),
                    "the download (`wget`)",
                    false,
                );
            }
        }
        "tar" | "bsdtar" => {
            let extracting = words
                .get(1)
                .is_some_and(|w| (!w.starts_with("--") && w.contains('x')) || w == "--extract")
                || has_option(words, Some('x'), Some("--extract"));
            if extracting && let Some(dir) = option_value(words, Some("-C"), Some("--directory")) {
                push(
                    absolute(workdir, &dir),
                    "the extraction (`tar -x -C`)",
                    true,
                );
            }
        }
        "unzip" => {
            if let Some(dir) = option_value(words, Some("-d"), None) {
                push(absolute(workdir, &dir), "the extraction (`unzip -d`)", true);
            }
        }
        "git" if operands(words).first() == Some(&"clone") => {
            let ops = operands(words);
            let dir = match ops.get(2) {
                Some(d) => Some(d.to_string()),
                None => ops
                    .get(1)
                    .map(|u| basename(u).trim_end_matches(".git").to_string()),
            };
            push(
                dir.and_then(|d| absolute(workdir, &d)),
                "the clone (`git clone`)",
                true,
            );
        }
        _ => {}
    }
    out
}

/// What a value looks like, if it looks like a credential. Never returns the value itself.
fn credential_kind(value: &str) -> Option<&'static str> {
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some("a private key");
    }
    let bytes = value.as_bytes();
    let run_after = |prefix: &str, ok: fn(u8) -> bool| -> usize {
        let mut best = 0;
        for (i, _) in value.match_indices(prefix) {
            let n = bytes[i + prefix.len()..]
                .iter()
                .take_while(|b| ok(**b))
                .count();
            best = best.max(n);
        }
        best
    };
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    let upper_digit = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    if run_after("AKIA", upper_digit) >= 16 || run_after("ASIA", upper_digit) >= 16 {
        return Some("an AWS access key id");
    }
    for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if run_after(p, alnum) >= 36 {
            return Some("a GitHub token");
        }
    }
    if run_after("github_pat_", |b| b.is_ascii_alphanumeric() || b == b'_') >= 22 {
        return Some("a GitHub token");
    }
    for p in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"] {
        if run_after(p, |b| b.is_ascii_alphanumeric() || b == b'-') >= 10 {
            return Some("a Slack token");
        }
    }
    if run_after("sk_live_", alnum) >= 16 {
        return Some("a Stripe secret key");
    }
    if run_after("AIza", |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }) >= 35
    {
        return Some("a Google API key");
    }
    // scheme://user:password@host
    if let Some(i) = value.find("://") {
        let rest = &value[i + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
            && !password.starts_with('$')
        {
            return Some("a URL with a password in it");
        }
    }
    None
}
