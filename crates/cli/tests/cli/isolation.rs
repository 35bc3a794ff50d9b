//! The chroot isolation, for where namespaces and mounts are refused: chosen with
//! `--isolation chroot` on the host, and chosen by strata itself inside an unprivileged
//! container under the Docker engine (its default seccomp profile and capabilities, no
//! `--privileged`, no `/dev/fuse`). Either way the image must be the one a namespaced build
//! makes, byte for byte, and the CI recipe (pull the base, build with a registry cache,
//! push) must work there.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use testkit::registry::Registry;

use super::{EPOCH, Env};

/// Dockerfiles (over a busybox `base`) whose RUN and COPY steps exercise what snapshots must
/// get right: owners, whiteouts, opaque directories, renames, hardlinks, stages, mounts.
pub(super) const CORPUS: &[(&str, &str)] = &[
    (
        "owners",
        "FROM base
RUN mkdir -p /home/u && chown 1000:1000 /home/u && echo s > /etc/shadow && chown 0:42 /etc/shadow && chmod 640 /etc/shadow
COPY --chown=1000:1000 f /home/u/f
RUN chmod 4755 /bin/busybox && touch -d @1600000000 /home/u/f
",
    ),
    (
        "deletes",
        "FROM base
RUN rm /bin/vi && rm -rf /root && mkdir /root && echo x > /root/y
RUN mv /etc/group /etc/group.old && rm -rf /var && echo again > /tmp/t
",
    ),
    (
        "stages",
        "FROM base AS build
RUN echo built > /out && mkdir -p /deep/a/b && echo d > /deep/a/b/c
FROM base
COPY --from=build /out /app/out
COPY --from=build /deep /app/deep
WORKDIR /app/sub
RUN ln -s out /app/link && ln /app/out /app/hard
",
    ),
    (
        "mounts",
        "FROM base
RUN --mount=type=cache,target=/cache echo c >> /cache/c && cp /cache/c /from-cache
RUN --mount=type=secret,id=tok cp /run/secrets/tok /secret-copied
RUN --mount=type=tmpfs,target=/tmp echo t > /tmp/scratch && ls /tmp > /tmp-listing
RUN --mount=type=bind,source=f,target=/etc/bound cat /etc/bound > /bound-copy
RUN <<EOF
echo heredoc > /heredoc
EOF
",
    ),
    (
        "add",
        "FROM base
ADD files.tar /unpacked/
ADD f /plain/
",
    ),
];

/// The corpus case `name` in a fresh context directory under `env`.
pub(super) fn context(env: &Env, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = env.path(&format!("ctx-{name}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("f"), "context file\n").unwrap();
    let tar = testkit::TarBuilder::new()
        .dir("d/")
        .file("d/in-tar", b"from the tar\n")
        .symlink("d/link", "in-tar")
        .finish();
    std::fs::write(ctx.join("files.tar"), tar).unwrap();
    std::fs::write(env.path("secret"), "s3cret").unwrap();
    ctx
}

/// Builds a corpus context (made by [`context`] under `env`) with `cmd`, reproducibly;
/// returns the image id and stderr.
pub(super) fn build_with(mut cmd: assert_cmd::Command, env: &Env, ctx: &Path) -> (String, String) {
    let secret = format!("id=tok,src={}", env.path("secret").display());
    let out = cmd
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "-q", "--secret", &secret])
        .arg(ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build of {}: {stderr}", ctx.display());
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    )
}

fn build_id(env: &Env, isolation: &str, ctx: &Path) -> String {
    let mut cmd = env.cmd();
    cmd.args(["--isolation", isolation]);
    let (id, stderr) = build_with(cmd, env, ctx);
    assert_eq!(
        stderr.contains("isolation chroot"),
        isolation == "chroot",
        "the chroot isolation says once what it gives up: {stderr}"
    );
    id
}

#[test]
fn chroot_builds_give_the_namespaced_builds_bytes() {
    let (ns, ch) = (Env::new(), Env::new());
    ns.import_busybox("base");
    ch.import_busybox("base");
    for (name, dockerfile) in CORPUS {
        let a = build_id(&ns, "namespaces", &context(&ns, name, dockerfile));
        let b = build_id(&ch, "chroot", &context(&ch, name, dockerfile));
        assert_eq!(a, b, "{name}: the same image under both isolations");
    }
    // What the steps did is really in the image.
    let tar = ch.path("mounts.tar");
    let id = build_id(&ch, "chroot", &context(&ch, "mounts", CORPUS[3].1));
    ch.ok(&["export", &id, "-o", tar.to_str().unwrap()]);
    for (path, content) in [
        ("/secret-copied", "s3cret"),
        ("/bound-copy", "context file\n"),
        ("/heredoc", "heredoc\n"),
        ("/tmp-listing", "scratch\n"),
    ] {
        assert_eq!(
            testkit::file_in_tar(&tar, path).as_deref(),
            Some(content),
            "{path}"
        );
    }
    let names = super::tar_names(&tar);
    for absent in [
        "cache",
        "run/secrets/tok",
        "etc/bound",
        "tmp/scratch",
        "dev/null",
    ] {
        assert!(!names.contains(absent), "{absent} leaked into the image");
    }
}

#[test]
fn chroot_refuses_containers_with_a_hint() {
    let env = Env::new();
    env.import_busybox("base");
    let out = env
        .cmd()
        .args(["--isolation", "chroot", "run", "--rm", "base", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("strata run needs mount and PID namespaces") && stderr.contains("hint:"),
        "{stderr}"
    );
}

/// A docker image holding busybox and the C libraries the strata binary needs, and a copy
/// of the binary to bind-mount into it (the engine reads it from any path as root).
struct Probe {
    image: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        testkit::busybox_rootfs(&root);
        let binary = dir.path().join("strata");
        std::fs::copy(assert_cmd::cargo::cargo_bin("strata"), &binary).unwrap();
        let ldd = testkit::run_tool("ldd", &[binary.to_str().unwrap()]);
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
        let tar = dir.path().join("root.tar");
        testkit::run_tool(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        let image = testkit::unique_name("unprivileged");
        testkit::docker(&["import", tar.to_str().unwrap(), &image]);
        Probe {
            image,
            binary,
            _dir: dir,
        }
    })
}

/// Runs `script` in a fresh unprivileged container (the engine's defaults: no
/// `--privileged`, no added capabilities, default seccomp; host networking only to reach
/// the registry on 127.0.0.1), with `/work` bound read-only.
fn in_container(work: &Path, script: &str) -> Output {
    let p = probe();
    let bin = format!("{}:/usr/local/bin/strata:ro", p.binary.display());
    let work = format!("{}:/work:ro", work.display());
    let out = std::process::Command::new("/usr/bin/docker")
        .args(["run", "--rm", "--network", "host", "-v", &bin, "-v", &work])
        .args(["-e", &format!("SOURCE_DATE_EPOCH={EPOCH}")])
        .args([&p.image, "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "in the container: {script}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn an_unprivileged_container_builds_pushes_and_shares_a_registry_cache() {
    let registry = Registry::start();
    let host = registry.host();
    let base = format!("{host}/test/base:1");
    let pusher = Env::new();
    pusher.import_busybox(&base);
    pusher.ok(&["push", &base]);

    let (name, dockerfile) = CORPUS[0];
    let dockerfile = dockerfile.replacen("FROM base", &format!("FROM {base}"), 1);
    let work = Env::new();
    let ctx = context(&work, name, &dockerfile);
    let on_host = build_id(&work, "namespaces", &ctx);

    let image = format!("{host}/test/app:1");
    let cache = format!("type=registry,ref={host}/cache/app:buildcache");
    let script = format!(
        "strata build -q -t {image} --cache-to {cache} /work/ctx-{name} && strata push {image}"
    );
    let first = in_container(work.path("").as_path(), &script);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("strata: isolation chroot (namespaces and mounts are not permitted here)"),
        "strata picks the chroot isolation by itself and says so: {stderr}"
    );
    let built = String::from_utf8_lossy(&first.stdout);
    assert!(
        built.lines().next() == Some(on_host.as_str()),
        "the container's image is the host's: {built} vs {on_host}"
    );
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT /v2/test/app/manifests/1 201")),
        "the push reached the registry: {:?}",
        registry.requests()
    );

    // A second runner with an empty store: every step comes from the shared cache.
    let script = format!(
        "strata build --progress plain -t {image} --cache-from {cache} /work/ctx-{name} 2>&1"
    );
    let second = in_container(work.path("").as_path(), &script);
    let log = String::from_utf8_lossy(&second.stdout);
    assert!(!log.contains("cache miss"), "{log}");
    assert_eq!(log.matches(" CACHED").count(), 3, "{log}");

    // The pushed image is whole: a fresh store pulls it and gets the same image.
    let puller = Env::new();
    puller.ok(&["pull", &image]);
    assert_eq!(
        puller.inspect(&image)["Id"].as_str(),
        Some(on_host.as_str())
    );
}
