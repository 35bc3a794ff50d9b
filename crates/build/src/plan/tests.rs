use super::*;

fn host() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn opts(args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        platform: host(),
    }
}

fn base_image(env: &[&str]) -> ResolvedImage {
    ResolvedImage {
        config: ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(ContainerConfig {
                env: env.iter().map(|s| s.to_string()).collect(),
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn plan_of(text: &str, o: &PlanOptions) -> Result<BuildPlan, PlanError> {
    let df = Dockerfile::parse(text.as_bytes()).unwrap();
    let mut images = HashMap::new();
    for r in external_images(&df, o)? {
        images.insert(r, base_image(&["PATH=/bin:/usr/bin", "HOME=/root"]));
    }
    plan(&df, o, &images)
}

fn created_by(p: &BuildPlan) -> Vec<String> {
    p.stages[p.target]
        .steps
        .iter()
        .filter_map(|s| s.history.as_ref())
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect()
}

#[test]
fn global_args_reach_from_only_unless_redeclared() {
    let df = "ARG BASE=alpine\nARG V=1\nFROM $BASE\nRUN echo $V\nARG V\nRUN echo $V\n";
    let p = plan_of(df, &opts(&[], None)).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("alpine".into()));
    let steps = &p.stages[0].steps;
    assert!(
        !steps[0].env.iter().any(|e| e.starts_with("V=")),
        "global V invisible before ARG"
    );
    assert!(
        steps[2].env.contains(&"V=1".to_string()),
        "redeclared ARG inherits the global value"
    );
    assert_eq!(
        created_by(&p),
        [
            "RUN /bin/sh -c echo $V # buildkit",
            "ARG V=1",
            "RUN |1 V=1 /bin/sh -c echo $V # buildkit"
        ]
    );
}

#[test]
fn build_args_override_defaults_and_env_wins() {
    let df = "FROM img\nARG A=default\nENV B=fromenv\nARG B=fromarg\nRUN true\n";
    let p = plan_of(df, &opts(&[("A", "given")], None)).unwrap();
    let run = p.stages[0].steps.last().unwrap();
    assert!(run.env.contains(&"A=given".to_string()));
    assert!(run.env.contains(&"B=fromenv".to_string()), "{:?}", run.env);
    assert_eq!(
        run.history.as_ref().unwrap().created_by.as_deref(),
        Some("RUN |2 A=given B=fromenv /bin/sh -c true # buildkit")
    );
}

#[test]
fn unused_build_args_are_reported_but_predefined_ones_are_not() {
    let p = plan_of(
        "FROM img\nARG USED\nRUN true\n",
        &opts(
            &[
                ("USED", "1"),
                ("UNUSED", "2"),
                ("HTTP_PROXY", "x"),
                ("SOURCE_DATE_EPOCH", "0"),
            ],
            None,
        ),
    )
    .unwrap();
    assert_eq!(p.unused_build_args, ["UNUSED"]);
    match &p.stages[0].steps[1].kind {
        StepKind::Run(r) => assert_eq!(r.proxy_env, ["HTTP_PROXY=x"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_expands_against_the_previous_environment() {
    let p = plan_of(
        "FROM img\nENV A=1\nENV A=2 B=$A\nWORKDIR /x/$B\n",
        &opts(&[], None),
    )
    .unwrap();
    let cfg = p.stages[0].config.config.as_ref().unwrap();
    assert!(cfg.env.contains(&"B=1".to_string()));
    assert_eq!(cfg.working_dir, "/x/1");
    assert_eq!(created_by(&p), ["ENV A=1", "ENV A=2 B=1", "WORKDIR /x/1"]);
}

#[test]
fn default_path_is_added_when_missing() {
    let p = plan_of("FROM scratch\nCOPY a /\n", &opts(&[], None)).unwrap();
    let cfg = p.stages[0].config.config.as_ref().unwrap();
    assert_eq!(cfg.env, [format!("PATH={DEFAULT_PATH}")]);
    assert_eq!(cfg.working_dir, "/");
}

#[test]
fn cmd_entrypoint_and_shell_follow_buildkit() {
    let p = plan_of(
        "FROM img\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT echo hi\n",
        &opts(&[], None),
    )
    .unwrap();
    let cfg = p.stages[0].config.config.as_ref().unwrap();
    assert_eq!(
        cfg.entrypoint.as_deref(),
        Some(&["/bin/bash".to_string(), "-c".into(), "echo hi".into()][..])
    );
    assert_eq!(cfg.cmd, None, "ENTRYPOINT resets an inherited CMD");
    assert_eq!(
        created_by(&p),
        [
            "SHELL [/bin/bash -c]",
            "ENTRYPOINT [\"/bin/bash\" \"-c\" \"echo hi\"]"
        ]
    );

    let p = plan_of(
        "FROM img\nCMD [\"a\"]\nENTRYPOINT [\"b\"]\n",
        &opts(&[], None),
    )
    .unwrap();
    let cfg = p.stages[0].config.config.as_ref().unwrap();
    assert_eq!(
        cfg.cmd.as_deref(),
        Some(&["a".to_string()][..]),
        "a CMD of the same stage survives"
    );
    assert!(cfg.args_escaped);
}

#[test]
fn expose_volume_label_healthcheck_stopsignal() {
    let p = plan_of(
        "FROM img\nEXPOSE 8080 53/UDP 7000-7001\nVOLUME /data\nLABEL a=b \"c d\"=e\nSTOPSIGNAL SIGKILL\nHEALTHCHECK --interval=5m --timeout=3s CMD curl -f http://x/\n",
        &opts(&[], None),
    )
    .unwrap();
    let cfg = p.stages[0].config.config.as_ref().unwrap();
    let ports: Vec<&String> = cfg.exposed_ports.keys().collect();
    assert_eq!(ports, ["53/udp", "7000/tcp", "7001/tcp", "8080/tcp"]);
    assert!(cfg.volumes.contains_key("/data"));
    assert_eq!(cfg.labels.get("c d").map(String::as_str), Some("e"));
    assert_eq!(cfg.stop_signal, "SIGKILL");
    let hc = cfg.healthcheck.as_ref().unwrap();
    assert_eq!(hc.interval, 300_000_000_000);
    let h = created_by(&p);
    assert_eq!(h[0], "EXPOSE [53/udp 7000/tcp 7001/tcp 8080/tcp]");
    assert_eq!(h[1], "VOLUME [/data]");
    assert_eq!(
        h[4],
        "HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:5m0s Timeout:3s StartPeriod:0s StartInterval:0s Retries:0}"
    );
}

#[test]
fn copy_destinations_and_history() {
    let p = plan_of(
        "FROM img\nWORKDIR /app\nARG OWNER=1000\nCOPY --chown=$OWNER --from=img2 a b ./\nCOPY x y\nCOPY <<EOF /etc/conf\nv=$OWNER\nEOF\n",
        &opts(&[], None),
    )
    .unwrap();
    let steps = &p.stages[0].steps;
    let StepKind::Copy(c) = &steps[2].kind else {
        panic!()
    };
    assert_eq!(c.dest, "/app/");
    assert_eq!(c.chown.as_deref(), Some("1000"));
    assert_eq!(c.from, Source::Image("img2".into()));
    let StepKind::Copy(c) = &steps[3].kind else {
        panic!()
    };
    assert_eq!(c.dest, "/app/y");
    let StepKind::Copy(c) = &steps[4].kind else {
        panic!()
    };
    assert_eq!(
        c.inline,
        [InlineFile {
            name: "EOF".into(),
            content: "v=1000\n".into()
        }]
    );
    let h = created_by(&p);
    assert_eq!(h[2], "COPY --chown=1000 a b ./ # buildkit");
    assert_eq!(h[4], "COPY <<EOF /etc/conf # buildkit");
}

#[test]
fn only_needed_stages_are_planned_in_dependency_order() {
    let df = "FROM img AS unused\nRUN exit 1\n\nFROM img AS build\nRUN make\n\nFROM scratch AS other\nCOPY x /\n\nFROM img\nCOPY --from=build /out /\nCOPY --from=2 /x /\n";
    let p = plan_of(df, &opts(&[], None)).unwrap();
    let names: Vec<Option<&str>> = p.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("build"), Some("other"), None]);
    assert_eq!(p.stages[2].deps, [0, 1]);
    let p = plan_of(df, &opts(&[], Some("BUILD"))).unwrap();
    assert_eq!(p.stages.len(), 1);
    let err = plan_of(df, &opts(&[], Some("nope"))).unwrap_err();
    assert_eq!(err.message, "target stage \"nope\" could not be found");
}

#[test]
fn stage_bases_inherit_config_and_args() {
    let df =
        "FROM img AS base\nARG V=1\nENV E=x\nONBUILD RUN echo trigger\n\nFROM base\nRUN echo $V\n";
    let p = plan_of(df, &opts(&[], None)).unwrap();
    assert_eq!(p.stages[1].base, Base::Stage(0));
    let steps = &p.stages[1].steps;
    assert_eq!(
        steps[0].history.as_ref().unwrap().created_by.as_deref(),
        Some("RUN |1 V=1 /bin/sh -c echo trigger # buildkit"),
        "the parent stage's ONBUILD runs first"
    );
    assert!(steps[1].env.contains(&"E=x".to_string()));
    assert!(
        p.stages[1]
            .config
            .config
            .as_ref()
            .unwrap()
            .on_build
            .is_empty()
    );
}

#[test]
fn errors_name_their_line() {
    let err = plan_of(
        "FROM img AS first\nCOPY --from=later a b\nFROM img AS later\n",
        &opts(&[], Some("first")),
    )
    .unwrap_err();
    assert!(
        err.message.contains("needs to be defined before"),
        "{}",
        err.message
    );
    assert_eq!(err.span.map(|s| s.start), Some(2));
    let err = plan_of("FROM img\nCOPY --from=$X a b\n", &opts(&[], None)).unwrap_err();
    assert!(
        err.message
            .contains("variable expansion is not supported for --from")
    );
    let err = plan_of("FROM img\nCOPY http://x/y /\n", &opts(&[], None)).unwrap_err();
    assert_eq!(err.message, "source can't be a URL for COPY");
    let err = plan_of("FROM img\nCOPY --chmod=999 a /\n", &opts(&[], None)).unwrap_err();
    assert!(err.message.starts_with("invalid chmod parameter"));
}

#[test]
fn run_mounts_resolve_targets_ids_and_stages() {
    let df = "FROM img AS dep\nFROM img\nWORKDIR /w\nRUN --mount=type=cache,target=cache --mount=type=bind,from=dep,target=/d --mount=type=secret,id=tok true\n";
    let p = plan_of(df, &opts(&[], None)).unwrap();
    let StepKind::Run(r) = &p.stages[1].steps[1].kind else {
        panic!()
    };
    assert_eq!(r.mounts[0].target, "/w/cache");
    assert_eq!(r.mounts[0].id.as_deref(), Some("/cache"));
    assert_eq!(r.mounts[1].from, Some(Source::Stage(0)));
    assert_eq!(r.mounts[2].target, "/run/secrets/tok");
    assert_eq!(p.stages[1].deps, [0]);
}

#[test]
fn go_durations() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(3_000_000_000), "3s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(300_000_000_000), "5m0s");
    assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(go_duration(1_500_000), "1.5ms");
}

#[test]
fn dest_and_workdir_paths() {
    assert_eq!(resolve_dest("/app", "."), "/app/");
    assert_eq!(resolve_dest("/app", "sub/"), "/app/sub/");
    assert_eq!(resolve_dest("/app", "/abs"), "/abs");
    assert_eq!(resolve_dest("/", "./"), "/");
    assert_eq!(normalize_workdir("/a/b", "../c"), "/a/c");
}
