//! `strata build` against the network, all on 127.0.0.1: a `FROM` the store lacks is pulled
//! from the CNCF registry (and `--pull` re-resolves it), `ADD <url>` downloads from a small
//! HTTP server, and the build cache makes a round trip through a registry
//! (`--cache-to/--cache-from type=registry`) and an OCI layout directory (`type=local`) into
//! empty stores.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use testkit::http::{FileServer, Route};
use testkit::registry::Registry;

use super::Env;

/// A store (a "machine") with its own config dir, building one context.
struct Machine {
    env: Env,
}

impl Machine {
    fn new() -> Machine {
        Machine { env: Env::new() }
    }

    fn run(&self, args: &[&str]) -> Output {
        let config = self.env.path("config");
        self.env
            .cmd()
            .env("STRATA_CONFIG", &config)
            .env("DOCKER_CONFIG", config.join("docker"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `strata build --progress plain EXTRA CTX`: (image id, stderr).
    fn build(&self, ctx: &Path, extra: &[&str]) -> (String, String) {
        let out = self.build_output(ctx, extra);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{stderr}");
        let id = std::fs::read_to_string(self.env.path("iid")).unwrap();
        (id, stderr)
    }

    fn build_output(&self, ctx: &Path, extra: &[&str]) -> Output {
        let iid = self.env.path("iid");
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--iidfile",
            iid.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.run(&args)
    }

    fn fails(&self, ctx: &Path, extra: &[&str]) -> String {
        let out = self.build_output(ctx, extra);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "build succeeded:\n{stderr}");
        stderr
    }
}

/// A context directory with a Dockerfile and files.
fn context(dir: PathBuf, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    dir
}

/// Plain progress: every vertex's name, and whether it said CACHED or `cache miss`.
fn steps(stderr: &str) -> Vec<(String, &'static str)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for line in stderr.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        let name = |names: &Vec<(String, String)>| {
            names
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default()
        };
        if rest.starts_with('[') && !names.iter().any(|(i, _)| i == id) {
            names.push((id.to_string(), rest.to_string()));
        } else if rest == "CACHED" {
            out.push((name(&names), "CACHED"));
        } else if rest.starts_with("cache miss: ") {
            out.push((name(&names), "miss"));
        }
    }
    out
}

fn cached(stderr: &str) -> Vec<String> {
    steps(stderr)
        .into_iter()
        .filter(|(_, s)| *s == "CACHED")
        .map(|(n, _)| n)
        .collect()
}

fn missed(stderr: &str) -> Vec<String> {
    steps(stderr)
        .into_iter()
        .filter(|(_, s)| *s == "miss")
        .map(|(n, _)| n)
        .collect()
}

/// The blob upload requests the registry served.
fn uploads(registry: &Registry) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.contains("/blobs/uploads/"))
        .collect()
}

/// A busybox base image pushed to the registry from its own store; its reference.
fn push_base(registry: &Registry, name: &str) -> String {
    let pusher = Machine::new();
    let reference = format!("{}/{name}", registry.host());
    pusher.env.import_busybox(&reference);
    pusher.ok(&["push", &reference]);
    reference
}

#[test]
fn a_missing_from_image_is_pulled_and_pull_re_resolves_the_tag() {
    let registry = Registry::start();
    let host = registry.host();
    let base = push_base(&registry, "test/base:1");

    let m = Machine::new();
    let ctx = context(
        m.env.path("ctx"),
        &format!("FROM {base}\nRUN echo built > /built\n"),
        &[],
    );
    let (first, stderr) = m.build(&ctx, &[]);
    assert!(
        stderr.contains(&format!("#1 [internal] pull {base}\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains(" pull complete") || stderr.contains(" done"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("#2 [1/2] FROM {host}/test/base@sha256:")),
        "the solver's vertices come after the pull: {stderr}"
    );
    assert!(m.ok(&["images"]).contains(&format!("{host}/test/base")));
    let pulls = |r: &Registry| {
        r.requests()
            .iter()
            .filter(|l| l.contains("/manifests/"))
            .count()
    };

    // In the store now: no registry traffic, same result.
    let before = pulls(&registry);
    let (again, stderr) = m.build(&ctx, &[]);
    assert!(!stderr.contains("[internal] pull"), "{stderr}");
    assert_eq!(pulls(&registry), before);
    assert_eq!(again, first);

    // The tag moves on in the registry: only --pull sees it.
    let other = Machine::new();
    other.env.import_busybox(&base);
    let newer = context(
        other.env.path("newer"),
        &format!("FROM {base}\nCOPY v2 /v2\n"),
        &[("v2", "two")],
    );
    other.build(&newer, &["-t", &base]);
    other.ok(&["push", &base]);
    let (stale, _) = m.build(&ctx, &[]);
    assert_eq!(stale, first, "without --pull the stored base is used");
    let (fresh, stderr) = m.build(&ctx, &["--pull"]);
    assert!(stderr.contains("[internal] pull"), "{stderr}");
    assert_ne!(fresh, first, "--pull took the new base");
    let tar = m.env.path("fresh.tar");
    m.ok(&["export", fresh.trim(), "-o", tar.to_str().unwrap()]);
    assert!(super::tar_names(&tar).contains("v2"));

    // A base that is nowhere is a clear error.
    let missing = context(
        m.env.path("missing"),
        &format!("FROM {host}/test/nothing:1\n"),
        &[],
    );
    let err = m.fails(&missing, &[]);
    assert!(
        err.contains(&format!("pulling {host}/test/nothing:1")) && err.contains("not found"),
        "{err}"
    );
}

const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
const LAST_MODIFIED_SECS: i64 = 1_700_000_000;

fn sha256_of(data: &[u8]) -> String {
    oci::Digest::of(data).to_string()
}

#[test]
fn add_url_downloads_name_mode_mtime_redirects_and_checksums() {
    let server = FileServer::start();
    server.file(
        "/files/hello.txt",
        b"hello from http\n",
        Some(LAST_MODIFIED),
    );
    server.file("/files/plain", b"no date\n", None);
    server.route(
        "/moved/renamed.txt",
        Route::Redirect(server.url("/files/hello.txt")),
    );
    server.route("/gone", Route::Status(404));
    let m = Machine::new();
    let hello = server.url("/files/hello.txt");
    let ctx = context(
        m.env.path("ctx"),
        &format!(
            "FROM scratch\nADD {hello} /\nADD {} /r/\nADD --checksum={} {} /c/\n",
            server.url("/moved/renamed.txt"),
            sha256_of(b"no date\n"),
            server.url("/files/plain")
        ),
        &[],
    );
    let out = m.env.path("out");
    m.build(&ctx, &["-o", &format!("type=local,dest={}", out.display())]);
    let file = out.join("hello.txt");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello from http\n");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.mtime(), LAST_MODIFIED_SECS, "mtime from Last-Modified");
    // Named from the URL as written, not where it redirected to.
    assert_eq!(
        std::fs::read_to_string(out.join("r/renamed.txt")).unwrap(),
        "hello from http\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("c/plain")).unwrap(),
        "no date\n"
    );
    assert!(
        server
            .requests()
            .contains(&"GET /moved/renamed.txt 302".to_string())
    );

    // The cache key covers the content: a rebuild hits, a changed file misses.
    let (_, stderr) = m.build(&ctx, &[]);
    assert_eq!(missed(&stderr), Vec::<String>::new(), "{stderr}");
    server.file("/files/hello.txt", b"changed\n", Some(LAST_MODIFIED));
    let (_, stderr) = m.build(&ctx, &[]);
    assert_eq!(
        missed(&stderr).len(),
        3,
        "the download and the steps after it: {stderr}"
    );

    // A wrong checksum fails the build and says what it got.
    let bad = context(
        m.env.path("bad"),
        &format!(
            "FROM scratch\nADD --checksum={} {hello} /\n",
            sha256_of(b"something else")
        ),
        &[],
    );
    let err = m.fails(&bad, &[]);
    assert!(
        err.contains(&format!(
            "digest mismatch for {hello}: expected {}, got {}",
            sha256_of(b"something else"),
            sha256_of(b"changed\n")
        )),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");

    let gone = context(
        m.env.path("gone"),
        &format!("FROM scratch\nADD {} /\n", server.url("/gone")),
        &[],
    );
    let err = m.fails(&gone, &[]);
    assert!(
        err.contains(&format!("{}: the server answered 404", server.url("/gone"))),
        "{err}"
    );
}

const APP: &str = "FROM BASE
COPY a.txt /a.txt
RUN cat /a.txt > /b.txt
COPY c.txt /c.txt
RUN wc -c /c.txt > /c.count
";

fn app(dir: PathBuf, base: &str, c: &str) -> PathBuf {
    context(
        dir,
        &APP.replace("BASE", base),
        &[("a.txt", "a\n"), ("c.txt", c)],
    )
}

#[test]
fn a_registry_cache_gives_an_empty_store_every_hit_and_sends_nothing_twice() {
    let registry = Registry::start();
    let host = registry.host();
    let base = push_base(&registry, "test/base:1");
    let cache = format!("{host}/cache/app:buildcache");
    let to = format!("type=registry,ref={cache}");
    let from = format!("type=registry,ref={cache}");

    let a = Machine::new();
    let ctx = app(a.env.path("ctx"), &base, "c\n");
    let (id, stderr) = a.build(&ctx, &["--cache-to", &to]);
    assert_eq!(missed(&stderr).len(), 4, "{stderr}");
    assert!(
        stderr.contains(&format!("exporting cache to registry {cache}")),
        "{stderr}"
    );
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT /v2/cache/app/manifests/buildcache 201")),
        "{:?}",
        registry.requests()
    );

    // A fresh store: the base is pulled, every step comes from the registry's cache.
    let b = Machine::new();
    let (same, stderr) = b.build(&ctx, &["--cache-from", &from]);
    assert_eq!(missed(&stderr), Vec::<String>::new(), "{stderr}");
    assert_eq!(cached(&stderr).len(), 4, "{stderr}");
    assert!(
        stderr.contains(&format!("importing cache manifest from {cache}")),
        "{stderr}"
    );
    assert!(stderr.contains("importing cache layer sha256:"), "{stderr}");
    assert_eq!(same, id, "the same image");

    // Exporting the same cache again uploads no blob.
    let sent = uploads(&registry);
    let (_, stderr) = b.build(&ctx, &["--cache-from", &from, "--cache-to", &to]);
    assert!(stderr.contains("(0 blobs uploaded)"), "{stderr}");
    assert_eq!(uploads(&registry), sent, "a second export sends no blob");

    // A changed file rebuilds from its step on; the steps before it still hit.
    let c = Machine::new();
    let changed = app(c.env.path("ctx"), &base, "changed\n");
    let (other, stderr) = c.build(&changed, &["--cache-from", &from]);
    assert_eq!(
        steps(&stderr)
            .iter()
            .map(|(n, s)| format!("{n}: {s}"))
            .collect::<Vec<_>>(),
        vec![
            "[2/5] COPY a.txt /a.txt: CACHED",
            "[3/5] RUN cat /a.txt > /b.txt: CACHED",
            "[4/5] COPY c.txt /c.txt: miss",
            "[5/5] RUN wc -c /c.txt > /c.count: miss",
        ],
        "{stderr}"
    );
    assert_ne!(other, id);

    // A cache that is not there yet is not an error.
    let d = Machine::new();
    let (_, stderr) = d.build(&ctx, &["--cache-from", &format!("{host}/cache/none:x")]);
    assert!(stderr.contains("no cache there yet"), "{stderr}");
    assert_eq!(missed(&stderr).len(), 4);
}

#[test]
fn a_local_cache_round_trips_and_mode_max_keeps_every_stage() {
    let registry = Registry::start();
    let base = push_base(&registry, "test/base:1");
    let a = Machine::new();
    let ctx = context(
        a.env.path("ctx"),
        &format!(
            "FROM {base} AS builder\nCOPY a.txt /a.txt\nRUN cat /a.txt /a.txt > /doubled\n\
             FROM {base}\nCOPY --from=builder /doubled /doubled\n"
        ),
        &[("a.txt", "a\n")],
    );
    let min_dir = a.env.path("cache-min");
    let max_dir = a.env.path("cache-max");
    let (id, stderr) = a.build(
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={}", min_dir.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max_dir.display()),
        ],
    );
    assert_eq!(missed(&stderr).len(), 3, "{stderr}");
    // An OCI image layout skopeo can read.
    for dir in [&min_dir, &max_dir] {
        assert!(dir.join("oci-layout").is_file());
        let out = testkit::run_tool(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:latest", dir.display())],
        );
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            raw.contains("application/vnd.strata.build-cache.v1"),
            "{raw}"
        );
    }

    // mode=min: the final image's steps only, so the builder stage runs again.
    let b = Machine::new();
    let (same, stderr) = b.build(
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", min_dir.display()),
        ],
    );
    assert_eq!(same, id);
    assert_eq!(
        cached(&stderr),
        vec!["[stage-1 2/2] COPY --from=builder /doubled /doubled"]
    );
    assert_eq!(missed(&stderr).len(), 2, "{stderr}");

    // mode=max: everything hits; several --cache-from are tried in turn.
    let c = Machine::new();
    let (same, stderr) = c.build(
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", a.env.path("nothing-here").display()),
            "--cache-from",
            &format!("type=local,src={}", max_dir.display()),
        ],
    );
    assert_eq!(same, id);
    assert_eq!(cached(&stderr).len(), 3, "{stderr}");
    assert_eq!(missed(&stderr), Vec::<String>::new());

    // A second export writes nothing new.
    let (_, stderr) = c.build(
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", max_dir.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max_dir.display()),
        ],
    );
    assert!(stderr.contains("(0 blobs written)"), "{stderr}");

    // A tampered blob in the directory is a miss with a warning, never a wrong layer.
    let layout: oci::Index =
        serde_json::from_slice(&std::fs::read(max_dir.join("index.json")).unwrap()).unwrap();
    let manifest: oci::Manifest = serde_json::from_slice(
        &std::fs::read(
            max_dir
                .join("blobs/sha256")
                .join(layout.manifests[0].digest.hex()),
        )
        .unwrap(),
    )
    .unwrap();
    for l in &manifest.layers {
        let p = max_dir.join("blobs/sha256").join(l.digest.hex());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"tampered").unwrap();
    }
    let d = Machine::new();
    let (same, stderr) = d.build(
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", max_dir.display()),
        ],
    );
    assert_eq!(missed(&stderr).len(), 3, "{stderr}");
    assert!(stderr.contains("WARNING: cache layer sha256:"), "{stderr}");
    assert_ne!(same, id, "rebuilt: new timestamps");

    // Bad specs are refused before anything runs.
    let out = d.build_output(&ctx, &["--cache-to", "type=gha"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cache type \"gha\" is not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
