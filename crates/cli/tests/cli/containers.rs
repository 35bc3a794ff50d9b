//! Containers end to end: `run` with docker's flags and exit codes, the copy-on-write layer
//! (`diff`, `commit`, `export`), volumes and tmpfs, signals, detached containers with `logs`,
//! `stop` and `rm`, `ps`, limits, and what `rmi` and `prune` must keep. Where cheap, the same
//! image is run by the Docker engine and the outputs compared.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use testkit::{docker, unique_name};

use super::Env;

/// Runs strata with `args`; returns (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn busybox(env: &Env) {
    env.import_busybox("bb:1");
}

/// An image with every run default set, made the way users make one: commit -c.
fn configured_image(env: &Env) {
    busybox(env);
    env.ok(&["run", "--name", "base", "bb:1", "mkdir", "-p", "/srv/app"]);
    env.ok(&[
        "commit",
        "-c",
        r#"ENTRYPOINT ["/bin/echo", "ep"]"#,
        "-c",
        r#"CMD ["default"]"#,
        "-c",
        "ENV A=image B=image",
        "-c",
        "WORKDIR /srv/app",
        "-c",
        "USER nobody",
        "base",
        "cfg:1",
    ]);
    env.ok(&["rm", "base"]);
}

fn container_dirs(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.root().join("containers-v1"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exit_codes_are_the_commands_and_dockers() {
    let env = Env::new();
    busybox(&env);
    let (code, out, _) = run(
        &env,
        &["run", "--rm", "bb:1", "sh", "-c", "echo hi; exit 3"],
    );
    assert_eq!((code, out.as_str()), (3, "hi\n"));
    let (code, _, err) = run(&env, &["run", "--rm", "bb:1", "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    let (code, _, err) = run(&env, &["run", "--rm", "bb:1", "/etc"]);
    assert_eq!(code, 126, "{err}");
    let (code, _, err) = run(&env, &["run", "--rm", "no-such-image:1", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("No such image"), "{err}");
    let (code, _, _) = run(&env, &["run", "--bogus-flag", "bb:1", "true"]);
    assert_eq!(code, 125);
    let (code, _, err) = run(&env, &["run", "--rm", "-u", "ghost", "bb:1", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user ghost"), "{err}");
    // A command killed by a signal: 128 + n, as a shell reports it.
    let (code, _, _) = run(
        &env,
        &[
            "run",
            "--rm",
            "bb:1",
            "sh",
            "-c",
            "sh -c 'kill -9 $$'; exit $?",
        ],
    );
    assert_eq!(code, 137);
    assert!(
        container_dirs(&env).is_empty(),
        "--rm removes every container"
    );
}

#[test]
fn image_defaults_and_flags_combine_as_in_docker() {
    let env = Env::new();
    configured_image(&env);
    assert_eq!(env.ok(&["run", "--rm", "cfg:1"]), "ep default\n");
    assert_eq!(env.ok(&["run", "--rm", "cfg:1", "x", "y"]), "ep x y\n");
    let sh = ["run", "--rm", "--entrypoint", "/bin/sh", "cfg:1", "-c"];
    let script = "id -u; pwd; echo $A $B $C; echo $HOME";
    let out = env.ok(&[&sh[..], &[script]].concat());
    assert_eq!(out, "65534\n/srv/app\nimage image\n/nonexistent\n");
    // --entrypoint drops the image's Cmd.
    let (code, _, err) = run(&env, &["run", "--rm", "--entrypoint", "", "cfg:1"]);
    assert_eq!(code, 125, "{err}");
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "cfg:1"]),
        "\n"
    );
    let env_file = env.path("vars.env");
    std::fs::write(&env_file, "# comment\nB=file\nC=file\n").unwrap();
    let out = env.ok(&[
        &sh[..2],
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "C=flag",
            "-w",
            "/tmp",
            "-u",
            "0:0",
        ],
        &sh[2..],
        &[script],
    ]
    .concat());
    assert_eq!(out, "0\n/tmp\nimage file flag\n/root\n");
    // A missing working directory is created, as docker does.
    let out = env.ok(&[
        "run",
        "--rm",
        "-w",
        "/new/dir",
        "--entrypoint",
        "pwd",
        "cfg:1",
    ]);
    assert_eq!(out, "/new/dir\n");
}

/// The environment, user, groups and working directory strata gives a container match what
/// the Docker engine gives the same image with the same flags.
#[test]
fn process_setup_matches_docker() {
    let env = Env::new();
    configured_image(&env);
    let archive = env.path("cfg.tar");
    let tag = format!("{}:1", unique_name("run"));
    env.ok(&["tag", "cfg:1", &tag]);
    env.ok(&["save", "-o", archive.to_str().unwrap(), &tag]);
    docker(&["load", "-i", archive.to_str().unwrap()]);
    let script = "id; pwd; env | grep -v ^HOSTNAME= | sort";
    let cases: [&[&str]; 4] = [
        &[],
        &["-u", "0"],
        &["-e", "A=flag", "-e", "NEW=1", "-w", "/tmp"],
        &["-u", "nobody:root", "-t"],
    ];
    for flags in cases {
        let args: Vec<&str> = [
            &["run", "--rm"],
            flags,
            &["--entrypoint", "sh", &tag, "-c", script],
        ]
        .concat();
        let ours = env.ok(&args);
        let theirs = String::from_utf8(docker(&args).stdout).unwrap();
        assert_eq!(ours, theirs, "flags {flags:?}");
    }
    docker(&["rmi", &tag]);
}

#[test]
fn volumes_binds_and_tmpfs() {
    let env = Env::new();
    busybox(&env);
    let host = env.path("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let bind = format!("{}:/data", host.display());
    let ro_bind = format!("{}:/ro:ro", host.display());
    let out = env.ok(&[
        "run",
        "--name",
        "vols",
        "-v",
        &bind,
        "-v",
        &ro_bind,
        "-v",
        "named:/vol",
        "--mount",
        "type=volume,source=other,target=/other",
        "--tmpfs",
        "/scratch:size=1m",
        "--mount",
        "type=tmpfs,target=/t2",
        "bb:1",
        "sh",
        "-c",
        "cat /data/in; echo out > /data/out; echo v > /vol/f; echo o > /other/f; \
         echo s > /scratch/s; echo t > /t2/t; echo x > /ro/x 2>/dev/null || echo ro-refused; \
         echo layer > /layer",
    ]);
    assert_eq!(out, "from host\nro-refused\n");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "out\n");
    let vol = env.root().join("volumes-v1/named/_data/f");
    assert_eq!(std::fs::read_to_string(vol).unwrap(), "v\n");
    // Only the layer's own change shows: volume, bind and tmpfs writes are elsewhere.
    assert_eq!(env.ok(&["diff", "vols"]), "A /layer\n");
    let id = container_dirs(&env).pop().unwrap();
    let upper = env.root().join("containers-v1").join(&id).join("upper");
    assert!(
        !upper.join("scratch").exists() && !upper.join("t2").exists(),
        "tmpfs writes vanish"
    );

    // The volume outlives the container, and a new container sees its content.
    assert_eq!(
        env.ok(&["run", "--rm", "-v", "named:/v", "bb:1", "cat", "/v/f"]),
        "v\n"
    );
    let ls = env.ok(&["volume", "ls"]);
    assert_eq!(
        ls,
        "DRIVER    VOLUME NAME\nlocal     named\nlocal     other\n"
    );
    let (code, err) = env.fails(&["volume", "rm", "named"]);
    assert_eq!(code, 1);
    assert!(err.contains("volume is in use"), "{err}");
    env.ok(&["rm", "vols"]);
    assert_eq!(env.ok(&["volume", "rm", "named"]), "named\n");
    // prune removes anonymous volumes only, unless -a.
    env.ok(&[
        "run", "--name", "anon", "-v", "/anon", "bb:1", "touch", "/anon/f",
    ]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    let out = env.ok(&["volume", "prune", "-f"]);
    assert!(out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    env.ok(&["rm", "anon"]);
    let out = env.ok(&["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "other\n");
    env.ok(&["volume", "prune", "-f", "-a"]);
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "");
    env.ok(&["volume", "create", "made"]);
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "made"])).unwrap();
    assert_eq!(info[0]["Name"], "made");
    assert_eq!(info[0]["Driver"], "local");
}

#[test]
fn read_only_root_refuses_writes() {
    let env = Env::new();
    busybox(&env);
    let out = env.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/run",
        "bb:1",
        "sh",
        "-c",
        "touch /x 2>/dev/null || echo refused; touch /tmp/y 2>/dev/null || echo refused; \
         touch /run/ok && echo tmpfs-ok",
    ]);
    assert_eq!(out, "refused\nrefused\ntmpfs-ok\n");
}

#[test]
fn containers_are_isolated_from_each_other_and_the_image() {
    let env = Env::new();
    busybox(&env);
    let before = env.store_files();
    env.ok(&[
        "run",
        "--name",
        "one",
        "bb:1",
        "sh",
        "-c",
        "echo one > /etc/passwd; rm /bin/ls; echo x > /only-one",
    ]);
    let out = env.ok(&[
        "run",
        "--name",
        "two",
        "bb:1",
        "sh",
        "-c",
        "head -1 /etc/passwd; ls /only-one 2>&1; ls / >/dev/null && echo ls-ok",
    ]);
    assert_eq!(
        out,
        "root:x:0:0:root:/root:/bin/sh\nls: /only-one: No such file or directory\nls-ok\n"
    );
    assert_eq!(
        env.ok(&["diff", "one"]),
        "C /bin\nD /bin/ls\nC /etc\nC /etc/passwd\nA /only-one\n"
    );
    assert_eq!(env.ok(&["diff", "two"]), "");
    assert_eq!(
        env.store_files(),
        before,
        "the image's store files are untouched"
    );
    let passwd = env.ok(&["run", "--rm", "bb:1", "head", "-1", "/etc/passwd"]);
    assert_eq!(passwd, "root:x:0:0:root:/root:/bin/sh\n");
}

#[test]
fn commit_round_trip_and_export() {
    let env = Env::new();
    busybox(&env);
    env.ok(&[
        "run",
        "--name",
        "cc",
        "bb:1",
        "sh",
        "-c",
        "echo committed > /marker; rm /etc/group",
    ]);
    let id = env.ok(&[
        "commit",
        "-m",
        "add marker",
        "-c",
        r#"CMD ["cat", "/marker"]"#,
        "-c",
        "ENV FROM_COMMIT=yes",
        "cc",
        "bb:committed",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(env.ok(&["run", "--rm", "bb:committed"]), "committed\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "bb:committed",
        "sh",
        "-c",
        "echo $FROM_COMMIT; ls /etc/group 2>&1 || true",
    ]);
    assert_eq!(out, "yes\nls: /etc/group: No such file or directory\n");
    let info = env.inspect("bb:committed");
    assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    let history = info["History"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["comment"], "add marker");
    assert_eq!(
        history[1]["created_by"],
        "sh -c echo committed > /marker; rm /etc/group"
    );
    assert_eq!(info["Config"]["Cmd"], serde_json::json!(["cat", "/marker"]));
    assert!(env.ok(&["history", "bb:committed"]).contains("add marker"));

    // export takes the container first: its layer over the image, whiteouts applied.
    let tar = env.path("c.tar");
    env.ok(&["export", "cc", "-o", tar.to_str().unwrap()]);
    let names = super::tar_names(&tar);
    assert!(
        names.contains("marker") && names.contains("bin/busybox"),
        "{names:?}"
    );
    assert!(!names.contains("etc/group"));
    // …and still an image when no container has the name.
    env.ok(&["export", "bb:1", "-o", tar.to_str().unwrap()]);
    assert!(super::tar_names(&tar).contains("etc/group"));
    // Committing again (no change) gives one more layer, as docker does.
    env.ok(&["commit", "cc", "bb:again"]);
    assert_eq!(
        env.inspect("bb:again")["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn sigterm_to_strata_run_reaches_pid_1() {
    let env = Env::new();
    busybox(&env);
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("strata"))
        .env("STRATA_ROOT", env.root())
        .args([
            "run",
            "--rm",
            "bb:1",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(9), "the container's own exit code");
    assert!(container_dirs(&env).is_empty());
}

#[test]
fn detached_containers_logs_stop_and_rm() {
    let env = Env::new();
    busybox(&env);
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "bb:1",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 7' TERM; echo started; echo to-stderr >&2; \
         while true; do sleep 0.05; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    wait_until("the log", || env.ok(&["logs", "bg"]).contains("to-stderr"));
    assert_eq!(env.ok(&["logs", &id[..12]]), "started\nto-stderr\n");
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(" Up ") && ps.contains("bg"), "{ps}");
    assert_eq!(env.ok(&["ps", "-q"]), format!("{}\n", &id[..12]));
    let (code, err) = env.fails(&["rm", "bg"]);
    assert_eq!(code, 1);
    assert!(err.contains("container is running"), "{err}");

    // logs -f follows until the container stops.
    let follower = StdCommand::new(assert_cmd::cargo::cargo_bin("strata"))
        .env("STRATA_ROOT", env.root())
        .args(["logs", "-f", "bg"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(env.ok(&["stop", "bg"]), "bg\n");
    let followed = follower.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(followed.stdout).unwrap(),
        "started\nto-stderr\ngot TERM\n"
    );
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (7) "), "the trap's exit code: {ps}");
    assert_eq!(env.ok(&["ps"]).lines().count(), 1, "only the header");
    assert_eq!(env.ok(&["rm", "bg"]), "bg\n");
    assert!(container_dirs(&env).is_empty());
    let (code, err) = env.fails(&["logs", "bg"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such container: bg"), "{err}");

    // A PID 1 that ignores SIGTERM is killed after -t seconds; rm -f kills a running one.
    env.ok(&["run", "-d", "--name", "stubborn", "bb:1", "sleep", "100"]);
    let started = Instant::now();
    env.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(env.ok(&["ps", "-a"]).contains("Exited (137)"));
    env.ok(&["run", "-d", "--name", "forced", "bb:1", "sleep", "100"]);
    assert_eq!(
        env.ok(&["rm", "-f", "forced", "stubborn"]),
        "forced\nstubborn\n"
    );

    // -d --rm: gone once it exits; a failing start reports like docker.
    env.ok(&["run", "-d", "--rm", "bb:1", "true"]);
    wait_until("--rm to remove the container", || {
        container_dirs(&env).is_empty()
    });
    let (code, _, _) = run(&env, &["run", "-d", "bb:1", "no-such-command"]);
    assert_eq!(code, 127);
}

#[test]
fn ps_lists_like_docker() {
    let env = Env::new();
    busybox(&env);
    env.ok(&["run", "--name", "first", "bb:1", "true"]);
    let (code, _, _) = run(
        &env,
        &["run", "--name", "second", "bb:1", "sh", "-c", "exit 3"],
    );
    assert_eq!(code, 3);
    env.ok(&["run", "-d", "--name", "third", "bb:1", "sleep", "100"]);
    let out = env.ok(&["ps", "-a"]);
    // Columns start where their headers do (docker's tabwriter layout).
    let header = out.lines().next().unwrap();
    for col in ["IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"] {
        let at = header.find(col).unwrap();
        for line in out.lines().skip(1) {
            assert_ne!(line.as_bytes()[at], b' ', "{col} in {line:?}");
            assert_eq!(line.as_bytes()[at - 1], b' ', "{col} in {line:?}");
        }
    }
    let mut filters = super::table_filters();
    filters.extend([
        (
            r"Up (\d+ \w+|Less than a second|About a minute)",
            "Up [DURATION]",
        ),
        (r" {2,}", "  "),
    ]);
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("ps_all", out);
    });
    assert_eq!(env.ok(&["ps"]).lines().count(), 2);
    let no_trunc = env.ok(&["ps", "-a", "--no-trunc"]);
    assert!(no_trunc.contains("\"sh -c 'exit 3'\""), "{no_trunc}");
    // Names are unique; a default one is docker-like.
    let (code, _, err) = run(&env, &["run", "--name", "first", "bb:1", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("is already in use"), "{err}");
    env.ok(&["run", "bb:1", "true"]);
    let names: BTreeSet<String> = env
        .ok(&["ps", "-a"])
        .lines()
        .skip(1)
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(names.iter().any(|n| n.contains('_')), "{names:?}");
    env.ok(&["rm", "-f", "third"]);
}

#[test]
fn terminal_and_hostname_and_network() {
    let env = Env::new();
    busybox(&env);
    let out = env.ok(&["run", "--rm", "-t", "bb:1", "sh", "-c", "tty; echo $TERM"]);
    assert_eq!(out, "/dev/pts/0\r\nxterm\r\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "-h",
        "box",
        "bb:1",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; echo $HOSTNAME",
    ]);
    assert_eq!(out, "box\nbox\nbox\n");
    let out = env.ok(&["run", "--rm", "bb:1", "ls", "/sys/class/net"]);
    assert_eq!(out, "lo\n");
    let host_count = std::fs::read_dir("/sys/class/net").unwrap().count();
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb:1",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(out.lines().count(), host_count);
    let (code, _, err) = run(
        &env,
        &["run", "--rm", "--network", "bridge", "bb:1", "true"],
    );
    assert_eq!(code, 125, "{err}");
    // -i passes stdin through; without it the container reads nothing.
    let out = env
        .cmd()
        .args(["run", "--rm", "-i", "bb:1", "cat"])
        .write_stdin("piped\n")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "piped\n");
    let out = env
        .cmd()
        .args(["run", "--rm", "bb:1", "cat"])
        .write_stdin("piped\n")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
}

#[test]
fn cgroup_limits_apply() {
    let env = Env::new();
    busybox(&env);
    let forks = "for i in 1 2 3 4 5 6; do sleep 1 & done; wait; echo done";
    let (_, out, err) = run(
        &env,
        &[
            "run",
            "--rm",
            "--pids-limit",
            "4",
            "bb:1",
            "sh",
            "-c",
            forks,
        ],
    );
    assert!(err.contains("can't fork"), "pids limit: {out} {err}");
    let out = env.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do true & done; wait; echo done",
    ]);
    assert_eq!(out, "done\n", "no limit without --pids-limit");
    let fill = "dd if=/dev/zero of=/big/x bs=1M count=64 2>/dev/null; echo $?";
    let out = env.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/big:size=200m",
        "bb:1",
        "sh",
        "-c",
        fill,
    ]);
    assert_eq!(out, "0\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "-m",
        "16m",
        "--tmpfs",
        "/big:size=200m",
        "bb:1",
        "sh",
        "-c",
        fill,
    ]);
    assert_eq!(out, "137\n", "the writer is OOM-killed under --memory 16m");
    // --cpus sets the CFS quota (read from the host while the container runs).
    let id = env.ok(&[
        "run", "-d", "--name", "cpu", "--cpus", "0.5", "bb:1", "sleep", "100",
    ]);
    let quota = cgroup_file(id.trim(), "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(quota.starts_with("50000"), "{quota}");
    env.ok(&["rm", "-f", "cpu"]);
    let (code, _, err) = run(&env, &["run", "--rm", "--cpus", "1000", "bb:1", "true"]);
    assert_eq!(code, 125, "{err}");
}

/// A limit file of a container's cgroup: v1 `<controller>/strata/<id>/<v1>` or v2
/// `strata/<id>/<v2>`.
fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let path = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup/strata").join(id).join(v2)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("strata")
            .join(id)
            .join(v1)
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn rmi_and_prune_keep_what_containers_use() {
    let env = Env::new();
    busybox(&env);
    env.ok(&["run", "--name", "user", "bb:1", "true"]);
    let (code, err) = env.fails(&["rmi", "bb:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("container") && err.contains("is using its referenced image"),
        "{err}"
    );
    let id = env.inspect("bb:1")["Id"].as_str().unwrap().to_string();
    let (_, err) = env.fails(&["rmi", &id]);
    assert!(
        err.contains("image is being used by stopped container"),
        "{err}"
    );
    env.ok(&["rmi", "-f", "bb:1"]);
    env.ok(&["prune"]);
    // The container's image survived prune: its blobs and snapshots, and it still runs.
    let tar = env.path("c.tar");
    env.ok(&["export", "user", "-o", tar.to_str().unwrap()]);
    assert!(super::tar_names(&tar).contains("bin/busybox"));
    env.ok(&["commit", "user", "again:1"]);
    assert_eq!(env.ok(&["run", "--rm", "again:1", "echo", "ok"]), "ok\n");
    env.ok(&["rm", "user"]);
    env.ok(&["rmi", "again:1"]);
    env.ok(&["prune"]);
    assert_eq!(env.ok(&["images", "-q"]), "");
    let snapshots = std::fs::read_dir(env.root().join("snapshots-v2"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 0, "nothing is kept once no container uses it");
}
