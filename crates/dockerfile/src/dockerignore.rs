//! `.dockerignore` files and `--exclude` patterns, with the semantics of moby's
//! `patternmatcher` (and its `ignorefile` reader) that Docker and BuildKit use.
//!
//! No glob crate matches these rules (`**` only as whole segments or as a suffix/prefix, a
//! pattern also excluding everything under a matched directory, later `!` exceptions
//! re-including, the last matching line winning), so they are ported here.
//!
//! Deliberate differences from moby, which compiles each pattern to a Go regular expression
//! by passing some characters through unescaped:
//! - `\x` outside a character class always means a literal `x` (as in `filepath.Match`);
//!   moby passes `\d`, `\w`, `\b`… to the regex engine as classes or assertions, and fails
//!   at match time on escapes the engine rejects;
//! - inside `[...]`, `*`, `?` and regex syntax such as `[:alpha:]` are literal characters
//!   (as in `filepath.Match`), where moby produces a different regular expression.

use std::fmt;

/// Go's `filepath.Clean` for slash-separated paths: removes `.` and empty elements,
/// resolves `..` lexically, drops trailing slashes; `""` becomes `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A pattern that moby's matcher refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct IgnoreError {
    /// The line of the `.dockerignore` file, when the patterns came from one.
    pub line: Option<usize>,
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(
            f,
            "{}: {}",
            self.reason,
            crate::text::go_quote(&self.pattern)
        )
    }
}

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    AnyButSlash,
    /// `*`: a run of characters other than `/`.
    StarButSlash,
    /// `**/` inside a pattern: nothing, or any run of characters ending with `/`.
    AnyDirectories,
    /// `**` at the end of a pattern that already needs a regex: anything.
    AnyRun,
    /// `^`, which moby leaves unescaped, so it only matches at the start of the path.
    StartAnchor,
    /// `[...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// How moby decides a pattern matches (`exactMatch`, `prefixMatch`, `suffixMatch`,
/// `regexpMatch`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Matcher {
    Exact,
    /// `dir/**`: every path starting with `dir/`.
    Prefix(String),
    /// `**/name`: every path ending with `/name`, and `name` itself.
    Suffix(String),
    Tokens(Vec<Token>),
}

/// One pattern of an [`IgnoreMatcher`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnorePattern {
    cleaned: String,
    exclusion: bool,
    matcher: Matcher,
}

impl IgnorePattern {
    /// The pattern after cleaning, without its `!`.
    pub fn pattern(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` exception (it re-includes what it matches).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern itself matches `path` (no parent-directory rule).
    pub fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|name| path == name)
            }
            Matcher::Tokens(tokens) => Nfa { tokens }.run(path).1,
        }
    }

    /// Whether the pattern could match some path strictly inside `dir`.
    fn could_match_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        match &self.matcher {
            Matcher::Exact => {
                self.cleaned.len() > dir_slash.len() && self.cleaned.starts_with(&dir_slash)
            }
            Matcher::Prefix(prefix) => {
                prefix.starts_with(&dir_slash) || dir_slash.starts_with(prefix.as_str())
            }
            Matcher::Suffix(_) => true,
            Matcher::Tokens(tokens) => Nfa { tokens }.run(&dir_slash).0,
        }
    }
}

/// Patterns in file order; the last one that matches a path decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IgnoreMatcher {
    patterns: Vec<IgnorePattern>,
}

impl IgnoreMatcher {
    /// Reads a `.dockerignore` file: `#` comments (only at the very start of a line), blank
    /// lines skipped, each pattern trimmed and cleaned, a leading `/` dropped, `!` exceptions.
    pub fn from_dockerignore(contents: &[u8]) -> Result<Self, IgnoreError> {
        let contents = contents
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(contents);
        let text = String::from_utf8_lossy(contents);
        let mut patterns = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            if let Some(pattern) = normalize_ignore_line(line) {
                patterns.push((Some(index + 1), pattern));
            }
        }
        Self::build(patterns)
    }

    /// Builds a matcher from patterns as `COPY --exclude` and moby's `patternmatcher.New`
    /// take them (no comment handling, no leading-`/` removal).
    pub fn new<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(
            patterns
                .into_iter()
                .map(|p| (None, p.as_ref().to_string()))
                .collect(),
        )
    }

    fn build(patterns: Vec<(Option<usize>, String)>) -> Result<Self, IgnoreError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for (line, pattern) in patterns {
            let error = |reason| IgnoreError {
                line,
                pattern: pattern.clone(),
                reason,
            };
            let trimmed = crate::text::trim_space(&pattern);
            if trimmed.is_empty() {
                continue;
            }
            let cleaned = clean_path(trimmed);
            let (exclusion, body) = match cleaned.strip_prefix('!') {
                Some("") => return Err(error("illegal exclusion pattern")),
                Some(body) => (true, body.to_string()),
                None => (false, cleaned),
            };
            if !is_valid_glob(&body) {
                return Err(error("syntax error in pattern"));
            }
            let matcher = compile(&body);
            compiled.push(IgnorePattern {
                cleaned: body,
                exclusion,
                matcher,
            });
        }
        Ok(Self { patterns: compiled })
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded: a pattern
    /// matches the path or one of its parent directories, and the last such pattern wins.
    /// The context root itself is never excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        let cleaned = clean_path(path);
        let file = cleaned.trim_start_matches('/');
        if file.is_empty() || file == "." {
            return false;
        }
        let parents: Vec<&str> = match file.rfind('/') {
            Some(slash) => file[..slash].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // An exception only matters once something matched, and vice versa.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(file);
            if !hit {
                hit = (1..=parents.len()).any(|n| pattern.matches(&parents[..n].join("/")));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether a tree walker may skip the directory `dir` entirely: it is excluded and no
    /// exception could re-include anything inside it.
    pub fn may_skip_dir(&self, dir: &str) -> bool {
        if !self.is_excluded(dir) {
            return false;
        }
        let cleaned = clean_path(dir);
        let dir = cleaned.trim_start_matches('/');
        !self
            .patterns
            .iter()
            .any(|p| p.exclusion && p.could_match_below(dir))
    }
}

/// One `.dockerignore` line after comment removal (moby's `ignorefile.ReadAll`).
fn normalize_ignore_line(line: &str) -> Option<String> {
    let mut pattern = crate::text::trim_space(line);
    if pattern.is_empty() {
        return None;
    }
    let invert = pattern.starts_with('!');
    if invert {
        pattern = crate::text::trim_space(&pattern[1..]);
    }
    let mut cleaned = String::new();
    if !pattern.is_empty() {
        cleaned = clean_path(pattern);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
    }
    Some(if invert {
        format!("!{cleaned}")
    } else {
        cleaned
    })
}

/// `filepath.Match`'s syntax check: classes are closed and non-empty, ranges have both
/// ends, and no escape is left dangling.
fn is_valid_glob(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return false;
                }
                i += 2;
            }
            '[' => match parse_class(&chars, i) {
                // Go's regexp (which moby compiles to) also refuses inverted ranges.
                Some(class) if class.ranges.iter().all(|(lo, hi)| lo <= hi) => i = class.end,
                _ => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// A `[...]` class: negation, inclusive ranges, and the index after its closing `]`.
struct ParsedClass {
    negated: bool,
    ranges: Vec<(char, char)>,
    end: usize,
}

/// Parses the class starting at `chars[start] == '['` with `filepath.Match`'s grammar.
fn parse_class(chars: &[char], start: usize) -> Option<ParsedClass> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Some(ParsedClass {
                negated,
                ranges,
                end: i + 1,
            });
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
        }
        ranges.push((lo, hi));
    }
}

/// `getEsc`: one (possibly escaped) class character, which may not be `-` or `]` and may
/// not end the pattern.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    let mut c = *chars.get(i)?;
    let mut next = i + 1;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        c = *chars.get(next)?;
        next += 1;
    }
    if next >= chars.len() {
        return None;
    }
    Some((c, next))
}

/// moby's `Pattern.compile`, producing tokens instead of a regex string.
fn compile(pattern: &str) -> Matcher {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Tokens,
    }
    let mut chars: Vec<char> = pattern.chars().collect();
    // Go's text/scanner skips a byte-order mark at the start.
    if chars.first() == Some(&'\u{feff}') {
        chars.remove(0);
    }
    let mut detected = Detected::Exact;
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut iteration = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        tokens.push(Token::AnyRun);
                        detected = Detected::Tokens;
                    }
                } else {
                    tokens.push(Token::AnyDirectories);
                    detected = Detected::Tokens;
                }
                if iteration == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::StarButSlash);
                detected = Detected::Tokens;
            }
            '?' => {
                tokens.push(Token::AnyButSlash);
                detected = Detected::Tokens;
            }
            '\\' => {
                if let Some(&escaped) = chars.get(i) {
                    i += 1;
                    tokens.push(Token::Literal(escaped));
                    detected = Detected::Tokens;
                } else {
                    tokens.push(Token::Literal('\\'));
                }
            }
            '[' => {
                match parse_class(&chars, i - 1) {
                    Some(class) => {
                        tokens.push(Token::Class {
                            negated: class.negated,
                            ranges: class.ranges,
                        });
                        i = class.end;
                    }
                    None => tokens.push(Token::Literal('[')),
                }
                detected = Detected::Tokens;
            }
            ']' => {
                tokens.push(Token::Literal(']'));
                detected = Detected::Tokens;
            }
            '^' => tokens.push(Token::StartAnchor),
            _ => tokens.push(Token::Literal(c)),
        }
        iteration += 1;
    }
    match detected {
        Detected::Exact => Matcher::Exact,
        // Validated patterns are ASCII at both ends here: `**` was just seen.
        Detected::Prefix => Matcher::Prefix(
            pattern
                .get(..pattern.len().saturating_sub(2))
                .unwrap_or_default()
                .to_string(),
        ),
        Detected::Suffix => Matcher::Suffix(pattern.get(2..).unwrap_or_default().to_string()),
        Detected::Tokens => Matcher::Tokens(tokens),
    }
}

/// A set-of-states automaton over the tokens (no backtracking, no recursion).
struct Nfa<'a> {
    tokens: &'a [Token],
}

impl Nfa<'_> {
    /// Adds state `pc` and everything reachable from it without input. States are
    /// `2 * pc` (at the token) and `2 * pc + 1` (inside an `AnyDirectories` run).
    fn close(&self, start: usize, at_start: bool, states: &mut [bool]) {
        let mut stack = vec![start];
        while let Some(state) = stack.pop() {
            if states[state] {
                continue;
            }
            states[state] = true;
            let pc = state / 2;
            if state % 2 == 1 {
                continue;
            }
            match self.tokens.get(pc) {
                Some(Token::StarButSlash | Token::AnyDirectories | Token::AnyRun) => {
                    stack.push(2 * (pc + 1))
                }
                Some(Token::StartAnchor) if at_start => stack.push(2 * (pc + 1)),
                _ => {}
            }
        }
    }

    /// Runs over `text`: (whether any state is still alive, whether the whole text matched).
    fn run(&self, text: &str) -> (bool, bool) {
        let size = 2 * (self.tokens.len() + 1);
        let mut current = vec![false; size];
        self.close(0, true, &mut current);
        for c in text.chars() {
            let mut next = vec![false; size];
            for state in (0..size).filter(|&s| current[s]) {
                let pc = state / 2;
                let Some(token) = self.tokens.get(pc) else {
                    continue;
                };
                match token {
                    Token::AnyDirectories => {
                        if c != '\n' {
                            self.close(2 * pc + 1, false, &mut next);
                        }
                        if c == '/' {
                            self.close(2 * (pc + 1), false, &mut next);
                        }
                    }
                    Token::StarButSlash if c != '/' => self.close(2 * pc, false, &mut next),
                    Token::AnyRun if c != '\n' => self.close(2 * pc, false, &mut next),
                    Token::AnyButSlash if c != '/' => self.close(2 * (pc + 1), false, &mut next),
                    Token::Literal(l) if *l == c => self.close(2 * (pc + 1), false, &mut next),
                    Token::Class { negated, ranges } => {
                        let inside_class = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                        if inside_class != *negated {
                            self.close(2 * (pc + 1), false, &mut next);
                        }
                    }
                    _ => {}
                }
            }
            if !next.iter().any(|s| *s) {
                return (false, false);
            }
            current = next;
        }
        let end = 2 * self.tokens.len();
        (current.iter().any(|s| *s), current[end])
    }
}

#[cfg(test)]
mod tests;
