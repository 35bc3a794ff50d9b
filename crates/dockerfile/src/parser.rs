//! From bytes to instruction records, exactly as BuildKit's `parser` package reads them:
//! directives, comments, line continuation, heredoc bodies, flags and argument shapes.
//!
//! The rules are subtle (a blank line does not end a continuation, three trailing
//! backslashes do not continue a line, flags lose their quotes while ENV words keep them) and
//! they decide what a Dockerfile means, so the parser is hand-written against BuildKit's
//! conformance corpus rather than taken from a generic grammar crate.

use std::ops::Range;

use crate::error::{ErrorKind, Focus, ParseError, Span, Warning};
use crate::expand::{EmptyEnv, Expander};
use crate::json::{JsonForm, parse_json_array};
use crate::layout::{Layout, Piece, Subject};
use crate::text::{
    go_is_space, go_quote, go_to_lower, split_on_split_space, split_once_on_split_space, trim_space,
};

/// BuildKit's scanner refuses physical lines longer than this (not counting the newline).
const MAX_LINE: usize = 65_535;

/// One instruction word with its flags and arguments, as the parser leaves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The keyword as written (`Run`, `COPY`, …); compare it case-insensitively.
    pub keyword: String,
    /// The `--name=value` words before the arguments, with quotes and escapes removed.
    pub flags: Vec<String>,
    /// The arguments, shaped per instruction (see BuildKit's `line_parsers.go`).
    pub args: Vec<String>,
    /// Whether the arguments came from a JSON array (exec form).
    pub json: bool,
}

impl Command {
    /// The keyword lowercased the way BuildKit compares it.
    pub fn name(&self) -> String {
        go_to_lower(&self.keyword)
    }
}

/// A heredoc attached to an instruction: `<<EOF` and the lines up to `EOF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with its quotes removed; also the file name for COPY/ADD.
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`), 0 if none.
    pub fd: u64,
    /// False when any part of the delimiter was quoted: the body is then used verbatim.
    pub expand: bool,
    /// True for `<<-`: leading tabs are removed from the body's lines when it is used.
    pub chomp: bool,
    /// The body as written, unchomped, with its line terminators.
    pub content: String,
}

impl Heredoc {
    /// The body as it is used: with leading tabs removed from every line for `<<-`.
    pub fn chomped_content(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// BuildKit's `ChompHeredocContent`: removes the tabs that start each line.
pub fn chomp_heredoc_content(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// One logical line of a Dockerfile and what the parser made of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The lines it covers.
    pub span: Span,
    /// The logical line: continuation lines joined, comments inside it dropped.
    pub original: String,
    /// The instruction.
    pub command: Command,
    /// For `ONBUILD`: the trigger instruction, then (for `ONBUILD ONBUILD …`) its trigger,
    /// and so on. Empty otherwise.
    pub nested: Vec<Command>,
    /// Heredoc bodies, in the order their words appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// Comment lines directly above the instruction (BuildKit's `PrevComment`), used for
    /// stage and ARG descriptions.
    pub comments: Vec<String>,
    /// Where the keyword, flags and arguments are in the file (see [`Record::focus`]).
    pub layout: Layout,
}

/// A parser directive at the top of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// `syntax`, `escape` or `check`, lowercased.
    pub name: String,
    /// The value as written.
    pub value: String,
    /// Its line.
    pub line: usize,
}

/// The parsed file: instruction records, warnings and directives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ast {
    /// The instructions in file order; never empty.
    pub records: Vec<Record>,
    /// Warnings such as empty continuation lines.
    pub warnings: Vec<Warning>,
    /// The escape character in force (`\` unless `# escape=` changed it).
    pub escape: char,
    /// The parser directives found at the top of the file.
    pub directives: Vec<Directive>,
}

impl Ast {
    /// From the first instruction's first line to the last instruction's last line.
    pub fn span(&self) -> Span {
        let start = self.records.first().map_or(0, |r| r.span.start);
        let end = self.records.last().map_or(0, |r| r.span.end);
        Span::new(start, end)
    }

    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// Parses a Dockerfile. Warnings are returned in the AST; errors name the line.
pub fn parse(input: &[u8]) -> Result<Ast, ParseError> {
    Parser::new(input).run()
}

/// Physical lines with their terminators, counted from 1, stopping (like Go's
/// `bufio.Scanner`) at the first line that is too long.
struct PhysicalLines<'a> {
    rest: &'a [u8],
    number: usize,
    too_long_at: Option<usize>,
}

impl<'a> PhysicalLines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            rest: input
                .strip_prefix(b"\xEF\xBB\xBF".as_slice())
                .unwrap_or(input),
            number: 0,
            too_long_at: None,
        }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() || self.too_long_at.is_some() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
            Some(newline) => self.rest.split_at(newline + 1),
            None => (self.rest, &[][..]),
        };
        let content_len = line.len() - usize::from(line.ends_with(b"\n"));
        if content_len > MAX_LINE {
            self.too_long_at = Some(self.number + 1);
            return None;
        }
        self.rest = rest;
        self.number += 1;
        Some(line)
    }
}

/// Removes every trailing `\r` and `\n`.
fn trim_newline(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// Removes leading Unicode whitespace, decoding UTF-8 as Go does (an invalid byte stops it).
fn trim_leading_whitespace(line: &[u8]) -> &[u8] {
    let mut rest = line;
    loop {
        let decoded = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
            Ok(s) => s.chars().next(),
            Err(error) => std::str::from_utf8(&rest[..error.valid_up_to()])
                .ok()
                .and_then(|s| s.chars().next()),
        };
        match decoded {
            Some(c) if go_is_space(c) => rest = &rest[c.len_utf8()..],
            _ => return rest,
        }
    }
}

fn is_comment(line: &[u8]) -> bool {
    trim_leading_whitespace(trim_newline(line)).first() == Some(&b'#')
}

/// Strips a line-continuation escape if the line ends with one (after spaces and tabs) that
/// is not itself escaped. Returns the remaining text and whether the logical line ended.
fn trim_continuation(line: &[u8], escape: u8) -> (&[u8], bool) {
    let end = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    if end == 0 || line[end - 1] != escape {
        return (line, true);
    }
    if end >= 2 && line[end - 2] == escape {
        return (line, true);
    }
    (&line[..end - 1], false)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The directive state machine: only lines at the very top can be directives.
struct Directives {
    done: bool,
    found: Vec<Directive>,
    escape: u8,
}

/// Go's `\s` in BuildKit's directive regex: ASCII `[\t\n\f\r ]`.
fn is_regex_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` and returns name and value.
fn match_directive(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut rest = line.strip_prefix(b"#")?;
    let skip_space = |s: &[u8]| -> usize { s.iter().take_while(|&&b| is_regex_space(b)).count() };
    rest = &rest[skip_space(rest)..];
    if !rest.first()?.is_ascii_alphabetic() {
        return None;
    }
    let name_len = rest
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let name = &rest[..name_len];
    rest = &rest[name_len..];
    rest = &rest[skip_space(rest)..];
    rest = rest.strip_prefix(b"=")?;
    if rest.is_empty() {
        return None;
    }
    // The lazy value needs one character, so an all-blank rest leaves its last blank.
    let leading = skip_space(rest).min(rest.len() - 1);
    let region = &rest[leading..];
    let trailing = region
        .iter()
        .rev()
        .take_while(|&&b| is_regex_space(b))
        .count();
    let value = if trailing == region.len() {
        &region[..1]
    } else {
        &region[..region.len() - trailing]
    };
    Some((name, value))
}

impl Directives {
    /// Checks a first line (newline and leading blanks already removed). Returns whether it
    /// was a directive.
    /// `column` is where `line` starts on its physical line.
    fn check(&mut self, line: &[u8], number: usize, column: usize) -> Result<bool, ParseError> {
        if self.done {
            return Ok(false);
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(false);
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        let at = column + offset_in(line, value);
        let byte = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
        let span = Span::line(number).with_focus(Some(Focus {
            line: number,
            start: byte(at),
            end: byte(at + value.len()),
        }));
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseError::new(
                span,
                ErrorKind::DuplicateDirective { name },
            ));
        }
        let value = lossy(value);
        if name == "escape" {
            self.escape = match value.as_str() {
                "`" => b'`',
                "\\" => b'\\',
                _ => {
                    return Err(ParseError::new(
                        span,
                        ErrorKind::InvalidEscapeToken { value },
                    ));
                }
            };
        }
        self.found.push(Directive {
            name,
            value,
            line: number,
        });
        Ok(true)
    }
}

struct Parser<'a> {
    lines: PhysicalLines<'a>,
    directives: Directives,
    records: Vec<Record>,
    warnings: Vec<Warning>,
    comments: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            lines: PhysicalLines::new(input),
            directives: Directives {
                done: false,
                found: Vec::new(),
                escape: b'\\',
            },
            records: Vec::new(),
            warnings: Vec::new(),
            comments: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Ast, ParseError> {
        while let Some(first) = self.lines.next_line() {
            self.logical_line(first)?;
        }
        if self.records.is_empty() {
            let line = self.lines.too_long_at.unwrap_or(self.lines.number).max(1);
            let kind = if self.lines.too_long_at.is_some() && self.lines.number == 0 {
                ErrorKind::LineTooLong
            } else {
                ErrorKind::NoInstructions
            };
            return Err(ParseError::new(Span::line(line), kind));
        }
        if let Some(line) = self.lines.too_long_at {
            return Err(ParseError::new(Span::line(line), ErrorKind::LineTooLong));
        }
        Ok(Ast {
            records: self.records,
            warnings: self.warnings,
            escape: char::from(self.directives.escape),
            directives: self.directives.found,
        })
    }

    /// Reads one logical line starting at `first` and, if it is an instruction, records it.
    fn logical_line(&mut self, first: &'a [u8]) -> Result<(), ParseError> {
        let number = self.lines.number;
        self.collect_comment(first);
        let content_line = trim_newline(first);
        let trimmed = trim_leading_whitespace(content_line);
        let column = content_line.len() - trimmed.len();
        if self.directives.check(trimmed, number, column)? {
            // A directive is not a description of the next instruction.
            self.comments.pop();
        }
        let escape = self.directives.escape;
        let content: &[u8] = if trimmed.first() == Some(&b'#') {
            &[]
        } else {
            trimmed
        };
        let (piece, mut ended) = trim_continuation(content, escape);
        if ended && piece.is_empty() {
            return Ok(());
        }
        let mut pieces = vec![Piece {
            offset: 0,
            line: number,
            column,
            len: piece.len(),
        }];
        let mut logical = piece.to_vec();
        let mut empty_continuation = false;
        while !ended {
            let Some(next) = self.lines.next_line() else {
                break;
            };
            if is_comment(next) {
                continue;
            }
            let next = trim_newline(next);
            if trim_leading_whitespace(next).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, end) = trim_continuation(next, escape);
            pieces.push(Piece {
                offset: logical.len(),
                line: self.lines.number,
                column: 0,
                len: piece.len(),
            });
            logical.extend_from_slice(piece);
            ended = end;
        }
        let line = lossy(&logical);
        if empty_continuation {
            self.warnings.push(Warning {
                span: Span::line(self.lines.number),
                message: format!("Empty continuation line found in: {line}"),
            });
        }
        let escape = char::from(escape);
        let (parts, parsed) = parse_line(&line, escape);
        let layout = Layout::new(parts.keyword, parts.flags, parts.rest, pieces);
        let span = Span::new(number, self.lines.number);
        let (command, nested) = parsed.map_err(|kind| error_in(span, kind, &layout, &line))?;
        let mut heredocs = Vec::new();
        if can_contain_heredoc(&command, &nested) && line.contains("<<") {
            let found =
                heredocs_from_line(&line).map_err(|kind| error_in(span, kind, &layout, &line))?;
            for mut heredoc in found {
                heredoc.content = self.heredoc_body(&heredoc, number).map_err(|error| {
                    // Point at the marker on the instruction line, not at the end of the file.
                    let marker = layout
                        .range_of(Subject::Heredoc, &line, &[])
                        .and_then(|range| layout.focus(range));
                    ParseError {
                        span: error.span.map(|s| s.with_focus(marker)),
                        ..error
                    }
                })?;
                heredocs.push(heredoc);
            }
        }
        self.records.push(Record {
            span: Span::new(number, self.lines.number),
            original: line,
            command,
            nested,
            heredocs,
            comments: std::mem::take(&mut self.comments),
            layout,
        });
        Ok(())
    }

    /// BuildKit keeps comment lines above an instruction; an empty comment resets them.
    fn collect_comment(&mut self, first: &[u8]) {
        if !is_comment(first) {
            return;
        }
        // BuildKit drops the first byte, which is `#` unless the comment is indented.
        let text = lossy(first.get(1..).unwrap_or_default());
        let comment = trim_space(&text);
        if comment.is_empty() {
            self.comments.clear();
        } else {
            self.comments.push(comment.to_string());
        }
    }

    /// Reads physical lines up to the heredoc's terminator, which is consumed.
    fn heredoc_body(&mut self, heredoc: &Heredoc, start: usize) -> Result<String, ParseError> {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.lines.next_line() else {
                let span = Span::new(start, self.lines.number);
                return Err(ParseError::new(span, ErrorKind::UnterminatedHeredoc));
            };
            let mut candidate = trim_newline(line);
            if heredoc.chomp {
                let tabs = candidate.iter().take_while(|&&b| b == b'\t').count();
                candidate = &candidate[tabs..];
            }
            if candidate == heredoc.name.as_bytes() {
                return Ok(lossy(&body));
            }
            body.extend_from_slice(line);
        }
    }
}

/// Only RUN, COPY and ADD (also as an ONBUILD trigger) in shell form read heredoc bodies.
fn can_contain_heredoc(command: &Command, nested: &[Command]) -> bool {
    let mut target = command;
    if command.name() == "onbuild"
        && let Some(trigger) = nested.first()
    {
        target = trigger;
    }
    matches!(target.name().as_str(), "add" | "copy" | "run") && !target.json
}

/// Where the parts of the outer command are in the logical line.
struct Parts {
    keyword: Range<usize>,
    flags: Vec<Range<usize>>,
    rest: Range<usize>,
}

/// `newNodeFromLine`: keyword, flags and arguments, following ONBUILD triggers iteratively
/// (so a line of many `ONBUILD` words cannot exhaust the stack). The positions of the outer
/// command's parts come back even when its arguments are refused.
fn parse_line(line: &str, escape: char) -> (Parts, Result<(Command, Vec<Command>), ErrorKind>) {
    let mut commands = Vec::new();
    let mut current = line.to_string();
    let mut parts = None;
    loop {
        let split = split_command(&current, escape);
        parts.get_or_insert(Parts {
            keyword: split.keyword_range.clone(),
            flags: split.flag_ranges.clone(),
            rest: split.rest_range.clone(),
        });
        let (keyword, flags, rest) = (split.keyword, split.flags, split.rest);
        let name = go_to_lower(&keyword);
        if name == "onbuild" {
            commands.push(Command {
                keyword,
                flags,
                args: Vec::new(),
                json: false,
            });
            if rest.is_empty() {
                break;
            }
            current = rest;
            continue;
        }
        let (args, json) = match parse_args(&name, &rest, escape) {
            Ok(parsed) => parsed,
            Err(kind) => return (parts.unwrap_or_else(|| Parts::at_end(line)), Err(kind)),
        };
        commands.push(Command {
            keyword,
            flags,
            args,
            json,
        });
        break;
    }
    let parts = parts.unwrap_or_else(|| Parts::at_end(line));
    let mut commands = commands.into_iter();
    let Some(command) = commands.next() else {
        return (parts, Err(ErrorKind::NoInstructions));
    };
    (parts, Ok((command, commands.collect())))
}

impl Parts {
    fn at_end(line: &str) -> Self {
        let end = line.len();
        Self {
            keyword: end..end,
            flags: Vec::new(),
            rest: end..end,
        }
    }
}

/// An error in the record being read, pointed at the part its kind is about.
fn error_in(span: Span, kind: ErrorKind, layout: &Layout, original: &str) -> ParseError {
    let focus = kind
        .subject()
        .and_then(|subject| layout.range_of(subject, original, &[]))
        .and_then(|range| layout.focus(range));
    ParseError::new(span.with_focus(focus), kind)
}

/// Where `inner`, a subslice of `outer`, starts in it.
fn offset_in<T>(outer: &[T], inner: &[T]) -> usize {
    let offset = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    offset.min(outer.len())
}

/// A command split into its keyword, flags and the rest, with their byte ranges in the
/// string it was split from.
struct Split {
    keyword: String,
    flags: Vec<String>,
    rest: String,
    keyword_range: Range<usize>,
    flag_ranges: Vec<Range<usize>>,
    rest_range: Range<usize>,
}

/// `splitCommand`: the keyword, the flags, and the trimmed rest.
fn split_command(line: &str, escape: char) -> Split {
    let trimmed = trim_space(line);
    let base = offset_in(line.as_bytes(), trimmed.as_bytes());
    let (keyword, after) = split_once_on_split_space(trimmed);
    let keyword_range = base..base + keyword.len();
    let (rest, flags, rest_start, flag_ranges) = match after {
        Some(after) => {
            let after_start = offset_in(line.as_bytes(), after.as_bytes());
            let (rest, flags, rest_at, ranges) = extract_flags(after, escape);
            let ranges = ranges
                .into_iter()
                .map(|r| after_start + r.start..after_start + r.end)
                .collect();
            (rest, flags, after_start + rest_at, ranges)
        }
        None => (String::new(), Vec::new(), base + trimmed.len(), Vec::new()),
    };
    let rest_trimmed = trim_space(&rest);
    let lead = rest.len() - rest.trim_start_matches(crate::text::go_is_space).len();
    let rest_range = if rest_trimmed.is_empty() {
        let end = base + trimmed.len();
        end..end
    } else {
        rest_start + lead..rest_start + lead + rest_trimmed.len()
    };
    Split {
        keyword: keyword.to_string(),
        flags,
        rest: rest_trimmed.to_string(),
        keyword_range,
        flag_ranges,
        rest_range,
    }
}

/// Bytes that Go's `unicode.IsSpace(rune(b))` accepts when a byte is read as a rune.
fn is_flag_space(b: u8) -> bool {
    matches!(
        b,
        b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' ' | 0x85 | 0xA0
    )
}

/// `extractBuilderFlags`: `--name=value` words before the arguments. Works byte by byte;
/// quotes and escapes are removed, and each byte is appended as if it were a Latin-1
/// character (so non-ASCII flag values are mangled exactly as in BuildKit).
///
/// Returns the rest, the flag words, where the rest starts in `line`, and each flag word's
/// byte range in `line`.
fn extract_flags(line: &str, escape: char) -> (String, Vec<String>, usize, Vec<Range<usize>>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(u8),
    }
    let bytes = line.as_bytes();
    let escape = u8::try_from(escape).unwrap_or(b'\\');
    let mut words = Vec::new();
    let mut ranges = Vec::new();
    let mut word_start = 0;
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let at_end = pos == bytes.len();
        let b = bytes.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_flag_space(b) {
                pos += 1;
                continue;
            }
            if b != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (lossy(&bytes[pos..]), words, pos, ranges);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
                ranges.push(word_start..pos);
            }
            break;
        }
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if is_flag_space(b) {
                    if word == "--" {
                        return (lossy(&bytes[pos..]), words, pos, ranges);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                        ranges.push(word_start..pos);
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                } else if b == b'\'' || b == b'"' {
                    phase = Phase::Quote(b);
                    blank_ok = true;
                } else if b == escape {
                    if let Some(&escaped) = bytes.get(pos + 1) {
                        pos += 1;
                        word.push(char::from(escaped));
                    }
                } else {
                    word.push(char::from(b));
                }
            }
            Phase::Quote(quote) => {
                if b == quote {
                    phase = Phase::Word;
                } else if b == escape {
                    match bytes.get(pos + 1) {
                        Some(&escaped) => {
                            pos += 1;
                            word.push(char::from(escaped));
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(char::from(b));
                }
            }
        }
        pos += 1;
    }
    (String::new(), words, bytes.len(), ranges)
}

/// The per-instruction argument shapes of BuildKit's dispatch table.
fn parse_args(name: &str, rest: &str, escape: char) -> Result<(Vec<String>, bool), ErrorKind> {
    match name {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "run" | "cmd" | "entrypoint" | "shell" => parse_maybe_json(rest),
        "from" | "expose" => Ok((split_words(rest), false)),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok((non_empty(rest), false)),
        "arg" => Ok((parse_words(rest, escape), false)),
        "env" => parse_name_value(rest, "ENV", escape).map(|args| (args, false)),
        "label" => parse_name_value(rest, "LABEL", escape).map(|args| (args, false)),
        "healthcheck" => parse_healthcheck(rest),
        // Unknown instructions keep one empty argument (BuildKit's `parseIgnore`).
        _ => Ok((vec![String::new()], false)),
    }
}

fn non_empty(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

fn split_words(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_on_split_space(rest)
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    match parse_json_array(rest) {
        JsonForm::Strings(args) => Ok((args, true)),
        JsonForm::NotStringArray => Err(ErrorKind::NotStringArray),
        JsonForm::NotJson => Ok((split_words(rest), false)),
    }
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json_array(rest) {
        JsonForm::Strings(args) => Ok((args, true)),
        JsonForm::NotStringArray => Err(ErrorKind::NotStringArray),
        JsonForm::NotJson => Ok((vec![rest.to_string()], false)),
    }
}

/// `HEALTHCHECK TYPE rest`: the type up to the first blank byte, then the rest like CMD.
fn parse_healthcheck(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    let bytes = rest.as_bytes();
    let sep = bytes
        .iter()
        .position(|&b| is_flag_space(b))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = sep
        + bytes[sep..]
            .iter()
            .take_while(|&&b| is_flag_space(b))
            .count();
    let (mut cmd, json) = parse_maybe_json(&lossy(&bytes[next..]))?;
    cmd.insert(0, lossy(&bytes[..sep]));
    Ok((cmd, json))
}

/// `parseWords`: splits on Unicode whitespace, keeping quotes and escapes in the words.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut pos = 0;
    loop {
        let c = chars.get(pos).copied();
        if phase == Phase::Spaces {
            match c {
                None => break,
                Some(c) if go_is_space(c) => {
                    pos += 1;
                    continue;
                }
                Some(_) => phase = Phase::Word,
            }
        }
        let Some(mut c) = c else {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        };
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if go_is_space(c) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                }
                if c == escape {
                    let Some(&escaped) = chars.get(pos + 1) else {
                        pos += 1;
                        continue;
                    };
                    word.push(c);
                    pos += 1;
                    c = escaped;
                }
                word.push(c);
            }
            Phase::Quote(quote) => {
                if c == quote {
                    phase = Phase::Word;
                }
                if c == escape && quote != '\'' {
                    let Some(&escaped) = chars.get(pos + 1) else {
                        phase = Phase::Word;
                        pos += 1;
                        continue;
                    };
                    word.push(c);
                    pos += 1;
                    c = escaped;
                }
                word.push(c);
            }
        }
        pos += 1;
    }
    words
}

/// ENV and LABEL: the old `KEY value…` form or the `key=value …` form, as flat triples of
/// key, value and `=` (or `""` for the old form).
fn parse_name_value(
    rest: &str,
    instruction: &'static str,
    escape: char,
) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (key, value) = split_once_on_split_space(rest);
        let value = value.ok_or(ErrorKind::MissingValue { instruction })?;
        return Ok(vec![key.to_string(), value.to_string(), String::new()]);
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals {
                word: go_quote(word),
            });
        };
        args.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// `ParseHeredoc`: whether a word is a heredoc marker (`[n]<<[-]NAME`), and its details.
///
/// The delimiter is lexed twice, with quotes removed and kept, to learn whether any part of
/// it was quoted (then the body is not expanded). Both lexings always use `\` as the escape.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let rest = after.trim_start_matches(|c: char| c.is_ascii() && is_regex_space(c as u8));
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Go's ParseUint result on overflow is the maximum value; BuildKit ignores the error.
    let fd = word[..digits]
        .parse::<u64>()
        .unwrap_or(if digits == 0 { 0 } else { u64::MAX });
    let lexer = Expander::new('\\').skip_unset(true);
    let delimiter_error = |error: crate::expand::ExpandError| ErrorKind::HeredocDelimiter {
        message: error.to_string(),
    };
    let words = lexer
        .process_words(rest, &EmptyEnv)
        .map_err(delimiter_error)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw_words = lexer
        .raw_quotes(true)
        .process_words(rest, &EmptyEnv)
        .map_err(delimiter_error)?;
    if raw_words.len() != words.len() {
        return Err(ErrorKind::HeredocDelimiter {
            message: format!("internal lexing of heredoc produced inconsistent results: {rest}"),
        });
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = raw_words
        .first()
        .is_some_and(|raw| quotes(raw) == quotes(name));
    Ok(Some(Heredoc {
        name: name.clone(),
        fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

/// `heredocsFromLine`: the heredocs a whole instruction line declares. A line that does not
/// lex (an unbalanced quote) declares none.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let lexer = Expander::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset(true);
    let Ok(words) = lexer.process_words(line, &EmptyEnv) else {
        return Ok(Vec::new());
    };
    let mut heredocs = Vec::new();
    for word in words {
        if let Some(heredoc) = parse_heredoc(&word)? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// BuildKit's `result` format for one record, e.g. `(copy ["--from=a"] "x" "/y")`.
pub fn dump_record(record: &Record) -> String {
    let mut inner: Option<String> = None;
    for command in record.nested.iter().rev() {
        inner = Some(dump_command(command, inner.as_deref()));
    }
    format!("({})", dump_command(&record.command, inner.as_deref()))
}

fn dump_command(command: &Command, nested: Option<&str>) -> String {
    let mut out = go_to_lower(&command.keyword);
    if !command.flags.is_empty() {
        let flags: Vec<String> = command.flags.iter().map(|f| go_quote(f)).collect();
        out.push_str(" [");
        out.push_str(&flags.join(" "));
        out.push(']');
    }
    for arg in &command.args {
        out.push(' ');
        out.push_str(&go_quote(arg));
    }
    if let Some(nested) = nested {
        out.push_str(" (");
        out.push_str(nested);
        out.push(')');
    }
    trim_space(&out).to_string()
}

/// The whole file in BuildKit's `result` format, byte for byte as the corpus `result` files
/// have it (one record per line, and a final newline).
pub fn dump(ast: &Ast) -> String {
    let mut out = String::new();
    for record in &ast.records {
        out.push_str(&dump_record(record));
        out.push('\n');
    }
    out
}

/// Parses `input` and returns its dump, for `strata debug parse`.
pub fn debug_parse(input: &[u8]) -> Result<String, ParseError> {
    parse(input).map(|ast| dump(&ast))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_of(input: &str) -> String {
        match debug_parse(input.as_bytes()) {
            Ok(dump) => dump,
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn flags_and_arguments() {
        assert_eq!(
            dump_of("COPY --a='x\\'y' --b=\"c d\" -- --e f\n"),
            "(copy [\"--a=x'y\" \"--b=c d\"] \"--e\" \"f\")\n"
        );
        assert_eq!(dump_of("FOO --x bar\n"), "(foo [\"--x\"] \"\")\n");
        assert_eq!(dump_of("RUN --\n"), "(run)\n");
        assert_eq!(
            dump_of("COPY --chown=é a b\n"),
            "(copy [\"--chown=Ã©\"] \"a\" \"b\")\n"
        );
    }

    #[test]
    fn onbuild_nesting() {
        assert_eq!(
            dump_of("ONBUILD --foo RUN --bar x\n"),
            "(onbuild [\"--foo\"] (run [\"--bar\"] \"x\"))\n"
        );
        assert_eq!(
            dump_of("ONBUILD ONBUILD RUN x\n"),
            "(onbuild (onbuild (run \"x\")))\n"
        );
        assert_eq!(dump_of("ONBUILD\n"), "(onbuild)\n");
        let deep = format!("{}RUN x\n", "ONBUILD ".repeat(8000));
        assert!(dump_of(&deep).starts_with("(onbuild (onbuild"));
    }

    #[test]
    fn empty_logical_line_is_an_instruction() {
        assert_eq!(dump_of("\\\n"), "(\"\")\n");
        assert_eq!(dump_of("FROM a\n\\"), "(from \"a\")\n(\"\")\n");
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(dump_of("RUN a \\\n\nRUN b\n"), "(run \"a RUN b\")\n");
        assert_eq!(
            dump_of("RUN echo \\\\\\\nRUN b\n"),
            "(run \"echo \\\\\\\\\\\\\")\n(run \"b\")\n"
        );
        assert_eq!(dump_of("RUN a \\  \t\n # c\n  b\n"), "(run \"a   b\")\n");
    }

    #[test]
    fn directives() {
        let ast = parse(b"# syntax=docker/dockerfile:1\n#escape = `\nFROM a\nRUN b `\n  c\n").ok();
        let ast = ast.as_ref();
        assert_eq!(ast.map(|a| a.escape), Some('`'));
        assert_eq!(
            ast.and_then(|a| a.directive("syntax")),
            Some("docker/dockerfile:1")
        );
        assert!(matches!(
            parse(b"# escape=x\nFROM a\n").map_err(|e| e.kind),
            Err(ErrorKind::InvalidEscapeToken { .. })
        ));
        assert!(matches!(
            parse(b"# escape=`\n# escape=`\nFROM a\n").map_err(|e| e.kind),
            Err(ErrorKind::DuplicateDirective { .. })
        ));
        assert!(matches!(
            parse(b"# escape= \nFROM a\n").map_err(|e| e.kind),
            Err(ErrorKind::InvalidEscapeToken { value }) if value == " "
        ));
        // An unknown directive ends the directive section.
        assert_eq!(
            parse(b"# foo=bar\n# escape=`\nFROM a\n")
                .map(|a| a.escape)
                .ok(),
            Some('\\')
        );
    }

    #[test]
    fn heredocs_are_read_raw() {
        let ast = parse(
            b"FROM a\nRUN <<EOF cat\n# not a comment\n  x\nEOF\nRUN <<-'X'\n\tbody $v\n\tX\n",
        )
        .ok();
        let records = ast.map(|a| a.records).unwrap_or_default();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].heredocs[0].content, "# not a comment\n  x\n");
        assert_eq!(records[1].span, Span::new(2, 5));
        assert_eq!(records[2].heredocs[0].chomped_content(), "body $v\n");
        assert!(!records[2].heredocs[0].expand);
        assert!(matches!(
            parse(b"FROM a\nRUN <<EOF\nx\n").map_err(|e| e.kind),
            Err(ErrorKind::UnterminatedHeredoc)
        ));
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse(b"FROM a\n\nENV PATH\n").err();
        assert_eq!(
            error.as_ref().map(ToString::to_string).as_deref(),
            Some("line 3: ENV must have two arguments")
        );
        assert_eq!(
            parse(b"\n# only\n").err().map(|e| e.kind),
            Some(ErrorKind::NoInstructions)
        );
    }

    #[test]
    fn long_lines_are_refused() {
        let mut input = b"FROM a\nRUN ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 70_000));
        input.push(b'\n');
        let error = parse(&input).err();
        assert_eq!(
            error.as_ref().map(|e| &e.kind),
            Some(&ErrorKind::LineTooLong)
        );
        assert_eq!(error.and_then(|e| e.line()), Some(2));
    }
}
