//! Every kind of parse error, rendered as people see it: `file:line:column`, the line with a
//! caret under the offending part, and what was expected. One snapshot holds them all, so a
//! change to any message or caret shows up in review.
#![allow(clippy::unwrap_used)]

use dockerfile::Dockerfile;

const CASES: &[(&str, &str)] = &[
    ("duplicate directive", "# escape=`\n# escape=\\\nFROM a\n"),
    ("invalid escape token", "#escape = x\nFROM a\n"),
    ("unterminated heredoc", "FROM a\nCOPY <<EOT /x\nbody\n"),
    ("env without value", "FROM a\nENV \\\n    PATH\n"),
    ("label without =", "FROM a\nLABEL a=1 b\n"),
    ("not a string array", "FROM a\nCMD [\"a\", 1]\n"),
    ("no instructions", "# nothing\n\n"),
    ("unknown instruction", "FROM a\n  CPOY x /y\n"),
    ("unknown instruction, no hint", "FROM a\nFETCH x\n"),
    ("unknown flag", "FROM a\nADD --chmown=1 x /y\n"),
    ("unknown flag on FROM", "FROM --plaform=linux/amd64 a\n"),
    ("flag without value", "FROM a\nCOPY --from x /y\n"),
    (
        "boolean flag with empty value",
        "FROM a\nCOPY --link= x /y\n",
    ),
    ("flag not boolean", "FROM a\nADD --keep-git-dir=yes x /y\n"),
    (
        "duplicate flag",
        "FROM a\nRUN --network=none --network=host true\n",
    ),
    ("argument count", "FROM a\nCOPY onlyone\n"),
    ("no arguments", "FROM a\nEXPOSE\n"),
    ("blank name", "FROM a\nARG =x\n"),
    ("FROM arguments", "FROM a b\n"),
    ("invalid stage name", "FROM a AS -x\n"),
    ("duplicate stage name", "FROM a AS one\nFROM b AS one\n"),
    ("no stage", "ARG x\nRUN true\nFROM a\n"),
    ("no stages", "ARG x\n"),
    ("onbuild chaining", "FROM a\nONBUILD ONBUILD RUN x\n"),
    ("onbuild trigger", "FROM a\nONBUILD MAINTAINER me\n"),
    ("heredoc destination", "FROM a\nCOPY x <<EOF\nEOF\n"),
    ("shell form SHELL", "FROM a\nSHELL /bin/bash -c\n"),
    ("empty volume", "FROM a\nVOLUME [\"\"]\n"),
    (
        "healthcheck none with arguments",
        "FROM a\nHEALTHCHECK NONE x\n",
    ),
    ("healthcheck without command", "FROM a\nHEALTHCHECK CMD\n"),
    (
        "healthcheck type",
        "FROM a\nHEALTHCHECK --interval=5s CHECK true\n",
    ),
    (
        "invalid duration",
        "FROM a\nHEALTHCHECK --timeout=3s --start-period=1x CMD true\n",
    ),
    (
        "duration too short",
        "FROM a\nHEALTHCHECK --interval=1us CMD true\n",
    ),
    (
        "invalid retries",
        "FROM a\nHEALTHCHECK --retries=many CMD true\n",
    ),
    (
        "negative retries",
        "FROM a\nHEALTHCHECK --retries=-1 CMD true\n",
    ),
    ("invalid network", "FROM a\nRUN --network=bridge true\n"),
    ("invalid security", "FROM a\nRUN --security=lax true\n"),
    (
        "invalid mount",
        "FROM a\nRUN --mount=type=cache --mount=type=bind,src=a\\\"b true\n",
    ),
    (
        "mount from a variable",
        "FROM a\nRUN --mount=from=$X,target=/x true\n",
    ),
    ("non-ASCII before the caret", "FROM a\nLABEL é=☃ x\n"),
    (
        "the word on a continuation line",
        "FROM a\nLABEL a=1 \\\n  b c=d\n",
    ),
    ("tab indentation", "FROM a\n\t\tWORKDIR\n"),
    ("byte-order mark", "\u{feff}FRM a\n"),
];

fn render_all() -> String {
    let mut out = String::new();
    for (name, input) in CASES {
        let Err(error) = Dockerfile::parse(input.as_bytes()) else {
            out.push_str(&format!("## {name}: PARSED\n\n"));
            continue;
        };
        out.push_str(&format!("## {name}\n"));
        out.push_str(&error.render("Dockerfile", input.as_bytes()));
        out.push_str("\n\n");
    }
    out
}

#[test]
fn every_parse_error_renders_with_line_column_and_caret() {
    let all = render_all();
    assert!(!all.contains(": PARSED"), "{all}");
    insta::assert_snapshot!(all);
}

#[test]
fn the_display_form_is_unchanged() {
    // `ParseError`'s Display stays BuildKit's `line N: message` (the conformance harness and
    // plain logs use it); the rendered form is separate.
    let error = Dockerfile::parse(b"FROM a\nCOPY --from x /y\n").unwrap_err();
    assert_eq!(error.to_string(), "line 2: missing a value on flag: from");
    let focus = error.span.and_then(|s| s.focus).unwrap();
    assert_eq!((focus.line, focus.start, focus.end), (2, 5, 11));
}
