//! `pull`, `push`, `login`, `logout` against the CNCF distribution registry on 127.0.0.1
//! (`testkit::registry`), with a fault-injecting / token-issuing proxy in front where a test
//! needs one, and interop with skopeo in both directions.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;

use oci::{DiffId, Digest, History, Index, MediaType, Platform, Reference};
use store::{LayerInfo, Store};
use testkit::registry::{BearerAuth, Proxy, Registry};
use testkit::run_tool;

use super::Env;

/// strata with a private config dir (login file, docker config), so tests never read or write
/// the real ones.
fn strata(env: &Env, config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = env.cmd();
    c.env("STRATA_CONFIG", config)
        .env("DOCKER_CONFIG", config.join("docker"))
        .env_remove("STRATA_PUSH_CHUNK_SIZE")
        .args(args);
    if let Some(input) = stdin {
        c.write_stdin(input.as_bytes().to_vec());
    }
    c.output().unwrap()
}

fn config_of(env: &Env) -> PathBuf {
    env.path("config")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = strata(env, &config_of(env), args, None);
    assert!(
        out.status.success(),
        "strata {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(env: &Env, args: &[&str]) -> String {
    let out = strata(env, &config_of(env), args, None);
    assert!(
        !out.status.success(),
        "strata {} succeeded:\n{}",
        args.join(" "),
        text(&out)
    );
    text(&out)
}

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(env, &["inspect", name])).unwrap();
    v[0].clone()
}

/// The blob upload requests (`POST`/`PATCH`/`PUT` under `blobs/uploads`) the registry served.
fn uploads(registry: &Registry) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.contains("/blobs/uploads/"))
        .collect()
}

/// Adds a layer with one file on top of `base` and names the result `name`; returns the new
/// layer's blob digest.
fn derive_image(env: &Env, base: &str, name: &str, file: &str, content: &[u8]) -> Digest {
    let store = Store::open(&env.root()).unwrap();
    let base = store.resolve_image(base).unwrap();
    let tar = testkit::TarBuilder::new().file(file, content).finish();
    let mut enc = layer::Compression::Gzip.encoder(Vec::new()).unwrap();
    enc.write_all(&tar).unwrap();
    let gz = enc.finish().unwrap();
    let blob = store.put_blob(&gz).unwrap();
    let diff_id = DiffId(Digest::of(&tar));
    store
        .put_layer_info(
            &blob,
            &LayerInfo {
                diff_id: diff_id.clone(),
                uncompressed_size: tar.len() as u64,
            },
        )
        .unwrap();
    let mut config = base.config.clone();
    config.rootfs.diff_ids.push(diff_id);
    config.history.push(History {
        created_by: Some(format!("add {file}")),
        ..History::default()
    });
    let mut layers = base.manifest.layers.clone();
    layers.push(oci::Descriptor::new(
        MediaType::OciLayerGzip,
        blob.clone(),
        gz.len() as u64,
    ));
    let desc = store.put_image(&config, layers).unwrap();
    store
        .set_name(&Reference::parse(name).unwrap(), &desc)
        .unwrap();
    blob
}

fn store_digest(out: &str) -> String {
    let at = out.find("digest: sha256:").expect(out) + "digest: ".len();
    out[at..at + 71].to_string()
}

#[test]
fn push_then_pull_gives_the_same_image_and_a_second_push_sends_nothing() {
    let registry = Registry::start();
    let host = registry.host();
    let name = format!("{host}/test/busybox:1.0");
    let a = Env::new();
    let id = a.import_busybox(&name);

    let out = ok(&a, &["push", &name]);
    assert!(
        out.starts_with(&format!(
            "The push refers to repository [{host}/test/busybox]"
        )),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    let digest = store_digest(&out);
    assert!(
        out.contains(&format!("1.0: digest: {digest} size: ")),
        "{out}"
    );
    assert_eq!(
        inspect(&a, &name)["RepoDigests"][0],
        format!("{host}/test/busybox@{digest}")
    );

    let before = uploads(&registry);
    assert!(!before.is_empty());
    let again = ok(&a, &["push", &name]);
    assert!(again.contains(": Layer already exists"), "{again}");
    assert!(!again.contains(": Pushed"), "{again}");
    assert_eq!(uploads(&registry), before, "a second push uploads no blob");

    let b = Env::new();
    let pulled = ok(&b, &["pull", &name]);
    assert!(
        pulled.starts_with("1.0: Pulling from test/busybox\n"),
        "{pulled}"
    );
    assert!(pulled.contains(": Pull complete"), "{pulled}");
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert!(
        pulled.contains(&format!("Status: Downloaded newer image for {name}")),
        "{pulled}"
    );
    let info = inspect(&b, &name);
    assert_eq!(info["Id"], id);
    assert_eq!(info["Descriptor"]["digest"], digest);
    assert_eq!(
        info["RepoDigests"][0],
        format!("{host}/test/busybox@{digest}")
    );
    assert!(
        info["Size"].as_u64().unwrap() > 500_000,
        "diff ids recorded"
    );
    let table = ok(&b, &["images", "--digests"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("DIGEST") && table.contains(&digest),
        "{table}"
    );

    let same = ok(&b, &["pull", &name]);
    assert!(same.contains(": Already exists"), "{same}");
    assert!(
        same.contains(&format!("Status: Image is up to date for {name}")),
        "{same}"
    );
    // The exported file trees agree too.
    let (ta, tb) = (a.path("a.tar"), b.path("b.tar"));
    ok(&a, &["export", &name, "-o", ta.to_str().unwrap()]);
    ok(&b, &["export", &name, "-o", tb.to_str().unwrap()]);
    assert_eq!(super::tar_names(&ta), super::tar_names(&tb));
}

#[test]
fn shared_layers_are_skipped_and_mounted_across_repositories() {
    let registry = Registry::start();
    let host = registry.host();
    let env = Env::new();
    let base = format!("{host}/test/app:1");
    let derived = format!("{host}/test/app:2");
    env.import_busybox(&base);
    let extra = derive_image(&env, &base, &derived, "hello.txt", b"hello\n");
    ok(&env, &["push", &base]);

    let posts_before = uploads(&registry).len();
    let out = ok(&env, &["push", &derived]);
    let base_layer = inspect(&env, &base)["RootFS"]["Layers"].clone();
    assert_eq!(base_layer.as_array().unwrap().len(), 1);
    assert!(out.contains(": Layer already exists"), "{out}");
    assert!(out.contains(&format!("{}: Pushed", extra.short())), "{out}");
    let new_uploads: Vec<String> = uploads(&registry).split_off(posts_before);
    // One session for the new layer, one for the new config: POST + PUT each.
    assert_eq!(
        new_uploads.iter().filter(|r| r.starts_with("POST")).count(),
        2,
        "{new_uploads:?}"
    );

    // Another repository on the same registry: every blob is mounted, nothing uploaded.
    let other = format!("{host}/test/other:1");
    ok(&env, &["tag", &derived, &other]);
    let before = uploads(&registry).len();
    let out = ok(&env, &["push", &other]);
    assert_eq!(out.matches(": Mounted from test/app").count(), 2, "{out}");
    let mounted: Vec<String> = uploads(&registry).split_off(before);
    assert!(
        mounted
            .iter()
            .all(|r| r.starts_with("POST") && r.contains("mount=") && r.ends_with(" 201")),
        "{mounted:?}"
    );

    // A pull remembers where blobs came from: a push from a fresh store mounts too.
    let fresh = Env::new();
    ok(&fresh, &["pull", &derived]);
    let third = format!("{host}/test/third:1");
    ok(&fresh, &["tag", &derived, &third]);
    let out = ok(&fresh, &["push", &third]);
    assert_eq!(out.matches(": Mounted from test/app").count(), 2, "{out}");
    assert!(!out.contains(": Pushed"), "{out}");
}

#[test]
fn pull_by_digest_names_the_image_by_digest() {
    let registry = Registry::start();
    let host = registry.host();
    let a = Env::new();
    let name = format!("{host}/test/bydigest:1");
    let id = a.import_busybox(&name);
    let digest = store_digest(&ok(&a, &["push", &name]));

    let b = Env::new();
    let by_digest = format!("{host}/test/bydigest@{digest}");
    let out = ok(&b, &["pull", &by_digest]);
    assert!(
        out.starts_with(&format!("{digest}: Pulling from test/bydigest")),
        "{out}"
    );
    let info = inspect(&b, &by_digest);
    assert_eq!(info["Id"], id);
    assert_eq!(info["RepoTags"], serde_json::json!([]));
    assert_eq!(info["RepoDigests"][0], by_digest);
    let table = ok(&b, &["images"]);
    assert!(table.contains("<none>"), "{table}");

    let wrong = format!("{host}/test/bydigest@{}", Digest::of(b"nothing"));
    let err = fails(&b, &["pull", &wrong]);
    assert!(
        err.contains(&format!("not found in {host}/test/bydigest")),
        "{err}"
    );
    let err = fails(&b, &["pull", &format!("{host}/test/nope:1")]);
    assert!(
        err.contains(&format!("manifest for tag 1 not found in {host}/test/nope")),
        "{err}"
    );
}

#[test]
fn a_multi_platform_index_resolves_to_the_host_or_the_asked_platform() {
    let registry = Registry::start();
    let host = registry.host();
    let a = Env::new();
    let native = format!("{host}/test/multi:native");
    a.import_busybox(&native);
    let host_platform = Platform::host();
    let other_arch = if host_platform.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    // A second image for another architecture: same layers, its own config.
    let store = Store::open(&a.root()).unwrap();
    let base = store.resolve_image(&native).unwrap();
    let mut config = base.config.clone();
    config.architecture = other_arch.into();
    config.variant = None;
    let foreign = store
        .put_image(&config, base.manifest.layers.clone())
        .unwrap();
    let mut native_desc = base.manifest_descriptor.clone();
    native_desc.platform = Some(Platform {
        variant: None,
        ..host_platform.clone()
    });
    native_desc.platform.as_mut().unwrap().architecture = base.config.architecture.clone();
    let mut foreign_desc = foreign.clone();
    foreign_desc.platform = Some(Platform::parse(&format!("linux/{other_arch}")).unwrap());
    let index = Index {
        manifests: vec![foreign_desc, native_desc],
        ..Index::default()
    };
    let bytes = oci::canonical_json(&index).unwrap();
    let index_digest = store.put_blob(&bytes).unwrap();
    let multi = format!("{host}/test/multi:1");
    store
        .set_name(
            &Reference::parse(&multi).unwrap(),
            &oci::Descriptor::new(
                MediaType::OciIndex,
                index_digest.clone(),
                bytes.len() as u64,
            ),
        )
        .unwrap();
    let out = ok(&a, &["push", &multi]);
    assert_eq!(
        store_digest(&out),
        index_digest.to_string(),
        "the whole index is pushed"
    );
    let raw = run_tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{multi}"),
        ],
    );
    let pushed: Index = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(pushed.manifests.len(), 2);

    let b = Env::new();
    let out = ok(&b, &["pull", &multi]);
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    let info = inspect(&b, &multi);
    assert_eq!(info["Architecture"], base.config.architecture);
    assert_eq!(
        info["RepoDigests"][0],
        format!("{host}/test/multi@{index_digest}")
    );

    let c = Env::new();
    ok(
        &c,
        &["pull", "--platform", &format!("linux/{other_arch}"), &multi],
    );
    let info = inspect(&c, &multi);
    assert_eq!(info["Architecture"], other_arch);
    assert_eq!(info["Descriptor"]["digest"], foreign.digest.to_string());

    let err = fails(&c, &["pull", "--platform", "linux/s390x", &multi]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
}

const SECRET: &str = "Wh1sper-s3cret-77";

fn assert_no_secret(out: &str) {
    assert!(!out.contains(SECRET), "the secret leaked:\n{out}");
    for user in ["alice", "bob"] {
        let b64 = testkit::registry::base64_encode(format!("{user}:{SECRET}").as_bytes());
        assert!(!out.contains(&b64), "the encoded secret leaked:\n{out}");
    }
}

#[test]
fn basic_auth_with_login_logout_and_docker_credentials() {
    let registry = Registry::with_basic_auth("alice", SECRET);
    let host = registry.host();
    let env = Env::new();
    let config = config_of(&env);
    let name = format!("{host}/test/private:1");
    env.import_busybox(&name);

    let err = fails(&env, &["push", &name]);
    assert!(
        err.contains(&format!(
            "unauthorized: authentication required for {host}/test/private"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("strata login {host}")), "{err}");

    let out = strata(
        &env,
        &config,
        &["login", "-u", "alice", "--password-stdin", &host],
        Some("wrong-password\n"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("incorrect username or password"),
        "{}",
        text(&out)
    );
    assert!(
        !config.join("auth.json").exists(),
        "a refused login saves nothing"
    );

    let out = strata(
        &env,
        &config,
        &[
            "--log-level",
            "trace",
            "login",
            "-u",
            "alice",
            "--password-stdin",
            &host,
        ],
        Some(&format!("{SECRET}\n")),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    assert_no_secret(&text(&out));
    let saved = std::fs::read_to_string(config.join("auth.json")).unwrap();
    assert!(saved.contains(&host) && !saved.contains(SECRET), "{saved}");

    let out = strata(
        &env,
        &config,
        &["--log-level", "trace", "push", &name],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&text(&out));

    let fresh = Env::new();
    let out = strata(
        &fresh,
        &config,
        &["--log-level", "trace", "pull", &name],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&text(&out));

    let out = ok(&env, &["logout", &host]);
    assert_eq!(out.trim(), format!("Removing login credentials for {host}"));
    assert!(fails(&env, &["push", &name]).contains("unauthorized"));
    assert_eq!(
        ok(&env, &["logout", &host]).trim(),
        format!("Not logged in to {host}")
    );

    // docker's config.json: an `auths` entry ...
    let docker = config.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = testkit::registry::base64_encode(format!("alice:{SECRET}").as_bytes());
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let other = Env::new();
    let out = strata(&other, &config, &["pull", &name], None);
    assert!(out.status.success(), "{}", text(&out));

    // ... and a credential helper found on PATH.
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\n[ \"$server\" = \"{host}\" ] || exit 1\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"alice\",\"Secret\":\"{SECRET}\"}}'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "testhelper"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let helped = Env::new();
    let out = helped
        .cmd()
        .env("STRATA_CONFIG", &config)
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", &path)
        .args(["--log-level", "trace", "pull", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&text(&out));
}

#[test]
fn bearer_tokens_through_the_challenge_are_fetched_per_scope_and_reused() {
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry,
        Some(BearerAuth {
            user: Some(("bob".into(), SECRET.into())),
            expires_in: 300,
        }),
    );
    let host = proxy.host();
    let env = Env::new();
    let config = config_of(&env);
    let name = format!("{host}/test/tokens:1");
    let base = format!("{host}/test/tokens:0");
    env.import_busybox(&base);
    derive_image(&env, &base, &name, "a.txt", b"a");

    let err = fails(&env, &["push", &name]);
    assert!(err.contains("unauthorized") && err.contains(&host), "{err}");

    let out = strata(
        &env,
        &config,
        &["login", "-u", "bob", "--password-stdin", &host],
        Some("nope\n"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let out = strata(
        &env,
        &config,
        &["login", "-u", "bob", "--password-stdin", &host],
        Some(SECRET),
    );
    assert!(out.status.success(), "{}", text(&out));

    proxy.clear_log();
    let out = strata(
        &env,
        &config,
        &["--log-level", "trace", "push", &name],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&text(&out));
    let log = proxy.log();
    let tokens: Vec<&String> = log.iter().filter(|l| l.starts_with("TOKEN")).collect();
    assert_eq!(
        tokens,
        vec!["TOKEN repository:test/tokens:pull,push"],
        "one token for the whole push, reused for every blob: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /v2/test/tokens/manifests/1"))
    );

    proxy.clear_log();
    let fresh = Env::new();
    let out = strata(&fresh, &config, &["pull", &name], None);
    assert!(out.status.success(), "{}", text(&out));
    let log = proxy.log();
    let tokens: Vec<&String> = log.iter().filter(|l| l.starts_with("TOKEN")).collect();
    assert_eq!(tokens, vec!["TOKEN repository:test/tokens:pull"], "{log:?}");
    assert_eq!(inspect(&fresh, &name)["Id"], inspect(&env, &name)["Id"]);
    // The layers really went through the real registry.
    assert!(registry.blobs().len() >= 4, "{:?}", registry.blobs());
}

#[test]
fn skopeo_reads_what_strata_pushes_and_strata_pulls_what_skopeo_pushes() {
    let registry = Registry::start();
    let host = registry.host();
    let env = Env::new();
    let name = format!("{host}/test/interop:1");
    let id = env.import_busybox(&name);
    let digest = store_digest(&ok(&env, &["push", &name]));

    let oci_dir = env.path("oci");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci:{}:x", oci_dir.display()),
        ],
    );
    let index: Index =
        serde_json::from_slice(&std::fs::read(oci_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests[0].digest.to_string(), digest);
    let strata_blobs: BTreeSet<String> = std::fs::read_dir(env.root().join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for blob in std::fs::read_dir(oci_dir.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            strata_blobs.contains(&blob),
            "skopeo got a blob strata never had: {blob}"
        );
    }

    let archive = env.path("saved.tar");
    ok(&env, &["save", "-o", archive.to_str().unwrap(), &name]);
    let from_skopeo = format!("{host}/test/fromskopeo:1");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-archive:{}", archive.display()),
            &format!("docker://{from_skopeo}"),
        ],
    );
    let fresh = Env::new();
    ok(&fresh, &["pull", &from_skopeo]);
    assert_eq!(inspect(&fresh, &from_skopeo)["Id"], id);
}

/// What a store holds after `prune` when nothing is named.
fn empty_store_files() -> BTreeSet<String> {
    let env = Env::new();
    ok(&env, &["prune"]);
    env.store_files()
}

#[test]
fn a_corrupt_or_cut_download_leaves_no_image_and_nothing_after_prune() {
    let registry = Registry::start();
    let pusher = Env::new();
    let direct = format!("{}/test/fragile:1", registry.host());
    pusher.import_busybox(&direct);
    ok(&pusher, &["push", &direct]);
    let proxy = Proxy::start(&registry, None);
    let name = format!("{}/test/fragile:1", proxy.host());
    let empty = empty_store_files();

    // A flipped byte: refused with a digest error, not retried into success.
    proxy
        .faults()
        .corrupt_blob_downloads
        .store(100, Ordering::SeqCst);
    let env = Env::new();
    let err = fails(&env, &["pull", &name]);
    assert!(err.contains("content digest mismatch"), "{err}");
    assert!(
        err.contains(&format!("{}/test/fragile", proxy.host())),
        "{err}"
    );
    assert_eq!(ok(&env, &["images", "-q"]), "");
    ok(&env, &["prune"]);
    assert_eq!(env.store_files(), empty);

    // A connection cut every time: retried, then a clear failure; nothing left.
    proxy
        .faults()
        .corrupt_blob_downloads
        .store(0, Ordering::SeqCst);
    proxy
        .faults()
        .truncate_blob_downloads
        .store(100, Ordering::SeqCst);
    let env = Env::new();
    let err = fails(&env, &["pull", &name]);
    assert!(err.contains("cannot reach registry"), "{err}");
    assert_eq!(ok(&env, &["images", "-q"]), "");
    ok(&env, &["prune"]);
    assert_eq!(env.store_files(), empty);

    // Cut once: the retry succeeds.
    proxy
        .faults()
        .truncate_blob_downloads
        .store(1, Ordering::SeqCst);
    proxy.clear_log();
    let env = Env::new();
    ok(&env, &["pull", &name]);
    assert!(proxy.log().contains(&"TRUNCATED".to_string()));
    assert_eq!(inspect(&env, &name)["Id"], inspect(&pusher, &direct)["Id"]);
}

#[test]
fn an_upload_cut_mid_way_resumes_where_the_registry_says() {
    let registry = Registry::start();
    let proxy = Proxy::start(&registry, None);
    let env = Env::new();
    let name = format!("{}/test/resume:1", proxy.host());
    let id = env.import_busybox(&name);
    let chunk = "262144";

    // The third chunk never reaches the registry: the client asks for the upload's status
    // and continues at the offset it reports.
    proxy.faults().patches_before_cut.store(2, Ordering::SeqCst);
    proxy
        .faults()
        .cut_patches_before_forwarding
        .store(1, Ordering::SeqCst);
    let out = push_in_chunks(&env, &name, chunk);
    assert!(out.status.success(), "{}", text(&out));
    let log = proxy.log();
    let cut = log
        .iter()
        .position(|l| l == "CUT before forwarding")
        .expect("a cut");
    assert!(
        log[cut + 1].starts_with("GET /v2/test/resume/blobs/uploads/"),
        "the status is asked after the cut: {log:?}"
    );
    assert!(log[cut + 2].starts_with("PATCH"), "{log:?}");
    let patches = log.iter().filter(|l| l.starts_with("PATCH")).count();
    assert!(patches >= 5, "the layer went in chunks: {log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("POST")).count(),
        2,
        "one session per blob, none restarted: {log:?}"
    );

    let fresh = Env::new();
    ok(&fresh, &["pull", &name]);
    assert_eq!(inspect(&fresh, &name)["Id"], id);
}

#[test]
fn an_upload_whose_answer_is_lost_starts_over_and_succeeds() {
    let registry = Registry::start();
    let proxy = Proxy::start(&registry, None);
    let env = Env::new();
    let name = format!("{}/test/lost:1", proxy.host());
    let id = env.import_busybox(&name);
    proxy.faults().patches_before_cut.store(1, Ordering::SeqCst);
    proxy
        .faults()
        .cut_patches_after_forwarding
        .store(1, Ordering::SeqCst);
    let out = push_in_chunks(&env, &name, "262144");
    assert!(out.status.success(), "{}", text(&out));
    let log = proxy.log();
    let cut = log
        .iter()
        .position(|l| l == "CUT after forwarding")
        .expect("a cut");
    assert!(
        log[cut..]
            .iter()
            .any(|l| l.starts_with("POST /v2/test/lost/blobs/uploads/")),
        "the layer's upload starts over in a new session: {log:?}"
    );
    let fresh = Env::new();
    ok(&fresh, &["pull", &name]);
    assert_eq!(inspect(&fresh, &name)["Id"], id);
}

#[test]
fn an_unreachable_registry_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = Env::new();
    let err = fails(&env, &["pull", &format!("127.0.0.1:{port}/test/none:1")]);
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{err}"
    );
    let err = fails(&env, &["push", &format!("127.0.0.1:{port}/test/none:1")]);
    assert!(err.contains("An image does not exist locally"), "{err}");
}

#[test]
fn built_images_keep_uncompressed_layers_and_are_pushed_gzip_compressed() {
    let registry = Registry::start();
    let host = registry.host();
    let a = Env::new();
    a.import_busybox("base");
    let ctx = a.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nRUN seq 1 20000 > /numbers\n",
    )
    .unwrap();
    let name = format!("{host}/test/built:1");
    ok(
        &a,
        &[
            "build",
            "--progress",
            "quiet",
            "-t",
            &name,
            ctx.to_str().unwrap(),
        ],
    );
    let local = inspect(&a, &name);
    let local_manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            a.root()
                .join("content/blobs/sha256")
                .join(&local["Descriptor"]["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        local_manifest["layers"][1]["mediaType"],
        MediaType::OciLayer.as_str()
    );

    let out = ok(&a, &["push", &name]);
    let digest = store_digest(&out);
    assert_ne!(
        digest,
        local["Descriptor"]["digest"].as_str().unwrap(),
        "the pushed manifest names gzip twins"
    );
    assert_eq!(
        inspect(&a, &name)["RepoDigests"][0],
        format!("{host}/test/built@{digest}")
    );
    let before = uploads(&registry);
    let again = ok(&a, &["push", &name]);
    assert_eq!(
        store_digest(&again),
        digest,
        "the twins are made once, so the push is identical"
    );
    assert_eq!(uploads(&registry), before);

    let b = Env::new();
    ok(&b, &["pull", &name]);
    let pulled = inspect(&b, &name);
    assert_eq!(pulled["Id"], local["Id"], "same config, same image");
    assert_eq!(pulled["Descriptor"]["digest"], digest);
    let remote_manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.root().join("content/blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    for layer in remote_manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], MediaType::OciLayerGzip.as_str());
    }
    let (ta, tb) = (a.path("a.tar"), b.path("b.tar"));
    ok(&a, &["export", &name, "-o", ta.to_str().unwrap()]);
    ok(&b, &["export", &name, "-o", tb.to_str().unwrap()]);
    assert_eq!(testkit::tar_listing(&ta), testkit::tar_listing(&tb));
}

/// `strata push` with uploads cut into chunks of `chunk` bytes.
fn push_in_chunks(env: &Env, name: &str, chunk: &str) -> std::process::Output {
    env.cmd()
        .env("STRATA_CONFIG", config_of(env))
        .env("STRATA_PUSH_CHUNK_SIZE", chunk)
        .args(["push", name])
        .output()
        .unwrap()
}
