use std::time::Duration;

use super::*;
use crate::error::Span;
use crate::instructions::{CacheSharing, MountType};

fn dockerfile(text: &str) -> Dockerfile {
    Dockerfile::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn error(text: &str) -> String {
    match Dockerfile::parse(text.as_bytes()) {
        Ok(d) => panic!("{text:?} was accepted: {d:?}"),
        Err(e) => e.to_string(),
    }
}

/// The instructions of the only stage of `FROM scratch\n` + `body`.
fn instructions(body: &str) -> Vec<Instruction> {
    let file = dockerfile(&format!("FROM scratch\n{body}"));
    file.stages
        .into_iter()
        .flat_map(|s| s.instructions)
        .map(|i| i.value)
        .collect()
}

fn only(body: &str) -> Instruction {
    let mut all = instructions(body);
    assert_eq!(all.len(), 1, "{body:?}");
    all.remove(0)
}

#[test]
fn stages_and_meta_args() {
    let file = dockerfile(
        "ARG BASE=alpine\n# builder compiles things\nFROM --platform=$BUILDPLATFORM ${BASE} AS Builder\nRUN make\nFROM builder\nCOPY --from=BUILDER /out /\n",
    );
    assert_eq!(file.meta_args.len(), 1);
    assert_eq!(file.meta_args[0].value.args[0].name, "BASE");
    assert_eq!(
        file.meta_args[0].value.args[0].default.as_deref(),
        Some("alpine")
    );
    assert_eq!(file.stages.len(), 2);
    let builder = &file.stages[0];
    assert_eq!(builder.name(), Some("builder"));
    assert_eq!(builder.from.value.base, "${BASE}");
    assert_eq!(
        builder.from.value.platform.as_deref(),
        Some("$BUILDPLATFORM")
    );
    assert_eq!(builder.comment.as_deref(), Some("compiles things"));
    assert_eq!(builder.from.span, Span::line(3));
    assert_eq!(builder.instructions.len(), 1);
    assert_eq!(file.stages[1].name(), None);
    assert_eq!(file.find_stage("Builder").map(|(i, _)| i), Some(0));
    assert_eq!(file.find_stage("1").map(|(i, _)| i), Some(1));
    assert!(file.find_stage("2").is_none());
}

#[test]
fn stage_errors() {
    assert_eq!(
        error("FROM a AS 1st\n"),
        "line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        error("FROM a b\n"),
        "line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM\n"),
        "line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a AS x\nFROM b AS X\n"),
        "line 2: duplicate stage name \"x\""
    );
    assert_eq!(
        error("RUN x\n"),
        "line 1: no build stage in current context"
    );
    assert_eq!(
        error("ARG A\n"),
        "line 1: dockerfile contains no stages to build"
    );
    assert_eq!(
        error("FROM a\nFNTRYPOINT x\n"),
        "line 2: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"
    );
    assert_eq!(
        error("FROM a\nxyzzy\n"),
        "line 2: unknown instruction: xyzzy"
    );
    assert!(dockerfile("FROM a AS my-stage_1.x\n").stages[0].name() == Some("my-stage_1.x"));
}

#[test]
fn run_with_flags() {
    let Instruction::Run(run) = only(
        "RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok --network=none --security=insecure pip install x\n",
    ) else {
        panic!("not RUN")
    };
    assert_eq!(
        run.command,
        CommandLine {
            args: vec!["pip install x".into()],
            shell_form: true
        }
    );
    assert_eq!(run.network, NetworkMode::None);
    assert_eq!(run.security, SecurityMode::Insecure);
    assert_eq!(run.flags_used, vec!["mount", "network", "security"]);
    let mounts: Vec<_> = run
        .mounts
        .iter()
        .map(|m| m.resolve(|v| Ok::<_, String>(v.to_string())))
        .collect();
    let cache = mounts[0].as_ref().ok();
    assert_eq!(
        cache.map(|m| (m.kind, m.sharing)),
        Some((MountType::Cache, Some(CacheSharing::Locked)))
    );
    let secret = mounts[1].as_ref().ok();
    assert_eq!(
        secret.map(|m| (m.kind, m.id.clone())),
        Some((MountType::Secret, Some("tok".into())))
    );

    let Instruction::Run(exec) = only("RUN [\"echo\", \"a b\"]\n") else {
        panic!("not RUN")
    };
    assert_eq!(
        exec.command,
        CommandLine {
            args: vec!["echo".into(), "a b".into()],
            shell_form: false
        }
    );
    assert_eq!(exec.network, NetworkMode::Default);
    assert_eq!(exec.security, SecurityMode::Sandbox);
}

#[test]
fn run_flag_errors() {
    assert_eq!(
        error("FROM a\nRUN --network=bridge x\n"),
        "line 2: invalid network mode \"bridge\""
    );
    assert_eq!(
        error("FROM a\nRUN --security=root x\n"),
        "line 2: security \"root\" is not valid"
    );
    assert_eq!(
        error("FROM a\nRUN --mont=type=bind x\n"),
        "line 2: unknown flag: mont (did you mean mount?)"
    );
    assert_eq!(
        error("FROM a\nRUN --mount=type=bind,from=$X x\n"),
        "line 2: 'from' doesn't support variable expansion, define alias stage instead"
    );
    assert_eq!(
        error("FROM a\nRUN --network=none --network=host x\n"),
        "line 2: duplicate flag specified: network"
    );
}

#[test]
fn run_heredocs() {
    let Instruction::Run(run) = only("RUN <<-EOF bash\n\techo $HOME\n\tEOF\n") else {
        panic!("not RUN")
    };
    assert_eq!(run.command.args, vec!["<<-EOF bash"]);
    assert_eq!(run.files.len(), 1);
    assert_eq!(run.files[0].name, "EOF");
    assert_eq!(run.files[0].data, "\techo $HOME\n");
    assert_eq!(run.files[0].content(), "echo $HOME\n");
}

#[test]
fn copy_and_add() {
    let Instruction::Copy(copy) = only(
        "COPY --from=build --chown=1:2 --chmod=0644 --link --parents --exclude=*.tmp --exclude=.git a b/ /dest/\n",
    ) else {
        panic!("not COPY")
    };
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.chown.as_deref(), Some("1:2"));
    assert_eq!(copy.chmod.as_deref(), Some("0644"));
    assert!(copy.link && copy.parents);
    assert_eq!(copy.excludes, vec!["*.tmp", ".git"]);
    assert_eq!(copy.files.sources, vec!["a", "b/"]);
    assert_eq!(copy.files.dest, "/dest/");

    let Instruction::Add(add) =
        only("ADD --checksum=sha256:abc --keep-git-dir --unpack=false https://x/y.tar /y\n")
    else {
        panic!("not ADD")
    };
    assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    assert!(add.keep_git_dir);
    assert_eq!(add.unpack, Some(false));
    let Instruction::Add(add) = only("ADD a /b\n") else {
        panic!("not ADD")
    };
    assert_eq!(add.unpack, None);

    let Instruction::Copy(json) = only("COPY [\"a b\", \"/c d\"]\n") else {
        panic!("not COPY")
    };
    assert_eq!(json.files.sources, vec!["a b"]);
    assert_eq!(json.files.dest, "/c d");
}

#[test]
fn copy_heredocs() {
    let Instruction::Copy(copy) =
        only("COPY <<EOF <<-'RAW' x /dest/\nhello $name\nEOF\n\tkeep $this\n\tRAW\n")
    else {
        panic!("not COPY")
    };
    assert_eq!(copy.files.sources, vec!["x"]);
    assert_eq!(copy.files.contents.len(), 2);
    assert_eq!(copy.files.contents[0].path, "EOF");
    assert_eq!(copy.files.contents[0].data, "hello $name\n");
    assert!(copy.files.contents[0].expand);
    assert_eq!(copy.files.contents[1].path, "RAW");
    assert_eq!(copy.files.contents[1].data, "keep $this\n");
    assert!(!copy.files.contents[1].expand);
    let env = vec![("name", "world")];
    let expanded: Vec<String> = copy
        .files
        .contents
        .iter()
        .filter_map(|c| c.expanded(&env).ok())
        .collect();
    assert_eq!(expanded, vec!["hello world\n", "keep $this\n"]);
    // Quotes stay, `${name}` inside them still expands, `\$` and `\\` are escapes.
    let Instruction::Copy(quotes) =
        only("COPY <<EOF /x\nHello '${name}'! \\$HOME \"a\\\\b\"\nEOF\n")
    else {
        panic!("not COPY")
    };
    let body = quotes.files.contents[0].expanded(&env).ok();
    assert_eq!(body.as_deref(), Some("Hello 'world'! $HOME \"a\\b\"\n"));
    assert_eq!(
        error("FROM a\nCOPY x <<EOF\nbody\nEOF\n"),
        "line 2: COPY cannot accept a heredoc as a destination"
    );
}

#[test]
fn copy_errors() {
    assert_eq!(
        error("FROM a\nCOPY x\n"),
        "line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."
    );
    assert_eq!(
        error("FROM a\nCOPY --chown x y\n"),
        "line 2: missing a value on flag: chown"
    );
    assert_eq!(
        error("FROM a\nCOPY --link=maybe x y\n"),
        "line 2: expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(
        error("FROM a\nCOPY --checksum=x a b\n"),
        "line 2: unknown flag: checksum"
    );
    assert_eq!(
        error("FROM a\nADD --from=x a b\n"),
        "line 2: unknown flag: from"
    );
}

#[test]
fn env_label_arg() {
    let Instruction::Env(env) = only("ENV A=1 B=\"two words\" C=$A\n") else {
        panic!("not ENV")
    };
    let pairs: Vec<(&str, &str, bool)> = env
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str(), kv.no_delimiter))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("A", "1", false),
            ("B", "\"two words\"", false),
            ("C", "$A", false)
        ]
    );
    let Instruction::Env(old) = only("ENV PATH /usr/bin:$PATH more\n") else {
        panic!("not ENV")
    };
    assert_eq!(
        (
            old[0].key.as_str(),
            old[0].value.as_str(),
            old[0].no_delimiter
        ),
        ("PATH", "/usr/bin:$PATH more", true)
    );
    assert_eq!(
        error("FROM a\nENV\n"),
        "line 2: ENV requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nENV =x\n"),
        "line 2: ENV names can not be blank"
    );
    assert_eq!(
        error("FROM a\nLABEL a=b c\n"),
        "line 2: Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );

    let Instruction::Label(labels) = only("LABEL org.opencontainers.image.title=\"x y\"\n") else {
        panic!("not LABEL")
    };
    assert_eq!(labels[0].key, "org.opencontainers.image.title");

    let file = dockerfile("FROM a\n# VERSION the version to build\nARG VERSION=1.0 OTHER\n");
    let Instruction::Arg(arg) = &file.stages[0].instructions[0].value else {
        panic!("not ARG")
    };
    assert_eq!(arg.args.len(), 2);
    assert_eq!(arg.args[0].default.as_deref(), Some("1.0"));
    assert_eq!(arg.args[0].comment.as_deref(), Some("the version to build"));
    assert_eq!(arg.args[1].default, None);
    assert_eq!(
        error("FROM a\nARG =x\n"),
        "line 2: ARG names can not be blank"
    );
    assert_eq!(
        error("FROM a\nARG\n"),
        "line 2: ARG requires at least one argument"
    );
}

#[test]
fn syntax_directive_is_noted() {
    let file = dockerfile("# syntax=docker/dockerfile:1.7\nFROM a\n");
    assert_eq!(file.directives[0].value, "docker/dockerfile:1.7");
    assert_eq!(file.warnings.len(), 1);
    assert_eq!(file.warnings[0].span, Span::line(1));
}

#[test]
fn ignored_flags_become_warnings() {
    let file = dockerfile("FROM a\nARG --foo X\nSTOPSIGNAL --bar SIGTERM\n");
    let messages: Vec<&str> = file.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "flags on ARG are ignored: --foo",
            "flags on STOPSIGNAL are ignored: --bar"
        ]
    );
}

#[test]
fn simple_instructions() {
    let all = instructions(
        "CMD [\"a\"]\nENTRYPOINT run me\nEXPOSE 8080/tcp 80 $PORT\nVOLUME [\"/data\", \"/logs\"]\nUSER app:app\nWORKDIR /src\nSTOPSIGNAL SIGKILL\nMAINTAINER me\nSHELL [\"/bin/bash\", \"-c\"]\n",
    );
    assert_eq!(
        all,
        vec![
            Instruction::Cmd(CommandLine {
                args: vec!["a".into()],
                shell_form: false
            }),
            Instruction::Entrypoint(CommandLine {
                args: vec!["run me".into()],
                shell_form: true
            }),
            Instruction::Expose(vec!["$PORT".into(), "80".into(), "8080/tcp".into()]),
            Instruction::Volume(vec!["/data".into(), "/logs".into()]),
            Instruction::User("app:app".into()),
            Instruction::Workdir("/src".into()),
            Instruction::Stopsignal("SIGKILL".into()),
            Instruction::Maintainer("me".into()),
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()]),
        ]
    );
    assert_eq!(
        only("CMD []\n"),
        Instruction::Cmd(CommandLine {
            args: vec![],
            shell_form: false
        })
    );
    assert_eq!(
        error("FROM a\nSHELL bash -c\n"),
        "line 2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM a\nSHELL []\n"),
        "line 2: SHELL requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nUSER\n"),
        "line 2: USER requires exactly one argument"
    );
    assert_eq!(
        error("FROM a\nVOLUME [\" \"]\n"),
        "line 2: VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error("FROM a\nEXPOSE\n"),
        "line 2: EXPOSE requires at least one argument"
    );
    assert_eq!(error("FROM a\nCMD --x y\n"), "line 2: unknown flag: x");
}

#[test]
fn healthchecks() {
    assert_eq!(
        only("HEALTHCHECK NONE\n"),
        Instruction::Healthcheck(Healthcheck::None)
    );
    let Instruction::Healthcheck(Healthcheck::Check(check)) = only(
        "HEALTHCHECK --interval=5s --timeout=3s --start-period=1m --start-interval=0s --retries=3 CMD curl -f http://x/\n",
    ) else {
        panic!("not a check")
    };
    assert_eq!(check.test, vec!["CMD-SHELL", "curl -f http://x/"]);
    assert_eq!(check.interval, Some(Duration::from_secs(5)));
    assert_eq!(check.timeout, Some(Duration::from_secs(3)));
    assert_eq!(check.start_period, Some(Duration::from_secs(60)));
    assert_eq!(check.start_interval, None);
    assert_eq!(check.retries, 3);
    let Instruction::Healthcheck(Healthcheck::Check(exec)) =
        only("HEALTHCHECK CMD [\"probe\", \"-q\"]\n")
    else {
        panic!("not a check")
    };
    assert_eq!(exec.test, vec!["CMD", "probe", "-q"]);

    assert_eq!(
        error("FROM a\nHEALTHCHECK\n"),
        "line 2: HEALTHCHECK requires at least one argument"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK NONE x\n"),
        "line 2: HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK CMD\n"),
        "line 2: Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK CONNECT x\n"),
        "line 2: Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --interval=1 CMD x\n"),
        "line 2: time: missing unit in duration \"1\""
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --timeout=10us CMD x\n"),
        "line 2: Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n"),
        "line 2: --retries cannot be negative (-1)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --retries=x CMD x\n"),
        "line 2: strconv.ParseInt: parsing \"x\": invalid syntax"
    );
}

#[test]
fn onbuild() {
    let Instruction::Onbuild(trigger) = only("ONBUILD RUN echo hi\n") else {
        panic!("not ONBUILD")
    };
    assert_eq!(trigger.expression, "RUN echo hi");
    assert_eq!(trigger.trigger, "RUN");
    let Instruction::Onbuild(heredoc) = only("onbuild COPY <<EOF /x\nbody\nEOF\n") else {
        panic!("not ONBUILD")
    };
    assert_eq!(heredoc.expression, "COPY <<EOF /x\nbody\nEOF");
    assert_eq!(
        error("FROM a\nONBUILD ONBUILD RUN x\n"),
        "line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("FROM a\nONBUILD FROM x\n"),
        "line 2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM a\nONBUILD\n"),
        "line 2: ONBUILD requires at least one argument"
    );
}

#[test]
fn spans_and_source_are_kept() {
    let file = dockerfile("FROM a\nRUN echo a \\\n  && echo b\n\nCOPY x y\n");
    let run = &file.stages[0].instructions[0];
    assert_eq!(run.span, Span::new(2, 3));
    assert_eq!(run.source, "RUN echo a   && echo b");
    assert_eq!(file.stages[0].instructions[1].span, Span::line(5));
    assert_eq!(
        Instruction::Copy(match &file.stages[0].instructions[1].value {
            Instruction::Copy(c) => c.clone(),
            other => panic!("{other:?}"),
        })
        .keyword(),
        "COPY"
    );
}

#[test]
fn escape_directive_reaches_the_typed_layer() {
    let file = dockerfile("# escape=`\nFROM a\nRUN dir C:\\ `\n  /b\n");
    assert_eq!(file.escape, '`');
    let Instruction::Run(run) = &file.stages[0].instructions[0].value else {
        panic!("not RUN")
    };
    assert_eq!(run.command.args, vec!["dir C:\\   /b"]);
}
