//! The JSON (exec) form of an instruction: a JSON array of strings.
//!
//! BuildKit decodes with Go's `encoding/json`, which differs from `serde_json` on points that
//! show in the dump: a lone surrogate escape becomes U+FFFD instead of an error, and nesting
//! deeper than 10,000 is a syntax error rather than a stack overflow. The validator here is
//! iterative, so no input can exhaust the stack.

use crate::text::go_is_space;

/// What the text after the instruction keyword (and flags) turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonForm {
    /// Not a single valid JSON value starting with `[`: the instruction is in shell form.
    NotJson,
    /// Valid JSON, but an array element is not a string: a hard error in BuildKit.
    NotStringArray,
    /// An array of strings.
    Strings(Vec<String>),
}

/// Go's `encoding/json` refuses nesting deeper than this.
const MAX_DEPTH: usize = 10_000;

pub(crate) fn parse_json_array(rest: &str) -> JsonForm {
    let text = rest.trim_start_matches(go_is_space);
    if !text.starts_with('[') {
        return JsonForm::NotJson;
    }
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        pos: 0,
    };
    let Some(elements) = parser.top_level_array() else {
        return JsonForm::NotJson;
    };
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return JsonForm::NotJson;
    }
    let mut strings = Vec::with_capacity(elements.len());
    for element in elements {
        match element {
            Some(s) => strings.push(s),
            None => return JsonForm::NotStringArray,
        }
    }
    JsonForm::Strings(strings)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The elements of the outer array: `Some(string)` for a string, `None` for any other
    /// (valid) value.
    fn top_level_array(&mut self) -> Option<Vec<Option<String>>> {
        if !self.eat(b'[') {
            return None;
        }
        let mut elements = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Some(elements);
        }
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b'"') {
                elements.push(Some(self.string()?));
            } else {
                self.skip_value(1)?;
                elements.push(None);
            }
            self.skip_whitespace();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Some(elements);
            }
            return None;
        }
    }

    /// Validates one value without building it. `depth` is the nesting depth of the
    /// container the value sits in.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        // Each entry is the closing byte of an open container and whether a member was seen.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // Parse one value (or open a container).
            self.skip_whitespace();
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'[' | b'{' => {
                    let open = self.peek()?;
                    self.pos += 1;
                    if depth + stack.len() + 1 > MAX_DEPTH {
                        return None;
                    }
                    let close = if open == b'[' { b']' } else { b'}' };
                    self.skip_whitespace();
                    if self.eat(close) {
                        // Empty container: a complete value.
                    } else {
                        stack.push(close);
                        if close == b'}' {
                            self.object_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a complete value: close containers or move to the next member.
            loop {
                let Some(&close) = stack.last() else {
                    return Some(());
                };
                self.skip_whitespace();
                if self.eat(b',') {
                    if close == b'}' {
                        self.object_key()?;
                    }
                    break;
                }
                if self.eat(close) {
                    stack.pop();
                    continue;
                }
                return None;
            }
        }
    }

    fn object_key(&mut self) -> Option<()> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_whitespace();
        self.eat(b':').then_some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        if !self.eat(b'0') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A string starting at `"`, decoded as Go does (lone surrogates become U+FFFD).
    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.text.get(self.pos..)?;
            let c = rest.chars().next()?;
            self.pos += c.len_utf8();
            match c {
                '"' => return Some(out),
                '\\' => {
                    let escape = self.peek()?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                }
                c if u32::from(c) < 0x20 => return None,
                c => out.push(c),
            }
        }
    }

    /// After `\u`: a code point, a surrogate pair, or U+FFFD for a lone surrogate.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xd800..0xe000).contains(&first) {
            return char::from_u32(first);
        }
        if (0xd800..0xdc00).contains(&first) && self.bytes[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            if let Some(second) = self.hex4()
                && (0xdc00..0xe000).contains(&second)
            {
                let combined = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                return char::from_u32(combined);
            }
            // Not a pair: only the first escape is consumed here.
            self.pos = save;
        }
        Some('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonForm {
        JsonForm::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(parse_json_array(r#"["a", "b"]"#), strings(&["a", "b"]));
        assert_eq!(parse_json_array("[]"), strings(&[]));
        assert_eq!(
            parse_json_array("\t[\t\"a\",\t\"b\"\t]\t"),
            strings(&["a", "b"])
        );
        assert_eq!(
            parse_json_array(r#"["\ud800", "\ud83d\ude00", "\u00e9\/"]"#),
            strings(&["\u{fffd}", "😀", "é/"])
        );
        assert_eq!(
            parse_json_array(r#"["\ud800\u0041"]"#),
            strings(&["\u{fffd}A"])
        );
    }

    #[test]
    fn shell_form_fallbacks() {
        for text in [
            "['a','b']",
            r#"["a",]"#,
            "[] []",
            r#"["a"] x"#,
            "[\"a\tb\"]",
            "[",
            "x",
            r#"["\x"]"#,
            "[01]",
        ] {
            assert_eq!(parse_json_array(text), JsonForm::NotJson, "{text}");
        }
    }

    #[test]
    fn non_strings_are_errors() {
        for text in [
            r#"["a", ["b"]]"#,
            "[1]",
            "[null]",
            r#"[{"a": [1, {"b": true}]}]"#,
            "[-1.5e+3]",
        ] {
            assert_eq!(parse_json_array(text), JsonForm::NotStringArray, "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_a_syntax_error() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json_array(&deep), JsonForm::NotJson);
        let fine = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json_array(&fine), JsonForm::NotStringArray);
    }
}
