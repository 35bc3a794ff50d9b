//! Dockerfile and `.dockerignore` syntax, exactly as BuildKit reads them.
//!
//! This crate owns the text layer of a build:
//! - [`parse`]: bytes → instruction records with line spans, warnings and directives, and
//!   [`dump`], which prints BuildKit's `result` format (what `strata debug parse` shows);
//! - [`Expander`]: BuildKit's shell-word expander (`$VAR`, `${VAR:-x}`, `${VAR#p}`, quotes,
//!   escapes, word splitting), reporting which names it used;
//! - [`Dockerfile`]: typed instructions grouped into stages, with every flag parsed and
//!   validated, heredoc bodies attached, and expansion left to the planner, which knows the
//!   ARG and ENV scope of each step;
//! - [`IgnoreMatcher`]: `.dockerignore` and `--exclude` patterns with moby's semantics.
//!
//! It never does I/O beyond the bytes the caller hands it, never reads the clock or the
//! environment, and never panics on any input: it is pure code, so it can be fuzzed and used
//! by the planner and the linter alike.
//!
//! Everything here is hand-written: BuildKit's exact behaviour (its quirks included) is the
//! compatibility contract, and no crate reproduces it. The conformance corpus in
//! `shared/conformance` is the judge; see `tests/conformance.rs`.

mod dockerignore;
mod error;
mod expand;
mod instructions;
mod json;
mod layout;
pub mod lint;
mod parser;
mod render;
mod text;

pub use dockerignore::{IgnoreError, IgnoreMatcher, IgnorePattern, clean_path};
pub use error::{ErrorKind, Focus, ParseError, Span, Warning};
pub use expand::{CaseInsensitiveEnv, EmptyEnv, Env, ExpandError, Expander, Expansion};
pub use instructions::*;
pub use layout::{Layout, Subject, locate};
pub use parser::{
    Ast, Command, Directive, Heredoc, Record, chomp_heredoc_content, debug_parse, dump,
    dump_record, heredocs_from_line, parse, parse_heredoc,
};
pub use render::{Diagnostic, render_error};
pub use text::go_quote;
