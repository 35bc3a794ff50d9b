//! Where the parts of an instruction are in the file, so that errors (and the linter) can
//! point at a keyword, a flag or a word rather than at a whole line.
//!
//! The parser joins continuation lines into one logical line; a [`Layout`] remembers which
//! piece of which physical line each part of it came from, and where the keyword, each flag
//! word and the arguments start and end in it.

use std::ops::Range;

use crate::error::{Focus, Span};
use crate::parser::Record;

/// The parts of a logical line, as byte ranges of [`Record::original`], and how to map them
/// back to physical lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The instruction keyword.
    pub keyword: Range<usize>,
    /// Each flag word (`--name=value`, quotes included), in the order of `Command::flags`.
    pub flags: Vec<Range<usize>>,
    /// The arguments after the flags, trimmed; empty (at the end of the line) when none.
    pub rest: Range<usize>,
    pieces: Vec<Piece>,
}

/// One physical line's contribution to the logical line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Where it starts in the logical line.
    pub(crate) offset: usize,
    /// Its physical line.
    pub(crate) line: usize,
    /// Where it starts on that line (bytes).
    pub(crate) column: usize,
    /// Its length (bytes).
    pub(crate) len: usize,
}

/// The part of an instruction a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    /// The instruction word.
    Keyword,
    /// The last flag word named `--NAME` (or `--NAME=…`).
    Flag(&'a str),
    /// The flag word at this position of `Command::flags`.
    FlagAt(usize),
    /// All the arguments (or the point where they should start, when there are none).
    Arguments,
    /// The argument word at this position (0-based), split on blanks as written; the end
    /// of the line when there are fewer.
    Argument(usize),
    /// The last argument word.
    LastArgument,
    /// The first argument word without this character (the odd one out of a `k=v` list).
    ArgumentWithout(char),
    /// The first heredoc marker (`<<EOF`).
    Heredoc,
    /// The first occurrence of this text after the keyword.
    Text(&'a str),
}

impl Layout {
    pub(crate) fn new(
        keyword: Range<usize>,
        flags: Vec<Range<usize>>,
        rest: Range<usize>,
        pieces: Vec<Piece>,
    ) -> Self {
        Self {
            keyword,
            flags,
            rest,
            pieces,
        }
    }

    /// Maps a byte range of the logical line to the physical line it starts on. A range that
    /// runs into a later physical line is cut at the end of the first one.
    pub fn focus(&self, range: Range<usize>) -> Option<Focus> {
        let piece = self.pieces.iter().rev().find(|p| p.offset <= range.start)?;
        let start = (range.start - piece.offset).min(piece.len);
        let end = range
            .end
            .saturating_sub(piece.offset)
            .clamp(start, piece.len);
        let column = |at: usize| u32::try_from(piece.column + at).unwrap_or(u32::MAX);
        Some(Focus {
            line: piece.line,
            start: column(start),
            end: column(end),
        })
    }

    /// The byte range of `subject` in the logical line `original`, whose flag words (quotes
    /// removed) are `flags`.
    pub(crate) fn range_of(
        &self,
        subject: Subject<'_>,
        original: &str,
        flags: &[String],
    ) -> Option<Range<usize>> {
        let rest_text = original.get(self.rest.clone()).unwrap_or_default();
        let words = || words_at(rest_text, self.rest.start);
        let end_of_line = || {
            let end = self.rest.end.max(
                self.flags
                    .last()
                    .map_or(self.keyword.end, |f| f.end)
                    .max(self.keyword.end),
            );
            end..end
        };
        match subject {
            Subject::Keyword => Some(self.keyword.clone()),
            Subject::FlagAt(index) => self.flags.get(index).cloned(),
            Subject::Flag(name) => flags
                .iter()
                .zip(&self.flags)
                .rev()
                .find(|(word, _)| {
                    word.strip_prefix("--")
                        .map(|body| body.split_once('=').map_or(body, |(n, _)| n))
                        == Some(name)
                })
                .map(|(_, range)| range.clone()),
            Subject::Arguments if self.rest.is_empty() => Some(end_of_line()),
            Subject::Arguments => Some(self.rest.clone()),
            Subject::Argument(n) => Some(words().nth(n).unwrap_or_else(end_of_line)),
            Subject::LastArgument => Some(words().last().unwrap_or_else(end_of_line)),
            Subject::ArgumentWithout(c) => words().find(|range| {
                original
                    .get(range.clone())
                    .is_some_and(|word| !word.contains(c))
            }),
            Subject::Heredoc => {
                let at = rest_text.find("<<")?;
                let len = rest_text[at..]
                    .find(char::is_whitespace)
                    .unwrap_or(rest_text.len() - at);
                let start = self.rest.start + at;
                Some(start..start + len)
            }
            Subject::Text("") => None,
            Subject::Text(text) => {
                let from = self.keyword.end.min(original.len());
                let at = original.get(from..)?.find(text)?;
                Some(from + at..from + at + text.len())
            }
        }
    }
}

/// The blank-separated words of `text` as ranges, offset by `base`.
fn words_at(text: &str, base: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = text.get(pos..)?;
        let start = pos + (rest.len() - rest.trim_start().len());
        if start >= text.len() {
            return None;
        }
        let len = text[start..]
            .find(char::is_whitespace)
            .unwrap_or(text.len() - start);
        pos = start + len;
        Some(base + start..base + start + len)
    })
}

impl Record {
    /// Where `subject` is in the file, if the instruction has it.
    pub fn focus(&self, subject: Subject<'_>) -> Option<Focus> {
        let range = self
            .layout
            .range_of(subject, &self.original, &self.command.flags)?;
        self.layout.focus(range)
    }
}

/// Narrows `span` (an instruction's lines, as a planner error gives them) to `subject`,
/// by parsing `source` again to find the instruction's layout. The span comes back
/// unchanged when the instruction cannot be found.
pub fn locate(source: &[u8], span: Span, subject: Subject<'_>) -> Span {
    let Ok(ast) = crate::parser::parse(source) else {
        return span;
    };
    match ast.records.iter().find(|r| r.span.start == span.start) {
        Some(record) => match record.focus(subject) {
            Some(focus) => span.with_focus(Some(focus)),
            None => span,
        },
        None => span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn focus(input: &str, subject: Subject<'_>) -> Option<(usize, String)> {
        let ast = crate::parser::parse(input.as_bytes()).ok()?;
        let record = ast.records.last()?;
        let f = record.focus(subject)?;
        let line = input.lines().nth(f.line - 1)?;
        Some((
            f.line,
            line.get(f.start as usize..f.end as usize)?.to_string(),
        ))
    }

    #[test]
    fn parts_of_one_line() {
        let df = "FROM a\n  COPY --from=b  --chmod=7 'x y' /d\n";
        assert_eq!(focus(df, Subject::Keyword), Some((2, "COPY".into())));
        assert_eq!(
            focus(df, Subject::Flag("from")),
            Some((2, "--from=b".into()))
        );
        assert_eq!(focus(df, Subject::FlagAt(1)), Some((2, "--chmod=7".into())));
        assert_eq!(focus(df, Subject::Arguments), Some((2, "'x y' /d".into())));
        assert_eq!(focus(df, Subject::LastArgument), Some((2, "/d".into())));
        assert_eq!(focus(df, Subject::Text("/d")), Some((2, "/d".into())));
        assert_eq!(focus(df, Subject::Flag("link")), None);
    }

    #[test]
    fn parts_across_continuations() {
        let df = "FROM a\nRUN --network=none \\\n  # comment\n    --mount=x \\\n  echo hi\n";
        assert_eq!(focus(df, Subject::Keyword), Some((2, "RUN".into())));
        assert_eq!(
            focus(df, Subject::Flag("mount")),
            Some((4, "--mount=x".into()))
        );
        assert_eq!(focus(df, Subject::Arguments), Some((5, "echo hi".into())));
        assert_eq!(focus(df, Subject::Argument(1)), Some((5, "hi".into())));
        let df = "FROM a\nRUN a=1 \\\n  b c=d\n";
        assert_eq!(
            focus(df, Subject::ArgumentWithout('=')),
            Some((3, "b".into()))
        );
    }

    #[test]
    fn missing_arguments_point_at_the_end() {
        let df = "FROM a\nWORKDIR  \n";
        let ast = crate::parser::parse(df.as_bytes()).ok();
        let record = ast.as_ref().and_then(|a| a.records.last());
        let f = record.and_then(|r| r.focus(Subject::Arguments));
        assert_eq!(
            f,
            Some(Focus {
                line: 2,
                start: 7,
                end: 7
            })
        );
        assert_eq!(focus(df, Subject::Argument(3)), Some((2, String::new())));
    }

    #[test]
    fn heredoc_marker() {
        let df = "FROM a\nRUN cat <<EOT\nx\nEOT\n";
        assert_eq!(focus(df, Subject::Heredoc), Some((2, "<<EOT".into())));
    }

    #[test]
    fn locate_narrows_a_plan_span() {
        let df = b"FROM a\nCOPY --from=nope x /y\n";
        let span = locate(df, Span::new(2, 2), Subject::Flag("from"));
        assert_eq!(
            span.focus,
            Some(Focus {
                line: 2,
                start: 5,
                end: 16
            })
        );
        assert_eq!(locate(df, Span::new(9, 9), Subject::Keyword).focus, None);
    }
}
