//! Rootless strata: run as an ordinary user (`runuser`), it re-executes itself in a user
//! namespace mapped through the user's subordinate ids. The users come from `scripts/setup`
//! (`strata-rootless` with ranges, `strata-nosubuid` without); a missing one fails the test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::Env;
use super::isolation::{CORPUS, build_with, context};

const RUNUSER: &str = "/usr/sbin/runuser";

/// A copy of the strata binary every user can run (the build tree may sit under a
/// directory only root may enter).
fn shared_binary() -> &'static Path {
    static BIN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("strata");
        std::fs::copy(assert_cmd::cargo::cargo_bin("strata"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
}

/// An [`Env`] whose directory belongs to `user`, and strata run as that user.
struct UserEnv {
    env: Env,
    user: &'static str,
}

impl UserEnv {
    fn new(user: &'static str) -> UserEnv {
        let id = Command::new("id").args(["-u", user]).output().unwrap();
        assert!(
            id.status.success(),
            "user {user} is missing: scripts/setup creates it"
        );
        let env = Env::new();
        let uid: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        std::os::unix::fs::chown(env.path(""), Some(uid), Some(uid)).unwrap();
        UserEnv { env, user }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(RUNUSER);
        c.args(["-u", self.user, "--"])
            .arg(shared_binary())
            .env("STRATA_ROOT", self.env.root())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("STRATA_ISOLATION");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {} as {}: {}",
            args.join(" "),
            self.user,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn import_busybox(&self, name: &str) {
        self.env
            .import_busybox_with(assert_cmd::Command::from_std(self.cmd()), name);
    }

    fn build_id(&self, ctx: &Path) -> String {
        build_with(assert_cmd::Command::from_std(self.cmd()), &self.env, ctx).0
    }
}

fn root_build_id(env: &Env, ctx: &Path) -> String {
    build_with(env.cmd(), env, ctx).0
}

#[test]
fn rootless_builds_give_the_root_builds_bytes() {
    let root = Env::new();
    root.import_busybox("base");
    let user = UserEnv::new("strata-rootless");
    user.import_busybox("base");
    for (name, dockerfile) in CORPUS {
        let a = root_build_id(&root, &context(&root, name, dockerfile));
        let b = user.build_id(&context(&user.env, name, dockerfile));
        assert_eq!(a, b, "{name}: the same image as root and rootless");
    }
    // Owners other than the user's are in the layer exactly.
    let id = user.build_id(&context(&user.env, "owners", CORPUS[0].1));
    let tar = user.env.path("owners.tar");
    user.ok(&["save", "-o", tar.to_str().unwrap(), &id]);
    let root_side = Env::new();
    root_side.ok(&["load", "-i", tar.to_str().unwrap()]);
    let flat = root_side.path("flat.tar");
    root_side.ok(&["export", &id, "-o", flat.to_str().unwrap()]);
    let listing = testkit::run_tool("tar", &["-tvf", flat.to_str().unwrap(), "--numeric-owner"]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("0/42") && l.ends_with("etc/shadow")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains("1000/1000") && l.ends_with("home/u/f")),
        "{listing}"
    );
}

#[test]
fn rootless_containers_volumes_commit_and_archives() {
    let user = UserEnv::new("strata-rootless");
    user.import_busybox("base");
    let vol = user.env.path("vol");
    std::fs::create_dir(&vol).unwrap();
    let uid = std::fs::metadata(user.env.path("")).unwrap();
    std::os::unix::fs::chown(&vol, Some(std::os::unix::fs::MetadataExt::uid(&uid)), None).unwrap();
    let bind = format!("{}:/v", vol.display());
    let out = user.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "--tmpfs",
        "/t",
        "base",
        "sh",
        "-c",
        "echo x > /v/a && echo y > /t/b && cat /t/b && id -u",
    ]);
    assert_eq!(out, "y\n0\n");
    assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "x\n");

    let id = user.ok(&["run", "-d", "--name", "bg", "base", "sleep", "30"]);
    assert!(!id.trim().is_empty());
    assert!(user.ok(&["ps"]).contains("bg"));
    user.ok(&["stop", "-t", "1", "bg"]);
    assert!(!user.ok(&["ps"]).contains("bg"));

    user.ok(&[
        "run",
        "--name",
        "c1",
        "base",
        "sh",
        "-c",
        "echo z > /z && chown 1000:1000 /z",
    ]);
    assert!(user.ok(&["diff", "c1"]).contains("A /z"));
    user.ok(&["commit", "c1", "committed"]);
    let saved = user.env.path("saved.tar");
    user.ok(&["save", "-o", saved.to_str().unwrap(), "committed"]);
    user.ok(&["rm", "c1", "bg"]);
    user.ok(&["rmi", "committed"]);
    user.ok(&["load", "-i", saved.to_str().unwrap()]);
    let out = user.ok(&["run", "--rm", "committed", "stat", "-c", "%u %n", "/z"]);
    assert_eq!(out, "1000 /z\n");
    assert!(user.ok(&["analyze", "committed"]).contains("Efficiency"));
}

#[test]
fn rootless_push_and_pull() {
    let registry = testkit::registry::Registry::start();
    let name = format!("{}/rootless/base:1", registry.host());
    let a = UserEnv::new("strata-rootless");
    a.import_busybox(&name);
    a.ok(&["push", &name]);
    let b = UserEnv::new("strata-rootless");
    b.ok(&["pull", &name]);
    let ids: Vec<String> = [&a, &b]
        .iter()
        .map(|u| u.ok(&["images", "-q", "--no-trunc"]).trim().to_string())
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn without_subordinate_ids_only_the_user_is_mapped_and_strata_says_so() {
    let user = UserEnv::new("strata-nosubuid");
    user.import_busybox("base");
    let ctx = user.env.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nRUN echo ok > /ok\n").unwrap();
    let out = user.run(&["build", "-t", "one", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARNING: no subordinate id ranges for user strata-nosubuid")
            && stderr.contains("usermod --add-subuids"),
        "{stderr}"
    );
    let out = user.run(&["run", "--rm", "base", "id", "-u"]);
    assert!(
        out.status.success(),
        "a container runs in single-id mode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM base\nRUN chown 1000 /tmp\n").unwrap();
    let out = user.run(&["build", "-t", "two", ctx.to_str().unwrap()]);
    assert!(!out.status.success(), "chown to an unmapped id fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chown"));
}

#[test]
fn missing_newuidmap_and_foreign_stores_are_refused_with_hints() {
    let user = UserEnv::new("strata-rootless");
    let empty = user.env.path("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = user
        .cmd()
        .env("PATH", &empty)
        .args(["images"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("newuidmap not found") && stderr.contains("apt-get install uidmap"),
        "{stderr}"
    );
    assert!(!user.env.root().exists(), "nothing was written");

    // A store made by root, used by the user, and the other way round.
    let root = Env::new();
    root.import_busybox("base");
    std::fs::set_permissions(root.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = user
        .cmd()
        .env("STRATA_ROOT", root.root())
        .args(["images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to"),
        "{out:?}"
    );

    user.import_busybox("base");
    let out = root
        .cmd()
        .env("STRATA_ROOT", user.env.root())
        .args(["images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("belongs to uid") && stderr.contains("hint:"),
        "{stderr}"
    );
}
