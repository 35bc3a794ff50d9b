//! Typed instructions: BuildKit's `instructions` package.
//!
//! Each record from the parser becomes an [`Instruction`] with its flags parsed and
//! validated, and the file becomes a [`Dockerfile`] of [`Stage`]s. Variable expansion is
//! *not* done here where BuildKit defers it to build time: values keep their raw text
//! (quotes and `$VAR` included) and the planner expands them with the ARG and ENV scope of
//! each step. Each field's documentation says whether the builder expands it.

mod flags;
mod mount;
mod parse;
mod values;

use std::time::Duration;

use crate::error::{ParseError, Span, Warning};
use crate::parser::Directive;

/// The instruction keywords, for messages.
pub(crate) const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

pub use mount::{CacheSharing, Mount, MountError, MountSpec, MountType};
pub use parse::parse_instruction;

/// A Dockerfile as stages of typed instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// The ARGs before the first FROM (global scope: visible in FROM lines only, unless a
    /// stage declares them again).
    pub meta_args: Vec<Spanned<ArgInstruction>>,
    /// The stages in file order; never empty.
    pub stages: Vec<Stage>,
    /// The escape character for word expansion (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives (`syntax`, `escape`, `check`).
    pub directives: Vec<Directive>,
    /// Parser warnings, and notes about things BuildKit silently ignores.
    pub warnings: Vec<Warning>,
}

/// A value with the lines it came from and the logical line as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The lines of the instruction.
    pub span: Span,
    /// The logical line (continuations joined), for messages and the linter.
    pub source: String,
    /// The instruction.
    pub value: T,
}

/// One build stage: a FROM and the instructions after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The FROM instruction.
    pub from: Spanned<FromInstruction>,
    /// A description from a comment line `# <name> <description>` above the FROM.
    pub comment: Option<String>,
    /// The instructions of the stage, never `Instruction::From`.
    pub instructions: Vec<Spanned<Instruction>>,
}

impl Stage {
    /// The stage name (`AS name`, lowercased), if any.
    pub fn name(&self) -> Option<&str> {
        self.from.value.name.as_deref()
    }
}

impl Dockerfile {
    /// Parses a Dockerfile into stages.
    pub fn parse(input: &[u8]) -> Result<Self, ParseError> {
        let ast = crate::parser::parse(input)?;
        Self::from_ast(&ast)
    }

    /// Builds the stages from a parsed file.
    pub fn from_ast(ast: &crate::parser::Ast) -> Result<Self, ParseError> {
        parse::dockerfile_from_ast(ast)
    }

    /// Finds a stage by name (case-insensitive) or by index, as `COPY --from` and `--target`
    /// refer to them. A name takes precedence over an index.
    pub fn find_stage(&self, name_or_index: &str) -> Option<(usize, &Stage)> {
        let lower = crate::text::go_to_lower(name_or_index);
        if let Some(found) = self
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name() == Some(lower.as_str()))
        {
            return Some(found);
        }
        let index: usize = name_or_index.parse().ok()?;
        self.stages.get(index).map(|stage| (index, stage))
    }
}

/// Every instruction, with its flags parsed. Values are raw unless noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=…] image [AS name]`.
    From(FromInstruction),
    /// `RUN`.
    Run(RunInstruction),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`; an empty command line resets the entrypoint.
    Entrypoint(CommandLine),
    /// `LABEL k=v …`; keys and values are expanded by the builder.
    Label(Vec<KeyValue>),
    /// `MAINTAINER name` (deprecated; never expanded).
    Maintainer(String),
    /// `EXPOSE port[/proto] …`, sorted as BuildKit sorts them; expanded into words.
    Expose(Vec<String>),
    /// `ENV k=v …` or `ENV k v`; keys and values are expanded against the environment as it
    /// was before the instruction.
    Env(Vec<KeyValue>),
    /// `ADD`.
    Add(AddInstruction),
    /// `COPY`.
    Copy(CopyInstruction),
    /// `VOLUME path …` (trimmed, never empty); expanded.
    Volume(Vec<String>),
    /// `USER user[:group]`; expanded.
    User(String),
    /// `WORKDIR path`; expanded, relative to the previous WORKDIR.
    Workdir(String),
    /// `ARG name[=default] …`.
    Arg(ArgInstruction),
    /// `ONBUILD instruction`.
    Onbuild(OnbuildInstruction),
    /// `STOPSIGNAL signal`; expanded.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL ["executable", "param"…]` (JSON form only; never expanded).
    Shell(Vec<String>),
}

impl Instruction {
    /// The instruction keyword in upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Expose(_) => "EXPOSE",
            Self::Env(_) => "ENV",
            Self::Add(_) => "ADD",
            Self::Copy(_) => "COPY",
            Self::Volume(_) => "VOLUME",
            Self::User(_) => "USER",
            Self::Workdir(_) => "WORKDIR",
            Self::Arg(_) => "ARG",
            Self::Onbuild(_) => "ONBUILD",
            Self::Stopsignal(_) => "STOPSIGNAL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Shell(_) => "SHELL",
        }
    }
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromInstruction {
    /// The image (or stage) reference; expanded with the global ARGs only.
    pub base: String,
    /// The stage name, lowercased and validated (`[a-z][a-z0-9-_.]*`).
    pub name: Option<String>,
    /// `--platform`; expanded with the global ARGs (and the automatic platform ARGs).
    pub platform: Option<String>,
}

/// A command in shell form (one string, run through the SHELL) or exec form (a JSON array,
/// run directly). The builder never expands it: the shell does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the array; shell form: one string.
    pub args: Vec<String>,
    /// Shell form: the args are prefixed with the SHELL when run.
    pub shell_form: bool,
}

/// A heredoc body attached to RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineFile {
    /// The delimiter word (without quotes).
    pub name: String,
    /// The body as written (unchomped).
    pub data: String,
    /// `<<-`: leading tabs are removed from each line when the body is used.
    pub chomp: bool,
}

impl InlineFile {
    /// The body as used: chomped for `<<-`.
    pub fn content(&self) -> String {
        if self.chomp {
            crate::parser::chomp_heredoc_content(&self.data)
        } else {
            self.data.clone()
        }
    }
}

/// `RUN [--mount=…] [--network=…] [--security=…] command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInstruction {
    /// The command; for `RUN <<EOF` the body is in `files`.
    pub command: CommandLine,
    /// Heredoc bodies, in order.
    pub files: Vec<InlineFile>,
    /// `--mount` values, checked for syntax; resolve them with [`MountSpec::resolve`].
    pub mounts: Vec<MountSpec>,
    /// `--network` (`default` unless given).
    pub network: NetworkMode,
    /// `--security` (`sandbox` unless given).
    pub security: SecurityMode,
    /// The flags that were given, by name.
    pub flags_used: Vec<String>,
}

/// `RUN --network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// The builder's default (strata: no network unless allowed).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SecurityMode {
    /// The normal sandbox.
    #[default]
    Sandbox,
    /// Privileged (needs an entitlement).
    Insecure,
}

/// A `key=value` (or old-form `key value`) pair of ENV or LABEL, raw: quotes and `$VAR`
/// are removed and expanded by the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// Old form (`ENV key value…`): the value is the rest of the line.
    pub no_delimiter: bool,
}

/// Sources and destination of COPY and ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcesAndDest {
    /// The destination; expanded.
    pub dest: String,
    /// Source paths, URLs or globs; expanded.
    pub sources: Vec<String>,
    /// Heredoc sources (`COPY <<EOF /dest`), written as files named after the delimiter.
    pub contents: Vec<SourceContent>,
}

/// A file created from a heredoc by COPY or ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContent {
    /// The file name: the delimiter word.
    pub path: String,
    /// The body, already chomped for `<<-`.
    pub data: String,
    /// Whether the builder expands `$VAR` in it (false when the delimiter was quoted).
    /// Expansion uses escape `\` with quote processing off.
    pub expand: bool,
}

impl SourceContent {
    /// The file's content in the environment `env`: verbatim when the delimiter was quoted,
    /// otherwise expanded as BuildKit's `ExpandRaw` does (escape `\`, quotes left alone).
    pub fn expanded<E: crate::expand::Env + ?Sized>(
        &self,
        env: &E,
    ) -> Result<String, crate::expand::ExpandError> {
        if !self.expand {
            return Ok(self.data.clone());
        }
        crate::expand::Expander::new('\\')
            .skip_quotes(true)
            .process_word(&self.data, env)
    }
}

/// `COPY [--from=…] [--chown=…] [--chmod=…] [--link] [--parents] [--exclude=…] src… dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyInstruction {
    /// Sources and destination.
    pub files: SourcesAndDest,
    /// `--from`: a stage name or index, or an image; never expanded.
    pub from: Option<String>,
    /// `--chown`; expanded.
    pub chown: Option<String>,
    /// `--chmod` (octal or symbolic); expanded.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns; expanded.
    pub excludes: Vec<String>,
}

/// `ADD [--chown] [--chmod] [--link] [--checksum] [--keep-git-dir] [--exclude] [--unpack] src… dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddInstruction {
    /// Sources and destination.
    pub files: SourcesAndDest,
    /// `--chown`; expanded.
    pub chown: Option<String>,
    /// `--chmod`; expanded.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir` for Git sources.
    pub keep_git_dir: bool,
    /// `--checksum` for HTTP and Git sources; expanded.
    pub checksum: Option<String>,
    /// `--unpack`: `None` when not given (local archives are unpacked, remote ones not).
    pub unpack: Option<bool>,
    /// `--exclude` patterns; expanded.
    pub excludes: Vec<String>,
}

/// `ARG name[=default] …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgInstruction {
    /// The declarations in order.
    pub args: Vec<ArgDeclaration>,
}

/// One `name[=default]` of an ARG line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDeclaration {
    /// The name as written.
    pub name: String,
    /// The default, raw (expanded by the builder when no build arg overrides it).
    pub default: Option<String>,
    /// A description from a comment line `# <name> <description>` above the ARG.
    pub comment: Option<String>,
}

/// `ONBUILD instruction`: stored as text and run when a child image builds FROM this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnbuildInstruction {
    /// The trigger as it will be parsed in the child build (heredoc bodies re-attached).
    pub expression: String,
    /// The trigger's keyword, upper case.
    pub trigger: String,
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [options] CMD …`.
    Check(HealthcheckCommand),
}

/// A health check command and its options. Zero or unset durations mean "inherit the
/// default".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthcheckCommand {
    /// `["CMD", args…]` (exec form) or `["CMD-SHELL", command]`, as in the image config.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries` (0 when unset).
    pub retries: u32,
}
