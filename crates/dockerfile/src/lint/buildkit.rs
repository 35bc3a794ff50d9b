//! BuildKit's build checks: when each fires and what it says, as BuildKit's frontend decides
//! them (`linter/ruleset.go` for the messages; `instructions/parse.go`,
//! `dockerfile2llb/convert.go` and `convert_expose.go` for the triggers). Stages are walked
//! the way the frontend dispatches them for `docker build --check`: all of them, in order,
//! each starting from its base (a previous stage's final state, `scratch`, or an image whose
//! config the caller may know).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{BaseImage, Finding, LintOptions, finding};
use crate::error::Span;
use crate::expand::{Expander, Expansion};
use crate::layout::Subject;
use crate::parser::{Ast, Record};
use crate::text::go_to_lower;
use crate::{Dockerfile, Instruction, Spanned};

/// Names BuildKit never puts in a RUN environment, so they are never "undefined" either.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

type Env = Vec<(String, String)>;

fn set(env: &mut Env, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

fn lookup<'e>(env: &'e Env, key: &str) -> Option<&'e str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The records of the file by first line, for what the typed instructions do not keep
/// (keywords as written, the `AS` word, comments, flag positions).
pub(crate) struct Records<'a> {
    by_line: HashMap<usize, &'a Record>,
}

impl<'a> Records<'a> {
    pub(crate) fn new(ast: Option<&'a Ast>) -> Self {
        let by_line = ast
            .map(|a| a.records.iter().map(|r| (r.span.start, r)).collect())
            .unwrap_or_default();
        Records { by_line }
    }

    pub(crate) fn get(&self, span: Span) -> Option<&'a Record> {
        self.by_line.get(&span.start).copied()
    }

    /// The span narrowed to a part of the instruction, when the record is known.
    pub(crate) fn focus(&self, span: Span, subject: Subject<'_>) -> Span {
        match self.get(span).and_then(|r| r.focus(subject)) {
            Some(focus) => span.with_focus(Some(focus)),
            None => span,
        }
    }

    /// The keyword as written.
    fn keyword<T>(&self, spanned: &Spanned<T>) -> String {
        match self.get(spanned.span) {
            Some(r) => r.command.keyword.clone(),
            None => spanned
                .source
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// Per-stage state, as the frontend's dispatch state carries it.
#[derive(Clone, Debug, Default)]
struct StageState {
    env: Env,
    /// ARG names declared in the stage or its parents (with or without a value).
    declared: Vec<String>,
    /// Whether the base image's environment is known.
    env_known: bool,
    workdir_set: bool,
    shell_set: bool,
}

/// What a stage is built on.
pub(crate) enum Base {
    Stage(usize),
    Scratch,
    Image(String),
}

/// The predefined platform args, as BuildKit defines them for FROM lines.
pub(crate) fn default_args(options: &LintOptions<'_>) -> Env {
    let variant = options.target_variant.clone().unwrap_or_default();
    let mut platform = format!("{}/{}", options.target_os, options.target_arch);
    if !variant.is_empty() {
        platform.push('/');
        platform.push_str(&variant);
    }
    let mut env = Env::new();
    for prefix in ["BUILD", "TARGET"] {
        set(&mut env, &format!("{prefix}PLATFORM"), &platform);
        set(&mut env, &format!("{prefix}OS"), &options.target_os);
        set(&mut env, &format!("{prefix}ARCH"), &options.target_arch);
        set(&mut env, &format!("{prefix}VARIANT"), &variant);
    }
    for (k, v) in &options.build_args {
        if lookup(&env, k).is_some() {
            set(&mut env, k, v);
        }
    }
    env
}

/// BuildKit's `buildMetaArgs`: the global scope FROM lines see.
pub(crate) fn global_args(
    df: &Dockerfile,
    options: &LintOptions<'_>,
    with_build_args: bool,
) -> Env {
    let mut env = default_args(options);
    let expander = Expander::new(df.escape);
    for arg in &df.meta_args {
        for decl in &arg.value.args {
            let value = match options.build_args.get(&decl.name) {
                Some(v) if with_build_args => Some(v.clone()),
                _ => decl
                    .default
                    .as_ref()
                    .map(|d| expander.process_word(d, &env).unwrap_or_else(|_| d.clone())),
            };
            if let Some(v) = value {
                set(&mut env, &decl.name, &v);
            }
        }
    }
    env
}

/// Resolves each stage's base: a previous stage (by name), scratch, or an image name.
pub(crate) fn bases(df: &Dockerfile, options: &LintOptions<'_>) -> Vec<Base> {
    let global = global_args(df, options, true);
    let expander = Expander::new(df.escape);
    let mut out = Vec::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let name = expander
            .process_word(&stage.from.value.base, &global)
            .unwrap_or_else(|_| stage.from.value.base.clone());
        let lower = go_to_lower(&name);
        let parent = df.stages[..i]
            .iter()
            .rposition(|s| s.name() == Some(lower.as_str()));
        out.push(match parent {
            Some(p) => Base::Stage(p),
            None if lower == "scratch" => Base::Scratch,
            None => Base::Image(name),
        });
    }
    out
}

struct Linter<'a> {
    df: &'a Dockerfile,
    records: Records<'a>,
    options: &'a LintOptions<'a>,
    expander: Expander,
    out: Vec<Finding>,
}

pub(crate) fn run(df: &Dockerfile, ast: Option<&Ast>, options: &LintOptions<'_>) -> Vec<Finding> {
    let mut l = Linter {
        df,
        records: Records::new(ast),
        options,
        expander: Expander::new(df.escape),
        out: Vec::new(),
    };
    l.parser_warnings();
    l.parse_phase();
    l.stage_names();
    l.command_casing();
    l.base_images_with_default_args();
    l.stage_bases();
    l.dispatch();
    l.out
}

impl Linter<'_> {
    fn report(&mut self, rule: &'static str, span: Span, message: String) {
        self.out.push(finding(rule, span, message));
    }

    /// `ENV key value` and `LABEL key value`: the legacy form without `=`.
    fn report_legacy_key_value(&mut self, keyword: &str, span: Span) {
        self.report(
            "LegacyKeyValueFormat",
            span,
            format!(
                "\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"
            ),
        );
    }

    fn expand(&self, word: &str, env: &Env) -> Option<Expansion> {
        self.expander.process(word, env).ok()
    }

    fn parser_warnings(&mut self) {
        let spans: Vec<Span> = self
            .df
            .warnings
            .iter()
            .filter(|w| w.message.starts_with("Empty continuation line"))
            .map(|w| w.span)
            .collect();
        for span in spans {
            self.report(
                "NoEmptyContinuation",
                span,
                "Empty continuation line".into(),
            );
        }
    }

    /// What `instructions.Parse` reports while typing each record.
    fn parse_phase(&mut self) {
        let df = self.df;
        for arg in &df.meta_args {
            self.definition_description_arg(arg);
        }
        for stage in &df.stages {
            let from = &stage.from;
            if let Some(record) = self.records.get(from.span) {
                let args = &record.command.args;
                if args.len() == 3 && args[2] != go_to_lower(&args[2]) {
                    let span = self.records.focus(from.span, Subject::Argument(2));
                    self.report(
                        "StageNameCasing",
                        span,
                        format!("Stage name '{}' should be lowercase", args[2]),
                    );
                }
                let kw = &record.command.keyword;
                let lower = kw == &go_to_lower(kw);
                let upper = kw == &kw.to_uppercase();
                if args.len() >= 3 && (lower || upper) {
                    let as_word = &args[1];
                    let matches = if lower {
                        as_word == &go_to_lower(as_word)
                    } else {
                        as_word == &as_word.to_uppercase()
                    };
                    if !matches {
                        let span = self.records.focus(from.span, Subject::Argument(1));
                        self.report(
                            "FromAsCasing",
                            span,
                            format!("'{as_word}' and '{kw}' keywords' casing do not match"),
                        );
                    }
                }
                if let Some(name) = &from.value.name {
                    self.definition_description(
                        "FROM",
                        std::slice::from_ref(name),
                        &record.comments,
                        from.span,
                    );
                }
            }
            for ins in &stage.instructions {
                match &ins.value {
                    Instruction::Maintainer(_) => {
                        let span = self.records.focus(ins.span, Subject::Keyword);
                        self.report(
                            "MaintainerDeprecated",
                            span,
                            "Maintainer instruction is deprecated in favor of using label".into(),
                        );
                    }
                    Instruction::Arg(arg) => {
                        let spanned = Spanned {
                            span: ins.span,
                            source: ins.source.clone(),
                            value: arg.clone(),
                        };
                        self.definition_description_arg(&spanned);
                    }
                    _ => {}
                }
            }
        }
    }

    fn definition_description_arg(&mut self, arg: &Spanned<crate::ArgInstruction>) {
        let keys: Vec<String> = arg.value.args.iter().map(|a| a.name.clone()).collect();
        if let Some(record) = self.records.get(arg.span) {
            let comments = record.comments.clone();
            self.definition_description("ARG", &keys, &comments, arg.span);
        }
    }

    fn definition_description(
        &mut self,
        instruction: &str,
        keys: &[String],
        comments: &[String],
        span: Span,
    ) {
        let (Some(last), false) = (comments.last(), keys.is_empty()) else {
            return;
        };
        let first_word = last.split(' ').next().unwrap_or_default();
        if keys.iter().any(|k| k == first_word) {
            return;
        }
        let example = if keys.len() > 1 {
            "<arg_key>".to_string()
        } else {
            keys[0].clone()
        };
        self.report(
            "InvalidDefinitionDescription",
            span,
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
        );
    }

    fn stage_names(&mut self) {
        let df = self.df;
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for stage in &df.stages {
            let Some(name) = stage.name() else { continue };
            if matches!(name, "scratch" | "context") {
                let span = self.records.focus(stage.from.span, Subject::Argument(2));
                self.report(
                    "ReservedStageName",
                    span,
                    format!(
                        "Stage name should not use the same name as reserved stage {}",
                        crate::go_quote(name)
                    ),
                );
            }
            if !seen.insert(name) {
                self.report(
                    "DuplicateStageName",
                    stage.from.span,
                    format!(
                        "Duplicate stage name {}, stage names should be unique",
                        crate::go_quote(name)
                    ),
                );
            }
        }
    }

    fn command_casing(&mut self) {
        let df = self.df;
        let mut keywords: Vec<(String, Span)> = Vec::new();
        for stage in &df.stages {
            keywords.push((self.records.keyword(&stage.from), stage.from.span));
            for ins in &stage.instructions {
                keywords.push((self.records.keyword(ins), ins.span));
            }
        }
        let (mut lower, mut upper) = (0, 0);
        for (kw, _) in &keywords {
            if kw == &go_to_lower(kw) {
                lower += 1;
            } else if kw == &kw.to_uppercase() {
                upper += 1;
            }
        }
        let majority_lower = lower > upper;
        for (kw, span) in keywords {
            let casing = if majority_lower && go_to_lower(&kw) != kw {
                "lowercase"
            } else if !majority_lower && kw.to_uppercase() != kw {
                "uppercase"
            } else {
                continue;
            };
            let span = self.records.focus(span, Subject::Keyword);
            self.report(
                "ConsistentInstructionCasing",
                span,
                format!("Command '{kw}' should match the case of the command majority ({casing})"),
            );
        }
    }

    fn base_images_with_default_args(&mut self) {
        let df = self.df;
        let args = global_args(df, self.options, false);
        for stage in &df.stages {
            let Some(expansion) = self.expand(&stage.from.value.base, &args) else {
                return; // BuildKit abandons the check: the build fails on it anyway
            };
            if !valid_reference(&expansion.text) {
                let span = self.records.focus(stage.from.span, Subject::Argument(0));
                self.report(
                    "InvalidDefaultArgInFrom",
                    span,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.from.value.base
                    ),
                );
            }
        }
    }

    fn stage_bases(&mut self) {
        let df = self.df;
        let global = global_args(df, self.options, true);
        let mut keys: Vec<String> = global.iter().map(|(k, _)| k.clone()).collect();
        for arg in &df.meta_args {
            keys.extend(arg.value.args.iter().map(|a| a.name.clone()));
        }
        let resolved = bases(df, self.options);
        for (i, stage) in df.stages.iter().enumerate() {
            let from = &stage.from;
            if let Some(e) = self.expand(&from.value.base, &global) {
                self.undefined_in_from(&e, &keys, from.span);
            }
            let mut platform = None;
            if let Some(raw) = &from.value.platform {
                let span = self.records.focus(from.span, Subject::Flag("platform"));
                if let Some(e) = self.expand(raw, &global) {
                    self.undefined_in_from(&e, &keys, from.span);
                    if e.matched.len() == 1
                        && e.unmatched.is_empty()
                        && e.matched.contains("TARGETPLATFORM")
                        && lookup(&global, "TARGETPLATFORM") == Some(e.text.as_str())
                    {
                        self.report(
                            "RedundantTargetPlatform",
                            span,
                            format!("Setting platform to predefined {raw} in FROM is redundant as this is the default behavior"),
                        );
                    }
                    let parsed = parse_platform(&e.text, self.options);
                    if e.matched.is_empty()
                        && e.unmatched.is_empty()
                        && let Some((os, arch)) = &parsed
                    {
                        let name = stage.name().unwrap_or_default();
                        if !name.contains(os.as_str()) && !name.contains(arch.as_str()) {
                            self.report(
                                "FromPlatformFlagConstDisallowed",
                                span,
                                format!(
                                    "FROM --platform flag should not use constant value {}",
                                    crate::go_quote(&e.text)
                                ),
                            );
                        }
                    }
                    platform = parsed;
                }
            }
            if let Base::Image(name) = &resolved[i]
                && let Some(base) = self.options.bases.get(name)
            {
                let (os, arch) = platform.unwrap_or_else(|| {
                    (
                        self.options.target_os.clone(),
                        self.options.target_arch.clone(),
                    )
                });
                if base.os != os || base.architecture != arch {
                    let actual =
                        format_platform(&base.os, &base.architecture, base.variant.as_deref());
                    let expected = format_platform(&os, &arch, None);
                    self.report(
                        "InvalidBaseImagePlatform",
                        from.span,
                        format!(
                            "Base image {name} was pulled with platform {}, expected {} for current build",
                            crate::go_quote(&actual),
                            crate::go_quote(&expected)
                        ),
                    );
                }
            }
        }
    }

    fn undefined_in_from(&mut self, e: &Expansion, keys: &[String], span: Span) {
        for name in &e.unmatched {
            if keys.iter().any(|k| k == name) {
                continue;
            }
            let mut message = format!("FROM argument '{name}' is not declared");
            if let Some(s) = crate::text::suggest(name, keys.iter().map(String::as_str), true) {
                message.push_str(&format!(" (did you mean {s}?)"));
            }
            self.report("UndefinedArgInFrom", span, message);
        }
    }

    fn report_unmatched(&mut self, st: &StageState, unmatched: &BTreeSet<String>, span: Span) {
        if !st.env_known {
            return;
        }
        for name in unmatched {
            if st.declared.iter().any(|d| d == name) || NON_ENV_ARGS.contains(&name.as_str()) {
                continue;
            }
            let mut message = format!("Usage of undefined variable '${name}'");
            if let Some(s) =
                crate::text::suggest(name, st.env.iter().map(|(k, _)| k.as_str()), true)
            {
                message.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.report("UndefinedVar", span, message);
        }
    }

    /// Expands `word` as the frontend does for the instruction, reporting undefined names.
    fn expand_checked(&mut self, st: &StageState, word: &str, span: Span) -> String {
        match self.expand(word, &st.env) {
            Some(e) => {
                self.report_unmatched(st, &e.unmatched, span);
                e.text
            }
            None => word.to_string(),
        }
    }

    fn initial_state(&self, base: &Base, finals: &[StageState]) -> StageState {
        let mut st = match base {
            Base::Stage(p) => return finals[*p].clone(),
            Base::Scratch => StageState {
                env_known: true,
                ..Default::default()
            },
            Base::Image(name) => match self.options.bases.get(name) {
                Some(BaseImage { env, has_shell, .. }) => StageState {
                    env: env.clone(),
                    env_known: true,
                    shell_set: *has_shell,
                    ..Default::default()
                },
                None => StageState::default(),
            },
        };
        if lookup(&st.env, "PATH").is_none() {
            set(
                &mut st.env,
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        st
    }

    fn dispatch(&mut self) {
        let df = self.df;
        let global = global_args(df, self.options, true);
        let resolved = bases(df, self.options);
        let mut finals: Vec<StageState> = Vec::new();
        for (i, stage) in df.stages.iter().enumerate() {
            let mut st = self.initial_state(&resolved[i], &finals);
            let mut seen_once: BTreeMap<&'static str, Span> = BTreeMap::new();
            for ins in &stage.instructions {
                self.dispatch_one(ins, &mut st, &global, &mut seen_once);
            }
            finals.push(st);
        }
    }

    fn used_once(
        &mut self,
        seen: &mut BTreeMap<&'static str, Span>,
        key: &'static str,
        keyword: &str,
        span: Span,
    ) {
        if let Some(previous) = seen.insert(key, span) {
            self.report(
                "MultipleInstructionsDisallowed",
                previous,
                format!("Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"),
            );
        }
    }

    fn dispatch_one(
        &mut self,
        ins: &Spanned<Instruction>,
        st: &mut StageState,
        global: &Env,
        seen_once: &mut BTreeMap<&'static str, Span>,
    ) {
        let span = ins.span;
        let keyword = self.records.keyword(ins);
        match &ins.value {
            Instruction::Env(pairs) => {
                let before = st.clone();
                let mut updates = Vec::new();
                for kv in pairs {
                    if kv.no_delimiter {
                        self.report_legacy_key_value(&keyword, span);
                    }
                    let key = self.expand_checked(&before, &kv.key, span);
                    let value = self.expand_checked(&before, &kv.value, span);
                    secret_key(self, "ENV", &key, span);
                    updates.push((key, value));
                }
                for (k, v) in updates {
                    set(&mut st.env, &k, &v);
                }
            }
            Instruction::Label(pairs) => {
                for kv in pairs {
                    if kv.no_delimiter {
                        self.report_legacy_key_value(&keyword, span);
                    }
                    self.expand_checked(st, &kv.key, span);
                    self.expand_checked(st, &kv.value, span);
                }
            }
            Instruction::Arg(arg) => {
                for decl in &arg.args {
                    secret_key(self, "ARG", &decl.name, span);
                    let value = if let Some(v) = self.options.build_args.get(&decl.name) {
                        Some(v.clone())
                    } else if let Some(default) = &decl.default {
                        Some(self.expand_checked(st, default, span))
                    } else {
                        lookup(global, &decl.name).map(str::to_string)
                    };
                    if let Some(v) = value
                        && !NON_ENV_ARGS.contains(&decl.name.as_str())
                    {
                        set(&mut st.env, &decl.name, &v);
                    }
                    st.declared.push(decl.name.clone());
                }
            }
            Instruction::Copy(copy) => {
                self.expand_files(st, &copy.files, span);
                for flag in [&copy.chown, &copy.chmod].into_iter().flatten() {
                    self.expand_checked(st, flag, span);
                }
                for e in &copy.excludes {
                    self.expand_checked(st, e, span);
                }
                if copy.from.is_none() {
                    self.ignored_sources(st, &copy.files.sources, "Copy", span);
                }
            }
            Instruction::Add(add) => {
                self.expand_files(st, &add.files, span);
                for flag in [&add.chown, &add.chmod, &add.checksum]
                    .into_iter()
                    .flatten()
                {
                    self.expand_checked(st, flag, span);
                }
                for e in &add.excludes {
                    self.expand_checked(st, e, span);
                }
                let local: Vec<String> = add
                    .files
                    .sources
                    .iter()
                    .filter(|s| !s.starts_with("http://") && !s.starts_with("https://"))
                    .cloned()
                    .collect();
                self.ignored_sources(st, &local, "Add", span);
            }
            Instruction::Workdir(path) => {
                let path = self.expand_checked(st, path, span);
                if !st.workdir_set && !path.starts_with('/') {
                    self.report(
                        "WorkdirRelativePath",
                        span,
                        format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            crate::go_quote(&path)
                        ),
                    );
                }
                st.workdir_set = true;
            }
            Instruction::User(user) | Instruction::Stopsignal(user) => {
                self.expand_checked(st, user, span);
            }
            Instruction::Volume(paths) => {
                for p in paths {
                    self.expand_checked(st, p, span);
                }
            }
            Instruction::Expose(ports) => {
                for raw in ports {
                    let words = self
                        .expander
                        .process_words(raw, &st.env)
                        .unwrap_or_else(|_| vec![raw.clone()]);
                    for port in words {
                        let (ip, host_port, container) = split_port(&port);
                        let proto = container.split_once('/').map_or("", |(_, p)| p);
                        if proto != go_to_lower(proto) {
                            self.report(
                                "ExposeProtoCasing",
                                span,
                                format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
                            );
                        }
                        if !ip.is_empty() || !host_port.is_empty() {
                            self.report(
                                "ExposeInvalidFormat",
                                span,
                                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"),
                            );
                        }
                    }
                }
            }
            Instruction::Cmd(cmd) | Instruction::Entrypoint(cmd) => {
                let key = if matches!(ins.value, Instruction::Cmd(_)) {
                    "cmd"
                } else {
                    "entrypoint"
                };
                self.used_once(seen_once, key, &keyword, span);
                if cmd.shell_form && !st.shell_set {
                    self.report(
                        "JSONArgsRecommended",
                        span,
                        format!("JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"),
                    );
                }
            }
            Instruction::Healthcheck(_) => {
                self.used_once(seen_once, "healthcheck", &keyword, span);
            }
            Instruction::Shell(_) => st.shell_set = true,
            _ => {}
        }
    }

    fn expand_files(&mut self, st: &StageState, files: &crate::SourcesAndDest, span: Span) {
        for s in &files.sources {
            self.expand_checked(st, s, span);
        }
        self.expand_checked(st, &files.dest, span);
        for content in &files.contents {
            if content.expand
                && let Ok(e) = Expander::new('\\')
                    .skip_quotes(true)
                    .process(&content.data, &st.env)
            {
                self.report_unmatched(st, &e.unmatched, span);
            }
        }
    }

    /// CopyIgnoredFile: a source the `.dockerignore` excludes.
    fn ignored_sources(&mut self, st: &StageState, sources: &[String], cmd: &str, span: Span) {
        let Some(matcher) = self.options.dockerignore else {
            return;
        };
        for raw in sources {
            let src = self
                .expand(raw, &st.env)
                .map(|e| e.text)
                .unwrap_or_else(|| raw.clone());
            let cleaned = crate::clean_path(&src);
            let rel = cleaned.trim_start_matches('/');
            if rel.is_empty() || rel == "." {
                let root_ignored = matcher
                    .patterns()
                    .iter()
                    .any(|p| !p.is_exclusion() && matches!(p.pattern(), "*" | "**" | "**/*"));
                if !root_ignored {
                    continue;
                }
            } else {
                if negation_could_reinclude(matcher, rel) {
                    continue;
                }
                if !matcher.is_excluded(rel) {
                    continue;
                }
            }
            self.report(
                "CopyIgnoredFile",
                span,
                format!(
                    "Attempting to {cmd} file {} that is excluded by .dockerignore",
                    crate::go_quote(&cleaned)
                ),
            );
        }
    }
}

/// BuildKit skips the check for a source that a `!pattern` could re-include.
fn negation_could_reinclude(matcher: &crate::IgnoreMatcher, src: &str) -> bool {
    let at_or_below = |path: &str, base: &str| {
        base.is_empty() || path == base || path.starts_with(&format!("{base}/"))
    };
    matcher
        .patterns()
        .iter()
        .filter(|p| p.is_exclusion())
        .any(|p| {
            let pattern = p.pattern();
            let elems: Vec<&str> = pattern.split('/').collect();
            let wild = elems.iter().position(|e| e.contains(['*', '?', '[']));
            let prefix = match wild {
                Some(i) => elems[..i].join("/"),
                None => pattern.to_string(),
            };
            at_or_below(&prefix, src) || (wild.is_some() && at_or_below(src, &prefix))
        })
}

fn secret_key(l: &mut Linter<'_>, instruction: &str, key: &str, span: Span) {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let tokens: Vec<String> = key.split('_').map(|t| t.to_ascii_lowercase()).collect();
    let has = |list: &[&str]| tokens.iter().any(|t| list.contains(&t.as_str()));
    if has(&DENY) && !has(&ALLOW) {
        l.report(
            "SecretsUsedInArgOrEnv",
            span,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                crate::go_quote(key)
            ),
        );
    }
}

/// `[ip:]hostPort:containerPort` split as BuildKit's `splitParts` does.
fn split_port(raw: &str) -> (String, String, String) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.len() {
        1 => (String::new(), String::new(), parts[0].to_string()),
        2 => (String::new(), parts[0].to_string(), parts[1].to_string()),
        3 => (
            parts[0].to_string(),
            parts[1].to_string(),
            parts[2].to_string(),
        ),
        n => (
            parts[..n - 2].join(":"),
            parts[n - 2].to_string(),
            parts[n - 1].to_string(),
        ),
    }
}

const KNOWN_OS: [&str; 10] = [
    "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "android", "illumos",
    "ios",
];
const KNOWN_ARCH: [&str; 14] = [
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64", "wasm",
];

/// containerd's `platforms.Parse`, reduced to what the checks need: (os, architecture).
pub(crate) fn parse_platform(text: &str, options: &LintOptions<'_>) -> Option<(String, String)> {
    let lower = go_to_lower(text);
    let parts: Vec<&str> = lower.split('/').collect();
    let norm_arch = |a: &str| match a {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "i386" | "i686" => "386".to_string(),
        other => other.to_string(),
    };
    match parts.as_slice() {
        [one] if KNOWN_OS.contains(one) => Some((one.to_string(), options.target_arch.clone())),
        [one] if KNOWN_ARCH.contains(&norm_arch(one).as_str()) => {
            Some(("linux".to_string(), norm_arch(one)))
        }
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
            Some((os.to_string(), norm_arch(arch)))
        }
        _ => None,
    }
}

/// `os/arch[/variant]` as containerd's `FormatAll(Normalize(p))` prints it.
fn format_platform(os: &str, arch: &str, variant: Option<&str>) -> String {
    let variant = match (arch, variant) {
        ("arm64", Some("v8" | "8")) | ("amd64", Some("v1")) => None,
        (_, v) => v.filter(|v| !v.is_empty()),
    };
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// Whether `s` parses as a docker image reference (distribution's `ParseNormalizedNamed`).
pub(crate) fn valid_reference(s: &str) -> bool {
    if s.is_empty() || s.len() > 4096 {
        return false;
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        if alg.is_empty()
            || !alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            || hex.len() < 32
            || !hex
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c))
        {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_first
            || tag.len() > 128
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return false;
        }
    }
    let components: Vec<&str> = name.split('/').collect();
    let (domain, path) = match components.as_slice() {
        [first, rest @ ..]
            if !rest.is_empty()
                && (first.contains(['.', ':'])
                    || *first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase())) =>
        {
            (Some(*first), rest)
        }
        all => (None, all),
    };
    if let Some(domain) = domain {
        let (host, port) = match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return false;
        }
    }
    !path.is_empty() && path.iter().all(|c| path_component(c))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(c: &str) -> bool {
    if c.is_empty() {
        return false;
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return false;
        }
    }
    true
}
