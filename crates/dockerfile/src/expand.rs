//! The shell-word expander: BuildKit's `shell.Lex`, which substitutes `$VAR` and `${VAR…}`,
//! removes quotes and escapes, and splits words.
//!
//! It is not a shell: there is no command substitution, globbing or arithmetic. It is written
//! by hand because its exact behaviour (which quotes survive, where a word splits, what an
//! unset variable turns into, the error for each malformed substitution) is the contract that
//! build caching and reproducibility depend on, and no crate reproduces it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use crate::text::{go_is_digit, go_is_letter, go_is_space, go_quote};

/// A set of variables the expander can look names up in.
///
/// A name that is set to the empty string is different from an unset one: `${X-a}` keeps
/// the empty value, `${X:-a}` does not.
pub trait Env {
    /// The value of `name`, or `None` if it is not set.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A list of `(name, value)` pairs; a later pair wins over an earlier one with the same name.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An environment with nothing set.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An environment whose names ignore case, as BuildKit treats them for Windows images
/// (it uppercases names when storing and when looking up).
#[derive(Clone, Debug, Default)]
pub struct CaseInsensitiveEnv {
    values: HashMap<String, String>,
}

impl CaseInsensitiveEnv {
    /// Sets `name` (any case) to `value`; a later value for the same name wins.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_uppercase(), value.to_string());
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for CaseInsensitiveEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut env = Self::default();
        for (key, value) in iter {
            env.insert(key.as_ref(), value.as_ref());
        }
        env
    }
}

impl Env for CaseInsensitiveEnv {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.values.get(&name.to_uppercase()).map(String::as_str)
    }
}

/// An expansion failed; the message is BuildKit's (`failed to process "…": reason`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {reason}", go_quote(input))]
pub struct ExpandError {
    /// The text that was being expanded.
    pub input: String,
    /// What went wrong, for example `syntax error: missing '}'` or `FOO: is not allowed to be unset`.
    pub reason: String,
}

/// Everything one expansion produces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text (`ProcessWord`).
    pub text: String,
    /// The text split into words (`ProcessWords`); quoted or escaped whitespace does not split.
    pub words: Vec<String>,
    /// Names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's shell lexer with its options.
///
/// The default options are the ones the builder uses for ENV, LABEL, COPY, WORKDIR and the
/// like: quotes and escapes are processed, unset variables expand to nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expander {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    skip_quotes: bool,
}

impl Default for Expander {
    fn default() -> Self {
        Self::new('\\')
    }
}

/// Nested `${…}` deeper than this is refused. BuildKit has no limit (Go stacks grow); a
/// limit keeps hostile input from overflowing our stack. Real Dockerfiles nest two or three.
const MAX_NESTING: usize = 200;

impl Expander {
    /// An expander with `escape` (`\` or `` ` ``) as the escape character.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (`RawQuotes`).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (`RawEscapes`).
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written (`SkipUnsetEnv`).
    pub fn skip_unset(mut self, on: bool) -> Self {
        self.skip_unset = on;
        self
    }

    /// Treat quotes as ordinary characters (`SkipProcessQuotes`), as for heredoc bodies.
    pub fn skip_quotes(mut self, on: bool) -> Self {
        self.skip_quotes = on;
        self
    }

    /// Expands `input` and reports the text, the words and which names were looked up.
    pub fn process<E: Env + ?Sized>(&self, input: &str, env: &E) -> Result<Expansion, ExpandError> {
        let mut chars: Vec<char> = input.chars().collect();
        // Go's text/scanner drops a byte-order mark at the very start of its input.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut scan = Scan {
            options: *self,
            chars,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            word_buffer: String::new(),
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match scan.scan_until(None, self.raw_escapes) {
            Ok((text, words)) => Ok(Expansion {
                text,
                words,
                matched: scan.matched,
                unmatched: scan.unmatched,
            }),
            Err(reason) => Err(ExpandError {
                input: input.to_string(),
                reason,
            }),
        }
    }

    /// `ProcessWord`: the expanded text.
    pub fn process_word<E: Env + ?Sized>(
        &self,
        input: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.process(input, env).map(|expansion| expansion.text)
    }

    /// `ProcessWords`: the expanded text split into words.
    pub fn process_words<E: Env + ?Sized>(
        &self,
        input: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(input, env).map(|expansion| expansion.words)
    }
}

/// Word splitting state of one scan level. The byte buffer of the current word is shared by
/// all levels (it lives in `Scan`), exactly as in BuildKit, where a nested `${…}` scan clears
/// the outer scan's half-built word: `abc${x:-def}` splits into `["def"]`.
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new() -> Self {
        Self {
            words: Vec::new(),
            in_word: false,
        }
    }

    fn add_char(&mut self, buffer: &mut String, c: char) {
        if go_is_space(c) {
            if self.in_word && !buffer.is_empty() {
                self.words.push(std::mem::take(buffer));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buffer, c);
        }
    }

    fn add_raw_char(&mut self, buffer: &mut String, c: char) {
        buffer.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, buffer: &mut String, s: &str) {
        for c in s.chars() {
            self.add_char(buffer, c);
        }
    }

    fn add_raw_string(&mut self, buffer: &mut String, s: &str) {
        buffer.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buffer: &mut String) -> Vec<String> {
        if !buffer.is_empty() {
            self.words.push(std::mem::take(buffer));
        }
        self.words
    }
}

struct Scan<'e, E: Env + ?Sized> {
    options: Expander,
    chars: Vec<char>,
    pos: usize,
    env: &'e E,
    /// Whether escapes are kept right now; `${v#…}`, `${v%…}` and `${v/…}` turn it on for
    /// their pattern, `${v:-…}` and friends turn it off for their word.
    raw_escapes: bool,
    word_buffer: String,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type ScanResult<T> = Result<T, String>;

impl<E: Env + ?Sized> Scan<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(value) => {
                self.matched.insert(name.to_string());
                Some(value.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// `processStopOn`: scans until `stop` (consumed) or the end of input.
    fn scan_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> ScanResult<(String, Vec<String>)> {
        if self.depth >= MAX_NESTING {
            return Err("substitutions nested too deeply".to_string());
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.scan_body(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn scan_body(&mut self, stop: Option<char>) -> ScanResult<(String, Vec<String>)> {
        let mut text = String::new();
        self.word_buffer.clear();
        let mut words = Words::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((text, words.finish(&mut self.word_buffer)));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                    words.add_string(&mut self.word_buffer, &value);
                }
                '\'' | '"' if !self.options.skip_quotes => {
                    let value = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted()?
                    };
                    text.push_str(&value);
                    words.add_raw_string(&mut self.word_buffer, &value);
                }
                '<' => {
                    let value = self.possible_heredoc();
                    text.push_str(&value);
                    words.add_raw_string(&mut self.word_buffer, &value);
                }
                _ => {
                    self.pos += 1;
                    if c == self.options.escape {
                        if self.raw_escapes {
                            words.add_raw_char(&mut self.word_buffer, c);
                            text.push(c);
                        }
                        // A trailing escape character is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(&mut self.word_buffer, escaped);
                        text.push(escaped);
                    } else {
                        words.add_char(&mut self.word_buffer, c);
                        text.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((text, words.finish(&mut self.word_buffer)))
    }

    fn single_quoted(&mut self) -> ScanResult<String> {
        let mut out = String::new();
        let open = self.next();
        if self.options.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
                }
                Some('\'') => {
                    if self.options.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> ScanResult<String> {
        let mut out = String::new();
        let open = self.next();
        if self.options.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.options.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    let mut emitted = c;
                    if c == self.options.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // The next round reports the missing closing quote.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.options.escape =>
                            {
                                self.pos += 1;
                                emitted = next;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(emitted);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay attached to the next word, so `<<  EOF` is one word.
    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        let mut out = "<<".to_string();
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// `processName`: digits (all of them), one special character, or letters, digits and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && go_is_digit(c) {
                while let Some(d) = self.peek().filter(|d| go_is_digit(*d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !go_is_letter(c) && !go_is_digit(c) && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> ScanResult<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        // Go's scanner returns EOF (-1) here, and string(-1) is U+FFFD.
        let op = self.next().unwrap_or('\u{fffd}');
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let modifier = self.next().unwrap_or('\u{fffd}');
                self.modifier(&name, modifier, true)
            }
            '+' | '-' | '?' | '#' | '%' => self.modifier(&name, op, false),
            '/' => self.replace(&name),
            _ => Err(format!("unsupported modifier ({op}) in substitution")),
        }
    }

    /// `${name op word}` and `${name:op word}`.
    fn modifier(&mut self, name: &str, op: char, null_is_unset: bool) -> ScanResult<String> {
        let op_text = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let pattern_op = op == '#' || op == '%';
        if null_is_unset && pattern_op {
            return Err(format!("unsupported modifier ({op_text}) in substitution"));
        }
        let word = match self.scan_until(Some('}'), pattern_op) {
            Ok((word, _)) => word,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".to_string()),
            Err(error) => return Err(error),
        };
        let value = self.lookup(name);
        if self.options.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{op_text}{word}}}"));
        }
        let empty_counts_as_unset = |value: &Option<String>| match value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if empty_counts_as_unset(&value) {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty_counts_as_unset(&value) {
                String::new()
            } else {
                word
            }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let (longest, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let value = value.unwrap_or_default();
                if op == '%' {
                    trim_suffix(&pattern, &value, longest)
                } else {
                    trim_prefix(&pattern, &value, longest)
                }
            }
            _ => Err(format!("unsupported modifier ({op_text}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> ScanResult<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.scan_until(Some('/'), true) {
            Ok((pattern, _)) => pattern,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_string());
            }
            Err(error) => return Err(error),
        };
        let replacement = match self.scan_until(Some('}'), true) {
            Ok((replacement, _)) => replacement,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".to_string()),
            Err(error) => return Err(error),
        };
        let value = self.lookup(name);
        if self.options.skip_unset && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value: Vec<char> = value.unwrap_or_default().chars().collect();
        let glob = Glob::compile(&pattern, true)
            .map_err(|error| format!("invalid pattern ({pattern}) in substitution: {error}"))?;
        if all {
            Ok(replace_all(&glob, &value, &replacement))
        } else {
            Ok(match glob.find(&value, 0) {
                Some((start, end)) => {
                    let mut out: String = value[..start].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&value[end..]);
                    out
                }
                None => value.iter().collect(),
            })
        }
    }
}

/// One element of a `${v#…}`/`${v%…}`/`${v/…}` pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GlobToken {
    Literal(char),
    /// `?`: one character other than a newline (Go's `.`).
    Any,
    /// `*`: a run of characters other than newlines (Go's `.*` or `.*?`).
    Star,
}

/// BuildKit turns these patterns into Go regular expressions; we match them directly with the
/// same leftmost-first priorities (a small Pike VM, so no input can make it slow or deep).
struct Glob {
    tokens: Vec<GlobToken>,
    /// `*` prefers the longest run (`##`, `%%`, `/`) or the shortest (`#`, `%`).
    greedy: bool,
}

impl Glob {
    /// `convertShellPatternToRegex`: `*`, `?`, `\*`, `\?`, `\\`, and `\` before `}` or `/`
    /// dropped; any other escape is an error.
    fn compile(pattern: &str, greedy: bool) -> Result<Self, String> {
        let mut chars = pattern.chars().peekable();
        if chars.peek() == Some(&'\u{feff}') {
            chars.next();
        }
        let mut tokens = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '*' => tokens.push(GlobToken::Star),
                '?' => tokens.push(GlobToken::Any),
                '\\' => {
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => {
                            tokens.push(GlobToken::Literal(escaped))
                        }
                        Some(other) => return Err(format!("invalid escape '\\{other}'")),
                        None => return Err("invalid escape '\\\u{fffd}'".to_string()),
                    }
                }
                _ => tokens.push(GlobToken::Literal(c)),
            }
        }
        Ok(Self { tokens, greedy })
    }

    fn accepts(token: GlobToken, c: char) -> bool {
        match token {
            GlobToken::Literal(l) => l == c,
            GlobToken::Any | GlobToken::Star => c != '\n',
        }
    }

    /// Adds the threads reachable from `pc` without consuming input, in priority order.
    fn add_threads(&self, pc: usize, list: &mut Vec<usize>, seen: &mut [bool]) {
        enum Work {
            Visit(usize),
            Emit(usize),
        }
        let mut stack = vec![Work::Visit(pc)];
        while let Some(work) = stack.pop() {
            match work {
                Work::Emit(pc) => list.push(pc),
                Work::Visit(pc) => {
                    if seen[pc] {
                        continue;
                    }
                    seen[pc] = true;
                    match self.tokens.get(pc) {
                        Some(GlobToken::Star) if self.greedy => {
                            list.push(pc);
                            stack.push(Work::Visit(pc + 1));
                        }
                        Some(GlobToken::Star) => {
                            stack.push(Work::Emit(pc));
                            stack.push(Work::Visit(pc + 1));
                        }
                        _ => list.push(pc),
                    }
                }
            }
        }
    }

    /// The end of the highest-priority match starting exactly at `start`.
    fn match_at(&self, text: &[char], start: usize) -> Option<usize> {
        let done = self.tokens.len();
        let mut current = Vec::new();
        let mut seen = vec![false; done + 1];
        self.add_threads(0, &mut current, &mut seen);
        let mut best = None;
        let mut pos = start;
        loop {
            let mut next = Vec::new();
            seen.iter_mut().for_each(|s| *s = false);
            let c = text.get(pos).copied();
            for &pc in &current {
                if pc == done {
                    best = Some(pos);
                    // Lower-priority threads can no longer win.
                    break;
                }
                let (Some(c), Some(&token)) = (c, self.tokens.get(pc)) else {
                    continue;
                };
                if Self::accepts(token, c) {
                    let target = if token == GlobToken::Star { pc } else { pc + 1 };
                    self.add_threads(target, &mut next, &mut seen);
                }
            }
            if next.is_empty() || c.is_none() {
                return best;
            }
            current = next;
            pos += 1;
        }
    }

    /// The leftmost match at or after `from`, as `(start, end)` character indices.
    fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=text.len()).find_map(|start| self.match_at(text, start).map(|end| (start, end)))
    }
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> ScanResult<String> {
    let glob = Glob::compile(pattern, greedy)
        .map_err(|error| format!("invalid pattern ({pattern}) in substitution: {error}"))?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match glob.match_at(&chars, 0) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// Suffix removal reverses the value and the pattern (keeping each `\x` pair in order) and
/// removes a prefix, as BuildKit does, because a regex cannot search for the shortest
/// rightmost match.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> ScanResult<String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let width = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + width]);
        i += width;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// Go's `Regexp.ReplaceAllString`: successive non-overlapping matches, an empty match right
/// after a match is skipped, and `$` in the replacement refers to groups (`$0` or `${0}` is
/// the match, any other group is empty, `$$` is `$`).
fn replace_all(glob: &Glob, text: &[char], replacement: &str) -> String {
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((start, end)) = glob.find(text, search) else {
            break;
        };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            let matched: String = text[start..end].iter().collect();
            out.push_str(&expand_template(replacement, &matched));
        }
        last_end = end;
        let width = usize::from(search < text.len());
        if search + width > end {
            search += width;
        } else if search + 1 > end {
            search += 1;
        } else {
            search = end;
        }
    }
    out.extend(&text[last_end..]);
    out
}

fn expand_template(template: &str, matched: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_group(rest) {
            Some((group, after)) => {
                if group == Some(0) {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
    out
}

/// Go's `regexp.extract`: a group name after `$`, optionally in braces. Returns the group
/// number if the name is one (`None` for a named group, which never exists here) and the rest.
fn template_group(s: &str) -> Option<(Option<u64>, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let name_len: usize = body
        .chars()
        .take_while(|c| go_is_letter(*c) || go_is_digit(*c) || *c == '_')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let name = &body[..name_len];
    let mut rest = &body[name_len..];
    if braced {
        rest = rest.strip_prefix('}')?;
    }
    let number =
        if name.bytes().all(|b| b.is_ascii_digit()) && !(name.len() > 1 && name.starts_with('0')) {
            name.parse::<u64>().ok().filter(|n| *n < 100_000_000)
        } else {
            None
        };
    Some((number, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("PWD", "/home"), ("NULL", ""), ("FOO", "foo bar")]
    }

    #[test]
    fn plain_and_braced() {
        let lex = Expander::default();
        assert_eq!(
            lex.process_word("$PWD/x", &env()).ok(),
            Some("/home/x".to_string())
        );
        assert_eq!(
            lex.process_word("${PWD}x", &env()).ok(),
            Some("/homex".to_string())
        );
        assert_eq!(lex.process_word("$", &env()).ok(), Some("$".to_string()));
        assert_eq!(
            lex.process_word("${NOPE:-a b}", &env()).ok(),
            Some("a b".to_string())
        );
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lex = Expander::default().skip_unset(true);
        assert_eq!(
            lex.process_word("$X ${Y} ${Z:-d} ${W/a/b}", &EmptyEnv).ok(),
            Some("$X ${Y} ${Z:-d} ${W/a/b}".to_string())
        );
    }

    #[test]
    fn word_buffer_is_shared_with_nested_scans() {
        let lex = Expander::default();
        assert_eq!(
            lex.process_words("abc${x:-def}", &EmptyEnv).ok(),
            Some(vec!["def".to_string()])
        );
        assert_eq!(
            lex.process_word("abc${x:-def}", &EmptyEnv).ok(),
            Some("abcdef".to_string())
        );
    }

    #[test]
    fn heredoc_marker_stays_with_its_word() {
        let lex = Expander::default();
        assert_eq!(
            lex.process_words("a <<  EOF b", &EmptyEnv).ok(),
            Some(vec!["a".into(), "<<  EOF".into(), "b".into()])
        );
        assert_eq!(
            lex.process_words("a <b", &EmptyEnv).ok(),
            Some(vec!["a".into(), "<b".into()])
        );
    }

    #[test]
    fn patterns_prefer_like_go() {
        let value: Vec<char> = "aXbXc".chars().collect();
        let lazy = Glob::compile("*X", false).ok();
        let greedy = Glob::compile("*X", true).ok();
        assert_eq!(lazy.and_then(|g| g.match_at(&value, 0)), Some(2));
        assert_eq!(greedy.and_then(|g| g.match_at(&value, 0)), Some(4));
    }

    #[test]
    fn replace_all_with_empty_pattern() {
        let glob = Glob::compile("", true).ok();
        let text: Vec<char> = "ab".chars().collect();
        assert_eq!(
            glob.map(|g| replace_all(&g, &text, "-")),
            Some("-a-b-".to_string())
        );
    }

    #[test]
    fn replacement_templates() {
        assert_eq!(expand_template("<$0>", "m"), "<m>");
        assert_eq!(expand_template("${0}$1$$x$", "m"), "m$x$");
        assert_eq!(expand_template("$name!", "m"), "!");
    }

    #[test]
    fn deep_nesting_is_refused_not_fatal() {
        let input = "${a:-".repeat(5000);
        assert!(Expander::default().process_word(&input, &EmptyEnv).is_err());
    }

    #[test]
    fn long_patterns_do_not_recurse() {
        let pattern = "*".repeat(50_000);
        let input = format!("${{X#{pattern}a}}");
        let env = vec![("X", "bbba")];
        assert_eq!(
            Expander::default().process_word(&input, &env).ok(),
            Some(String::new())
        );
    }
}
