//! Snapshots of build plans: the semantics BuildKit gives a Dockerfile (ARG scoping, build
//! args, ENV over ARG, predefined args, stages by name and index, `COPY --from`, `--target`
//! and the independent-stage structure), shown as a compact dump of each stage and step
//! with the environment the step can see.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use build::plan::{
    BuildPlan, DEFAULT_PATH, PlanOptions, ResolvedImage, Source, StepKind, external_images, plan,
};
use dockerfile::Dockerfile;
use oci::{ContainerConfig, ImageConfig, Platform};

fn options(build_args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    PlanOptions {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        platform: Platform::parse("linux/amd64").unwrap(),
    }
}

/// Every image resolves to the same small config: a PATH, a HOME and a CMD.
fn image() -> ResolvedImage {
    ResolvedImage {
        config: ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(ContainerConfig {
                env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Plans `dockerfile` and dumps the plan (or the error).
fn dump_plan(dockerfile: &str, opts: &PlanOptions) -> String {
    let df = Dockerfile::parse(dockerfile.as_bytes()).unwrap();
    let result = external_images(&df, opts).and_then(|refs| {
        let images: HashMap<String, ResolvedImage> =
            refs.into_iter().map(|r| (r, image())).collect();
        plan(&df, opts, &images)
    });
    match result {
        Ok(p) => dump(&p),
        Err(e) => format!("error (line {:?}): {}", e.span.map(|s| s.start), e.message),
    }
}

fn source(s: &Source) -> String {
    match s {
        Source::Context => "context".into(),
        Source::Stage(i) => format!("stage {i}"),
        Source::Image(r) => format!("image {r}"),
    }
}

/// One line per stage and per step; PATH values are shortened.
fn dump(p: &BuildPlan) -> String {
    let mut out = String::new();
    let short = |s: &str| s.replace(DEFAULT_PATH, "<default>");
    for (i, stage) in p.stages.iter().enumerate() {
        let target = if i == p.target { "  <- target" } else { "" };
        writeln!(
            out,
            "stage {i} {} (Dockerfile stage {}) from {:?} on {} deps {:?}{target}",
            stage.name.as_deref().unwrap_or("-"),
            stage.index,
            stage.base,
            stage.platform,
            stage.deps,
        )
        .unwrap();
        for step in &stage.steps {
            let what = match &step.kind {
                StepKind::Run(r) => {
                    let mut s = format!("run {:?}", r.args);
                    if !r.proxy_env.is_empty() {
                        write!(s, " proxy {:?}", r.proxy_env).unwrap();
                    }
                    for m in &r.mounts {
                        let from = m.from.as_ref().map(source).unwrap_or_default();
                        write!(s, " mount {} {} from {from}", m.kind.as_str(), m.target).unwrap();
                    }
                    s
                }
                StepKind::Copy(c) => format!(
                    "{} {:?} from {} to {}",
                    if c.add { "add" } else { "copy" },
                    c.sources,
                    source(&c.from),
                    c.dest
                ),
                StepKind::Workdir(w) => format!("mkdir {w}"),
                StepKind::Meta => "meta".into(),
            };
            writeln!(out, "  {:>2}: {}", step.span.start, step.source).unwrap();
            writeln!(out, "      {what}").unwrap();
            if let Some(created_by) = step.history.as_ref().and_then(|h| h.created_by.as_ref()) {
                writeln!(out, "      history: {}", short(created_by)).unwrap();
            }
            writeln!(out, "      env: {}", short(&step.env.join(" "))).unwrap();
            if step.workdir != "/" {
                writeln!(out, "      workdir: {}", step.workdir).unwrap();
            }
            if !step.user.is_empty() {
                writeln!(out, "      user: {}", step.user).unwrap();
            }
        }
        let config = stage.config.config.clone().unwrap_or_default();
        writeln!(out, "  config env: {}", short(&config.env.join(" "))).unwrap();
    }
    // Stages of one level depend only on earlier levels: the executor may run them at once.
    let mut levels: Vec<usize> = Vec::new();
    for stage in &p.stages {
        let level = stage.deps.iter().map(|&d| levels[d] + 1).max().unwrap_or(0);
        levels.push(level);
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &level) in levels.iter().enumerate() {
        groups.resize(groups.len().max(level + 1), Vec::new());
        groups[level].push(i);
    }
    writeln!(out, "levels: {groups:?}").unwrap();
    if !p.unused_build_args.is_empty() {
        writeln!(out, "unused build args: {:?}", p.unused_build_args).unwrap();
    }
    for w in &p.warnings {
        writeln!(out, "warning: {w}").unwrap();
    }
    out
}

const SCOPING: &str = "\
ARG BASE=alpine
ARG V=global
ARG ONLY_GLOBAL=g
FROM $BASE AS first
RUN echo $V $ONLY_GLOBAL
ARG V
RUN echo $V
ARG V=stage
RUN echo $V
ARG ONLY_GLOBAL=redeclared-$V
RUN echo $ONLY_GLOBAL
";

#[test]
fn global_args_are_seen_by_from_only_until_redeclared() {
    insta::assert_snapshot!(dump_plan(SCOPING, &options(&[], None)));
}

/// `BASE`, consumed by the global `ARG BASE` in `FROM $BASE`, is not reported as unused (the
/// classic builder, which strata follows here, counts global ARGs as used); `UNUSED` is.
#[test]
fn build_args_override_defaults_global_and_local() {
    let opts = options(
        &[("BASE", "busybox"), ("V", "given"), ("UNUSED", "x")],
        None,
    );
    insta::assert_snapshot!(dump_plan(SCOPING, &opts));
}

#[test]
fn env_wins_over_an_arg_of_the_same_name() {
    let df = "\
FROM img
ENV B=from-env
ARG B=from-arg
ARG C=from-arg
ENV C=env-$C
ARG C=again
RUN echo $B $C
";
    insta::assert_snapshot!(dump_plan(
        df,
        &options(&[("B", "given"), ("C", "given")], None)
    ));
}

#[test]
fn predefined_args() {
    let df = "\
ARG TARGETOS
FROM --platform=$BUILDPLATFORM img AS build
RUN echo $TARGETARCH $BUILDPLATFORM
ARG TARGETARCH
ARG BUILDPLATFORM
ARG TARGETOS
RUN echo $TARGETARCH $BUILDPLATFORM $TARGETOS $HTTP_PROXY
ARG HTTP_PROXY
RUN echo proxy
";
    let opts = options(
        &[
            ("HTTP_PROXY", "http://proxy:3128"),
            ("SOURCE_DATE_EPOCH", "0"),
        ],
        None,
    );
    insta::assert_snapshot!(dump_plan(df, &opts));
}

const STAGES: &str = "\
FROM img AS base
ENV IN_BASE=1
WORKDIR /src

FROM base AS left
RUN echo left > /left

FROM base AS right
ARG WHO=right
RUN echo $WHO > /right

FROM img AS unused
RUN echo never planned

FROM scratch
COPY --from=left /left /
COPY --from=2 /right /
COPY --from=Base /src /src
COPY --from=other/image:1 /etc/os-release /
RUN --mount=type=bind,from=left,target=/m cat /m/left
";

#[test]
fn stages_by_name_and_index_and_images_as_copy_sources() {
    insta::assert_snapshot!(dump_plan(STAGES, &options(&[], None)));
}

#[test]
fn target_picks_the_stages_it_needs_and_independent_ones_share_no_deps() {
    insta::assert_snapshot!(dump_plan(STAGES, &options(&[("WHO", "me")], Some("right"))));
    insta::assert_snapshot!(dump_plan(STAGES, &options(&[], Some("UNUSED"))));
}

#[test]
fn from_a_stage_inherits_its_env_args_and_config() {
    let df = "\
ARG G=1
FROM img AS parent
ARG P=parent
ENV E=$P
USER nobody
FROM parent AS child
RUN echo $P $E $G
ARG G
RUN echo $G
";
    insta::assert_snapshot!(dump_plan(df, &options(&[], None)));
}
