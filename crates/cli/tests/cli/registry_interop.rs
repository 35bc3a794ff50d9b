//! The registry verbs with other clients and over TLS, all on 127.0.0.1: the Docker engine
//! pulls and runs what strata pushes, and strata pulls what the engine pushes (the engine treats
//! 127.0.0.0/8 registries as insecure, so plain HTTP works for it); and a registry serving
//! HTTPS with a certificate from a CA the test makes is refused until that CA is trusted,
//! through strata's `certs.d` or the system store (`SSL_CERT_FILE`).

use std::path::Path;
use std::process::Output;

use testkit::docker;
use testkit::registry::{Registry, TlsFiles};

use super::{Env, tar_names};

fn strata(env: &Env, config: &Path, args: &[&str], extra_env: &[(&str, &Path)]) -> Output {
    let mut c = env.cmd();
    c.env("STRATA_CONFIG", config)
        .env("DOCKER_CONFIG", config.join("docker"))
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failure(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Removes the engine's images of a test, even when the test fails.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("/usr/bin/docker")
                .args(["rmi", "-f", name])
                .output();
        }
    }
}

fn docker_text(args: &[&str]) -> String {
    String::from_utf8(docker(args).stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn docker_pulls_and_runs_what_strata_pushes_and_strata_pulls_what_docker_pushes() {
    let registry = Registry::start();
    let host = registry.host();
    let env = Env::new();
    let config = env.path("config");
    let pushed = format!("{host}/interop/strata:1");
    let from_docker = format!("{host}/interop/docker:1");
    let _cleanup = DockerImages(vec![pushed.clone(), from_docker.clone()]);

    // A two-layer image: busybox plus a layer from a build.
    env.import_busybox(&format!("{host}/interop/base:1"));
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {host}/interop/base:1\nCOPY hello /srv/hello\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("hello"), "hello from strata\n").unwrap();
    ok(
        strata(
            &env,
            &config,
            &["build", "-t", &pushed, ctx.to_str().unwrap()],
            &[],
        ),
        "build",
    );
    ok(strata(&env, &config, &["push", &pushed], &[]), "push");
    let strata_id = env.inspect(&pushed)["Id"].as_str().unwrap().to_string();

    docker(&["pull", &pushed]);
    assert_eq!(
        docker_text(&["image", "inspect", "-f", "{{.Id}}", &pushed]),
        strata_id,
        "the engine has the same image (same config)"
    );
    let run = docker_text(&[
        "run",
        "--rm",
        "--network",
        "none",
        &pushed,
        "cat",
        "/srv/hello",
    ]);
    assert_eq!(run, "hello from strata");

    // The other way: the engine pushes (its own compression, Docker media types), strata pulls.
    docker(&["tag", &pushed, &from_docker]);
    docker(&["push", &from_docker]);
    let fresh = Env::new();
    ok(
        strata(&fresh, &fresh.path("config"), &["pull", &from_docker], &[]),
        "pull",
    );
    assert_eq!(fresh.inspect(&from_docker)["Id"], strata_id.as_str());
    let ours = fresh.path("ours.tar");
    ok(
        strata(
            &fresh,
            &fresh.path("config"),
            &["export", &from_docker, "-o", ours.to_str().unwrap()],
            &[],
        ),
        "export",
    );
    let container = docker_text(&["create", &from_docker, "true"]);
    let theirs = fresh.path("theirs.tar");
    let exported = docker(&["export", "-o", theirs.to_str().unwrap(), &container]);
    let _ = docker(&["rm", &container]);
    assert!(exported.status.success());
    // The engine's export adds the files it manages in every container.
    let engine_only = [
        ".dockerenv",
        "etc/hostname",
        "etc/hosts",
        "etc/mtab",
        "etc/resolv.conf",
        "dev",
        "proc",
        "sys",
    ];
    let keep = |n: &&String| {
        !engine_only
            .iter()
            .any(|e| *n == e || n.starts_with(&format!("{e}/")))
    };
    let (ours, theirs) = (tar_names(&ours), tar_names(&theirs));
    let only_ours: Vec<&String> = ours.difference(&theirs).filter(keep).collect();
    let only_theirs: Vec<&String> = theirs.difference(&ours).filter(keep).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only in strata's: {only_ours:?}; only in the engine's: {only_theirs:?}"
    );
    assert!(ours.contains("srv/hello") && ours.len() > 100);
}

#[test]
fn a_tls_registry_is_refused_until_its_ca_is_trusted() {
    let tls = TlsFiles::generate();
    let registry = Registry::with_tls(&tls);
    let host = registry.host();
    let env = Env::new();
    let name = format!("{host}/secure/busybox:1");
    let id = env.import_busybox(&name);

    // Not trusted: refused, with the reason and where the CA would go.
    let untrusted = env.path("untrusted");
    let err = failure(strata(&env, &untrusted, &["push", &name], &[]), "push");
    assert!(
        err.contains(&format!("cannot reach registry {host}")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(
        err.contains(&format!("{}/certs.d/{host}/ca.crt", untrusted.display())),
        "{err}"
    );
    assert!(
        registry.requests().iter().all(|r| !r.contains("/blobs/")),
        "nothing went over plain HTTP: {:?}",
        registry.requests()
    );

    // Trusted through strata's certs.d: push and pull work.
    let trusting = env.path("trusting");
    let certs = trusting.join("certs.d").join(&host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&tls.ca_cert, certs.join("ca.crt")).unwrap();
    let out = ok(strata(&env, &trusting, &["push", &name], &[]), "push");
    assert!(out.contains(": Pushed"), "{out}");
    let fresh = Env::new();
    ok(strata(&fresh, &trusting, &["pull", &name], &[]), "pull");
    assert_eq!(fresh.inspect(&name)["Id"], id.as_str());

    // Trusted through the system store (here: SSL_CERT_FILE with the system bundle and the
    // test CA, so the machine's store is left alone).
    let bundle = env.path("bundle.pem");
    let mut pem = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    pem.extend(std::fs::read(&tls.ca_cert).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let other = Env::new();
    let plain = other.path("plain-config");
    let err = failure(strata(&other, &plain, &["pull", &name], &[]), "pull");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    ok(
        strata(
            &other,
            &plain,
            &["pull", &name],
            &[("SSL_CERT_FILE", &bundle)],
        ),
        "pull",
    );
    assert_eq!(other.inspect(&name)["Id"], id.as_str());
}
