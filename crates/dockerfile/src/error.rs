//! The one error type of this crate: what went wrong and on which lines.

use std::fmt;

/// A range of physical lines, 1-based and inclusive, as BuildKit reports them.
///
/// An instruction's span runs from the line its keyword is on to the last line it consumed,
/// including continuation lines, comment and blank lines inside a continuation, and heredoc
/// bodies with their terminators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First line.
    pub start: usize,
    /// Last line.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// A span of one line.
    pub fn line(line: usize) -> Self {
        Self {
            start: line,
            end: line,
        }
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
        }
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
