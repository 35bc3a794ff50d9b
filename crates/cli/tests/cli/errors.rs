//! Errors for people: every parse and plan error names `file:line:column`, shows the line
//! with a caret under the offending part, and says what was expected. Each case is a
//! snapshot of what `strata build` (or `strata debug parse`) prints, exit code 1.

use crate::Env;

/// `strata build` of `dockerfile` (given on stdin, so it is called `Dockerfile`) over a
/// small context; returns stderr, after checking the build failed with exit code 1.
fn build_error(dockerfile: &str, extra: &[&str]) -> String {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a\n").unwrap();
    let out = env
        .cmd()
        .current_dir(&ctx)
        .args(["build", "--progress", "quiet", "-f", "-"])
        .args(extra)
        .arg(".")
        .write_stdin(dockerfile)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// `strata debug parse Dockerfile`; returns stderr, after checking exit code 1.
fn parse_error(dockerfile: &str) -> String {
    let env = Env::new();
    std::fs::write(env.path("Dockerfile"), dockerfile).unwrap();
    let out = env
        .cmd()
        .current_dir(env.path(""))
        .args(["debug", "parse", "Dockerfile"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn unknown_instruction_with_a_suggestion() {
    let err = build_error("FROM scratch\nCOPY a /a\nRUNN echo hi\n", &[]);
    insta::assert_snapshot!("unknown_instruction", err);
}

#[test]
fn unknown_flag_names_the_flags_the_instruction_takes() {
    let err = build_error("FROM scratch\nCOPY --link --form=base a /a\n", &[]);
    insta::assert_snapshot!("unknown_flag", err);
    let err = build_error("FROM scratch\nWORKDIR --mode=x /w\n", &[]);
    insta::assert_snapshot!("unknown_flag_none_taken", err);
}

#[test]
fn malformed_flags() {
    let err = build_error("FROM scratch\nCOPY --chmod a /a\n", &[]);
    insta::assert_snapshot!("flag_missing_value", err);
    let err = build_error("FROM scratch\nCOPY --link=maybe a /a\n", &[]);
    insta::assert_snapshot!("flag_not_boolean", err);
    let err = build_error("FROM scratch\nCOPY --chown=1 --chown=2 a /a\n", &[]);
    insta::assert_snapshot!("duplicate_flag", err);
    let err = build_error("FROM scratch\nRUN --network=wifi true\n", &[]);
    insta::assert_snapshot!("invalid_network", err);
    let err = build_error(
        "FROM scratch\nHEALTHCHECK --interval=5s \\\n  --timeout=soon CMD true\n",
        &[],
    );
    insta::assert_snapshot!("invalid_duration_on_a_continuation_line", err);
    let err = build_error(
        "FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=nope true\n",
        &[],
    );
    insta::assert_snapshot!("invalid_mount", err);
}

#[test]
fn missing_arguments() {
    let err = build_error("FROM scratch\nWORKDIR\n", &[]);
    insta::assert_snapshot!("workdir_without_path", err);
    let err = build_error("FROM scratch\nCOPY a\n", &[]);
    insta::assert_snapshot!("copy_without_destination", err);
    let err = build_error("FROM scratch\nFROM\n", &[]);
    insta::assert_snapshot!("from_without_image", err);
    let err = build_error("FROM scratch AS 1st\n", &[]);
    insta::assert_snapshot!("invalid_stage_name", err);
    let err = parse_error("FROM scratch\nENV \\\n  PATH\n");
    insta::assert_snapshot!("env_without_value", err);
}

#[test]
fn copy_from_naming_no_stage() {
    let err = build_error("FROM scratch\nCOPY --from=5 /a /a\n", &[]);
    insta::assert_snapshot!("copy_from_missing_index", err);
    let err = build_error("FROM scratch\nCOPY --from=$X /a /a\n", &[]);
    insta::assert_snapshot!("copy_from_variable", err);
    let err = build_error(
        "FROM scratch AS first\nRUN --mount=type=bind,from=later,target=/m true\nFROM scratch AS later\n",
        &["--target", "first"],
    );
    insta::assert_snapshot!("mount_from_later_stage", err);
}

#[test]
fn a_stage_cycle() {
    let err = build_error(
        "FROM scratch AS base\nCOPY a /a\nFROM base AS left\nCOPY --from=right /r /r\n\nFROM base AS right\nCOPY --from=left /l /l\n",
        &[],
    );
    insta::assert_snapshot!("stage_cycle", err);
}

#[test]
fn an_undefined_target() {
    let df = "FROM scratch AS base\nCOPY a /a\nFROM base AS final\n";
    let err = build_error(df, &["--target", "fnial"]);
    insta::assert_snapshot!("undefined_target", err);
    let err = build_error("FROM scratch\n", &["--target", "x"]);
    insta::assert_snapshot!("undefined_target_no_names", err);
}

#[test]
fn syntax_errors_from_debug_parse() {
    let err = parse_error("# escape=x\nFROM scratch\n");
    insta::assert_snapshot!("invalid_escape_directive", err);
    let err = parse_error("FROM scratch\nRUN <<EOF cat\nhello\n");
    insta::assert_snapshot!("unterminated_heredoc", err);
    let err = parse_error("# only a comment\n");
    insta::assert_snapshot!("no_instructions", err);
    let err = parse_error("FROM scratch\n\tCMD [ \"echo\", [ \"nested\" ] ]\n");
    insta::assert_snapshot!("nested_json", err);
}

#[test]
fn stage_and_order_errors() {
    let err = build_error("COPY a /a\nFROM scratch\n", &[]);
    insta::assert_snapshot!("instruction_before_from", err);
    let err = build_error("FROM scratch AS x\nFROM scratch AS X\n", &[]);
    insta::assert_snapshot!("duplicate_stage_name", err);
    let err = build_error("FROM scratch\nONBUILD FROM x\n", &[]);
    insta::assert_snapshot!("onbuild_from", err);
}
