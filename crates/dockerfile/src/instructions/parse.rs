//! From parser records to typed instructions (BuildKit's `instructions/parse.go`).

use crate::error::{ErrorKind, ParseError, Warning};
use crate::layout::Subject;
use crate::parser::{Ast, Heredoc, Record, parse_heredoc};
use crate::text::{go_to_lower, go_to_upper, trim_space};

use super::flags::Flags;
use super::mount::MountSpec;
use super::values::{parse_i32, parse_interval};
use super::{
    AddInstruction, ArgDeclaration, ArgInstruction, CommandLine, CopyInstruction, Dockerfile,
    FromInstruction, Healthcheck, HealthcheckCommand, InlineFile, Instruction, KeyValue,
    NetworkMode, OnbuildInstruction, RunInstruction, SecurityMode, SourceContent, SourcesAndDest,
    Spanned, Stage,
};

/// The instruction names, for "did you mean" hints.
const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// What one record offers the per-instruction parsers (BuildKit's `parseRequest`).
struct Request<'a> {
    record: &'a Record,
    args: Vec<String>,
    json: bool,
    flags: Flags<'a>,
    notes: Vec<String>,
}

impl<'a> Request<'a> {
    fn new(record: &'a Record) -> Self {
        // BuildKit flattens an ONBUILD trigger into the arguments: keyword, then its args.
        let mut args = record.command.args.clone();
        for nested in &record.nested {
            args.push(nested.keyword.clone());
            args.extend(nested.args.iter().cloned());
        }
        Self {
            record,
            args,
            json: record.command.json,
            flags: Flags::new(&record.command.flags),
            notes: Vec::new(),
        }
    }

    fn heredocs(&self) -> &'a [Heredoc] {
        &self.record.heredocs
    }

    fn single_arg(&self, instruction: &'static str) -> Result<String, ErrorKind> {
        match self.args.as_slice() {
            [arg] => Ok(arg.clone()),
            _ => Err(ErrorKind::ArgumentCount {
                instruction,
                expected: "exactly one argument",
            }),
        }
    }

    fn require_some(&self, instruction: &'static str) -> Result<(), ErrorKind> {
        if self.args.is_empty() {
            return Err(ErrorKind::ArgumentCount {
                instruction,
                expected: "at least one argument",
            });
        }
        Ok(())
    }

    /// BuildKit never parses the flags of some instructions, so it silently ignores them;
    /// we accept them too, but say so.
    fn note_ignored_flags(&mut self, instruction: &str) {
        if self.flags.given() {
            self.notes.push(format!(
                "flags on {instruction} are ignored: {}",
                self.record.command.flags.join(" ")
            ));
        }
    }

    /// `handleJSONArgs`: exec form as is, shell form as one string.
    fn command_line(&self) -> CommandLine {
        let args = if self.json || self.args.is_empty() {
            self.args.clone()
        } else {
            vec![self.args.join(" ")]
        };
        CommandLine {
            args,
            shell_form: !self.json,
        }
    }
}

/// Parses one record into an instruction.
pub fn parse_instruction(record: &Record) -> Result<Instruction, ParseError> {
    parse_record(record).map(|(instruction, _)| instruction)
}

fn parse_record(record: &Record) -> Result<(Instruction, Vec<String>), ParseError> {
    let mut request = Request::new(record);
    match dispatch(&mut request) {
        Ok(instruction) => Ok((instruction, request.notes)),
        Err(kind) => Err(request_error(&request, kind)),
    }
}

/// An error in `req`'s instruction, pointed at the word at fault and saying what the
/// instruction accepts where the kind alone cannot.
fn request_error(req: &Request<'_>, kind: ErrorKind) -> ParseError {
    let record = req.record;
    let flag_error = matches!(
        kind,
        ErrorKind::UnknownFlag { .. }
            | ErrorKind::FlagMissingValue { .. }
            | ErrorKind::FlagNotBoolean { .. }
            | ErrorKind::DuplicateFlag { .. }
    );
    let subject = match (&kind, req.flags.failed()) {
        (_, Some(index)) if flag_error => Some(Subject::FlagAt(index)),
        (ErrorKind::InvalidDuration { .. }, _) => DURATION_FLAGS
            .into_iter()
            .find(|flag| duration_flag(req, flag).is_err())
            .map(Subject::Flag),
        (ErrorKind::InvalidMount { .. }, _) => {
            let failed = record.command.flags.iter().position(|word| {
                word.strip_prefix("--mount=")
                    .is_some_and(|raw| MountSpec::parse(raw).is_err())
            });
            Some(failed.map_or(Subject::Flag("mount"), Subject::FlagAt))
        }
        _ => kind.subject(),
    };
    let focus = subject.and_then(|subject| record.focus(subject));
    let help = match &kind {
        ErrorKind::FlagMissingValue { flag }
            if req.flags.failed().is_some_and(|i| {
                record
                    .command
                    .flags
                    .get(i)
                    .is_some_and(|word| word.ends_with('='))
            }) =>
        {
            Some(format!(
                "--{flag} is true or false: --{flag}, --{flag}=true or --{flag}=false"
            ))
        }
        ErrorKind::UnknownFlag { .. } => {
            let instruction = go_to_upper(&record.command.keyword);
            let names = req.flags.names();
            Some(if names.is_empty() {
                format!("{instruction} takes no flags")
            } else {
                format!("{instruction} takes {}", names.join(", "))
            })
        }
        _ => None,
    };
    ParseError {
        span: Some(record.span.with_focus(focus)),
        kind,
        help,
    }
}

/// The duration flags of HEALTHCHECK, in the order they are checked.
const DURATION_FLAGS: [&str; 4] = ["interval", "timeout", "start-period", "start-interval"];

fn dispatch(req: &mut Request<'_>) -> Result<Instruction, ErrorKind> {
    let name = go_to_lower(&req.record.command.keyword);
    Ok(match name.as_str() {
        "env" => Instruction::Env(parse_key_values(req, "ENV")?),
        "maintainer" => {
            let maintainer = req.single_arg("MAINTAINER")?;
            req.flags.parse()?;
            Instruction::Maintainer(maintainer)
        }
        "label" => Instruction::Label(parse_key_values(req, "LABEL")?),
        "add" => Instruction::Add(parse_add(req)?),
        "copy" => Instruction::Copy(parse_copy(req)?),
        "from" => Instruction::From(parse_from(req)?),
        "onbuild" => Instruction::Onbuild(parse_onbuild(req)?),
        "workdir" => {
            let path = req.single_arg("WORKDIR")?;
            req.flags.parse()?;
            Instruction::Workdir(path)
        }
        "run" => Instruction::Run(parse_run(req)?),
        "cmd" => {
            req.flags.parse()?;
            Instruction::Cmd(req.command_line())
        }
        "entrypoint" => {
            req.flags.parse()?;
            Instruction::Entrypoint(req.command_line())
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(req)?),
        "expose" => {
            req.require_some("EXPOSE")?;
            req.flags.parse()?;
            let mut ports = req.args.clone();
            ports.sort();
            Instruction::Expose(ports)
        }
        "user" => {
            let user = req.single_arg("USER")?;
            req.flags.parse()?;
            Instruction::User(user)
        }
        "volume" => Instruction::Volume(parse_volume(req)?),
        "stopsignal" => {
            let signal = req.single_arg("STOPSIGNAL")?;
            req.note_ignored_flags("STOPSIGNAL");
            Instruction::Stopsignal(signal)
        }
        "arg" => Instruction::Arg(parse_arg(req)?),
        "shell" => Instruction::Shell(parse_shell(req)?),
        _ => {
            let keyword = req.record.command.keyword.clone();
            let suggestion = crate::text::suggest(&keyword, INSTRUCTIONS, false);
            return Err(ErrorKind::UnknownInstruction {
                keyword,
                suggestion,
            });
        }
    })
}

/// ENV and LABEL: the parser's flat triples (key, value, delimiter).
fn parse_key_values(
    req: &mut Request<'_>,
    instruction: &'static str,
) -> Result<Vec<KeyValue>, ErrorKind> {
    req.flags.parse()?;
    req.require_some(instruction)?;
    let mut pairs = Vec::new();
    for triple in req.args.chunks(3) {
        let [key, value, delimiter] = triple else {
            return Err(ErrorKind::ArgumentCount {
                instruction,
                expected: "key value pairs",
            });
        };
        if key.is_empty() {
            return Err(ErrorKind::BlankName { instruction });
        }
        pairs.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
            no_delimiter: delimiter.is_empty(),
        });
    }
    Ok(pairs)
}

fn parse_from(req: &mut Request<'_>) -> Result<FromInstruction, ErrorKind> {
    let name = stage_name(&req.args)?;
    req.flags.string("platform", "");
    req.flags.parse()?;
    let base = req.args.first().cloned().unwrap_or_default();
    Ok(FromInstruction {
        base,
        name,
        platform: req.flags.value("platform"),
    })
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// `parseBuildStageName`: `image` or `image AS name`.
fn stage_name(args: &[String]) -> Result<Option<String>, ErrorKind> {
    match args {
        [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
            let lower = go_to_lower(name);
            if !is_valid_stage_name(&lower) {
                return Err(ErrorKind::InvalidStageName { name: name.clone() });
            }
            Ok(Some(lower))
        }
        [_] => Ok(None),
        _ => Err(ErrorKind::FromArguments),
    }
}

/// `parseSourcesAndDest`: heredoc sources become inline files; a heredoc destination is an
/// error.
fn sources_and_dest(
    req: &Request<'_>,
    instruction: &'static str,
) -> Result<SourcesAndDest, ErrorKind> {
    let (dest, sources) = req.args.split_last().ok_or(ErrorKind::ArgumentCount {
        instruction,
        expected: "at least two arguments, but only one was provided. Destination could not be determined.",
    })?;
    if matches!(parse_heredoc(dest), Ok(Some(_))) {
        return Err(ErrorKind::HeredocNotAllowed {
            instruction,
            position: "a destination",
        });
    }
    let mut paths = Vec::new();
    let mut contents = Vec::new();
    for source in sources {
        match parse_heredoc(source) {
            Ok(Some(heredoc)) => {
                // The last body with that name wins, and a missing body is empty, as in BuildKit.
                let body = req
                    .heredocs()
                    .iter()
                    .rev()
                    .find(|h| h.name == heredoc.name)
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                let data = if heredoc.chomp {
                    crate::parser::chomp_heredoc_content(&body)
                } else {
                    body
                };
                contents.push(SourceContent {
                    path: heredoc.name,
                    data,
                    expand: heredoc.expand,
                });
            }
            _ => paths.push(source.clone()),
        }
    }
    Ok(SourcesAndDest {
        dest: dest.clone(),
        sources: paths,
        contents,
    })
}

fn require_destination(req: &Request<'_>, instruction: &'static str) -> Result<(), ErrorKind> {
    if req.args.len() < 2 {
        return Err(ErrorKind::ArgumentCount {
            instruction,
            expected: "at least two arguments, but only one was provided. Destination could not be determined.",
        });
    }
    Ok(())
}

fn parse_add(req: &mut Request<'_>) -> Result<AddInstruction, ErrorKind> {
    require_destination(req, "ADD")?;
    req.flags.strings("exclude");
    req.flags.string("chown", "");
    req.flags.string("chmod", "");
    req.flags.boolean("link");
    req.flags.boolean("keep-git-dir");
    req.flags.string("checksum", "");
    req.flags.boolean("unpack");
    req.flags.parse()?;
    let files = sources_and_dest(req, "ADD")?;
    Ok(AddInstruction {
        files,
        chown: req.flags.value("chown"),
        chmod: req.flags.value("chmod"),
        link: req.flags.is_true("link"),
        keep_git_dir: req.flags.is_true("keep-git-dir"),
        checksum: req.flags.value("checksum"),
        unpack: req
            .flags
            .is_used("unpack")
            .then(|| req.flags.is_true("unpack")),
        excludes: req.flags.values("exclude"),
    })
}

fn parse_copy(req: &mut Request<'_>) -> Result<CopyInstruction, ErrorKind> {
    require_destination(req, "COPY")?;
    req.flags.strings("exclude");
    req.flags.boolean("parents");
    req.flags.string("chown", "");
    req.flags.string("from", "");
    req.flags.string("chmod", "");
    req.flags.boolean("link");
    req.flags.parse()?;
    let files = sources_and_dest(req, "COPY")?;
    Ok(CopyInstruction {
        files,
        from: req.flags.value("from"),
        chown: req.flags.value("chown"),
        chmod: req.flags.value("chmod"),
        link: req.flags.is_true("link"),
        parents: req.flags.is_true("parents"),
        excludes: req.flags.values("exclude"),
    })
}

/// Removes `(?i)^\s*ONBUILD\s*` (Go's ASCII `\s`) from the original line.
fn strip_onbuild(original: &str) -> &str {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = original.trim_start_matches(is_space);
    match rest.get(..7) {
        Some(word) if word.eq_ignore_ascii_case("onbuild") => {
            rest[7..].trim_start_matches(is_space)
        }
        _ => original,
    }
}

fn parse_onbuild(req: &mut Request<'_>) -> Result<OnbuildInstruction, ErrorKind> {
    req.require_some("ONBUILD")?;
    req.flags.parse()?;
    let trigger = go_to_upper(trim_space(
        req.args.first().map(String::as_str).unwrap_or_default(),
    ));
    match trigger.as_str() {
        "ONBUILD" => return Err(ErrorKind::OnbuildChaining),
        "MAINTAINER" | "FROM" => return Err(ErrorKind::OnbuildTrigger { trigger }),
        _ => {}
    }
    let mut expression = strip_onbuild(&req.record.original).to_string();
    for heredoc in req.heredocs() {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    Ok(OnbuildInstruction {
        expression,
        trigger,
    })
}

fn parse_run(req: &mut Request<'_>) -> Result<RunInstruction, ErrorKind> {
    req.flags.strings("mount");
    req.flags.string("network", "default");
    req.flags.string("security", "sandbox");
    req.flags.parse()?;
    let flags_used = req.flags.used();
    let files = req
        .heredocs()
        .iter()
        .map(|heredoc| InlineFile {
            name: heredoc.name.clone(),
            data: heredoc.content.clone(),
            chomp: heredoc.chomp,
        })
        .collect();
    let command = req.command_line();
    let mounts = req
        .flags
        .values("mount")
        .iter()
        .map(|raw| MountSpec::parse(raw))
        .collect::<Result<Vec<_>, _>>()?;
    // BuildKit checks these flags as written, before any expansion.
    let network = match req.flags.value_or_default("network").as_str() {
        "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => {
            return Err(ErrorKind::InvalidNetwork {
                value: other.to_string(),
            });
        }
    };
    let security = match req.flags.value_or_default("security").as_str() {
        "sandbox" => SecurityMode::Sandbox,
        "insecure" => SecurityMode::Insecure,
        other => {
            return Err(ErrorKind::InvalidSecurity {
                value: other.to_string(),
            });
        }
    };
    Ok(RunInstruction {
        command,
        files,
        mounts,
        network,
        security,
        flags_used,
    })
}

fn duration_flag(
    req: &Request<'_>,
    flag: &'static str,
) -> Result<Option<std::time::Duration>, ErrorKind> {
    let value = req.flags.value(flag);
    parse_interval(value.as_deref()).map_err(|error| match error {
        Some(message) => ErrorKind::InvalidDuration { message },
        None => ErrorKind::DurationTooShort { flag },
    })
}

fn parse_healthcheck(req: &mut Request<'_>) -> Result<Healthcheck, ErrorKind> {
    req.require_some("HEALTHCHECK")?;
    let kind = go_to_upper(req.args.first().map(String::as_str).unwrap_or_default());
    let rest = req.args.get(1..).unwrap_or_default().to_vec();
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(ErrorKind::HealthcheckNoneArguments);
        }
        // BuildKit does not look at the flags of HEALTHCHECK NONE.
        return Ok(Healthcheck::None);
    }
    for flag in [
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ] {
        req.flags.string(flag, "");
    }
    req.flags.parse()?;
    if kind != "CMD" {
        return Err(ErrorKind::HealthcheckType { kind });
    }
    let command = if req.json || rest.is_empty() {
        rest
    } else {
        vec![rest.join(" ")]
    };
    if command.is_empty() {
        return Err(ErrorKind::HealthcheckMissingCommand);
    }
    let mut test = vec![if req.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(command);
    let [interval, timeout, start_period, start_interval] = DURATION_FLAGS;
    let interval = duration_flag(req, interval)?;
    let timeout = duration_flag(req, timeout)?;
    let start_period = duration_flag(req, start_period)?;
    let start_interval = duration_flag(req, start_interval)?;
    let retries = match req.flags.value("retries") {
        None => 0,
        Some(value) => {
            let parsed = parse_i32(&value).map_err(|reason| ErrorKind::InvalidRetries {
                value: value.clone(),
                reason,
            })?;
            u32::try_from(parsed).map_err(|_| ErrorKind::NegativeRetries { value: parsed })?
        }
    };
    Ok(Healthcheck::Check(HealthcheckCommand {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

fn parse_volume(req: &mut Request<'_>) -> Result<Vec<String>, ErrorKind> {
    req.require_some("VOLUME")?;
    req.flags.parse()?;
    req.args
        .iter()
        .map(|v| {
            let v = trim_space(v);
            if v.is_empty() {
                Err(ErrorKind::EmptyVolume)
            } else {
                Ok(v.to_string())
            }
        })
        .collect()
}

/// BuildKit's `getComment`: the text after `<name> ` on a comment line above.
fn description(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}

fn parse_arg(req: &mut Request<'_>) -> Result<ArgInstruction, ErrorKind> {
    req.require_some("ARG")?;
    req.note_ignored_flags("ARG");
    let mut args = Vec::with_capacity(req.args.len());
    for word in &req.args {
        let (name, default) = match word.split_once('=') {
            Some(("", _)) => return Err(ErrorKind::BlankName { instruction: "ARG" }),
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (word.clone(), None),
        };
        let comment = description(&req.record.comments, &name);
        args.push(ArgDeclaration {
            name,
            default,
            comment,
        });
    }
    Ok(ArgInstruction { args })
}

fn parse_shell(req: &mut Request<'_>) -> Result<Vec<String>, ErrorKind> {
    req.flags.parse()?;
    let command = req.command_line();
    if command.args.is_empty() {
        return Err(ErrorKind::ArgumentCount {
            instruction: "SHELL",
            expected: "at least one argument",
        });
    }
    if !req.json {
        return Err(ErrorKind::NotJson {
            instruction: "SHELL",
        });
    }
    Ok(command.args)
}

fn spanned<T>(record: &Record, value: T) -> Spanned<T> {
    Spanned {
        span: record.span,
        source: record.original.clone(),
        value,
    }
}

/// Groups the records into global ARGs and stages, as BuildKit's `instructions.Parse`.
pub(super) fn dockerfile_from_ast(ast: &Ast) -> Result<Dockerfile, ParseError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut warnings = ast.warnings.clone();
    if let Some(syntax) = ast.directives.iter().find(|d| d.name == "syntax") {
        warnings.push(Warning {
            span: crate::error::Span::line(syntax.line),
            message: format!(
                "the syntax directive ({}) is ignored: strata always uses its built-in Dockerfile frontend",
                syntax.value
            ),
        });
    }
    for record in &ast.records {
        let (instruction, notes) = parse_record(record)?;
        warnings.extend(notes.into_iter().map(|message| Warning {
            span: record.span,
            message,
        }));
        match instruction {
            Instruction::Arg(arg) if stages.is_empty() => meta_args.push(spanned(record, arg)),
            Instruction::From(from) => {
                if let Some(name) = &from.name
                    && stages.iter().any(|s| s.name() == Some(name.as_str()))
                {
                    let kind = ErrorKind::DuplicateStageName { name: name.clone() };
                    let focus = record.focus(Subject::Argument(2));
                    return Err(ParseError::new(record.span.with_focus(focus), kind));
                }
                let comment = from
                    .name
                    .as_deref()
                    .and_then(|name| description(&record.comments, name));
                stages.push(Stage {
                    from: spanned(record, from),
                    comment,
                    instructions: Vec::new(),
                });
            }
            other => {
                let Some(stage) = stages.last_mut() else {
                    let focus = record.focus(Subject::Keyword);
                    return Err(ParseError::new(
                        record.span.with_focus(focus),
                        ErrorKind::NoStage,
                    ));
                };
                stage.instructions.push(spanned(record, other));
            }
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(ast.span(), ErrorKind::NoStages));
    }
    Ok(Dockerfile {
        meta_args,
        stages,
        escape: ast.escape,
        directives: ast.directives.clone(),
        warnings,
    })
}

#[cfg(test)]
mod tests;
