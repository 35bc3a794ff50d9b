//! The one error type of this crate: what went wrong and on which lines.

use std::fmt;

/// A range of physical lines, 1-based and inclusive, as BuildKit reports them, and
/// optionally the part of it a message is about.
///
/// An instruction's span runs from the line its keyword is on to the last line it consumed,
/// including continuation lines, comment and blank lines inside a continuation, and heredoc
/// bodies with their terminators. Errors narrow it with a [`Focus`] (the flag, word or
/// keyword at fault) so that a renderer can put a caret under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First line.
    pub start: usize,
    /// Last line.
    pub end: usize,
    /// The offending part, when known.
    pub focus: Option<Focus>,
}

/// A range of bytes on one physical line: what an error or a lint points at.
///
/// `start` and `end` are 0-based byte offsets into the line (without its line terminator,
/// and on line 1 after a UTF-8 byte-order mark; lines are at most 65535 bytes, so `u32`
/// holds them); `start == end` marks a point, such as where a missing argument should go.
/// Renderers show 1-based character columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Focus {
    /// The physical line, 1-based.
    pub line: usize,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            focus: None,
        }
    }

    /// A span of one line.
    pub fn line(line: usize) -> Self {
        Self::new(line, line)
    }

    /// The same lines, narrowed to `focus` (or widened back to whole lines with `None`).
    pub fn with_focus(self, focus: Option<Focus>) -> Self {
        Self { focus, ..self }
    }

    /// The line a message about this span should show: the focus line, else the first.
    pub fn focus_line(&self) -> usize {
        self.focus.map_or(self.start, |f| f.line)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "line {}", self.start)
        } else {
            write!(f, "lines {}-{}", self.start, self.end)
        }
    }
}

/// A Dockerfile could not be parsed. It names the line (the first line of the offending
/// instruction) and says what was expected, in BuildKit's words where BuildKit has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ParseError {
    /// Where: the instruction (or the line) at fault; `None` only for errors about the whole file.
    pub span: Option<Span>,
    /// What.
    pub kind: ErrorKind,
    /// What would have been accepted here, when it depends on the instruction (the flags it
    /// takes); shown as a help line under the snippet.
    pub help: Option<String>,
}

fn render(error: &ParseError) -> String {
    match error.span {
        Some(span) => format!("line {}: {}", span.start, error.kind),
        None => error.kind.to_string(),
    }
}

impl ParseError {
    pub(crate) fn new(span: Span, kind: ErrorKind) -> Self {
        Self {
            span: Some(span),
            kind,
            help: None,
        }
    }

    /// The error as a person reads it: `file:line:column`, the offending line with a caret
    /// under the offending part, and what was expected. See [`crate::render_error`].
    pub fn render(&self, file_name: &str, source: &[u8]) -> String {
        let mut help: Vec<String> = self.kind.expected().into_iter().collect();
        help.extend(self.help.clone());
        crate::Diagnostic {
            message: self.kind.to_string(),
            // An empty file or one of only comments has no line worth showing.
            span: self.span.filter(|_| !self.kind.is_about_the_whole_file()),
            label: self.kind.label(),
            help,
        }
        .render(file_name, source)
    }

    /// The first line of the offending instruction, if the error has one.
    pub fn line(&self) -> Option<usize> {
        self.span.map(|span| span.start)
    }
}

/// What went wrong. The messages follow BuildKit's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    // Syntax: from bytes to instruction records.
    /// A parser directive appeared twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String },
    /// `# escape=` with something other than `` ` `` or `\`.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscapeToken { value: String },
    /// A physical line longer than BuildKit's scanner accepts.
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    /// The file ended before a heredoc's terminator.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A heredoc delimiter could not be lexed.
    #[error("{message}")]
    HeredocDelimiter { message: String },
    /// `ENV name` or `LABEL name` with no value.
    #[error("{instruction} must have two arguments")]
    MissingValue { instruction: &'static str },
    /// A `name=value` form with a word lacking `=`; `word` is already Go-quoted.
    #[error("Syntax error - can't find = in {word}. Must be of the form: name=value")]
    MissingEquals { word: String },
    /// A JSON array with an element that is not a string.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// Nothing but comments and blank lines.
    #[error("file with no instructions")]
    NoInstructions,

    // Instructions: from records to typed instructions.
    /// A keyword that is not an instruction.
    #[error("unknown instruction: {keyword}{}", hint(suggestion))]
    UnknownInstruction {
        keyword: String,
        suggestion: Option<String>,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag: {flag}{}", hint(suggestion))]
    UnknownFlag {
        flag: String,
        suggestion: Option<String>,
    },
    /// `--flag` without `=value` where a value is required, or `--flag=` for a boolean.
    #[error("missing a value on flag: {flag}")]
    FlagMissingValue { flag: String },
    /// A boolean flag with a value other than true or false.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    FlagNotBoolean { flag: String, value: String },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: {flag}")]
    DuplicateFlag { flag: String },
    /// Too few or too many arguments.
    #[error("{instruction} requires {expected}")]
    ArgumentCount {
        instruction: &'static str,
        expected: &'static str,
    },
    /// An empty name in ENV, LABEL or ARG.
    #[error("{instruction} names can not be blank")]
    BlankName { instruction: &'static str },
    /// `FROM` with a word count other than one or three (`image AS name`).
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `AS name` where the name is not `[a-z][a-z0-9-_.]*` (case-insensitively).
    #[error(
        "invalid name for build stage: {}, name can't start with a number or contain symbols",
        crate::text::go_quote(name)
    )]
    InvalidStageName { name: String },
    /// Two stages with the same name.
    #[error("duplicate stage name {}", crate::text::go_quote(name))]
    DuplicateStageName { name: String },
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoStage,
    /// A file with ARGs but no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `ONBUILD ONBUILD`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChaining,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{trigger} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger { trigger: String },
    /// A heredoc where a path is required.
    #[error("{instruction} cannot accept a heredoc as {position}")]
    HeredocNotAllowed {
        instruction: &'static str,
        position: &'static str,
    },
    /// SHELL in shell form.
    #[error("{instruction} requires the arguments to be in JSON form")]
    NotJson { instruction: &'static str },
    /// A VOLUME path that is empty.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// HEALTHCHECK NONE with arguments.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// HEALTHCHECK CMD with nothing after it.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// HEALTHCHECK with a type other than CMD or NONE.
    #[error(
        "Unknown type {} in HEALTHCHECK (try CMD)",
        crate::text::go_quote(kind)
    )]
    HealthcheckType { kind: String },
    /// A duration flag that Go's `time.ParseDuration` would refuse.
    #[error("{message}")]
    InvalidDuration { message: String },
    /// A duration flag below one millisecond.
    #[error("Interval {} cannot be less than 1ms", crate::text::go_quote(flag))]
    DurationTooShort { flag: &'static str },
    /// `--retries` that is not a 32-bit integer.
    #[error("strconv.ParseInt: parsing {}: {reason}", crate::text::go_quote(value))]
    InvalidRetries { value: String, reason: &'static str },
    /// `--retries` below zero.
    #[error("--retries cannot be negative ({value})")]
    NegativeRetries { value: i64 },
    /// `RUN --network` with an unknown mode.
    #[error("invalid network mode {}", crate::text::go_quote(value))]
    InvalidNetwork { value: String },
    /// `RUN --security` with an unknown mode.
    #[error("security {} is not valid", crate::text::go_quote(value))]
    InvalidSecurity { value: String },
    /// A malformed `RUN --mount` (BuildKit's message).
    #[error("{message}")]
    InvalidMount { message: String },
}

fn hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// Something BuildKit accepts but reports, such as an empty line inside a continuation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where BuildKit places it.
    pub span: Span,
    /// What it says.
    pub message: String,
}

impl ErrorKind {
    /// NoInstructions and NoStages are about the whole file, not a line of it.
    pub(crate) fn is_about_the_whole_file(&self) -> bool {
        matches!(self, Self::NoInstructions | Self::NoStages)
    }

    /// Which part of the instruction the error is about, for the caret.
    pub(crate) fn subject(&self) -> Option<crate::Subject<'_>> {
        use crate::Subject;
        Some(match self {
            Self::DuplicateDirective { .. }
            | Self::InvalidEscapeToken { .. }
            | Self::LineTooLong
            | Self::NoInstructions
            | Self::NoStages => return None,
            Self::UnterminatedHeredoc | Self::HeredocDelimiter { .. } => Subject::Heredoc,
            Self::UnknownInstruction { .. } | Self::NoStage => Subject::Keyword,
            Self::UnknownFlag { flag, .. }
            | Self::FlagMissingValue { flag }
            | Self::FlagNotBoolean { flag, .. }
            | Self::DuplicateFlag { flag } => Subject::Flag(flag),
            // Which of the four duration flags is decided where the flags are known.
            Self::InvalidDuration { .. } => Subject::Flag("interval"),
            Self::DurationTooShort { flag } => Subject::Flag(flag),
            Self::InvalidRetries { .. } | Self::NegativeRetries { .. } => Subject::Flag("retries"),
            Self::InvalidNetwork { .. } => Subject::Flag("network"),
            Self::InvalidSecurity { .. } => Subject::Flag("security"),
            Self::InvalidMount { .. } => Subject::Flag("mount"),
            Self::MissingEquals { .. } => Subject::ArgumentWithout('='),
            Self::MissingValue { .. }
            | Self::NotStringArray
            | Self::ArgumentCount { .. }
            | Self::BlankName { .. }
            | Self::FromArguments
            | Self::NotJson { .. }
            | Self::EmptyVolume
            | Self::HealthcheckNoneArguments
            | Self::HealthcheckMissingCommand => Subject::Arguments,
            Self::InvalidStageName { .. } | Self::DuplicateStageName { .. } => Subject::Argument(2),
            Self::OnbuildChaining | Self::OnbuildTrigger { .. } | Self::HealthcheckType { .. } => {
                Subject::Argument(0)
            }
            Self::HeredocNotAllowed { .. } => Subject::LastArgument,
        })
    }

    /// A short label for the caret.
    pub(crate) fn label(&self) -> Option<String> {
        Some(match self {
            Self::DuplicateDirective { .. } => "a second time here".into(),
            Self::InvalidEscapeToken { .. } => "expected ` or \\".into(),
            Self::LineTooLong => "the line goes on past 65535 bytes".into(),
            Self::UnterminatedHeredoc => "this heredoc is never closed".into(),
            Self::HeredocDelimiter { .. } => "in this heredoc delimiter".into(),
            Self::MissingValue { .. } => "expected a value after the name".into(),
            Self::MissingEquals { .. } => "expected name=value".into(),
            Self::NotStringArray => "expected a JSON array of strings".into(),
            Self::UnknownInstruction { .. } => "not an instruction".into(),
            Self::UnknownFlag { .. } => "unknown flag".into(),
            Self::FlagMissingValue { flag } => format!("expected --{flag}=<value>"),
            Self::FlagNotBoolean { .. } => "expected true or false".into(),
            Self::DuplicateFlag { .. } => "given a second time here".into(),
            Self::ArgumentCount { expected, .. } => {
                let what = expected.split('.').next().unwrap_or(expected);
                let what = what.split(',').next().unwrap_or(what);
                format!("expected {what}")
            }
            Self::BlankName { .. } => "expected a name before =".into(),
            Self::FromArguments => "expected FROM <image> [AS <name>]".into(),
            Self::InvalidStageName { .. } => "not a valid stage name".into(),
            Self::DuplicateStageName { .. } => "already the name of an earlier stage".into(),
            Self::NoStage => "before any FROM".into(),
            Self::OnbuildChaining | Self::OnbuildTrigger { .. } => "not allowed here".into(),
            Self::HeredocNotAllowed { .. } => "expected a path".into(),
            Self::NotJson { .. } => "expected a JSON array".into(),
            Self::EmptyVolume => "expected a path".into(),
            Self::HealthcheckNoneArguments => "expected nothing after NONE".into(),
            Self::HealthcheckMissingCommand => "expected a command after CMD".into(),
            Self::HealthcheckType { .. } => "expected CMD or NONE".into(),
            Self::InvalidDuration { .. } => "expected a duration such as 30s or 1m30s".into(),
            Self::DurationTooShort { .. } => "expected 1ms or more".into(),
            Self::InvalidRetries { .. } | Self::NegativeRetries { .. } => {
                "expected a whole number of 0 or more".into()
            }
            Self::InvalidNetwork { .. } => "expected default, none or host".into(),
            Self::InvalidSecurity { .. } => "expected sandbox or insecure".into(),
            Self::InvalidMount { .. } => "in this mount".into(),
            Self::NoInstructions | Self::NoStages => return None,
        })
    }

    /// A help line saying what is accepted, where the message does not say it already.
    pub(crate) fn expected(&self) -> Option<String> {
        Some(match self {
            Self::UnknownInstruction { .. } => format!(
                "expected one of {}",
                crate::instructions::INSTRUCTION_NAMES.join(", ")
            ),
            Self::NoStage => {
                "a Dockerfile starts with FROM; only ARG and parser directives may come before it"
                    .into()
            }
            Self::NoStages => "expected at least one FROM".into(),
            Self::NoInstructions => "expected at least one instruction, starting with FROM".into(),
            Self::UnterminatedHeredoc => {
                "expected a line holding just the delimiter before the end of the file".into()
            }
            Self::InvalidStageName { .. } => "a stage name is a letter, then letters, digits, \
                '-', '_' or '.'"
                .into(),
            Self::MissingValue { instruction } => {
                format!("expected {instruction} <name>=<value> or {instruction} <name> <value>")
            }
            Self::NotJson { instruction } => {
                format!("expected {instruction} [\"executable\", \"parameter\", ...]")
            }
            _ => return None,
        })
    }
}
