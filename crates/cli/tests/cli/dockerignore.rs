//! `.dockerignore` against the Docker engine: the same context with a tricky ignore file,
//! copied whole (`COPY . /ctx/`) by the engine's builder and by strata, must give the same
//! files. The engine must be running (`scripts/setup` starts it); without it the test fails.

use std::collections::BTreeSet;
use std::path::Path;

use testkit::run_tool;

use crate::{Env, tar_names};

const DOCKERIGNORE: &str = "\
# a comment, then patterns of every kind
*.md
!dir/*.md
**/*.log
!deep/keep.log
q?.txt
[ab].txt
[!x-z]ip.txt
!b.txt
./build
!build/keep
/notes/readme
dir/sub/*
!dir/sub/keep.txt
src/test_*
  padded.txt  
logs
!logs/important.log
other/../c.txt
\\#literal.txt
*/tmp/**
#comment.txt
";

const FILES: &[&str] = &[
    "a.txt",
    "b.txt",
    "c.txt",
    "d.txt",
    "README.md",
    ".hidden",
    "q1.txt",
    "q22.txt",
    "zip.txt",
    "aip.txt",
    "padded.txt",
    "#literal.txt",
    "#comment.txt",
    "dir/x.txt",
    "dir/y.md",
    "dir/sub/z.txt",
    "dir/sub/keep.txt",
    "dir/sub/deeper/w.txt",
    "deep/a/b/c/file.log",
    "deep/keep.log",
    "deep/a/tmp/t.txt",
    "deep/tmp/t.txt",
    "logs/1.log",
    "logs/important.log",
    "logs/readme.txt",
    "src/main.rs",
    "src/test_x.rs",
    "src/sub/test_y.rs",
    "notes/readme",
    "notes/README",
    "other/notes/readme",
    "build/out.o",
    "build/keep/me.o",
    "space name.txt",
];

fn make_context(dir: &Path) {
    for file in FILES {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{file}\n")).unwrap();
    }
    std::fs::create_dir_all(dir.join("empty/inner")).unwrap();
    std::fs::write(dir.join(".dockerignore"), DOCKERIGNORE).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
}

/// The paths under `ctx/` in an exported tar.
fn under_ctx(tar: &Path) -> BTreeSet<String> {
    tar_names(tar)
        .into_iter()
        .filter_map(|name| name.strip_prefix("ctx/").map(str::to_string))
        .collect()
}

fn docker(args: &[&str]) -> String {
    let out = run_tool("docker", args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dockerignore_matches_the_docker_engine() {
    let env = Env::new();
    let ctx = env.path("ctx");
    make_context(&ctx);

    // The Docker engine's classic builder: offline, and the reference for the patterns.
    let tag = format!("strata-dockerignore-{}", std::process::id());
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &tag, ctx.to_str().unwrap()])
        .output()
        .expect("docker must be installed and the engine running (scripts/setup starts it)");
    assert!(
        out.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = docker(&["create", &tag, "/none"]).trim().to_string();
    let docker_tar = env.path("docker.tar");
    docker(&[
        "export",
        "-o",
        docker_tar.to_str().unwrap(),
        container.as_str(),
    ]);
    docker(&["rm", &container]);
    docker(&["rmi", &tag]);
    let engine = under_ctx(&docker_tar);

    env.ok(&[
        "build",
        "--progress",
        "quiet",
        "-t",
        "ign",
        ctx.to_str().unwrap(),
    ]);
    let strata_tar = env.path("strata.tar");
    env.ok(&["export", "ign", "-o", strata_tar.to_str().unwrap()]);
    let ours = under_ctx(&strata_tar);

    assert_eq!(
        ours, engine,
        "strata (left) and the Docker engine (right) disagree"
    );
    // The comparison means something only if both kept some files and dropped others.
    assert!(
        engine.contains("b.txt") && !engine.contains("a.txt"),
        "{engine:?}"
    );

    // A RUN's bind mount of the context sees the same files as COPY (BuildKit sends the
    // context already filtered), and the directories keep their own mode and times.
    env.import_busybox("base");
    std::fs::set_permissions(
        ctx.join("dir/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let mounted = env.path("Dockerfile.mount");
    std::fs::write(
        &mounted,
        "FROM base\nRUN --mount=type=bind,target=/m sh -c \
         'cd /m && find . > /listing && stat -c \"%a %Y\" dir/sub > /sub-stat'\n",
    )
    .unwrap();
    env.ok(&[
        "build",
        "--progress",
        "quiet",
        "-f",
        mounted.to_str().unwrap(),
        "-t",
        "ign-mount",
        ctx.to_str().unwrap(),
    ]);
    let listing = env.ok(&["run", "--rm", "ign-mount", "cat", "/listing"]);
    let seen: BTreeSet<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect();
    assert_eq!(
        seen, ours,
        "the bind mount (left) and COPY (right) see different contexts"
    );
    let sub = std::fs::metadata(ctx.join("dir/sub")).unwrap();
    assert_eq!(
        env.ok(&["run", "--rm", "ign-mount", "cat", "/sub-stat"])
            .trim(),
        format!("750 {}", std::os::unix::fs::MetadataExt::mtime(&sub))
    );
}
