use std::collections::BTreeMap;

use super::*;

fn run_with(source: &str, options: &LintOptions<'_>) -> Vec<Finding> {
    let df = Dockerfile::parse(source.as_bytes()).unwrap();
    lint(&df, source.as_bytes(), options)
}

fn run(source: &str) -> Vec<Finding> {
    run_with(source, &LintOptions::default())
}

fn rules(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule).collect()
}

fn has(source: &str, rule: &str) -> bool {
    run(source).iter().any(|f| f.rule == rule)
}

fn message(source: &str, rule: &str) -> String {
    run(source)
        .into_iter()
        .find(|f| f.rule == rule)
        .map(|f| f.message)
        .unwrap_or_else(|| panic!("{rule} did not fire on:\n{source}"))
}

#[test]
fn the_catalogue_has_buildkits_checks_and_strata_rules() {
    let bk = RULES
        .iter()
        .filter(|r| r.origin == Origin::BuildKit)
        .count();
    let st = RULES.iter().filter(|r| r.origin == Origin::Strata).count();
    assert_eq!((bk, st), (22, 10));
    let experimental: Vec<&str> = RULES
        .iter()
        .filter(|r| r.experimental)
        .map(|r| r.id)
        .collect();
    assert_eq!(
        experimental,
        ["CopyIgnoredFile", "InvalidDefinitionDescription"]
    );
    assert_eq!(
        rule("JSONArgsRecommended").unwrap().url().unwrap(),
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    );
    assert!(rule("StrataUnpinnedBase").unwrap().url().is_none());
}

#[test]
fn a_clean_dockerfile_has_no_findings() {
    let clean = "FROM alpine:3.20 AS build\n\
                 WORKDIR /src\n\
                 COPY go.mod go.sum ./\n\
                 RUN --mount=type=cache,target=/root/.cache go mod download\n\
                 COPY . .\n\
                 RUN go build -o /out/app .\n\
                 \n\
                 FROM alpine:3.20@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
                 RUN apk add --no-cache ca-certificates\n\
                 COPY --from=build /out/app /usr/local/bin/app\n\
                 USER 65534\n\
                 ENTRYPOINT [\"app\"]\n";
    assert_eq!(rules(&run(clean)), Vec::<&str>::new());
}

#[test]
fn casing_rules() {
    assert_eq!(
        message("FROM a:1 AS Build\nRUN x\n", "StageNameCasing"),
        "Stage name 'Build' should be lowercase"
    );
    assert!(!has("FROM a:1 AS build\n", "StageNameCasing"));
    assert_eq!(
        message("FROM a:1 as b\n", "FromAsCasing"),
        "'as' and 'FROM' keywords' casing do not match"
    );
    assert!(!has("from a:1 as b\n", "FromAsCasing"));
    assert!(
        !has("From a:1 as b\n", "FromAsCasing"),
        "mixed FROM is left to the other check"
    );
    assert_eq!(
        message("FROM a:1\nRUN x\nrun y\n", "ConsistentInstructionCasing"),
        "Command 'run' should match the case of the command majority (uppercase)"
    );
    assert_eq!(
        message("from a:1\nrun x\nRUN y\n", "ConsistentInstructionCasing"),
        "Command 'RUN' should match the case of the command majority (lowercase)"
    );
    // A tie counts as an uppercase majority; mixed case is always flagged.
    assert_eq!(
        message("from a:1\nRUN y\n", "ConsistentInstructionCasing"),
        "Command 'from' should match the case of the command majority (uppercase)"
    );
    assert!(has("FROM a:1\nRun x\n", "ConsistentInstructionCasing"));
    assert!(!has("FROM a:1\nRUN x\n", "ConsistentInstructionCasing"));
    assert_eq!(
        message("FROM a:1\nEXPOSE 80/TCP\n", "ExposeProtoCasing"),
        "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase"
    );
    assert!(!has("FROM a:1\nEXPOSE 80/tcp 81\n", "ExposeProtoCasing"));
}

#[test]
fn stage_name_rules() {
    assert_eq!(
        message("FROM a:1 AS scratch\n", "ReservedStageName"),
        "Stage name should not use the same name as reserved stage \"scratch\""
    );
    assert!(has("FROM a:1 AS context\n", "ReservedStageName"));
    assert!(!has("FROM a:1 AS ctx\n", "ReservedStageName"));
    // The parser refuses duplicate names; the refusal is reported as the check too.
    let err = Dockerfile::parse(b"FROM a:1 AS x\nFROM b:1 AS x\n").unwrap_err();
    let f = findings_for_error(&err);
    assert_eq!(rules(&f), ["DuplicateStageName"]);
    assert_eq!(
        f[0].message,
        "Duplicate stage name \"x\", stage names should be unique"
    );
    assert!(findings_for_error(&Dockerfile::parse(b"FROM\n").unwrap_err()).is_empty());
}

#[test]
fn instruction_rules() {
    assert_eq!(
        message("FROM a:1\nMAINTAINER me\n", "MaintainerDeprecated"),
        "Maintainer instruction is deprecated in favor of using label"
    );
    assert_eq!(
        message("FROM a:1\nCMD run it\n", "JSONArgsRecommended"),
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
    );
    assert!(has("FROM a:1\nENTRYPOINT run it\n", "JSONArgsRecommended"));
    assert!(!has("FROM a:1\nCMD [\"run\"]\n", "JSONArgsRecommended"));
    assert!(!has(
        "FROM a:1\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run it\n",
        "JSONArgsRecommended"
    ));
    let f = run("FROM a:1\nCMD [\"a\"]\nCMD [\"b\"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n");
    let multi: Vec<(usize, &str)> = f
        .iter()
        .filter(|f| f.rule == "MultipleInstructionsDisallowed")
        .map(|f| (f.line(), f.message.as_str()))
        .collect();
    assert_eq!(
        multi,
        [
            (
                2,
                "Multiple CMD instructions should not be used in the same stage because only the last one will be used"
            ),
            (
                4,
                "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used"
            )
        ]
    );
    assert!(!has(
        "FROM a:1\nCMD [\"a\"]\nFROM b:1\nCMD [\"b\"]\n",
        "MultipleInstructionsDisallowed"
    ));
    assert_eq!(
        message("FROM a:1\nENV K v\n", "LegacyKeyValueFormat"),
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
    );
    assert!(has("FROM a:1\nLABEL k v\n", "LegacyKeyValueFormat"));
    assert!(!has("FROM a:1\nENV K=v\n", "LegacyKeyValueFormat"));
    assert_eq!(
        message("FROM a:1\nWORKDIR app\n", "WorkdirRelativePath"),
        "Relative workdir \"app\" can have unexpected results if the base image changes"
    );
    assert!(!has(
        "FROM a:1\nWORKDIR /app\nWORKDIR sub\n",
        "WorkdirRelativePath"
    ));
    assert!(
        !has(
            "FROM a:1 AS b\nWORKDIR /x\nFROM b\nWORKDIR y\n",
            "WorkdirRelativePath"
        ),
        "the absolute WORKDIR of the parent stage counts"
    );
    assert_eq!(
        message("FROM a:1\nEXPOSE 127.0.0.1:80:80\n", "ExposeInvalidFormat"),
        "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"
    );
    assert!(has("FROM a:1\nEXPOSE 8080:80\n", "ExposeInvalidFormat"));
    assert!(!has("FROM a:1\nEXPOSE 80 443/udp\n", "ExposeInvalidFormat"));
    assert_eq!(
        message("FROM a:1\nRUN a \\\n\n  b\n", "NoEmptyContinuation"),
        "Empty continuation line"
    );
    assert!(!has("FROM a:1\nRUN a \\\n  b\n", "NoEmptyContinuation"));
}

#[test]
fn secrets_in_arg_and_env_names() {
    assert_eq!(
        message("FROM a:1\nARG GITHUB_TOKEN\n", "SecretsUsedInArgOrEnv"),
        "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
    );
    assert!(has(
        "FROM a:1\nENV DB_PASSWORD=x\n",
        "SecretsUsedInArgOrEnv"
    ));
    assert!(has("FROM a:1\nENV apikey=x\n", "SecretsUsedInArgOrEnv"));
    for fine in [
        "PASSWORD_FILE",
        "PUBLIC_KEY",
        "KEYBOARD",
        "TOKENIZER",
        "NODE_VERSION",
    ] {
        assert!(
            !has(
                &format!("FROM a:1\nENV {fine}=x\n"),
                "SecretsUsedInArgOrEnv"
            ),
            "{fine}"
        );
    }
}

#[test]
fn from_line_rules() {
    assert_eq!(
        message("FROM alpine:$TAG\n", "UndefinedArgInFrom"),
        "FROM argument 'TAG' is not declared"
    );
    assert_eq!(
        message("ARG VERSION=1\nFROM alpine:$VERSON\n", "UndefinedArgInFrom"),
        "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
    );
    assert!(!has("ARG TAG\nFROM alpine:$TAG\n", "UndefinedArgInFrom"));
    assert!(!has(
        "FROM --platform=$BUILDPLATFORM alpine:1\n",
        "UndefinedArgInFrom"
    ));
    assert_eq!(
        message("ARG TAG\nFROM alpine:$TAG\n", "InvalidDefaultArgInFrom"),
        "Default value for ARG alpine:$TAG results in empty or invalid base image name"
    );
    assert!(!has(
        "ARG TAG=3\nFROM alpine:$TAG\n",
        "InvalidDefaultArgInFrom"
    ));
    assert!(!has(
        "ARG TAG=3\nFROM alpine:${TAG:-3}\n",
        "InvalidDefaultArgInFrom"
    ));
    assert_eq!(
        message(
            "FROM --platform=$TARGETPLATFORM a:1\n",
            "RedundantTargetPlatform"
        ),
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"
    );
    assert!(!has(
        "FROM --platform=$BUILDPLATFORM a:1\n",
        "RedundantTargetPlatform"
    ));
    assert_eq!(
        message(
            "FROM --platform=linux/arm64 a:1 AS build\n",
            "FromPlatformFlagConstDisallowed"
        ),
        "FROM --platform flag should not use constant value \"linux/arm64\""
    );
    assert!(!has(
        "FROM --platform=linux/arm64 a:1 AS build-arm64\n",
        "FromPlatformFlagConstDisallowed"
    ));
    assert!(!has(
        "FROM --platform=$BUILDPLATFORM a:1\n",
        "FromPlatformFlagConstDisallowed"
    ));
}

#[test]
fn base_image_platform_needs_the_base_described() {
    let mut options = LintOptions {
        target_os: "linux".into(),
        target_arch: "amd64".into(),
        ..Default::default()
    };
    options.bases.insert(
        "arm:1".into(),
        BaseImage {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
            ..Default::default()
        },
    );
    let f = run_with("FROM arm:1\n", &options);
    assert_eq!(
        f.iter()
            .find(|f| f.rule == "InvalidBaseImagePlatform")
            .unwrap()
            .message,
        "Base image arm:1 was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"
    );
    let f = run_with("FROM --platform=linux/arm64 arm:1 AS arm64\n", &options);
    assert!(!rules(&f).contains(&"InvalidBaseImagePlatform"));
    assert!(!rules(&run_with("FROM other:1\n", &options)).contains(&"InvalidBaseImagePlatform"));
}

#[test]
fn undefined_variables_follow_buildkits_scoping() {
    assert_eq!(
        message("FROM scratch\nCOPY $SRC /x\n", "UndefinedVar"),
        "Usage of undefined variable '$SRC'"
    );
    assert_eq!(
        message(
            "FROM scratch\nENV PATH_X=1\nCOPY $PATH_Y /x\n",
            "UndefinedVar"
        ),
        "Usage of undefined variable '$PATH_Y' (did you mean $PATH_X?)"
    );
    // Declared ARGs (even without a value), ENVs, PATH and parent stages' names are defined.
    assert!(!has(
        "FROM scratch AS a\nARG A\nENV B=1\nFROM a\nCOPY $A $B $PATH /x\n",
        "UndefinedVar"
    ));
    // RUN is never expanded by the builder.
    assert!(!has("FROM scratch\nRUN echo $NOPE\n", "UndefinedVar"));
    // A base image whose environment is unknown gets the benefit of the doubt...
    assert!(!has(
        "FROM python:3.12\nCOPY $PYTHON_VERSION /x\n",
        "UndefinedVar"
    ));
    // ...unless the caller describes it.
    let mut options = LintOptions::default();
    options.bases.insert(
        "python:3.12".into(),
        BaseImage {
            env: vec![("PYTHON_VERSION".into(), "3.12".into())],
            ..Default::default()
        },
    );
    let f = run_with(
        "FROM python:3.12\nCOPY $PYTHON_VERSION $NOPE /x\n",
        &options,
    );
    assert_eq!(
        f.iter()
            .filter(|f| f.rule == "UndefinedVar")
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>(),
        ["Usage of undefined variable '$NOPE'"]
    );
}

#[test]
fn experimental_checks_run_only_when_enabled() {
    let text = "# check=experimental=InvalidDefinitionDescription\nFROM scratch\n# the app\nARG APP=1\n# APP2 is it\nARG APP2=1\n";
    let f = run(text);
    assert_eq!(
        f.iter()
            .filter(|f| f.rule == "InvalidDefinitionDescription")
            .map(|f| (f.line(), f.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            4,
            "Comment for ARG should follow the format: `# APP <description>`"
        )]
    );
    assert!(!has(
        &text.replacen("experimental", "skip", 1),
        "InvalidDefinitionDescription"
    ));
    // skip=all does not reach experimental checks, experimental=all enables them.
    let all = "# check=skip=all;experimental=all\nFROM scratch AS b\n# nope\nFROM b AS c\n";
    assert_eq!(rules(&run(all)), ["InvalidDefinitionDescription"]);

    let ignore = IgnoreMatcher::from_dockerignore(b"secret.txt\n*.log\n!keep.log\n").unwrap();
    let options = LintOptions {
        dockerignore: Some(&ignore),
        check: Some("experimental=CopyIgnoredFile".into()),
        ..Default::default()
    };
    let f = run_with(
        "FROM scratch\nCOPY secret.txt /a\nCOPY keep.log other.txt /b\nCOPY debug.log /c\n",
        &options,
    );
    let ignored: Vec<(usize, &str)> = f
        .iter()
        .filter(|f| f.rule == "CopyIgnoredFile")
        .map(|f| (f.line(), f.message.as_str()))
        .collect();
    // keep.log is re-included by its `!` pattern; other.txt is not ignored.
    assert_eq!(
        ignored,
        [
            (
                2,
                "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"
            ),
            (
                4,
                "Attempting to Copy file \"debug.log\" that is excluded by .dockerignore"
            ),
        ]
    );
}

#[test]
fn check_directive_skip_error_and_build_arg_override() {
    let text = "# check=skip=JSONArgsRecommended,StrataUnpinnedBase;error=true\nFROM a\nCMD x\nMAINTAINER m\n";
    let df = Dockerfile::parse(text.as_bytes()).unwrap();
    let options = LintOptions::default();
    let config = check_config(&df, &options).unwrap();
    assert!(config.error);
    let f = lint(&df, text.as_bytes(), &options);
    assert_eq!(rules(&f), ["MaintainerDeprecated"]);
    assert_eq!(
        violation_error(&f).unwrap(),
        "lint violation found for rules: MaintainerDeprecated"
    );
    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let options = LintOptions {
        check: Some("skip=MaintainerDeprecated".into()),
        ignore: vec!["StrataUnpinnedBase".into()],
        ..Default::default()
    };
    assert!(!check_config(&df, &options).unwrap().error);
    assert_eq!(
        rules(&lint(&df, text.as_bytes(), &options)),
        ["JSONArgsRecommended"]
    );

    assert_eq!(
        CheckConfig::parse("skip = A , B ; error = 1").unwrap(),
        CheckConfig {
            skip: vec!["A".into(), "B".into()],
            error: true,
            ..Default::default()
        }
    );
    assert_eq!(
        CheckConfig::parse("bogus").unwrap_err().to_string(),
        "failed to parse check options: invalid check option \"bogus\""
    );
    assert_eq!(
        CheckConfig::parse("nope=1").unwrap_err().to_string(),
        "failed to parse check options: invalid check option \"nope\""
    );
    assert!(CheckConfig::parse("error=maybe").is_err());
}

#[test]
fn context_copied_before_install() {
    let bad = "FROM node:20\nWORKDIR /app\nCOPY . .\nRUN npm ci\n";
    let f = run(bad);
    let hit = f
        .iter()
        .find(|f| f.rule == "StrataContextCopiedBeforeInstall")
        .unwrap();
    assert_eq!(hit.line(), 3);
    assert!(
        hit.message.contains("`npm ci` on line 4"),
        "{}",
        hit.message
    );
    for install in [
        "pip install -r requirements.txt",
        "go mod download",
        "apt-get install -y curl",
        "bundle install",
    ] {
        assert!(has(
            &format!("FROM x:1\nCOPY . /src\nRUN {install}\n"),
            "StrataContextCopiedBeforeInstall"
        ));
    }
    let good = "FROM node:20\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci\nCOPY . .\nRUN npm run build\n";
    assert!(!has(good, "StrataContextCopiedBeforeInstall"));
}

#[test]
fn deletes_in_later_layers() {
    let f = run(
        "FROM x:1\nWORKDIR /tmp\nRUN curl -fsSLO https://example.com/tool.tgz\nRUN tar -xzf tool.tgz -C /opt/tool\nRUN rm tool.tgz && rm -rf /opt/tool/docs\n",
    );
    let lines: Vec<String> = f
        .iter()
        .filter(|f| f.rule == "StrataDeleteInLaterLayer")
        .map(|f| format!("{}: {}", f.line(), f.message))
        .collect();
    assert_eq!(
        lines,
        [
            "5: `rm tool.tgz` deletes what the download (`curl -O`) on line 3 put in an earlier layer: the bytes stay in that layer",
            "5: `rm /opt/tool/docs` deletes what the extraction (`tar -x -C`) on line 4 put in an earlier layer: the bytes stay in that layer",
        ]
    );
    assert!(has(
        "FROM x:1\nCOPY big.tar /tmp/\nRUN tar xf /tmp/big.tar -C /opt && rm /tmp/big.tar\n",
        "StrataDeleteInLaterLayer"
    ));
    assert!(has(
        "FROM x:1\nADD https://e.com/a.zip /tmp/\nRUN rm /tmp/*.zip\n",
        "StrataDeleteInLaterLayer"
    ));
    // Downloading, using and deleting in one RUN is the fix.
    assert!(!has(
        "FROM x:1\nRUN curl -o /tmp/a.tgz https://e.com/a.tgz && tar xzf /tmp/a.tgz -C /opt && rm /tmp/a.tgz\n",
        "StrataDeleteInLaterLayer"
    ));
    // Deleting something no earlier instruction of this Dockerfile made is not this rule.
    assert!(!has(
        "FROM x:1\nCOPY conf/ /etc/\nRUN rm -rf /etc/apt/sources.list.d/x\n",
        "StrataDeleteInLaterLayer"
    ));
}

#[test]
fn package_caches() {
    let cases = [
        ("RUN apt-get update && apt-get install -y curl", true),
        (
            "RUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*",
            false,
        ),
        (
            "RUN --mount=type=cache,target=/var/lib/apt --mount=type=cache,target=/var/cache/apt apt-get update && apt-get install -y curl",
            false,
        ),
        ("RUN apk add curl", true),
        ("RUN apk add --no-cache curl", false),
        ("RUN pip install flask", true),
        ("RUN pip install --no-cache-dir flask", false),
        (
            "RUN --mount=type=cache,target=/root/.cache/pip pip install flask",
            false,
        ),
        ("RUN npm ci", true),
        ("RUN npm ci && npm cache clean --force", false),
        ("RUN --mount=type=cache,target=/root/.npm npm ci", false),
        ("RUN yum install -y git", true),
        ("RUN yum install -y git && yum clean all", false),
        ("RUN dnf install -y git", true),
        ("RUN dnf install -y git && dnf clean all", false),
    ];
    for (run_line, expected) in cases {
        let text = format!("FROM x:1\n{run_line}\n");
        assert_eq!(has(&text, "StrataPackageCacheLeft"), expected, "{run_line}");
    }
    assert!(!has(
        "FROM x:1\nENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\n",
        "StrataPackageCacheLeft"
    ));
}

#[test]
fn consecutive_runs() {
    let f = run("FROM x:1\nRUN a\nRUN b\nRUN c\nCOPY f /f\nRUN d\n");
    let hits: Vec<&Finding> = f
        .iter()
        .filter(|f| f.rule == "StrataConsecutiveRuns")
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].span.start, hits[0].span.end), (2, 4));
    assert_eq!(
        hits[0].message,
        "3 consecutive RUN instructions (lines 2, 3, 4) make 3 layers where one would do"
    );
    // Different mounts cannot simply be merged.
    assert!(!has(
        "FROM x:1\nRUN a\nRUN --mount=type=secret,id=t b\n",
        "StrataConsecutiveRuns"
    ));
}

#[test]
fn add_copy_base_secrets_user_and_whole_stage_copies() {
    assert!(has(
        "FROM x:1\nADD app.py /app/\n",
        "StrataAddInsteadOfCopy"
    ));
    for fine in [
        "ADD rootfs.tar.gz /",
        "ADD https://example.com/a /a",
        "ADD git@github.com:o/r.git /r",
        "ADD --checksum=sha256:00 https://e.com/a /a",
        "ADD $SRC /x",
    ] {
        assert!(
            !has(&format!("FROM x:1\n{fine}\n"), "StrataAddInsteadOfCopy"),
            "{fine}"
        );
    }

    assert!(has("FROM alpine\n", "StrataUnpinnedBase"));
    assert!(has("FROM alpine:latest\n", "StrataUnpinnedBase"));
    assert!(has("FROM localhost:5000/app\n", "StrataUnpinnedBase"));
    assert!(has("ARG IMG=alpine\nFROM $IMG\n", "StrataUnpinnedBase"));
    for fine in [
        "alpine:3.20",
        "localhost:5000/app:1",
        "scratch",
        "alpine@sha256:0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            !has(&format!("FROM {fine}\n"), "StrataUnpinnedBase"),
            "{fine}"
        );
    }
    assert!(!has("FROM a:1 AS b\nFROM b\n", "StrataUnpinnedBase"));

    assert_eq!(
        message(
            "FROM x:1\nENV AWS_ID=AKIAABCDEFGHIJKLMNOP\n",
            "StrataSecretValueInArgOrEnv"
        ),
        "ENV AWS_ID holds what looks like an AWS access key id; it stays readable in the image config and history"
    );
    assert!(has(
        "ARG REPO=https://bob:hunter2@git.example.com/r.git\nFROM x:1\n",
        "StrataSecretValueInArgOrEnv"
    ));
    assert!(has(
        "FROM x:1\nENV K=\"-----BEGIN RSA PRIVATE KEY-----\"\n",
        "StrataSecretValueInArgOrEnv"
    ));
    assert!(!has(
        "FROM x:1\nENV URL=https://git.example.com/r.git HOME_DIR=/root\n",
        "StrataSecretValueInArgOrEnv"
    ));
    assert!(!has(
        "FROM x:1\nARG URL=https://bob:${PASS}@host/\n",
        "StrataSecretValueInArgOrEnv"
    ));

    assert_eq!(
        message("FROM x:1\nUSER app\nUSER root\n", "StrataLastUserRoot"),
        "the last USER is root, so containers from this image run as root"
    );
    assert!(has(
        "FROM x:1 AS b\nUSER 0:0\nFROM b\nRUN x\n",
        "StrataLastUserRoot"
    ));
    assert!(!has(
        "FROM x:1\nUSER root\nUSER app\n",
        "StrataLastUserRoot"
    ));
    assert!(!has(
        "FROM x:1 AS b\nUSER root\nFROM y:1\nRUN z\n",
        "StrataLastUserRoot"
    ));

    assert!(has(
        "FROM x:1 AS b\nFROM scratch\nCOPY --from=b / /\n",
        "StrataCopyWholeFilesystem"
    ));
    assert!(has(
        "FROM x:1 AS b\nFROM scratch\nCOPY --from=b . /\n",
        "StrataCopyWholeFilesystem"
    ));
    assert!(!has(
        "FROM x:1 AS b\nFROM scratch\nCOPY --from=b /app/bin /bin\n",
        "StrataCopyWholeFilesystem"
    ));
    assert!(!has(
        "FROM scratch\nCOPY . /\n",
        "StrataCopyWholeFilesystem"
    ));
}

#[test]
fn layer_limit() {
    let runs = |n: usize| {
        let mut s = String::from("FROM scratch\n");
        for i in 0..n {
            s.push_str(&format!("COPY f{i} /f{i}\n"));
        }
        s
    };
    assert!(!has(&runs(127), "StrataTooManyLayers"));
    let f = run(&runs(128));
    let hit = f.iter().find(|f| f.rule == "StrataTooManyLayers").unwrap();
    assert_eq!(hit.line(), 129);
    assert!(
        hit.message.starts_with("the image would have 128 layers;"),
        "{}",
        hit.message
    );
    // The base image's layers count when the caller knows them.
    let mut options = LintOptions::default();
    options.bases.insert(
        "big:1".into(),
        BaseImage {
            layers: 120,
            ..Default::default()
        },
    );
    let text = format!(
        "FROM big:1\n{}",
        runs(8).trim_start_matches("FROM scratch\n")
    );
    let f = run_with(&text, &options);
    assert!(rules(&f).contains(&"StrataTooManyLayers"));
    assert!(!rules(&run(&text)).contains(&"StrataTooManyLayers"));
}

#[test]
fn references_are_checked_like_distributions_parser() {
    use super::buildkit::valid_reference;
    for ok in [
        "alpine",
        "alpine:3",
        "docker.io/library/alpine:latest",
        "localhost:5000/a/b:c",
        "a_b/c-d.e__f",
        "scratch",
    ] {
        assert!(valid_reference(ok), "{ok}");
    }
    for bad in [
        "",
        "alpine:",
        "Alpine",
        "a:b:c",
        ":tag",
        "a@sha256:12",
        "-a",
    ] {
        assert!(!valid_reference(bad), "{bad}");
    }
    let _ = BTreeMap::<String, String>::new();
}
