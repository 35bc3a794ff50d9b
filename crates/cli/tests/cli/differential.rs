//! The same Dockerfiles built by strata and by the Docker engine's BuildKit: the resulting
//! file trees (type, mode, owner, content, link target; not mtimes) and configs must agree.
//!
//! Both results are flattened by `strata export` (the engine's image goes through
//! `docker save` and `strata load` into a store of its own), so only the builds differ. The
//! engine here is Debian's 20.10, whose built-in Dockerfile frontend predates heredocs,
//! `--chmod`, `--link`, `--parents` and `--exclude`; those are tested against expected
//! contents in `build.rs`.

use std::path::Path;
use std::sync::OnceLock;

use testkit::{docker, tar_listing, unique_name};

use super::Env;

const BASE: &str = "strata-diff-base:1";

/// The busybox base, imported once into the engine under a fixed name.
fn docker_base(env: &Env) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        docker(&["import", env.busybox_tar().to_str().unwrap(), BASE]);
    });
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

const CONFIG_FIELDS: [&str; 11] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "StopSignal",
    "Shell",
    "Volumes",
    "Healthcheck",
];

/// A config field with docker's nulls, empties and absences made equal.
fn field(config: &serde_json::Value, name: &str) -> serde_json::Value {
    match config.get(name) {
        None | Some(serde_json::Value::Null) => serde_json::Value::Null,
        Some(serde_json::Value::String(s)) if s.is_empty() => serde_json::Value::Null,
        Some(serde_json::Value::Array(a)) if a.is_empty() => serde_json::Value::Null,
        Some(serde_json::Value::Object(o)) if o.is_empty() => serde_json::Value::Null,
        Some(v) => v.clone(),
    }
}

/// Builds `dockerfile` with `files` as the context both ways and compares the results.
/// `prepare` may add files the plain string list cannot express (links, archives).
fn compare(dockerfile: &str, files: &[(&str, &str)], build_args: &[&str], prepare: impl Fn(&Path)) {
    let env = Env::new();
    env.import_busybox(BASE);
    docker_base(&env);
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    write_files(&ctx, files);
    prepare(&ctx);
    let mut args: Vec<String> = Vec::new();
    for a in build_args {
        args.push("--build-arg".into());
        args.push(a.to_string());
    }

    let mut strata_args = vec!["build", "--progress", "plain", "-t", "out"];
    strata_args.extend(args.iter().map(String::as_str));
    strata_args.push(ctx.to_str().unwrap());
    env.ok(&strata_args);
    let ours = env.path("ours.tar");
    env.ok(&["export", "out", "-o", ours.to_str().unwrap()]);

    let tag = unique_name("diff");
    let mut docker_args = vec!["build", "--network=none", "-q", "-t", &tag];
    docker_args.extend(args.iter().map(String::as_str));
    docker_args.push(ctx.to_str().unwrap());
    let out = std::process::Command::new("/usr/bin/docker")
        .args(&docker_args)
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = env.path("docker.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    let theirs_env = Env::new();
    theirs_env.ok(&["load", "-i", saved.to_str().unwrap()]);
    let theirs = env.path("theirs.tar");
    theirs_env.ok(&["export", &tag, "-o", theirs.to_str().unwrap()]);
    docker(&["rmi", &tag]);

    let (a, b) = (tar_listing(&ours), tar_listing(&theirs));
    let only_ours: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_theirs: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "file trees differ\n only strata: {only_ours:#?}\n only docker: {only_theirs:#?}"
    );
    let ours_config = env.inspect("out")["Config"].clone();
    let theirs_config = theirs_env.inspect(&tag)["Config"].clone();
    for name in CONFIG_FIELDS {
        assert_eq!(
            field(&ours_config, name),
            field(&theirs_config, name),
            "config field {name}"
        );
    }
}

#[test]
fn basics_and_config() {
    compare(
        r#"FROM strata-diff-base:1
ENV A=1 B="two words"
LABEL org.example.x=y "with space"=z
EXPOSE 80 53/udp 7000-7001
WORKDIR /app
USER 1000:1000
WORKDIR sub
USER root
RUN echo "$A $B" > a.txt && mkdir -p /data && echo hi > /data/f
VOLUME /data
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-e", "-c"]
HEALTHCHECK --interval=30s --retries=2 CMD true
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "echo hi"]
"#,
        &[],
        &[],
        |_| {},
    );
}

#[test]
fn copy_forms() {
    compare(
        r#"FROM strata-diff-base:1
COPY file.txt /dst/
COPY file.txt /renamed.txt
COPY dir /copied-dir
COPY dir/ /copied-dir2/
COPY *.md /docs/
COPY dir/sub/*.txt nomatch* /globbed/
COPY --chown=1234:5678 file.txt /owned/
COPY --chown=nobody file.txt /owned-by-name
COPY --chown=42 dir /owned-dir/
COPY link.txt /followed
COPY dir /etc/
WORKDIR /w
COPY file.txt .
COPY file.txt rel/
COPY file.txt dir/sub/deep.txt ./many/
"#,
        &[
            ("file.txt", "content\n"),
            ("a.md", "# a\n"),
            ("b.md", "# b\n"),
            ("dir/top.txt", "top\n"),
            ("dir/sub/deep.txt", "deep\n"),
            ("dir/sub/other.txt", "other\n"),
        ],
        &[],
        |ctx| {
            std::os::unix::fs::symlink("file.txt", ctx.join("link.txt")).unwrap();
            std::os::unix::fs::symlink("top.txt", ctx.join("dir/inner-link")).unwrap();
        },
    );
}

#[test]
fn whiteouts_and_opaque_directories() {
    compare(
        r#"FROM strata-diff-base:1
RUN mkdir -p /d/sub /var/lib/x && echo a > /d/a && echo b > /d/sub/b && echo c > /keep && echo v > /var/lib/x/f
RUN rm -rf /d/sub && rm /d/a && rm /bin/vi && mkdir /d/sub && echo new > /d/sub/n
RUN rm -rf /var /root && mkdir /var && echo x > /var/only && rm -rf /tmp && rm /etc/group
"#,
        &[],
        &[],
        |_| {},
    );
}

#[test]
fn multi_stage_from_name_index_and_image() {
    compare(
        r#"FROM strata-diff-base:1 AS unused
RUN exit 1

FROM strata-diff-base:1 AS build
RUN mkdir /out && echo built > /out/artifact && chown -R 7:8 /out

FROM build AS child
RUN echo child >> /out/artifact

FROM strata-diff-base:1
COPY --from=build /out /from-name
COPY --from=1 /out/artifact /from-index
COPY --from=child /out/artifact /from-child
COPY --from=strata-diff-base:1 /bin/busybox /from-image
"#,
        &[],
        &[],
        |_| {},
    );
}

#[test]
fn dockerignore_with_exceptions() {
    compare(
        "FROM strata-diff-base:1\nCOPY . /ctx/\n",
        &[
            (
                ".dockerignore",
                "# comment\n*.log\n!keep.log\nsecret/\n**/*.tmp\n/Dockerfile\nsub/*\n!sub/wanted\n",
            ),
            ("a.log", "x"),
            ("keep.log", "x"),
            ("secret/key", "x"),
            ("deep/er/file.tmp", "x"),
            ("deep/er/file.txt", "x"),
            ("sub/unwanted", "x"),
            ("sub/wanted", "x"),
            ("plain", "x"),
        ],
        &[],
        |_| {},
    );
}

#[test]
fn arg_and_env_expansion() {
    compare(
        r#"ARG V=1
FROM strata-diff-base:1
ARG V
ARG W=${V}-w
ENV E=$W X=${UNSET:-default} Y=${V:+set} Z='$literal'
RUN echo "$V $W $E $X $Y $Z" > /out
COPY f${V}.txt /f-$W
WORKDIR /$W
ENV V=fromenv
RUN echo "$V" > /env-wins
"#,
        &[("f2.txt", "two\n"), ("f1.txt", "one\n")],
        &["V=2"],
        |_| {},
    );
}

#[test]
fn links_fifos_and_special_files() {
    compare(
        r#"FROM strata-diff-base:1
COPY tree /tree
RUN mkfifo /fifo && ln /tree/real /hard && ln -s /tree/real /soft && mknod /null2 c 1 3 && chmod 4755 /tree/real
"#,
        &[("tree/real", "data\n")],
        &[],
        |ctx| {
            std::fs::hard_link(ctx.join("tree/real"), ctx.join("tree/hardlinked")).unwrap();
            std::os::unix::fs::symlink("real", ctx.join("tree/symlinked")).unwrap();
        },
    );
}

#[test]
fn file_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    // The tree listing shows such names lossily; `ls` inside the image writes their bytes
    // into a file whose content is compared exactly.
    compare(
        r#"FROM strata-diff-base:1
COPY . /ctx/
COPY s* /glob/
RUN ls /ctx /ctx/sub /glob > /listing
"#,
        &[],
        &[],
        |ctx| {
            let raw = |rel: &[u8]| ctx.join(std::ffi::OsStr::from_bytes(rel));
            std::fs::create_dir_all(raw(b"sub")).unwrap();
            std::fs::write(raw(b"caf\xe9.txt"), "one").unwrap();
            std::fs::write(raw(b"sub/\xff\xfe"), "two").unwrap();
            std::fs::write(raw(b"skip\xe9"), "hidden").unwrap();
            std::fs::write(ctx.join(".dockerignore"), "skip*\n").unwrap();
        },
    );
}

#[test]
fn workdir_user_and_shell() {
    compare(
        r#"FROM strata-diff-base:1
USER nobody
WORKDIR /home/nobody/work
RUN id > /tmp/id && touch /tmp/mine
USER 4242
RUN id > /tmp/id2 || true
USER root:nogroup
RUN id > /tmp/id3
SHELL ["/bin/sh", "-c", "-x"]
RUN echo shell > /tmp/shell
"#,
        &[],
        &[],
        |_| {},
    );
}

#[test]
fn add_unpacks_archives() {
    compare(
        "FROM strata-diff-base:1\nADD a.tar.gz /x/\nADD plain.txt /y/\nADD b.tar /z\n",
        &[("plain.txt", "plain\n")],
        &[],
        |ctx| {
            let src = ctx.join("src");
            std::fs::create_dir_all(src.join("inner")).unwrap();
            std::fs::write(src.join("inner/f"), "in archive\n").unwrap();
            for (name, flag) in [("a.tar.gz", "-czf"), ("b.tar", "-cf")] {
                let status = std::process::Command::new("tar")
                    .args([
                        flag,
                        ctx.join(name).to_str().unwrap(),
                        "-C",
                        src.to_str().unwrap(),
                        "inner",
                    ])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            std::fs::remove_dir_all(&src).unwrap();
        },
    );
}
