//! Small text helpers that reproduce Go's standard library where BuildKit relies on it.
//!
//! BuildKit is written in Go, and several of its observable behaviours come from Go's
//! `unicode`, `strings` and `strconv` packages rather than from BuildKit itself: which
//! characters count as letters in a variable name, how `strings.ToLower` maps a keyword, how
//! `strconv.Quote` prints an argument. Rust's standard library answers these questions
//! differently (for example `char::is_alphabetic` is broader than Go's `unicode.IsLetter`,
//! and `{:?}` is not `strconv.Quote`), so the few we need are written out here.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Go's `unicode.IsSpace`: the Unicode White_Space property, which is exactly what
/// `char::is_whitespace` implements.
pub(crate) fn go_is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn go_is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn go_is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    get_general_category(c) == GeneralCategory::DecimalNumber
}

/// Go's `strconv.IsPrint`: U+0020 or a character of category L, M, N, P or S.
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    use GeneralCategory as G;
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
            | G::DecimalNumber
            | G::LetterNumber
            | G::OtherNumber
            | G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
            | G::MathSymbol
            | G::CurrencySymbol
            | G::ModifierSymbol
            | G::OtherSymbol
    )
}

/// Go's `strconv.Quote`, which BuildKit's dump uses for every argument and flag.
///
/// Our strings are valid UTF-8, so the `\xNN` form for invalid bytes only appears for the
/// control characters Go also writes that way.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_quoted_char(&mut out, c);
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        _ if go_is_print(c) => out.push(c),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        _ => {
            let code = u32::from(c);
            let escaped = if code < 0x20 || code == 0x7f {
                format!("\\x{code:02x}")
            } else if code <= 0xffff {
                format!("\\u{code:04x}")
            } else {
                format!("\\U{code:08x}")
            };
            out.push_str(&escaped);
        }
    }
}

/// Go's `strings.ToLower`: a per-character simple lowercase mapping.
///
/// Rust's `to_lowercase` applies the full mapping, which differs only for U+0130 (Go maps it
/// to a plain `i`, Rust to `i` plus a combining dot).
pub(crate) fn go_to_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{130}' {
            out.push('i');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Go's `strings.ToUpper` for the ASCII keywords we compare with; non-ASCII characters use
/// Rust's mapping, which only matters for messages.
pub(crate) fn go_to_upper(s: &str) -> String {
    s.to_uppercase()
}

/// Go's `strings.TrimSpace` on a string: trims Unicode White_Space from both ends.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(go_is_space)
}

/// The ASCII whitespace class BuildKit's parser splits on: `[\t\v\f\r ]`.
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+").Split(s, n)` with `n == -1` (all pieces).
pub(crate) fn split_on_split_space(s: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = s;
    if s.is_empty() {
        return vec![""];
    }
    while let Some(start) = rest.find(is_split_space) {
        let after = &rest[start..];
        let run = after.len() - after.trim_start_matches(is_split_space).len();
        pieces.push(&rest[..start]);
        rest = &rest[start + run..];
    }
    pieces.push(rest);
    pieces
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+").Split(s, 2)`: at most two pieces.
pub(crate) fn split_once_on_split_space(s: &str) -> (&str, Option<&str>) {
    match s.find(is_split_space) {
        None => (s, None),
        Some(start) => {
            let after = &s[start..];
            let rest = after.trim_start_matches(is_split_space);
            (&s[..start], Some(rest))
        }
    }
}

/// Levenshtein distance over characters, as `github.com/agext/levenshtein` computes it with
/// unit costs.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// BuildKit's `suggest.WrapError`: the closest option within an edit distance of 2, or none
/// when the value is itself an option (the error is then unrelated to spelling).
///
/// With `case_sensitive` false the comparison ignores case, and the suggestion takes the
/// case of the value when the value is all lower or all upper case.
pub(crate) fn suggest<'a, I>(value: &str, options: I, case_sensitive: bool) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    if value.is_empty() {
        return None;
    }
    let needle = if case_sensitive {
        value.to_string()
    } else {
        go_to_lower(value)
    };
    let mut best: Option<String> = None;
    let mut best_distance = 3;
    for option in options {
        let candidate = if case_sensitive {
            option.to_string()
        } else {
            go_to_lower(option)
        };
        if candidate == needle {
            return None;
        }
        let distance = levenshtein(&needle, &candidate);
        if distance < best_distance {
            best_distance = distance;
            best = Some(if case_sensitive {
                candidate
            } else {
                match_case(&candidate, value)
            });
        }
    }
    best
}

fn match_case(candidate: &str, original: &str) -> String {
    if original == go_to_lower(original) {
        go_to_lower(candidate)
    } else if original == go_to_upper(original) {
        go_to_upper(candidate)
    } else {
        candidate.to_string()
    }
}

/// Appends BuildKit's " (did you mean X?)" hint when there is a close option.
pub(crate) fn with_suggestion<'a, I>(
    message: String,
    value: &str,
    options: I,
    case_sensitive: bool,
) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match suggest(value, options, case_sensitive) {
        Some(hint) => format!("{message} (did you mean {hint}?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\u{7f}"), r#""\x00\x7f""#);
        assert_eq!(
            go_quote("\u{a0}\u{2028}\u{feff}"),
            r#""\u00a0\u2028\ufeff""#
        );
        assert_eq!(go_quote("♥☃😀é"), "\"♥☃😀é\"");
        assert_eq!(go_quote("\u{e000}"), r#""\ue000""#);
        assert_eq!(go_quote("\u{f0000}"), r#""\U000f0000""#);
        assert_eq!(
            go_quote("\u{7}\u{8}\t\n\u{b}\u{c}\r"),
            r#""\a\b\t\n\v\f\r""#
        );
    }

    #[test]
    fn lower_matches_go() {
        assert_eq!(go_to_lower("RuN"), "run");
        assert_eq!(go_to_lower("\u{130}"), "i");
    }

    #[test]
    fn split_like_go_regexp() {
        assert_eq!(split_on_split_space("a \t b\u{b}c"), vec!["a", "b", "c"]);
        assert_eq!(split_on_split_space(""), vec![""]);
        assert_eq!(split_once_on_split_space("a  b c"), ("a", Some("b c")));
        assert_eq!(split_once_on_split_space("abc"), ("abc", None));
    }

    #[test]
    fn suggestions() {
        let names = ["entrypoint", "env", "expose"];
        assert_eq!(
            suggest("FNTRYPOINT", names, false).as_deref(),
            Some("ENTRYPOINT")
        );
        assert_eq!(
            suggest("fntrypoint", names, false).as_deref(),
            Some("entrypoint")
        );
        assert_eq!(suggest("xyzzy", names, false), None);
        assert_eq!(suggest("env", names, false), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
