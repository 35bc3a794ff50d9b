//! Planning: a parsed Dockerfile, build arguments and the configs of its base images become a
//! plan of stages and steps, with every word expanded in the scope BuildKit would use.
//!
//! Pure: no I/O, no clock. Base images are resolved by the caller between the two phases
//! ([`external_images`] says which are needed; [`plan`] takes their configs), so planning
//! stays deterministic and testable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dockerfile::{
    Dockerfile, Expander, Healthcheck, Instruction, MountType, NetworkMode, SecurityMode, Span,
    Spanned,
};
use oci::{ContainerConfig, EmptyObject, History, ImageConfig, Platform};

/// BuildKit's default PATH for images that have none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The comment BuildKit puts on every history entry a Dockerfile makes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
const PROXY_ARGS: [&str; 5] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// A planning error: what went wrong and the Dockerfile lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub message: String,
    pub span: Option<Span>,
}

impl PlanError {
    fn new(message: impl Into<String>, span: Option<Span>) -> Self {
        PlanError {
            message: message.into(),
            span,
        }
    }
}

/// What the caller decides: build arguments, the target and the platform.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
}

/// A base or `--from` image as resolved by the caller.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub config: ImageConfig,
}

/// Where a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference as written (after expansion with the global args).
    Image(String),
    /// An earlier stage of the plan (index into [`BuildPlan::stages`]).
    Stage(usize),
}

/// Where COPY, ADD or a bind/cache mount reads from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Context,
    Stage(usize),
    Image(String),
}

/// A heredoc file given to COPY/ADD (expanded) or RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyStep {
    pub add: bool,
    pub from: Source,
    /// Source paths or URLs, expanded; relative to the source's root.
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    /// Absolute destination; a trailing `/` is kept (it means "into this directory").
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub keep_git_dir: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    /// Absolute target inside the container.
    pub target: String,
    /// For bind and cache mounts seeded from somewhere.
    pub from: Option<Source>,
    pub source: Option<String>,
    pub read_only: bool,
    /// Cache and secret id.
    pub id: Option<String>,
    pub sharing: Option<dockerfile::CacheSharing>,
    pub size_limit: Option<i64>,
    pub required: bool,
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStep {
    /// The argv to execute (shell form already wrapped in the SHELL).
    pub args: Vec<String>,
    pub mounts: Vec<RunMount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// `RUN <<EOF` bodies that start with `#!`: run as executable files.
    pub script: Option<InlineFile>,
    /// Proxy variables from `--build-arg` that RUN sees but that stay out of the cache key.
    pub proxy_env: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    Run(RunStep),
    Copy(CopyStep),
    /// `mkdir -p` of the workdir, owned by the step's user.
    Workdir(String),
    /// Only the config and history change.
    Meta,
}

/// One instruction, planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub span: Span,
    /// The instruction as written.
    pub source: String,
    pub kind: StepKind,
    /// The history entry it adds (without `created`, which the solver sets).
    pub history: Option<History>,
    /// The environment at this point (`K=V`, the config Env plus ARG values).
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
}

impl Step {
    /// Whether the step touches the filesystem (and so has a cache key and a layer).
    pub fn makes_layer(&self) -> bool {
        !matches!(self.kind, StepKind::Meta)
    }
}

#[derive(Clone, Debug)]
pub struct PlannedStage {
    pub name: Option<String>,
    /// Position in the Dockerfile.
    pub index: usize,
    pub base: Base,
    pub platform: Platform,
    pub steps: Vec<Step>,
    /// The stage's final config, except `created`, `history` and `rootfs`, which the solver
    /// assembles from the base and the steps.
    pub config: ImageConfig,
    /// Stages this one needs (base, COPY --from, mounts), as plan indexes.
    pub deps: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct BuildPlan {
    /// The stages the target needs, dependencies first.
    pub stages: Vec<PlannedStage>,
    /// The target (always the last stage of `stages`).
    pub target: usize,
    /// `--build-arg`s no needed stage declares (BuildKit says nothing; the classic builder
    /// warned, and strata does).
    pub unused_build_args: Vec<String>,
    pub warnings: Vec<String>,
}

/// The platform args BuildKit defines in the global scope.
fn platform_args(platform: &Platform) -> Vec<(String, String)> {
    let variant = platform.variant.clone().unwrap_or_default();
    let plat = platform.to_string();
    vec![
        ("TARGETPLATFORM".into(), plat.clone()),
        ("TARGETOS".into(), platform.os.clone()),
        ("TARGETARCH".into(), platform.architecture.clone()),
        ("TARGETVARIANT".into(), variant.clone()),
        ("BUILDPLATFORM".into(), plat),
        ("BUILDOS".into(), platform.os.clone()),
        ("BUILDARCH".into(), platform.architecture.clone()),
        ("BUILDVARIANT".into(), variant),
    ]
}

fn is_predefined(name: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(name))
        || name == "SOURCE_DATE_EPOCH"
        || name.starts_with("BUILDKIT_")
        || platform_args(&Platform::host())
            .iter()
            .any(|(k, _)| k == name)
}

/// The global scope: platform args, then the ARGs before the first FROM.
fn global_scope(df: &Dockerfile, opts: &PlanOptions) -> Result<Vec<(String, String)>, PlanError> {
    let expander = Expander::new(df.escape);
    let mut scope: Vec<(String, String)> = platform_args(&opts.platform)
        .into_iter()
        .map(|(k, v)| {
            let v = opts.build_args.get(&k).cloned().unwrap_or(v);
            (k, v)
        })
        .collect();
    for arg in &df.meta_args {
        for decl in &arg.value.args {
            let value = match (opts.build_args.get(&decl.name), &decl.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(
                    expander
                        .process_word(d, &scope)
                        .map_err(|e| PlanError::new(e.to_string(), Some(arg.span)))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                set_var(&mut scope, &decl.name, &v);
            }
        }
    }
    Ok(scope)
}

fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: &str) {
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => vars.push((key.to_string(), value.to_string())),
    }
}

fn get_var<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What each Dockerfile stage's FROM resolves to, in the global scope.
fn stage_bases(df: &Dockerfile, global: &[(String, String)]) -> Result<Vec<Base>, PlanError> {
    let expander = Expander::new(df.escape);
    let mut bases = Vec::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let raw = &stage.from.value.base;
        let name = expander
            .process_word(raw, global)
            .map_err(|e| PlanError::new(e.to_string(), Some(stage.from.span)))?;
        if name.is_empty() {
            return Err(PlanError::new(
                format!("base name ({raw}) should not be blank"),
                Some(stage.from.span),
            ));
        }
        let earlier = df.stages[..i]
            .iter()
            .rposition(|s| s.name() == Some(name.as_str()));
        bases.push(match earlier {
            Some(j) => Base::Stage(j),
            None if name == "scratch" => Base::Scratch,
            None => Base::Image(name),
        });
    }
    Ok(bases)
}

/// Resolves `--from` (or a mount's `from=`): a stage name (case-insensitive), an index, or an
/// image reference.
fn resolve_from(
    df: &Dockerfile,
    current: usize,
    from: &str,
    span: Span,
) -> Result<Source, PlanError> {
    if let Ok(index) = from.parse::<usize>() {
        if index >= df.stages.len() {
            return Err(PlanError::new(
                format!("invalid stage index {from}"),
                Some(span),
            ));
        }
        if index >= current {
            return Err(PlanError::new(
                format!(
                    "cannot copy from stage \"{from}\", it needs to be defined before current stage \"{}\"",
                    stage_label(df, current)
                ),
                Some(span),
            ));
        }
        return Ok(Source::Stage(index));
    }
    let lower = from.to_lowercase();
    if let Some(j) = df
        .stages
        .iter()
        .rposition(|s| s.name() == Some(lower.as_str()))
    {
        if j >= current {
            return Err(PlanError::new(
                format!(
                    "cannot copy from stage \"{from}\", it needs to be defined before current stage \"{}\"",
                    stage_label(df, current)
                ),
                Some(span),
            ));
        }
        return Ok(Source::Stage(j));
    }
    if from.contains('$') {
        return Err(PlanError::new(
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
            Some(span),
        ));
    }
    Ok(Source::Image(from.to_string()))
}

fn stage_label(df: &Dockerfile, index: usize) -> String {
    df.stages
        .get(index)
        .and_then(|s| s.name().map(str::to_string))
        .unwrap_or_else(|| format!("stage-{index}"))
}

/// Dockerfile stages the target needs (indexes), dependencies first.
fn needed_stages(df: &Dockerfile, bases: &[Base], target: usize) -> Result<Vec<usize>, PlanError> {
    let mut order = Vec::new();
    let mut state = vec![0u8; df.stages.len()]; // 0 unvisited, 1 visiting, 2 done
    fn visit(
        df: &Dockerfile,
        bases: &[Base],
        i: usize,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<(), PlanError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(PlanError::new(
                    format!(
                        "circular dependency detected on stage: {}",
                        stage_label(df, i)
                    ),
                    Some(df.stages[i].from.span),
                ));
            }
            _ => {}
        }
        state[i] = 1;
        for dep in stage_dependencies(df, bases, i)? {
            visit(df, bases, dep, state, order)?;
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    visit(df, bases, target, &mut state, &mut order)?;
    Ok(order)
}

/// The other stages a stage reads: its base, `COPY --from`, `RUN --mount from=`.
fn stage_dependencies(df: &Dockerfile, bases: &[Base], i: usize) -> Result<Vec<usize>, PlanError> {
    let mut deps = BTreeSet::new();
    if let Base::Stage(j) = bases[i] {
        deps.insert(j);
    }
    for ins in &df.stages[i].instructions {
        for from in referenced_froms(ins)? {
            if let Source::Stage(j) = resolve_from(df, i, &from, ins.span)? {
                deps.insert(j);
            }
        }
    }
    Ok(deps.into_iter().collect())
}

fn referenced_froms(ins: &Spanned<Instruction>) -> Result<Vec<String>, PlanError> {
    let mut out = Vec::new();
    match &ins.value {
        Instruction::Copy(c) => out.extend(c.from.clone()),
        Instruction::Run(r) => {
            for m in &r.mounts {
                let mount = m
                    .resolve(|v| Ok::<String, PlanError>(v.to_string()))
                    .map_err(|e| PlanError::new(e.to_string(), Some(ins.span)))?;
                out.extend(mount.from);
            }
        }
        _ => {}
    }
    Ok(out)
}

fn target_index(df: &Dockerfile, target: Option<&str>) -> Result<usize, PlanError> {
    match target {
        None => Ok(df.stages.len().saturating_sub(1)),
        Some(t) => df
            .stages
            .iter()
            .rposition(|s| s.name() == Some(t.to_lowercase().as_str()))
            .ok_or_else(|| {
                PlanError::new(format!("target stage \"{t}\" could not be found"), None)
            }),
    }
}

/// Phase one: the image references (bases and `--from` images) the needed stages read, so the
/// caller can resolve them before [`plan`].
pub fn external_images(df: &Dockerfile, opts: &PlanOptions) -> Result<Vec<String>, PlanError> {
    if df.stages.is_empty() {
        return Err(PlanError::new(
            "dockerfile contains no stages to build",
            None,
        ));
    }
    let global = global_scope(df, opts)?;
    let bases = stage_bases(df, &global)?;
    let target = target_index(df, opts.target.as_deref())?;
    let mut out = BTreeSet::new();
    for i in needed_stages(df, &bases, target)? {
        if let Base::Image(r) = &bases[i] {
            out.insert(r.clone());
        }
        for ins in &df.stages[i].instructions {
            for from in referenced_froms(ins)? {
                if let Source::Image(r) = resolve_from(df, i, &from, ins.span)? {
                    out.insert(r);
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The state of a stage while its instructions are planned.
struct StageState {
    config: ImageConfig,
    /// BuildKit's LLB environment: config Env plus ARG values, in order.
    env: Vec<(String, String)>,
    /// Declared ARGs in order, with the value each had (for the RUN history prefix).
    args: Vec<(String, Option<String>)>,
    /// Whether a CMD was given in this stage (ENTRYPOINT resets only an inherited one).
    cmd_set: bool,
    steps: Vec<Step>,
    /// ONBUILD instructions of this stage, for stages built FROM it.
    onbuild: Vec<String>,
}

impl StageState {
    fn container(&mut self) -> &mut ContainerConfig {
        self.config.config.get_or_insert_with(Default::default)
    }

    fn workdir(&self) -> String {
        let wd = self
            .config
            .config
            .as_ref()
            .map(|c| c.working_dir.clone())
            .unwrap_or_default();
        if wd.is_empty() { "/".to_string() } else { wd }
    }

    fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_default()
    }

    fn env_list(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn set_config_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let c = self.container();
        match c
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => c.env.push(entry),
        }
    }

    fn config_has_env(&self, key: &str) -> bool {
        self.config.config.as_ref().is_some_and(|c| {
            c.env
                .iter()
                .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        })
    }

    fn shell(&self) -> Vec<String> {
        let shell = self
            .config
            .config
            .as_ref()
            .map(|c| c.shell.clone())
            .unwrap_or_default();
        if shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            shell
        }
    }
}

fn env_from_config(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .config
        .as_ref()
        .map(|c| {
            c.env
                .iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.clone(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scratch_config(platform: &Platform) -> ImageConfig {
    ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(ContainerConfig {
            working_dir: "/".into(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Phase two: the plan. `images` gives the config of every reference [`external_images`]
/// returned.
pub fn plan(
    df: &Dockerfile,
    opts: &PlanOptions,
    images: &HashMap<String, ResolvedImage>,
) -> Result<BuildPlan, PlanError> {
    if df.stages.is_empty() {
        return Err(PlanError::new(
            "dockerfile contains no stages to build",
            None,
        ));
    }
    let global = global_scope(df, opts)?;
    let bases = stage_bases(df, &global)?;
    let target = target_index(df, opts.target.as_deref())?;
    let order = needed_stages(df, &bases, target)?;
    let plan_index: HashMap<usize, usize> =
        order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let mut planner = Planner {
        df,
        opts,
        images,
        global: &global,
        plan_index: &plan_index,
        // A global ARG consumes its --build-arg (in FROM lines), as the classic builder counts.
        declared: df
            .meta_args
            .iter()
            .flat_map(|a| a.value.args.iter().map(|d| d.name.clone()))
            .collect(),
        warnings: Vec::new(),
    };
    let mut stages: Vec<PlannedStage> = Vec::new();
    let mut finished: HashMap<usize, StageState> = HashMap::new();
    for &i in &order {
        let (stage, state) = planner.plan_stage(i, &bases[i], &finished, &stages)?;
        stages.push(stage);
        finished.insert(i, state);
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !planner.declared.contains(*k) && !is_predefined(k))
        .cloned()
        .collect();
    Ok(BuildPlan {
        target: stages.len() - 1,
        stages,
        unused_build_args,
        warnings: planner.warnings,
    })
}

struct Planner<'a> {
    df: &'a Dockerfile,
    opts: &'a PlanOptions,
    images: &'a HashMap<String, ResolvedImage>,
    global: &'a [(String, String)],
    plan_index: &'a HashMap<usize, usize>,
    declared: BTreeSet<String>,
    warnings: Vec<String>,
}

impl Planner<'_> {
    fn expander(&self) -> Expander {
        Expander::new(self.df.escape)
    }

    fn expand(
        &self,
        word: &str,
        env: &[(String, String)],
        span: Span,
    ) -> Result<String, PlanError> {
        self.expander()
            .process_word(word, env)
            .map_err(|e| PlanError::new(e.to_string(), Some(span)))
    }

    fn source(&self, src: Source) -> Source {
        match src {
            Source::Stage(i) => Source::Stage(self.plan_index[&i]),
            other => other,
        }
    }

    fn plan_stage(
        &mut self,
        i: usize,
        base: &Base,
        finished: &HashMap<usize, StageState>,
        planned: &[PlannedStage],
    ) -> Result<(PlannedStage, StageState), PlanError> {
        let stage = &self.df.stages[i];
        let platform = self.stage_platform(stage)?;
        let (mut state, base, triggers) = match base {
            Base::Scratch => (
                self.fresh_state(scratch_config(&platform)),
                Base::Scratch,
                Vec::new(),
            ),
            Base::Image(r) => {
                let image = self.images.get(r).ok_or_else(|| {
                    PlanError::new(
                        format!("base image {r} was not resolved"),
                        Some(stage.from.span),
                    )
                })?;
                let mut config = image.config.clone();
                let triggers = config
                    .config
                    .as_mut()
                    .map(|c| std::mem::take(&mut c.on_build))
                    .unwrap_or_default();
                config.created = None;
                config.history.clear();
                config.rootfs = Default::default();
                (self.fresh_state(config), Base::Image(r.clone()), triggers)
            }
            Base::Stage(j) => {
                let parent = &finished[j];
                let mut config = planned[self.plan_index[j]].config.clone();
                if let Some(c) = config.config.as_mut() {
                    c.on_build.clear();
                }
                let state = StageState {
                    config,
                    env: parent.env.clone(),
                    args: parent.args.clone(),
                    cmd_set: false,
                    steps: Vec::new(),
                    onbuild: Vec::new(),
                };
                (
                    state,
                    Base::Stage(self.plan_index[j]),
                    parent.onbuild.clone(),
                )
            }
        };
        if !state.env.iter().any(|(k, _)| k == "PATH") {
            state.set_config_env("PATH", DEFAULT_PATH);
            state.env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let mut deps: BTreeSet<usize> = BTreeSet::new();
        if let Base::Stage(p) = base {
            deps.insert(p);
        }
        for trigger in &triggers {
            let ins = parse_trigger(trigger, stage.from.span)?;
            self.dispatch(i, &mut state, &ins, &mut deps)?;
        }
        for ins in &stage.instructions {
            self.dispatch(i, &mut state, ins, &mut deps)?;
        }
        let planned = PlannedStage {
            name: stage.name().map(str::to_string),
            index: i,
            base,
            platform,
            steps: std::mem::take(&mut state.steps),
            config: state.config.clone(),
            deps: deps.into_iter().collect(),
        };
        Ok((planned, state))
    }

    fn stage_platform(&self, stage: &dockerfile::Stage) -> Result<Platform, PlanError> {
        let Some(raw) = &stage.from.value.platform else {
            return Ok(self.opts.platform.clone());
        };
        let value = self.expand(raw, self.global, stage.from.span)?;
        let platform = Platform::parse(&value).ok_or_else(|| {
            PlanError::new(format!("invalid platform {value:?}"), Some(stage.from.span))
        })?;
        if !platform.matches(&self.opts.platform) {
            return Err(PlanError::new(
                format!(
                    "platform {platform} is not supported: strata builds for the host ({})",
                    self.opts.platform
                ),
                Some(stage.from.span),
            ));
        }
        Ok(platform)
    }

    fn fresh_state(&self, config: ImageConfig) -> StageState {
        StageState {
            env: env_from_config(&config),
            config,
            args: Vec::new(),
            cmd_set: false,
            steps: Vec::new(),
            onbuild: Vec::new(),
        }
    }

    fn push(
        &self,
        state: &mut StageState,
        ins: &Spanned<Instruction>,
        kind: StepKind,
        created_by: Option<String>,
    ) {
        let empty_layer = matches!(kind, StepKind::Meta);
        let history = created_by.map(|c| History {
            created_by: Some(c),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer,
            ..Default::default()
        });
        let step = Step {
            span: ins.span,
            source: ins.source.clone(),
            kind,
            history,
            env: state.env_list(),
            workdir: state.workdir(),
            user: state.user(),
        };
        state.steps.push(step);
    }

    fn dispatch(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Spanned<Instruction>,
        deps: &mut BTreeSet<usize>,
    ) -> Result<(), PlanError> {
        let span = ins.span;
        match &ins.value {
            Instruction::From(_) => {
                return Err(PlanError::new("FROM isn't allowed here", Some(span)));
            }
            Instruction::Env(pairs) => {
                let before = state.env.clone();
                let mut shown = Vec::new();
                for kv in pairs {
                    let k = self.expand(&kv.key, &before, span)?;
                    let v = self.expand(&kv.value, &before, span)?;
                    set_var(&mut state.env, &k, &v);
                    state.set_config_env(&k, &v);
                    shown.push(format!("{k}={v}"));
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("ENV {}", shown.join(" "))),
                );
            }
            Instruction::Label(pairs) => {
                let mut shown = Vec::new();
                for kv in pairs {
                    let k = self.expand(&kv.key, &state.env, span)?;
                    let v = self.expand(&kv.value, &state.env, span)?;
                    state.container().labels.insert(k.clone(), v.clone());
                    shown.push(format!("{k}={v}"));
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("LABEL {}", shown.join(" "))),
                );
            }
            Instruction::Maintainer(name) => {
                state.config.author = Some(name.clone());
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("MAINTAINER {name}")),
                );
            }
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for raw in ports {
                    for word in self
                        .expander()
                        .process_words(raw, &state.env)
                        .map_err(|e| PlanError::new(e.to_string(), Some(span)))?
                    {
                        out.extend(parse_expose(&word).map_err(|m| PlanError::new(m, Some(span)))?);
                    }
                }
                for p in &out {
                    state
                        .container()
                        .exposed_ports
                        .insert(p.clone(), EmptyObject {});
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("EXPOSE [{}]", out.join(" "))),
                );
            }
            Instruction::Volume(paths) => {
                let mut out = Vec::new();
                for p in paths {
                    let v = self.expand(p, &state.env, span)?;
                    if v.is_empty() {
                        return Err(PlanError::new(
                            "VOLUME specified can not be an empty string",
                            Some(span),
                        ));
                    }
                    state.container().volumes.insert(v.clone(), EmptyObject {});
                    out.push(v);
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("VOLUME [{}]", out.join(" "))),
                );
            }
            Instruction::User(u) => {
                let v = self.expand(u, &state.env, span)?;
                state.container().user = v.clone();
                self.push(state, ins, StepKind::Meta, Some(format!("USER {v}")));
            }
            Instruction::Workdir(w) => {
                let v = self.expand(w, &state.env, span)?;
                let wd = normalize_workdir(&state.workdir(), &v);
                state.container().working_dir = wd.clone();
                if wd == "/" {
                    self.push(state, ins, StepKind::Meta, Some("WORKDIR /".into()));
                } else {
                    self.push(
                        state,
                        ins,
                        StepKind::Workdir(wd.clone()),
                        Some(format!("WORKDIR {wd}")),
                    );
                }
            }
            Instruction::Stopsignal(s) => {
                let v = self.expand(s, &state.env, span)?;
                if !valid_signal(&v) {
                    return Err(PlanError::new(format!("invalid signal: {v}"), Some(span)));
                }
                state.container().stop_signal = v.clone();
                self.push(state, ins, StepKind::Meta, Some(format!("STOPSIGNAL {v}")));
            }
            Instruction::Cmd(cmd) => {
                let argv = self.with_shell(state, cmd);
                state.container().cmd = Some(argv.clone());
                state.container().args_escaped = true;
                state.cmd_set = true;
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("CMD {}", go_q_list(&argv))),
                );
            }
            Instruction::Entrypoint(ep) => {
                let argv = self.with_shell(state, ep);
                let c = state.container();
                c.entrypoint = if argv.is_empty() {
                    None
                } else {
                    Some(argv.clone())
                };
                if !state.cmd_set {
                    state.container().cmd = None;
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("ENTRYPOINT {}", go_q_list(&argv))),
                );
            }
            Instruction::Shell(shell) => {
                state.container().shell = shell.clone();
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("SHELL [{}]", shell.join(" "))),
                );
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => oci::Healthcheck {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Healthcheck::Check(c) => oci::Healthcheck {
                        test: c.test.clone(),
                        interval: nanos(c.interval),
                        timeout: nanos(c.timeout),
                        start_period: nanos(c.start_period),
                        start_interval: nanos(c.start_interval),
                        retries: c.retries as i64,
                    },
                };
                let text = format!(
                    "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    hc.test.join(" "),
                    go_duration(hc.interval),
                    go_duration(hc.timeout),
                    go_duration(hc.start_period),
                    go_duration(hc.start_interval),
                    hc.retries
                );
                state.container().healthcheck = Some(hc);
                self.push(state, ins, StepKind::Meta, Some(text));
            }
            Instruction::Onbuild(o) => {
                state.container().on_build.push(o.expression.clone());
                state.onbuild.push(o.expression.clone());
            }
            Instruction::Arg(arg) => {
                let mut shown = Vec::new();
                for decl in &arg.args {
                    self.declared.insert(decl.name.clone());
                    let value = match (self.opts.build_args.get(&decl.name), &decl.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(self.expand(d, &state.env, span)?),
                        (None, None) => self
                            .df
                            .meta_args
                            .iter()
                            .flat_map(|a| a.value.args.iter())
                            .any(|g| g.name == decl.name)
                            .then(|| get_var(self.global, &decl.name).map(str::to_string))
                            .flatten()
                            .or_else(|| {
                                platform_args(&self.opts.platform)
                                    .into_iter()
                                    .find(|(k, _)| k == &decl.name)
                                    .map(|(k, v)| {
                                        self.opts.build_args.get(&k).cloned().unwrap_or(v)
                                    })
                            }),
                    };
                    shown.push(match &value {
                        Some(v) => format!("{}={v}", decl.name),
                        None => decl.name.clone(),
                    });
                    if let Some(v) = &value
                        && !state.config_has_env(&decl.name)
                    {
                        set_var(&mut state.env, &decl.name, v);
                    }
                    match state.args.iter_mut().find(|(k, _)| *k == decl.name) {
                        Some(slot) => slot.1 = value,
                        None => state.args.push((decl.name.clone(), value)),
                    }
                }
                self.push(
                    state,
                    ins,
                    StepKind::Meta,
                    Some(format!("ARG {}", shown.join(" "))),
                );
            }
            Instruction::Run(run) => self.plan_run(stage, state, ins, run, deps)?,
            Instruction::Copy(copy) => {
                let from = match &copy.from {
                    Some(f) => self.source(resolve_from(self.df, stage, f, span)?),
                    None => Source::Context,
                };
                if let Source::Stage(p) = from {
                    deps.insert(p);
                }
                self.plan_copy(
                    state,
                    ins,
                    CopyFlags {
                        add: false,
                        files: &copy.files,
                        from,
                        chown: copy.chown.as_deref(),
                        chmod: copy.chmod.as_deref(),
                        link: copy.link,
                        parents: copy.parents,
                        excludes: &copy.excludes,
                        checksum: None,
                        unpack: Some(false),
                        keep_git_dir: false,
                    },
                )?;
            }
            Instruction::Add(add) => self.plan_copy(
                state,
                ins,
                CopyFlags {
                    add: true,
                    files: &add.files,
                    from: Source::Context,
                    chown: add.chown.as_deref(),
                    chmod: add.chmod.as_deref(),
                    link: add.link,
                    parents: false,
                    excludes: &add.excludes,
                    checksum: add.checksum.as_deref(),
                    unpack: add.unpack,
                    keep_git_dir: add.keep_git_dir,
                },
            )?,
        }
        Ok(())
    }

    fn with_shell(&self, state: &StageState, cmd: &dockerfile::CommandLine) -> Vec<String> {
        if cmd.shell_form {
            let mut argv = state.shell();
            argv.push(cmd.args.join(" "));
            argv
        } else {
            cmd.args.clone()
        }
    }

    fn plan_run(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Spanned<Instruction>,
        run: &dockerfile::RunInstruction,
        deps: &mut BTreeSet<usize>,
    ) -> Result<(), PlanError> {
        let span = ins.span;
        let script = match run.files.first() {
            Some(f)
                if run.files.len() == 1
                    && run.command.shell_form
                    && is_heredoc_only(&run.command.args, &f.name) =>
            {
                let content = f.content();
                if content.starts_with("#!") {
                    Some(InlineFile {
                        name: f.name.clone(),
                        content,
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        let args = match (&script, run.files.first()) {
            (Some(s), _) => vec![format!("/dev/pipes/{}", s.name)],
            (None, Some(f))
                if run.files.len() == 1
                    && run.command.shell_form
                    && is_heredoc_only(&run.command.args, &f.name) =>
            {
                let mut argv = state.shell();
                argv.push(f.content());
                argv
            }
            (None, Some(_)) => {
                // Several heredocs or a heredoc inside a longer command: hand the whole text,
                // bodies included, to the shell, which understands heredocs itself.
                let mut text = run.command.args.join(" ");
                for f in &run.files {
                    text.push('\n');
                    text.push_str(&f.data);
                    text.push_str(&f.name);
                }
                let mut argv = state.shell();
                argv.push(text);
                argv
            }
            (None, None) => self.with_shell(state, &run.command),
        };
        let mut mounts = Vec::new();
        for spec in &run.mounts {
            let env = state.env.clone();
            let m = spec
                .resolve(|v| self.expand(v, &env, span))
                .map_err(|e| PlanError::new(e.to_string(), Some(span)))?;
            let target = m
                .target
                .clone()
                .map(|t| normalize_workdir(&state.workdir(), &t));
            let target = match (m.kind, target) {
                (_, Some(t)) => t,
                (MountType::Secret, None) => format!(
                    "/run/secrets/{}",
                    m.id.clone().or(m.source.clone()).unwrap_or_default()
                ),
                (MountType::Ssh, None) => format!(
                    "/run/buildkit/ssh_agent.{}",
                    mounts
                        .iter()
                        .filter(|m: &&RunMount| m.kind == MountType::Ssh)
                        .count()
                ),
                (kind, None) => {
                    return Err(PlanError::new(
                        format!("mount type {} requires a target", kind.as_str()),
                        Some(span),
                    ));
                }
            };
            let from = match &m.from {
                Some(f) => {
                    let s = self.source(resolve_from(self.df, stage, f, span)?);
                    if let Source::Stage(p) = s {
                        deps.insert(p);
                    }
                    Some(s)
                }
                None if m.kind == MountType::Bind => Some(Source::Context),
                None => None,
            };
            let id = match m.kind {
                MountType::Cache => Some(m.id.clone().unwrap_or_else(|| {
                    m.target.clone().map(|t| clean_path(&t)).unwrap_or_default()
                })),
                MountType::Secret => Some(
                    m.id.clone()
                        .or(m.source.clone())
                        .unwrap_or_else(|| target.rsplit('/').next().unwrap_or("").to_string()),
                ),
                _ => m.id.clone(),
            };
            mounts.push(RunMount {
                kind: m.kind,
                target,
                from,
                source: m.source.clone(),
                read_only: m.read_only,
                id,
                sharing: m.sharing,
                size_limit: m.size_limit,
                required: m.required,
                env: m.env.clone(),
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            });
        }
        let proxy_env = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k)))
            .filter(|(k, _)| !state.args.iter().any(|(a, _)| a == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let created_by = format!("RUN {} # buildkit", run_command_string(&args, state));
        self.push(
            state,
            ins,
            StepKind::Run(RunStep {
                args,
                mounts,
                network: run.network,
                security: run.security,
                script,
                proxy_env,
            }),
            Some(created_by),
        );
        Ok(())
    }

    fn plan_copy(
        &mut self,
        state: &mut StageState,
        ins: &Spanned<Instruction>,
        f: CopyFlags<'_>,
    ) -> Result<(), PlanError> {
        let span = ins.span;
        let env = state.env.clone();
        let sources = f
            .files
            .sources
            .iter()
            .map(|s| self.expand(s, &env, span))
            .collect::<Result<Vec<_>, _>>()?;
        if !f.add {
            for s in &sources {
                if is_url(s) {
                    return Err(PlanError::new("source can't be a URL for COPY", Some(span)));
                }
            }
        }
        let inline = f
            .files
            .contents
            .iter()
            .map(|c| {
                Ok(InlineFile {
                    name: c.path.clone(),
                    content: c
                        .expanded(&env)
                        .map_err(|e| PlanError::new(e.to_string(), Some(span)))?,
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        let raw_dest = self.expand(&f.files.dest, &env, span)?;
        let dest = resolve_dest(&state.workdir(), &raw_dest);
        let chown = f.chown.map(|c| self.expand(c, &env, span)).transpose()?;
        let chmod = f.chmod.map(|c| self.expand(c, &env, span)).transpose()?;
        if let Some(m) = &chmod
            && !valid_chmod(m)
        {
            return Err(PlanError::new(
                format!(
                    "invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"
                ),
                Some(span),
            ));
        }
        let checksum = f.checksum.map(|c| self.expand(c, &env, span)).transpose()?;
        if checksum.is_some() {
            if sources.len() != 1 {
                return Err(PlanError::new(
                    "checksum can't be specified for multiple sources",
                    Some(span),
                ));
            }
            if !sources.iter().all(|s| is_url(s)) {
                return Err(PlanError::new(
                    "checksum requires HTTP(S) or Git sources",
                    Some(span),
                ));
            }
        }
        let mut created_by = if f.add {
            "ADD".to_string()
        } else {
            "COPY".to_string()
        };
        if f.parents {
            created_by.push_str(" --parents");
        }
        if let Some(c) = &chown {
            created_by.push_str(&format!(" --chown={c}"));
        }
        if let Some(c) = &chmod {
            created_by.push_str(&format!(" --chmod={c}"));
        }
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        for c in &inline {
            created_by.push_str(&format!(" <<{}", c.name));
        }
        created_by.push_str(&format!(" {raw_dest} # buildkit"));
        self.push(
            state,
            ins,
            StepKind::Copy(CopyStep {
                add: f.add,
                from: f.from,
                sources,
                inline,
                dest,
                chown,
                chmod,
                link: f.link,
                parents: f.parents,
                excludes: f.excludes.to_vec(),
                checksum,
                unpack: f.unpack,
                keep_git_dir: f.keep_git_dir,
            }),
            Some(created_by),
        );
        Ok(())
    }
}

struct CopyFlags<'a> {
    add: bool,
    files: &'a dockerfile::SourcesAndDest,
    from: Source,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    parents: bool,
    excludes: &'a [String],
    checksum: Option<&'a str>,
    unpack: Option<bool>,
    keep_git_dir: bool,
}

fn is_heredoc_only(args: &[String], name: &str) -> bool {
    let text = args.join(" ");
    let t = text.trim();
    t.starts_with("<<")
        && t.trim_start_matches("<<")
            .trim_start_matches('-')
            .trim_matches(['"', '\''])
            == name
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn parse_trigger(text: &str, span: Span) -> Result<Spanned<Instruction>, PlanError> {
    let ast = dockerfile::parse(text.as_bytes())
        .map_err(|e| PlanError::new(format!("ONBUILD trigger {text:?}: {e}"), Some(span)))?;
    let [record] = ast.records.as_slice() else {
        return Err(PlanError::new(
            "onbuild trigger should be a single expression",
            Some(span),
        ));
    };
    let value = dockerfile::parse_instruction(record)
        .map_err(|e| PlanError::new(format!("ONBUILD trigger {text:?}: {e}"), Some(span)))?;
    Ok(Spanned {
        span,
        source: text.to_string(),
        value,
    })
}

/// `RUN |N K=V … argv`: BuildKit's history text for RUN.
fn run_command_string(args: &[String], state: &StageState) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, declared) in &state.args {
        let v = get_var(&state.env, k)
            .map(str::to_string)
            .or_else(|| declared.clone())
            .unwrap_or_default();
        parts.push(format!("{k}={v}"));
    }
    if !parts.is_empty() {
        parts.insert(0, format!("|{}", parts.len()));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_q_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| dockerfile::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

fn nanos(d: Option<std::time::Duration>) -> i64 {
    d.map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Go's `time.Duration.String()` for non-negative durations.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim_decimal(ns as f64 / 1e3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_decimal(ns as f64 / 1e6));
    }
    let total_secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:09}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

fn trim_decimal(x: f64) -> String {
    let s = format!("{x:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `WORKDIR` and mount targets: relative to the current workdir, cleaned.
pub fn normalize_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", if current.is_empty() { "/" } else { current })
    };
    clean_path(&joined)
}

/// Go's `path.Clean` for absolute paths.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// COPY's destination: absolute, relative to the workdir, trailing slash kept.
pub fn resolve_dest(workdir: &str, dest: &str) -> String {
    let dir_like = dest.ends_with('/') || dest.is_empty() || dest == "." || dest.ends_with("/.");
    let cleaned = normalize_workdir(workdir, dest);
    if dir_like && cleaned != "/" {
        format!("{cleaned}/")
    } else {
        cleaned
    }
}

fn valid_chmod(m: &str) -> bool {
    if m.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(m, 8).is_ok_and(|v| v <= 0o7777);
    }
    crate::copy::parse_symbolic_mode(m).is_some()
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    oci::signal_number(name).is_some()
}

/// EXPOSE `[ip:][host:]port[-end][/proto]` → `port/proto` keys.
fn parse_expose(spec: &str) -> Result<Vec<String>, String> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = addr.rsplit(':').next().unwrap_or(addr);
    if container.is_empty() {
        return Err(format!("invalid port: {spec:?}: no port specified"));
    }
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (a, b),
        None => (container, container),
    };
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {container}"))
    };
    let (start, end) = (parse(start)?, parse(end)?);
    if end < start {
        return Err(format!("invalid containerPort: {container}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests;
