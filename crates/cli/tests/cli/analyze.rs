//! `strata analyze`, `strata diff IMAGE_A IMAGE_B` and `strata lint`, end to end.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Env;

const MIB5: u64 = 5 * 1024 * 1024;

/// Builds `dockerfile` in a fresh context directory as `tag`.
fn build(env: &Env, dir: &str, dockerfile: &str, tag: &str) {
    let ctx = env.path(dir);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    env.ok(&[
        "build",
        "--progress",
        "quiet",
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
}

/// busybox as `base:1`, and `waste:1` = base + 5 MiB written by one RUN and deleted by the next.
fn waste_env() -> Env {
    let env = Env::new();
    env.import_busybox("base:1");
    build(
        &env,
        "waste",
        "FROM base:1\nRUN dd if=/dev/zero of=/big bs=1M count=5\nRUN rm /big\n",
        "waste:1",
    );
    env
}

fn json(env: &Env, args: &[&str]) -> Value {
    serde_json::from_str(&env.ok(args)).unwrap()
}

fn busybox_size() -> u64 {
    std::fs::metadata(testkit::BUSYBOX).unwrap().len()
}

#[test]
fn analyze_finds_the_known_waste_to_the_byte() {
    let env = waste_env();
    let a = json(&env, &["analyze", "--format", "json", "waste:1"]);
    assert_eq!(a["layers"].as_array().unwrap().len(), 3);
    assert_eq!(a["wasted_bytes"], MIB5);
    assert_eq!(a["user_wasted_bytes"], MIB5);
    assert_eq!(a["user_size"], MIB5);
    assert_eq!(a["user_wasted_percent"], 1.0);
    assert_eq!(a["base"]["layers"], 1);
    assert_eq!(a["base"]["method"], "buildkit_history");
    let wasted = a["wasted"].as_array().unwrap();
    assert_eq!(wasted.len(), 1);
    assert_eq!(wasted[0]["path"], "/big");
    assert_eq!(wasted[0]["size"], MIB5);
    assert_eq!(wasted[0]["added_in"], 1);
    assert_eq!(wasted[0]["removed_in"], 2);
    // dive: every path's smallest appearance over all appearances; /big is {5 MiB, 0}.
    let total = a["total_size"].as_u64().unwrap();
    let expected = (total - MIB5) as f64 / total as f64;
    assert!((a["efficiency"].as_f64().unwrap() - expected).abs() < 1e-9);
    let layers = &a["layers"];
    assert_eq!(layers[0]["base"], true);
    assert_eq!(layers[1]["added"]["bytes"], MIB5);
    assert_eq!(layers[2]["removed"]["files"], 1);
    assert_eq!(
        layers[1]["created_by"],
        "RUN /bin/sh -c dd if=/dev/zero of=/big bs=1M count=5 # buildkit"
    );

    let text = env.ok(&["analyze", "waste:1"]);
    assert!(text.contains("Biggest offenders (1 of 1)"), "{text}");
    assert!(text.contains("/big"), "{text}");
    assert!(
        text.contains("Wasted:       5.24MB (5242880 bytes)"),
        "{text}"
    );
    assert!(text.contains("█"), "bar chart: {text}");
    assert!(text.contains("---- base image ends here ----"), "{text}");

    let page = env.path("report.html");
    env.ok(&[
        "analyze",
        "--format",
        "html",
        "-o",
        page.to_str().unwrap(),
        "waste:1",
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
    assert!(html.contains("<table id=\"waste\">") && html.contains("/big"));
}

#[test]
fn analyze_counts_a_chmod_only_rewrite() {
    let env = Env::new();
    env.import_busybox("base:1");
    build(
        &env,
        "chmod",
        "FROM base:1\nRUN chmod 700 /bin/busybox\n",
        "chmod:1",
    );
    let a = json(&env, &["analyze", "--format", "json", "chmod:1"]);
    assert_eq!(a["wasted_bytes"], busybox_size());
    assert_eq!(a["wasted"][0]["path"], "/bin/busybox");
    assert_eq!(a["wasted"][0]["reason"], "metadata_only");
    assert_eq!(a["layers"][1]["modified"]["files"], 1);
}

#[test]
fn ci_mode_exit_codes_and_rules() {
    let env = waste_env();
    let out = env
        .cmd()
        .args(["analyze", "--ci", "waste:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("FAIL: lowestEfficiency: image efficiency is too low"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SKIP: highestWastedBytes: rule disabled"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL: highestUserWastedPercent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Result:FAIL [Total:3] [Passed:0] [Failed:2]"),
        "{stdout}"
    );
    assert!(
        stderr.contains("CI rules failed: lowestEfficiency, highestUserWastedPercent"),
        "{stderr}"
    );

    // Thresholds the image meets: exit 0. 5 MiB wasted is not more than 5MiB.
    let relaxed = [
        "analyze",
        "--ci",
        "--lowest-efficiency",
        "0.1",
        "--highest-wasted-bytes",
        "5MiB",
        "--highest-user-wasted-percent",
        "1",
        "waste:1",
    ];
    assert!(
        env.ok(&relaxed)
            .contains("Result:PASS [Total:3] [Passed:3]")
    );
    // 5MB (decimal) is less than 5 MiB: that rule alone fails.
    let (code, err) = env.fails(&[
        "analyze",
        "--ci",
        "--lowest-efficiency=off",
        "--highest-user-wasted-percent=disabled",
        "--highest-wasted-bytes=5MB",
        "waste:1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("CI rules failed: highestWastedBytes"), "{err}");
    // dive's spellings work too.
    env.ok(&[
        "analyze",
        "--ci",
        "--lowestEfficiency",
        "0",
        "--highestUserWastedPercent",
        "1",
        "waste:1",
    ]);
    // JSON carries the verdict.
    let out = env
        .cmd()
        .args(["analyze", "--ci", "--format", "json", "waste:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ci"]["passed"], false);
    assert_eq!(v["ci"]["rules"][0]["rule"], "lowestEfficiency");
    assert_eq!(v["ci"]["rules"][0]["status"], "fail");
    // Values outside dive's formats are usage errors.
    let (code, err) = env.fails(&["analyze", "--ci", "--lowest-efficiency", "1.5", "waste:1"]);
    assert_eq!(code, 125);
    assert!(err.contains("outside allowed range (0-1)"), "{err}");
    let (code, _) = env.fails(&[
        "analyze",
        "--ci",
        "--highest-wasted-bytes",
        "lots",
        "waste:1",
    ]);
    assert_eq!(code, 125);
    // An image without waste passes dive's defaults.
    env.ok(&["analyze", "--ci", "base:1"]);
}

#[test]
fn archives_are_analysed_in_place_without_loading() {
    let env = waste_env();
    let docker = env.path("waste-docker.tar");
    let oci = env.path("waste-oci.tar");
    env.ok(&["save", "-o", docker.to_str().unwrap(), "waste:1"]);
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci.to_str().unwrap(),
        "waste:1",
    ]);
    let before = env.store_files();
    for archive in [&docker, &oci] {
        let a = json(
            &env,
            &["analyze", "--format", "json", archive.to_str().unwrap()],
        );
        assert_eq!(a["wasted_bytes"], MIB5, "{}", archive.display());
        assert_eq!(a["wasted"][0]["path"], "/big");
        assert_eq!(a["base"]["layers"], 1);
        assert_eq!(a["source"], archive.to_str().unwrap());
    }
    assert_eq!(
        env.store_files(),
        before,
        "analysing an archive changed the store"
    );

    // Another machine, no store at all: the archive is read and no store is created.
    let other = Env::new();
    let a = json(
        &other,
        &[
            "analyze",
            "--format",
            "json",
            &format!("oci-archive:{}", oci.display()),
        ],
    );
    assert_eq!(a["wasted_bytes"], MIB5);
    assert!(!other.root().exists(), "a store was created");

    // A compressed archive says what to do.
    let gz = env.path("waste.tar.gz");
    let status = std::process::Command::new("gzip")
        .args(["-k", "-c"])
        .arg(&docker)
        .stdout(std::fs::File::create(&gz).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let (_, err) = other.fails(&["analyze", gz.to_str().unwrap()]);
    assert!(err.contains("decompress it first"), "{err}");
}

/// The manifest of a stored image, read from the OCI layout.
fn manifest(env: &Env, image: &str) -> Value {
    let info = env.inspect(image);
    let digest = info["Descriptor"]["digest"].as_str().unwrap();
    let path = env.root().join("content/blobs/sha256").join(&digest[7..]);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn diff_of_two_images_counts_what_a_pull_transfers() {
    let env = waste_env();
    let m = manifest(&env, "waste:1");
    let layers = m["layers"].as_array().unwrap();
    let only_b: u64 = layers[1..]
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let config = m["config"]["size"].as_u64().unwrap();
    let out = env.ok(&["diff", "base:1", "waste:1"]);
    assert!(out.contains("Shared layers: 1 ("), "{out}");
    assert!(out.contains("Only in B: 2 ("), "{out}");
    assert!(out.contains("Only in A: 0 ("), "{out}");
    let expected = format!("Pull of B where A is present: {} bytes", only_b + config);
    assert!(out.contains(&expected), "{expected}\n{out}");
    let total: u64 = layers
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>()
        + config;
    assert!(out.contains(&format!("of the {total} bytes")), "{out}");

    // The other way round only the config is new.
    let base_config = manifest(&env, "base:1")["config"]["size"].as_u64().unwrap();
    let out = env.ok(&["diff", "waste:1", "base:1"]);
    assert!(out.contains("Only in B: 0 ("), "{out}");
    assert!(
        out.contains(&format!(
            "Pull of B where A is present: {base_config} bytes"
        )),
        "{out}"
    );

    // One argument is still a container diff.
    let (_, err) = env.fails(&["diff", "no-such-container"]);
    assert!(err.contains("No such container"), "{err}");
}

// ---- lint ----

struct Lint {
    env: Env,
    dir: PathBuf,
}

impl Lint {
    fn new() -> Lint {
        let env = Env::new();
        let dir = env.path("lint");
        std::fs::create_dir_all(&dir).unwrap();
        Lint { env, dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, text: &str, extra: &[&str]) -> (i32, Value, String) {
        let file = self.write("Dockerfile", text);
        let mut args = vec!["lint", "--format", "json"];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        let out = self.env.cmd().args(&args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn rules(&self, text: &str, extra: &[&str]) -> Vec<String> {
        let (_, v, err) = self.run(text, extra);
        assert!(v.is_object(), "no JSON for:\n{text}\n{err}");
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Every rule with a Dockerfile that triggers it and one that does not.
const FIXTURES: &[(&str, &str, &str)] = &[
    (
        "StageNameCasing",
        "FROM a:1 AS Build\n",
        "FROM a:1 AS build\n",
    ),
    ("FromAsCasing", "FROM a:1 as b\n", "FROM a:1 AS b\n"),
    (
        "NoEmptyContinuation",
        "FROM a:1\nRUN a \\\n\n  b\n",
        "FROM a:1\nRUN a \\\n  b\n",
    ),
    (
        "ConsistentInstructionCasing",
        "FROM a:1\nRUN a\nrun b\n",
        "FROM a:1\nRUN a\n",
    ),
    (
        "ReservedStageName",
        "FROM a:1 AS scratch\n",
        "FROM a:1 AS base\n",
    ),
    (
        "JSONArgsRecommended",
        "FROM a:1\nCMD run it\n",
        "FROM a:1\nCMD [\"run\", \"it\"]\n",
    ),
    (
        "MaintainerDeprecated",
        "FROM a:1\nMAINTAINER me\n",
        "FROM a:1\nLABEL org.opencontainers.image.authors=me\n",
    ),
    (
        "UndefinedArgInFrom",
        "FROM a:$TAG\n",
        "ARG TAG=1\nFROM a:$TAG\n",
    ),
    (
        "WorkdirRelativePath",
        "FROM a:1\nWORKDIR app\n",
        "FROM a:1\nWORKDIR /app\n",
    ),
    (
        "UndefinedVar",
        "FROM scratch\nCOPY $NOPE /x\n",
        "FROM scratch\nARG SRC=f\nCOPY $SRC /x\n",
    ),
    (
        "MultipleInstructionsDisallowed",
        "FROM a:1\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n",
        "FROM a:1\nENTRYPOINT [\"b\"]\n",
    ),
    (
        "LegacyKeyValueFormat",
        "FROM a:1\nENV K v\n",
        "FROM a:1\nENV K=v\n",
    ),
    (
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM a:1\n",
        "FROM --platform=$BUILDPLATFORM a:1\n",
    ),
    (
        "SecretsUsedInArgOrEnv",
        "FROM a:1\nARG DB_PASSWORD\n",
        "FROM a:1\nARG DB_PASSWORD_FILE\n",
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM a:$TAG\n",
        "ARG TAG=1\nFROM a:$TAG\n",
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/amd64 a:1 AS build\n",
        "FROM --platform=linux/amd64 a:1 AS build-amd64\n",
    ),
    (
        "ExposeProtoCasing",
        "FROM a:1\nEXPOSE 53/UDP\n",
        "FROM a:1\nEXPOSE 53/udp\n",
    ),
    (
        "ExposeInvalidFormat",
        "FROM a:1\nEXPOSE 8080:80\n",
        "FROM a:1\nEXPOSE 80\n",
    ),
    (
        "InvalidDefinitionDescription",
        "# check=experimental=InvalidDefinitionDescription\nFROM a:1\n# the version\nARG V=1\n",
        "# check=experimental=InvalidDefinitionDescription\nFROM a:1\n# V the version\nARG V=1\n",
    ),
    (
        "StrataContextCopiedBeforeInstall",
        "FROM a:1\nCOPY . .\nRUN npm ci\n",
        "FROM a:1\nCOPY package*.json ./\nRUN npm ci\nCOPY . .\n",
    ),
    (
        "StrataDeleteInLaterLayer",
        "FROM a:1\nRUN wget -O /tmp/x.tgz https://e.com/x.tgz\nRUN tar xzf /tmp/x.tgz -C /opt && rm /tmp/x.tgz\n",
        "FROM a:1\nRUN wget -O /tmp/x.tgz https://e.com/x.tgz && tar xzf /tmp/x.tgz -C /opt && rm /tmp/x.tgz\n",
    ),
    (
        "StrataPackageCacheLeft",
        "FROM a:1\nRUN apt-get update && apt-get install -y curl\n",
        "FROM a:1\nRUN --mount=type=cache,target=/var/lib/apt --mount=type=cache,target=/var/cache/apt apt-get update && apt-get install -y curl\n",
    ),
    (
        "StrataConsecutiveRuns",
        "FROM a:1\nRUN a\nRUN b\n",
        "FROM a:1\nRUN a && b\n",
    ),
    (
        "StrataAddInsteadOfCopy",
        "FROM a:1\nADD main.go /src/\n",
        "FROM a:1\nADD rootfs.tar.xz /\n",
    ),
    (
        "StrataUnpinnedBase",
        "FROM alpine:latest\n",
        "FROM alpine:3.20\n",
    ),
    (
        "StrataSecretValueInArgOrEnv",
        "FROM a:1\nENV SLACK=xoxb-1234567890-abcdef\n",
        "FROM a:1\nENV SLACK_CHANNEL=builds\n",
    ),
    (
        "StrataLastUserRoot",
        "FROM a:1\nUSER root\n",
        "FROM a:1\nUSER root\nRUN x\nUSER app\n",
    ),
    (
        "StrataCopyWholeFilesystem",
        "FROM a:1 AS b\nFROM scratch\nCOPY --from=b / /\n",
        "FROM a:1 AS b\nFROM scratch\nCOPY --from=b /out /out\n",
    ),
];

#[test]
fn every_rule_fires_on_its_fixture_and_not_on_the_fixed_one() {
    let l = Lint::new();
    // Every rule strata knows is covered here or in the next test.
    let file = l.write("Dockerfile", "FROM a:1\n");
    let sarif: Value =
        serde_json::from_str(
            &l.env
                .ok(&["lint", "--format", "sarif", file.to_str().unwrap()]),
        )
        .unwrap();
    let elsewhere = [
        "CopyIgnoredFile",
        "DuplicateStageName",
        "InvalidBaseImagePlatform",
        "StrataTooManyLayers",
    ];
    for rule in sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
    {
        let id = rule["id"].as_str().unwrap();
        assert!(
            FIXTURES.iter().any(|(r, _, _)| *r == id) || elsewhere.contains(&id),
            "no fixture for {id}"
        );
    }
    for (rule, bad, good) in FIXTURES {
        let found = l.rules(bad, &[]);
        assert!(
            found.iter().any(|r| r == rule),
            "{rule} missing on:\n{bad}\nfound {found:?}"
        );
        let found = l.rules(good, &[]);
        assert!(!found.iter().any(|r| r == rule), "{rule} fired on:\n{good}");
    }
}

#[test]
fn rules_that_need_the_context_the_store_or_the_whole_file() {
    let l = Lint::new();
    // CopyIgnoredFile reads the context's .dockerignore (experimental).
    l.write(".dockerignore", "*.pem\n");
    let text = "# check=experimental=CopyIgnoredFile\nFROM a:1\nCOPY key.pem /k\nCOPY app /app\n";
    let (_, v, _) = l.run(text, &[]);
    let hits: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "CopyIgnoredFile")
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["line"], 3);
    assert_eq!(
        hits[0]["message"],
        "Attempting to Copy file \"key.pem\" that is excluded by .dockerignore"
    );
    assert_eq!(hits[0]["experimental"], true);
    assert!(
        !l.rules(
            &text.replace("# check=experimental=CopyIgnoredFile\n", ""),
            &[]
        )
        .contains(&"CopyIgnoredFile".to_string())
    );

    // DuplicateStageName: the file does not build, and the check says why.
    let (code, v, err) = l.run("FROM a:1 AS x\nFROM b:1 AS x\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(v["findings"][0]["rule"], "DuplicateStageName");
    assert!(err.contains("duplicate stage name"), "{err}");

    // InvalidBaseImagePlatform: the base's platform comes from the store.
    load_foreign_image(&l.env, "armbase:1");
    let (_, v, _) = l.run("FROM armbase:1\n", &[]);
    let hit = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "InvalidBaseImagePlatform")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    let other = if cfg!(target_arch = "aarch64") {
        "amd64"
    } else {
        "arm64"
    };
    assert!(
        hit["message"].as_str().unwrap().starts_with(&format!(
            "Base image armbase:1 was pulled with platform \"linux/{other}\""
        )),
        "{hit}"
    );
    l.env.import_busybox("native:1");
    assert!(
        !l.rules("FROM native:1\n", &[])
            .contains(&"InvalidBaseImagePlatform".to_string())
    );
    // With the base known, UndefinedVar speaks for its stage too.
    assert!(
        l.rules("FROM native:1\nCOPY $NOPE /x\n", &[])
            .contains(&"UndefinedVar".to_string())
    );
    assert!(
        !l.rules("FROM unknown:1\nCOPY $NOPE /x\n", &[])
            .contains(&"UndefinedVar".to_string())
    );

    // More than 127 layers.
    let mut many = String::from("FROM scratch\n");
    for i in 0..128 {
        many.push_str(&format!("COPY f{i} /f{i}\n"));
    }
    assert!(
        l.rules(&many, &[])
            .contains(&"StrataTooManyLayers".to_string())
    );
    let fewer: String = many.lines().take(128).map(|l| format!("{l}\n")).collect();
    assert!(
        !l.rules(&fewer, &[])
            .contains(&"StrataTooManyLayers".to_string())
    );
}

/// Loads a one-layer image for the other common architecture, from a hand-made docker-archive.
fn load_foreign_image(env: &Env, name: &str) {
    let arch = if cfg!(target_arch = "aarch64") {
        "amd64"
    } else {
        "arm64"
    };
    let layer = testkit::TarBuilder::new().file("hello", b"hi").finish();
    let diff_id = oci::Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"ADD hello"}}]}}"#
    );
    let manifest =
        format!(r#"[{{"Config":"config.json","RepoTags":["{name}"],"Layers":["layer.tar"]}}]"#);
    let archive = testkit::TarBuilder::new()
        .file("layer.tar", &layer)
        .file("config.json", config.as_bytes())
        .file("manifest.json", manifest.as_bytes())
        .finish();
    let path = env.path("foreign.tar");
    std::fs::write(&path, archive).unwrap();
    env.ok(&["load", "-i", path.to_str().unwrap()]);
}

#[test]
fn sarif_output_is_sarif_2_1_0() {
    let l = Lint::new();
    let file = l.write("Dockerfile", "FROM alpine\nMAINTAINER me\n");
    let out = l
        .env
        .ok(&["lint", "--format", "sarif", file.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "strata");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 32);
    let results = run["results"].as_array().unwrap();
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["StrataUnpinnedBase", "MaintainerDeprecated"]);
    for r in results {
        let index = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], r["ruleId"]);
        assert_eq!(r["level"], "warning");
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(
            loc["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with("Dockerfile")
        );
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let maintainer = &results[1];
    assert_eq!(
        maintainer["locations"][0]["physicalLocation"]["region"]["startLine"],
        2
    );
    assert_eq!(
        rules[maintainer["ruleIndex"].as_u64().unwrap() as usize]["helpUri"],
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    );
}

#[test]
fn check_directive_ignore_strict_and_error() {
    let l = Lint::new();
    let text = "FROM alpine\nCMD echo hi\n";
    // Warnings do not fail by default.
    let (code, v, _) = l.run(text, &[]);
    assert_eq!(code, 0);
    assert_eq!(v["findings"].as_array().unwrap().len(), 2);
    // --strict fails on anything.
    let (code, _, _) = l.run(text, &["--strict"]);
    assert_eq!(code, 1);
    // --ignore (repeatable) removes rules; nothing left, --strict passes.
    let (code, v, _) = l.run(
        text,
        &[
            "--strict",
            "--ignore",
            "JSONArgsRecommended",
            "--ignore",
            "StrataUnpinnedBase",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert!(v["findings"].as_array().unwrap().is_empty());
    // # check=skip= and error=true, as BuildKit reads them.
    let skipped = format!("# check=skip=JSONArgsRecommended\n{text}");
    assert_eq!(l.rules(&skipped, &[]), ["StrataUnpinnedBase"]);
    let erroring = format!("# check=error=true\n{text}");
    let (code, v, err) = l.run(&erroring, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["error"], true);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended, StrataUnpinnedBase"),
        "{err}"
    );
    let (code, _, _) = l.run(&format!("# check=skip=all;error=true\n{text}"), &[]);
    assert_eq!(code, 0);
    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let (code, v, _) = l.run(
        &erroring,
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=StrataUnpinnedBase",
        ],
    );
    assert_eq!(code, 0);
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["JSONArgsRecommended"]);
    // A directive BuildKit refuses is an error.
    let (code, _, err) = l.run(&format!("# check=skip\n{text}"), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("failed to parse check options: invalid check option \"skip\""),
        "{err}"
    );

    // The human format: file:line, rule, why, how to fix.
    let file = l.write("Dockerfile", text);
    let human = l.env.ok(&["lint", file.to_str().unwrap()]);
    let first = human.lines().next().unwrap();
    assert!(first.ends_with("Dockerfile:1: StrataUnpinnedBase: the base image alpine has no tag: it means :latest, whatever that is on the day of the build"), "{human}");
    assert!(human.contains("  fix: pin a version tag"), "{human}");
    assert!(
        human.contains("Dockerfile:2: JSONArgsRecommended: JSON arguments recommended for CMD"),
        "{human}"
    );
    assert!(
        human.contains("  see: https://docs.docker.com/go/dockerfile/rule/json-args-recommended/")
    );
    // A clean file.
    let clean = l.write(
        "Dockerfile.clean",
        "FROM alpine:3.20\nUSER nobody\nCMD [\"sh\"]\n",
    );
    assert!(
        l.env
            .ok(&["lint", clean.to_str().unwrap()])
            .ends_with("no findings\n")
    );
    // Standard input, and the default file name.
    let out = l
        .env
        .cmd()
        .args(["lint", "-"])
        .write_stdin("FROM alpine:3.20\nMAINTAINER x\n")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("-:2: MaintainerDeprecated"));
    let out = l
        .env
        .cmd()
        .current_dir(Path::new(&l.dir))
        .args(["lint", "--ignore", "NoSuchRule"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule has that name"));
}

/// The human report, as people read it, over a realistic bad Dockerfile and a clean one.
#[test]
fn lint_reports_snapshot() {
    let lint = Lint::new();
    let bad = lint.write(
        "Dockerfile.bad",
        "FROM debian AS Build
MAINTAINER someone@example.com
ARG API_TOKEN=abc
COPY . /src
RUN apt-get update
RUN apt-get install -y make && curl -o /tmp/x.tgz http://example.com/x.tgz && tar -xzf /tmp/x.tgz -C /opt
RUN rm -rf /tmp/x.tgz
ADD config.json /etc/app/
expose 8080/TCP
CMD make run
",
    );
    let good = lint.write(
        "Dockerfile.good",
        "FROM debian:12.5 AS build
RUN --mount=type=cache,target=/var/cache/apt apt-get update && apt-get install -y make
COPY Makefile /src/
COPY src/ /src/src/
USER 1000
CMD [\"make\", \"-C\", \"/src\", \"run\"]
",
    );
    let run = |file: &PathBuf| {
        let out = lint
            .env
            .cmd()
            .args(["lint", file.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "exit {}\n{}{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.replace(lint.dir.to_str().unwrap(), "[DIR]")
    };
    insta::assert_snapshot!("lint_bad", run(&bad));
    insta::assert_snapshot!("lint_good", run(&good));
}
