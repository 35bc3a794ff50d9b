//! `strata build` behaviours of its own: the cache (hits, misses and why, what invalidates
//! what), stages, mounts, heredocs, inputs and outputs, reproducibility. Agreement with the
//! Docker engine's results is in `differential.rs`.

use std::path::PathBuf;

use super::{Env, tar_names};

/// An Env with a busybox base named `base` and a context directory.
struct Build {
    env: Env,
    ctx: PathBuf,
}

impl Build {
    fn new(dockerfile: &str) -> Build {
        let env = Env::new();
        env.import_busybox("base");
        let ctx = env.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        Build { env, ctx }
    }

    fn file(&self, name: &str, content: &str) -> &Self {
        let p = self.ctx.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Builds with plain progress; returns (stdout, stderr).
    fn build(&self, extra: &[&str]) -> (String, String) {
        self.build_with_env(&[], extra)
    }

    fn build_with_env(
        &self,
        vars: &[(&str, &std::path::Path)],
        extra: &[&str],
    ) -> (String, String) {
        let out = self.build_output_with_env(vars, extra);
        assert!(
            out.status.success(),
            "build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn build_output(&self, extra: &[&str]) -> std::process::Output {
        self.build_output_with_env(&[], extra)
    }

    fn build_output_with_env(
        &self,
        vars: &[(&str, &std::path::Path)],
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(self.ctx.to_str().unwrap());
        let mut cmd = self.env.cmd();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(&args).output().unwrap()
    }

    fn fails(&self, extra: &[&str]) -> String {
        let out = self.build_output(extra);
        assert!(!out.status.success(), "build succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The content of a file in a built image.
    fn read(&self, image: &str, path: &str) -> String {
        let tar = self.env.path("read.tar");
        self.env.ok(&["export", image, "-o", tar.to_str().unwrap()]);
        testkit::file_in_tar(&tar, path).unwrap_or_else(|| panic!("{path} is not in {image}"))
    }

    fn id(&self, image: &str) -> String {
        self.env.inspect(image)["Id"].as_str().unwrap().to_string()
    }
}

/// The steps (by their `[i/n] INSTRUCTION` names) that were CACHED in plain progress output.
fn cached_steps(stderr: &str) -> Vec<String> {
    let mut names = std::collections::HashMap::new();
    let mut cached = Vec::new();
    for line in stderr.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest.starts_with('[') {
            names.insert(id.to_string(), rest.to_string());
        } else if rest == "CACHED"
            && let Some(n) = names.get(id)
        {
            cached.push(n.clone());
        }
    }
    cached
}

fn misses(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(" cache miss: ").map(|(_, r)| r.to_string()))
        .collect()
}

const APP: &str = "FROM base
ARG MODE=dev
COPY deps.txt /app/
RUN echo installing > /app/installed
COPY src /app/src
RUN echo \"build $MODE\" > /app/built
";

#[test]
fn no_op_rebuild_is_all_cached_and_mtime_changes_do_not_count() {
    let b = Build::new(APP);
    b.file("deps.txt", "a\n")
        .file("src/main.rs", "fn main() {}\n");
    b.build(&["-t", "app:1"]);
    let first = b.id("app:1");
    let (_, err) = b.build(&["-t", "app:2"]);
    assert_eq!(cached_steps(&err).len(), 4, "{err}");
    assert_eq!(
        b.id("app:2"),
        first,
        "a fully cached rebuild gives the same image"
    );

    let f = std::fs::File::options()
        .write(true)
        .open(b.ctx.join("src/main.rs"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let (_, err) = b.build(&["-t", "app:3"]);
    assert_eq!(
        cached_steps(&err).len(),
        4,
        "touching a file is not a change: {err}"
    );
}

#[test]
fn a_changed_file_rebuilds_from_its_step_and_says_why() {
    let b = Build::new(APP);
    b.file("deps.txt", "a\n")
        .file("src/main.rs", "fn main() {}\n");
    b.build(&[]);
    b.file("src/main.rs", "fn main() { changed() }\n");
    let (_, err) = b.build(&[]);
    let cached = cached_steps(&err);
    assert_eq!(cached.len(), 2, "{err}");
    assert!(cached[0].contains("COPY deps.txt") && cached[1].contains("RUN echo installing"));
    assert_eq!(
        misses(&err),
        ["file src/main.rs changed", "the step before it changed"]
    );

    b.file("deps.txt", "b\n");
    let (_, err) = b.build(&["--explain-cache"]);
    assert!(cached_steps(&err).is_empty());
    assert!(
        err.contains("[2/5] COPY deps.txt /app/\n    cache miss: file deps.txt changed"),
        "{err}"
    );
}

#[test]
fn build_args_invalidate_only_what_sees_them() {
    let b = Build::new(APP);
    b.file("deps.txt", "a\n").file("src/main.rs", "x\n");
    b.build(&[]);
    let (_, err) = b.build(&["--build-arg", "MODE=prod"]);
    // Every RUN after `ARG MODE` sees it in its environment; COPY does not use it.
    let cached = cached_steps(&err);
    assert_eq!(cached.len(), 1, "{err}");
    assert!(cached[0].contains("COPY deps.txt"));
    assert!(
        misses(&err)[0].contains("env MODE changed (dev → prod)"),
        "{err}"
    );

    let (_, err) = b.build(&["--build-arg", "MODE=prod", "--build-arg", "NOBODY=1"]);
    assert_eq!(
        cached_steps(&err).len(),
        4,
        "an undeclared arg invalidates nothing: {err}"
    );
    assert!(
        err.contains("[Warning] One or more build-args [NOBODY] were not consumed"),
        "{err}"
    );

    let (_, err) = b.build(&["--no-cache"]);
    assert!(cached_steps(&err).is_empty());
}

#[test]
fn unchanged_context_is_not_read_again() {
    let b = Build::new("FROM base\nCOPY . /ctx/\n");
    for i in 0..300 {
        b.file(&format!("files/f{i}"), &format!("content {i}"));
    }
    let read_count = |err: &str| -> usize {
        let line = err
            .lines()
            .find(|l| l.contains("files read to hash them"))
            .unwrap_or_else(|| panic!("{err}"));
        let before = line.split(" files read").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (_, err) = b.build(&["--log-level", "info"]);
    assert!(read_count(&err) >= 300, "{err}");
    // The stat cache does not trust files changed just before it was recorded (racy).
    std::thread::sleep(std::time::Duration::from_millis(200));
    b.build(&["--log-level", "info"]);
    let (_, err) = b.build(&["--log-level", "info"]);
    assert_eq!(read_count(&err), 0, "{err}");
}

#[test]
fn only_needed_stages_run_and_independent_ones_run_together() {
    let b = Build::new(
        "FROM base AS broken
RUN exit 1

FROM base AS left
RUN --mount=type=cache,id=sync,target=/s sh -c 'touch /s/left; i=0; while [ ! -e /s/right ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; test -e /s/right' && echo left > /left

FROM base AS right
RUN --mount=type=cache,id=sync,target=/s sh -c 'touch /s/right; i=0; while [ ! -e /s/left ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; test -e /s/left' && echo right > /right

FROM base
COPY --from=left /left /
COPY --from=right /right /
",
    );
    // Each of left and right waits for the other: only concurrent stages can both finish.
    b.build(&["-t", "joined"]);
    assert_eq!(b.read("joined", "/left"), "left\n");
    assert_eq!(b.read("joined", "/right"), "right\n");
    let err = b.fails(&["--target", "broken", "--no-cache"]);
    assert!(err.contains("exit code: 1"), "{err}");
    let err = b.fails(&["--target", "nope"]);
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    let b = Build::new(
        "FROM base
ARG NAME=world
COPY <<EOF /greeting
hello $NAME
EOF
COPY <<'EOF' /literal
hello $NAME
EOF
RUN <<EOF
echo from heredoc > /ran
EOF
RUN <<EOF
#!/bin/sh
echo \"script $0\" > /script
EOF
RUN <<-EOT sh
\techo chomped > /chomped
\tEOT
",
    );
    b.build(&["-t", "h"]);
    assert_eq!(b.read("h", "/greeting"), "hello world\n");
    assert_eq!(b.read("h", "/literal"), "hello $NAME\n");
    assert_eq!(b.read("h", "/ran"), "from heredoc\n");
    assert_eq!(b.read("h", "/script"), "script /dev/pipes/EOF\n");
    assert_eq!(b.read("h", "/chomped"), "chomped\n");
}

#[test]
fn a_cache_mount_seeded_from_a_stage_starts_with_its_content_and_keeps_what_is_added() {
    let b = Build::new(
        "FROM base AS seed
RUN mkdir -p /out && echo seeded > /out/s
FROM base
RUN --mount=type=cache,id=c,from=seed,source=/out,target=/cache sh -c 'cat /cache/s > /first; echo added > /cache/m'
RUN --mount=type=cache,id=c,from=seed,source=/out,target=/cache sh -c 'cat /cache/m > /second'
RUN --mount=type=cache,id=c,target=/cache sh -c 'ls -A /cache > /unseeded'
",
    );
    b.build(&["-t", "seeded"]);
    assert_eq!(b.read("seeded", "/first"), "seeded\n");
    assert_eq!(b.read("seeded", "/second"), "added\n");
    assert_eq!(
        b.read("seeded", "/unseeded"),
        "",
        "without from= it is another cache"
    );
    b.build(&["--target", "seed", "-t", "seed-only"]);
    let names = {
        let tar = b.env.path("seed.tar");
        b.env
            .ok(&["export", "seed-only", "-o", tar.to_str().unwrap()]);
        tar_names(&tar)
    };
    assert!(
        names.contains("out/s") && !names.contains("out/m"),
        "the cache wrote into the stage it was seeded from: {names:?}"
    );
}

#[test]
fn secrets_cache_tmpfs_and_bind_mounts() {
    let b = Build::new(
        "FROM base
RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = \"$(echo czNjcmV0 | base64 -d)\" && touch /secret-ok
RUN --mount=type=secret,id=tok,env=TOKEN test \"$TOKEN\" = \"$(echo czNjcmV0 | base64 -d)\" && touch /env-ok
RUN --mount=type=cache,target=/cache sh -c 'n=$(cat /cache/n 2>/dev/null || echo 0); echo $((n+1)) > /cache/n; cp /cache/n /count'
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/f && test -f /scratch/f'
RUN --mount=type=bind,source=data,target=/data sh -c 'cat /data/in > /copied && ! touch /data/new 2>/dev/null'
",
    );
    b.file("data/in", "bound\n");
    let secret = b.env.path("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    b.build(&["--secret", &secret_arg, "-t", "m"]);
    assert_eq!(b.read("m", "/count"), "1\n");
    b.build(&["--secret", &secret_arg, "--no-cache", "-t", "m2"]);
    assert_eq!(
        b.read("m2", "/count"),
        "2\n",
        "the cache mount outlives the build"
    );
    assert_eq!(b.read("m", "/copied"), "bound\n");
    let names = {
        let tar = b.env.path("m.tar");
        b.env.ok(&["export", "m", "-o", tar.to_str().unwrap()]);
        tar_names(&tar)
    };
    for absent in ["run/secrets/tok", "cache", "cache/n", "scratch", "data"] {
        assert!(!names.contains(absent), "{absent} leaked into the image");
    }
    let history = b.env.ok(&["history", "--no-trunc", "m"]);
    assert!(!history.contains("s3cret"));
    let err = b.fails(&["--no-cache"]);
    assert!(
        err.contains("exit code"),
        "a missing secret is not there: {err}"
    );
}

#[test]
fn network_is_off_unless_asked_for() {
    let b = Build::new(
        "FROM base
RUN ls /sys/class/net > /default
RUN --network=host ls /sys/class/net > /host
",
    );
    b.build(&["-t", "n"]);
    assert_eq!(b.read("n", "/default"), "lo\n");
    let host_count = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(b.read("n", "/host").lines().count(), host_count);
}

#[test]
fn dockerfile_and_context_from_stdin_and_outputs() {
    let env = Env::new();
    env.import_busybox("base");
    // -f - : the Dockerfile on stdin.
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "from context\n").unwrap();
    let out = env
        .cmd()
        .args([
            "build",
            "-q",
            "-f",
            "-",
            "-t",
            "stdin-df",
            ctx.to_str().unwrap(),
        ])
        .write_stdin("FROM base\nCOPY f /f\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(id.trim().starts_with("sha256:"), "-q prints the id: {id}");

    // Context - : a tar on stdin (with its own Dockerfile).
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nCOPY f /g\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-C", ctx.to_str().unwrap(), "-c", "."])
        .output()
        .unwrap();
    let iid = env.path("iid");
    let out = env
        .cmd()
        .args([
            "build",
            "--progress",
            "quiet",
            "--iidfile",
            iid.to_str().unwrap(),
            "-t",
            "stdin-ctx",
            "-",
        ])
        .write_stdin(tar.stdout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap(),
        env.inspect("stdin-ctx")["Id"].as_str().unwrap()
    );

    // --output in every form.
    let out_dir = env.path("out");
    let specs = [
        format!("type=local,dest={}", out_dir.join("local").display()),
        format!("type=tar,dest={}", out_dir.join("fs.tar").display()),
        format!("type=docker,dest={}", out_dir.join("docker.tar").display()),
        format!("type=oci,dest={}", out_dir.join("oci.tar").display()),
    ];
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut args = vec![
        "build".to_string(),
        "--progress".into(),
        "quiet".into(),
        "-t".into(),
        "outs".into(),
    ];
    for s in &specs {
        args.push("-o".into());
        args.push(s.clone());
    }
    args.push(ctx.to_str().unwrap().into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&argv);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("local/g")).unwrap(),
        "from context\n"
    );
    assert!(tar_names(&out_dir.join("fs.tar")).contains("g"));
    let other = Env::new();
    assert_eq!(
        other.ok(&["load", "-i", out_dir.join("docker.tar").to_str().unwrap()]),
        "Loaded image: outs:latest\n"
    );
    assert_eq!(
        other.ok(&["load", "-i", out_dir.join("oci.tar").to_str().unwrap()]),
        "Loaded image: outs:latest\n"
    );
}

#[test]
fn builds_are_reproducible_with_source_date_epoch() {
    let dockerfile = "FROM base\nCOPY f /f\nRUN echo $RANDOM > /dev/null && mkdir -p /made && echo x > /made/x\nENV A=1\n";
    let ids: Vec<(String, String)> = (0..2)
        .map(|_| {
            let b = Build::new(dockerfile);
            b.file("f", "same\n");
            let out = b
                .env
                .cmd()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args([
                    "build",
                    "--progress",
                    "quiet",
                    "-t",
                    "r",
                    b.ctx.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let info = b.env.inspect("r");
            (
                info["Id"].as_str().unwrap().to_string(),
                info["Descriptor"]["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids[0], ids[1], "same inputs, same digests");
}

#[test]
fn onbuild_triggers_run_in_child_builds() {
    let b = Build::new(
        "FROM base\nONBUILD RUN echo triggered > /trigger\nONBUILD COPY marker /marker\n",
    );
    b.build(&["-t", "parent"]);
    b.file("Dockerfile", "FROM parent\nRUN cat /trigger\n");
    b.file("marker", "m\n");
    b.build(&["-t", "child"]);
    assert_eq!(b.read("child", "/trigger"), "triggered\n");
    assert_eq!(b.read("child", "/marker"), "m\n");
    assert!(
        b.env.inspect("child")["Config"]["OnBuild"].is_null(),
        "triggers are not inherited further"
    );
    assert_eq!(
        b.env.inspect("parent")["Config"]["OnBuild"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn failures_name_the_step_line_and_output() {
    let b = Build::new("FROM base\nRUN echo about to fail && exit 3\n");
    let err = b.fails(&[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("about to fail"), "{err}");
    let b = Build::new("FROM base\nUSER ghost\nRUN true\n");
    assert!(b.fails(&[]).contains("unable to find user ghost"));
    // A loopback port nothing listens on: the pull fails at once and no traffic leaves the machine.
    let b = Build::new("FROM 127.0.0.1:9/not-in-the-store\n");
    assert!(b.fails(&[]).contains("not-in-the-store"));
    let b = Build::new("FROM base\nRUN true\n");
    assert!(
        b.fails(&["--platform", "linux/s390x"])
            .contains("not supported")
    );
}

fn layer_count(env: &Env, image: &str) -> usize {
    env.inspect(image)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn squash_collapses_the_build_layers_and_keeps_the_tree() {
    let b = Build::new(
        "FROM base
RUN dd if=/dev/zero of=/big bs=1k count=512 2>/dev/null && echo a > /a
RUN rm /big && echo b > /b
RUN rm /bin/vi && mkdir -p /d && echo d > /d/f
",
    );
    b.build(&["-t", "plain"]);
    b.build(&["--squash", "-t", "sq"]);
    b.build(&["--squash-all", "-t", "all"]);
    let listing = |image: &str| {
        let tar = b.env.path(&format!("{image}.tar"));
        b.env.ok(&["export", image, "-o", tar.to_str().unwrap()]);
        testkit::tar_listing(&tar)
    };
    let plain = listing("plain");
    assert_eq!(listing("sq"), plain, "--squash keeps the file tree");
    assert_eq!(listing("all"), plain, "--squash-all keeps the file tree");
    assert!(
        !plain.iter().any(|l| l.starts_with("bin/vi ")),
        "the base's file stays deleted"
    );
    assert_eq!(
        (
            layer_count(&b.env, "plain"),
            layer_count(&b.env, "sq"),
            layer_count(&b.env, "all")
        ),
        (4, 2, 1)
    );
    let size = |image: &str| b.env.inspect(image)["Size"].as_u64().unwrap();
    assert!(
        size("sq") + 400_000 < size("plain"),
        "a file deleted inside the build is gone from the squashed layer"
    );
    let history = |image: &str| b.env.inspect(image)["History"].as_array().unwrap().len();
    assert_eq!(
        history("sq"),
        history("plain"),
        "history keeps the instructions"
    );
    // The squashed base stays shared: its first layer is the base's.
    assert_eq!(
        b.env.inspect("sq")["RootFS"]["Layers"][0],
        b.env.inspect("base")["RootFS"]["Layers"][0]
    );
}

#[test]
fn the_layer_limit_stops_builds_before_they_run_and_can_be_raised() {
    let mut df = String::from("FROM base\n");
    for i in 0..138 {
        df.push_str(&format!("RUN touch /f{i}\n"));
    }
    df.push_str("RUN ls / | grep -c '^f[0-9]' > /count\nCMD [\"cat\", \"/count\"]\n");
    let b = Build::new(&df);
    let err = b.fails(&[]);
    assert!(
        err.contains("140 layers") && err.contains("limit of 127") && err.contains("--squash"),
        "{err}"
    );
    assert!(!err.contains("RUN touch /f0"), "nothing ran: {err}");
    b.build(&["--max-layers", "200", "-t", "deep"]);
    assert_eq!(layer_count(&b.env, "deep"), 140);
    assert_eq!(
        b.read("deep", "/count"),
        "138\n",
        "the last RUN saw all the layers below it"
    );
    assert_eq!(
        b.env.ok(&["run", "--rm", "deep"]),
        "138\n",
        "a container runs over 140 layers"
    );
    b.build(&["--squash", "-t", "deep-squashed"]);
    assert_eq!(layer_count(&b.env, "deep-squashed"), 2);
}

#[test]
fn bind_mounts_from_stages_and_writable_context_binds() {
    let b = Build::new(
        "FROM base AS tools
RUN mkdir -p /out && echo tool > /out/t

FROM base
RUN --mount=type=bind,from=tools,source=/out,target=/in cat /in/t > /from-stage
RUN --mount=type=bind,target=/ctx,rw sh -c 'echo scribble > /ctx/data.txt && cat /ctx/data.txt > /saw'
",
    );
    b.file("data.txt", "original\n");
    b.build(&["-t", "mnt"]);
    assert_eq!(b.read("mnt", "/from-stage"), "tool\n");
    assert_eq!(b.read("mnt", "/saw"), "scribble\n");
    assert_eq!(
        std::fs::read_to_string(b.ctx.join("data.txt")).unwrap(),
        "original\n",
        "rw writes are discarded"
    );

    // A symlink in the context cannot point a bind source at the host.
    std::os::unix::fs::symlink("/etc", b.ctx.join("escape")).unwrap();
    b.file(
        "Dockerfile",
        "FROM base\nRUN --mount=type=bind,source=escape,target=/m cat /m/hostname > /leak\n",
    );
    b.fails(&[]);
}

#[test]
fn identical_steps_in_concurrent_builds_run_once() {
    let b = Build::new(
        "FROM base
RUN --mount=type=cache,id=count,target=/c sh -c 'echo run >> /c/runs; sleep 1' && echo done > /done
",
    );
    let spawn = || {
        b.env
            .cmd()
            .args(["build", "--progress", "plain", b.ctx.to_str().unwrap()])
            .output()
    };
    let (a, c) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let c = s.spawn(spawn);
        (a.join().unwrap().unwrap(), c.join().unwrap().unwrap())
    });
    assert!(a.status.success() && c.status.success());
    let cached = [&a, &c]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("#2 CACHED"))
        .count();
    assert_eq!(
        cached, 1,
        "one build ran the step, the other waited and reused it"
    );
    b.file(
        "Dockerfile",
        "FROM base\nRUN --mount=type=cache,id=count,target=/c cp /c/runs /runs\n",
    );
    b.build(&["-t", "count"]);
    assert_eq!(b.read("count", "/runs"), "run\n");
}

#[test]
fn json_and_tty_progress() {
    let b = Build::new("FROM base\nRUN echo out-of-run\n");
    let out = b
        .env
        .cmd()
        .args(["build", "--progress", "json", b.ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["data"] == "out-of-run\n")
    );
    assert!(events.iter().any(|e| e["event"] == "done"));

    // Under a terminal (script(1) gives one), auto is the live view.
    let strata = assert_cmd::cargo::cargo_bin("strata");
    let cmd = format!(
        "STRATA_ROOT={} {} build --no-cache {}",
        b.env.root().display(),
        strata.display(),
        b.ctx.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[+] Building") && text.contains("RUN echo out-of-run"),
        "{text}"
    );
}

#[test]
fn lint_findings_are_build_warnings_and_can_fail_it() {
    let b = Build::new("FROM base\nCMD echo shell form\n");
    let (_, err) = b.build(&[]);
    assert!(
        err.contains(" - JSONArgsRecommended: JSON arguments recommended for CMD"),
        "{err}"
    );
    b.file(
        "Dockerfile",
        "# check=error=true\nFROM base\nRUN echo ran\nCMD echo shell form\n",
    );
    let err = b.fails(&[]);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
    assert!(!err.contains("RUN echo ran"), "nothing ran: {err}");
}

#[test]
fn copy_flags_the_engine_here_lacks() {
    let b = Build::new(
        "FROM base
COPY --parents src/**/*.go /tree/
COPY --exclude=*.txt --exclude=**/skip src /filtered/
COPY --chmod=750 --chown=42:43 src/z.txt /modes/
COPY --link src/a /linked/
",
    );
    b.file("src/a/x.go", "x")
        .file("src/b/c/y.go", "y")
        .file("src/z.txt", "z")
        .file("src/b/skip", "s");
    b.build(&["-t", "flags"]);
    let tar = b.env.path("flags.tar");
    b.env.ok(&["export", "flags", "-o", tar.to_str().unwrap()]);
    let listing = testkit::tar_listing(&tar);
    let has = |prefix: &str| listing.iter().any(|l| l.starts_with(prefix));
    assert!(
        has("tree/src/a/x.go ") && has("tree/src/b/c/y.go ") && !has("tree/src/z.txt"),
        "{listing:#?}"
    );
    assert!(
        has("filtered/a/x.go ") && !has("filtered/z.txt") && !has("filtered/b/skip"),
        "{listing:#?}"
    );
    assert!(
        listing
            .iter()
            .any(|l| l.starts_with("modes/z.txt Regular 750 42:43 ")),
        "{listing:#?}"
    );
    assert!(has("linked/x.go "), "{listing:#?}");
}

#[test]
fn file_names_that_are_not_utf8_are_copied_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let b = Build::new(
        "FROM base AS first
COPY . /ctx/
FROM base
COPY --from=first /ctx /again
COPY su* /glob/
",
    );
    let raw = |dir: &std::path::Path, name: &[u8]| dir.join(OsStr::from_bytes(name));
    std::fs::create_dir_all(b.ctx.join("sub")).unwrap();
    std::fs::write(raw(&b.ctx, b"caf\xe9.txt"), "one").unwrap();
    std::fs::write(raw(&b.ctx.join("sub"), b"\xff\xfe"), "two").unwrap();
    std::fs::write(raw(&b.ctx, b"skip\xe9"), "hidden").unwrap();
    b.file(".dockerignore", "skip*\n");
    let out = b.env.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let (_, err) = b.build(&["--output", &dest, "--target", "first"]);
    assert_eq!(
        std::fs::read_to_string(raw(&out, b"ctx/caf\xe9.txt")).unwrap(),
        "one",
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(raw(&out, b"ctx/sub/\xff\xfe")).unwrap(),
        "two"
    );
    assert!(
        !raw(&out, b"ctx/skip\xe9").exists(),
        ".dockerignore applies"
    );

    let out2 = b.env.path("out2");
    let dest = format!("type=local,dest={}", out2.display());
    b.build(&["--output", &dest]);
    assert_eq!(
        std::fs::read_to_string(raw(&out2, b"again/caf\xe9.txt")).unwrap(),
        "one",
        "copied from a stage"
    );
    assert_eq!(
        std::fs::read_to_string(raw(&out2, b"glob/\xff\xfe")).unwrap(),
        "two",
        "found by a wildcard"
    );

    let (_, err) = b.build(&[]);
    assert_eq!(cached_steps(&err).len(), 3, "{err}");
    std::fs::write(raw(&b.ctx, b"caf\xe9.txt"), "changed").unwrap();
    let (_, err) = b.build(&[]);
    let misses = misses(&err);
    assert_eq!(misses.len(), 3, "{err}");
    assert_eq!(misses[0], "file caf\\xe9.txt changed");
}

/// Puts a host program and the libraries `ldd` names for it into `root`, at their own paths,
/// so a busybox image can run it.
fn add_host_program(root: &std::path::Path, program: &str) {
    let ldd = testkit::run_tool("ldd", &[program]);
    let listing = String::from_utf8(ldd.stdout).unwrap();
    let libs = listing
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')));
    for path in libs.chain([program]) {
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).unwrap();
    }
}

/// A running `ssh-agent -D` holding one new key; killed when dropped.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
    fingerprint: String,
}

impl Agent {
    fn start(dir: &std::path::Path) -> Agent {
        let key = dir.join("id_ed25519");
        let out = testkit::run_tool(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
        assert!(out.status.success(), "ssh-keygen failed");
        let socket = dir.join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .args(["-D", "-a", socket.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent must be installed (scripts/setup installs openssh-client)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let add = std::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(add.status.success(), "{add:?}");
        let listed = testkit::run_tool("ssh-keygen", &["-lf", &format!("{}.pub", key.display())]);
        let fingerprint = String::from_utf8(listed.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        Agent {
            child,
            socket,
            fingerprint,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_mounts_forward_the_host_agent() {
    let b = Build::new(
        "FROM base
COPY tools/ /
RUN --mount=type=ssh ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /default-sock
RUN --mount=type=ssh,id=other,target=/agent,mode=0660,uid=1000,gid=100 sh -c 'stat -c \"%a %u %g\" /agent > /agent-stat && SSH_AUTH_SOCK=/agent ssh-add -l > /other-keys'
RUN --mount=type=ssh,id=absent sh -c 'test ! -e /run/buildkit/ssh_agent.0 && touch /optional-ok'
",
    );
    add_host_program(&b.ctx.join("tools"), "/usr/bin/ssh-add");
    let agent = Agent::start(&b.env.path(""));
    let other = format!("other={}", agent.socket.display());
    b.build_with_env(
        &[("SSH_AUTH_SOCK", &agent.socket)],
        &["--ssh", "default", "--ssh", &other, "-t", "ssh"],
    );
    let keys = b.read("ssh", "/keys");
    assert!(keys.contains(&agent.fingerprint), "{keys}");
    assert_eq!(
        b.read("ssh", "/default-sock"),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert_eq!(b.read("ssh", "/agent-stat"), "660 1000 100\n");
    assert!(b.read("ssh", "/other-keys").contains(&agent.fingerprint));
    assert_eq!(b.read("ssh", "/optional-ok"), "");
    let env = b.env.inspect("ssh")["Config"]["Env"].clone();
    let env: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")) && !env.iter().any(|e| e.starts_with("SSH_")),
        "the agent leaked into the image: {env:?}"
    );

    b.file(
        "Dockerfile",
        "FROM base\nRUN --mount=type=ssh,required true\n",
    );
    let err = b.fails(&[]);
    assert!(err.contains("no SSH agent default forwarded"), "{err}");
    let not_socket = b.fails(&["--ssh", "default=/etc/hostname"]);
    assert!(
        not_socket.contains("not an ssh-agent socket"),
        "{not_socket}"
    );
}
