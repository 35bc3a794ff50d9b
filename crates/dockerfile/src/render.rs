//! Errors for people: `file:line:column`, the offending line with a caret under the
//! offending part, and what was expected, laid out as rustc does (with `annotate-snippets`).
//!
//! ```text
//! error: unknown instruction: RUNN (did you mean RUN?)
//!  --> Dockerfile:2:1
//!   |
//! 2 | RUNN echo hi
//!   | ^^^^ not an instruction
//!   |
//!   = help: expected one of ADD, ARG, CMD, …
//! ```

use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};

use crate::error::Span;

/// An error about a Dockerfile, ready to be rendered against its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostic {
    /// What went wrong (the first line of the report).
    pub message: String,
    /// Where: the lines, and the part of them to underline. `None` for the file as a whole.
    pub span: Option<Span>,
    /// A few words under the caret.
    pub label: Option<String>,
    /// Help lines: what was expected.
    pub help: Vec<String>,
}

/// Renders `message` about `span` of `source` (the file called `file_name`): see
/// [`Diagnostic::render`].
pub fn render_error(file_name: &str, source: &[u8], span: Option<Span>, message: &str) -> String {
    Diagnostic {
        message: message.to_string(),
        span,
        ..Diagnostic::default()
    }
    .render(file_name, source)
}

impl Diagnostic {
    /// The report as plain text, starting with `error: ` and without a final newline.
    ///
    /// The line shown is the focus line of the span (else its first line); the caret goes
    /// under the focus (else under the whole instruction text on that line). A span whose
    /// line is not in `source` is named without a snippet. Never panics, whatever the bytes.
    pub fn render(&self, file_name: &str, source: &[u8]) -> String {
        let title = Level::ERROR.primary_title(self.message.as_str());
        let mut group = Group::with_title(title);
        let shown = self.span.and_then(|span| {
            let number = span.focus_line();
            physical_line(source, number).map(|text| (span, number, text))
        });
        group = match (&shown, self.span) {
            (Some((span, number, text)), _) => {
                let range = caret_range(text, *span, *number);
                let mut annotation = AnnotationKind::Primary.span(range);
                if let Some(label) = &self.label {
                    annotation = annotation.label(label.as_str());
                }
                group.element(
                    Snippet::source(text.as_str())
                        .line_start(*number)
                        .path(file_name)
                        .annotation(annotation),
                )
            }
            (None, Some(span)) => group.element(Origin::path(file_name).line(span.start.max(1))),
            (None, None) => group.element(Origin::path(file_name)),
        };
        for help in &self.help {
            group = group.element(Level::HELP.message(help.as_str()));
        }
        Renderer::plain().render(&[group])
    }
}

/// Physical line `number` (1-based) of `source`, as BuildKit's scanner splits it: without
/// a byte-order mark on line 1, and without trailing blanks (`\r` included).
fn physical_line(source: &[u8], number: usize) -> Option<String> {
    let source = source
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(source);
    let raw = source.split(|&b| b == b'\n').nth(number.checked_sub(1)?)?;
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// The bytes of `text` to underline: the focus, or the line's text without its
/// indentation; always on character boundaries.
fn caret_range(text: &str, span: Span, number: usize) -> std::ops::Range<usize> {
    let (start, end) = match span.focus {
        Some(focus) if focus.line == number => (focus.start as usize, focus.end as usize),
        _ => {
            let start = text.len() - text.trim_start().len();
            (start, text.trim_end().len().max(start))
        }
    };
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(start);
    start..floor(end).max(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Focus;

    fn focus(line: usize, start: u32, end: u32) -> Option<Span> {
        Some(Span::line(line).with_focus(Some(Focus { line, start, end })))
    }

    #[test]
    fn names_file_line_and_column_with_a_caret() {
        let out = render_error(
            "Dockerfile",
            b"FROM a\nCOPY --form=x a b\n",
            focus(2, 5, 13),
            "unknown flag: form",
        );
        assert_eq!(
            out,
            "error: unknown flag: form\n --> Dockerfile:2:6\n  |\n2 | COPY --form=x a b\n  |      ^^^^^^^^"
        );
    }

    #[test]
    fn without_a_focus_the_instruction_is_underlined() {
        let out = render_error("Df", b"FROM a\n  RUN x  \n", Some(Span::new(2, 3)), "m");
        assert!(out.contains("2 |   RUN x\n  |   ^^^^^"), "{out}");
    }

    #[test]
    fn a_point_at_the_end_of_the_line() {
        let out = render_error("Df", b"WORKDIR\n", focus(1, 7, 7), "WORKDIR requires one");
        assert!(out.contains(" --> Df:1:8"), "{out}");
        assert!(out.contains("1 | WORKDIR\n  |        ^"), "{out}");
    }

    #[test]
    fn odd_input_never_panics() {
        let sources: [&[u8]; 5] = [
            b"",
            b"\xEF\xBB\xBFFROM \xff\xfe x\r\n",
            b"\t\tRUN \x00\x1b[31m \xe2\x82",
            b"\n\n\n",
            "FROM ☃ AS é\n".as_bytes(),
        ];
        for source in sources {
            for line in 0..5 {
                for (start, end) in [(0, 0), (3, 1), (2, 9), (100, 200), (6, 7)] {
                    let _ = render_error("f", source, focus(line, start, end), "m");
                }
                let _ = render_error("f", source, Some(Span::new(line, line + 1)), "m");
            }
            assert_eq!(render_error("f", source, None, "m"), "error: m\n--> f");
        }
    }
}
