//! The sandbox end to end, as root: real namespaces, real overlay mounts over a busybox root.
//!
//! This test binary re-executes itself as the sandbox helper, so it has its own `main` (no
//! libtest harness): `maybe_run_helper` must run before anything else.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::Stdio;

use sandbox::{Mount, Network, ProcessSpec, RootFs};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        testkit::busybox_rootfs(&dir.path().join("base"));
        for d in ["upper", "work", "mnt", "scratch"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Fixture { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn spec(&self, script: &str) -> ProcessSpec {
        ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "strata-test".into(),
            rootfs: RootFs {
                lowers: vec![self.p("base")],
                upper: Some(self.p("upper")),
                work: Some(self.p("work")),
                mountpoint: self.p("mnt"),
            },
            scratch: self.p("scratch"),
            ..Default::default()
        }
    }
}

/// Runs a spec, returning (exit code, stdout, stderr).
fn run(spec: &ProcessSpec) -> (i32, String, String) {
    let child = sandbox::spawn(spec, Stdio::null(), Stdio::piped(), Stdio::piped()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        sandbox::exit_code(out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exit_codes_come_back() {
    let f = Fixture::new();
    assert_eq!(run(&f.spec("exit 3")).0, 3);
    // PID 1 ignores even SIGKILL from inside its namespace; a child shows the conversion.
    assert_eq!(run(&f.spec("sh -c 'kill -9 $$'; exit $?")).0, 128 + 9);
    let mut spec = f.spec("");
    spec.args = vec!["/no/such/binary".into()];
    let (code, _, err) = run(&spec);
    assert_eq!(code, 127, "{err}");
}

fn namespaces_are_new() {
    let f = Fixture::new();
    let (code, out, err) = run(&f.spec("echo pid=$$; hostname; ls /sys/class/net; cat /proc/1/cmdline | tr '\\0' ' '; echo; ip link show lo | head -1"));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "strata-test");
    assert_eq!(lines[2], "lo", "only loopback in a new network namespace");
    assert!(lines[3].starts_with("/bin/sh -c"), "{out}");
    assert!(lines[4].contains("UP"), "loopback is up: {out}");
}

fn writes_land_in_upper_and_deletes_become_whiteouts() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.p("base/data/sub")).unwrap();
    std::fs::write(f.p("base/data/old"), "x").unwrap();
    std::fs::write(f.p("base/data/sub/f"), "y").unwrap();
    let (code, _, err) = run(&f.spec(
        "echo new > /new && rm /data/old && rm -r /data/sub && mkdir /data/sub && touch /data/sub/g",
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(f.p("upper/new")).unwrap(), "new\n");
    let wh = std::fs::symlink_metadata(f.p("upper/data/old")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout"
    );
    assert!(f.p("upper/data/sub/g").exists());
    let opaque = rustix::fs::getxattr(
        f.p("upper/data/sub").as_path(),
        "user.overlay.opaque",
        &mut [0u8; 4],
    );
    assert_eq!(opaque.ok(), Some(1), "recreated dir is opaque");
    assert_eq!(
        std::fs::read_to_string(f.p("base/data/old")).unwrap(),
        "x",
        "lower untouched"
    );
}

fn no_mount_stubs_are_left_in_the_upper_dir() {
    let f = Fixture::new();
    for d in ["etc", "proc", "sys", "dev"] {
        std::fs::remove_dir_all(f.p("base").join(d)).unwrap();
    }
    let (code, out, err) =
        run(&f.spec("cat /etc/hostname; ls /proc/self/ >/dev/null && echo proc-ok"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "strata-test\nproc-ok\n");
    let left: Vec<_> = std::fs::read_dir(f.p("upper"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "stubs left behind: {left:?}");
}

fn user_and_workdir_apply() {
    let f = Fixture::new();
    let mut spec = f.spec("id -u; id -g; id -G; pwd; touch /root-owned 2>/dev/null || echo denied");
    spec.uid = 65534;
    spec.gid = 65534;
    spec.additional_gids = vec![65534, 5];
    spec.cwd = "/work/dir".into();
    let (code, out, err) = run(&spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "65534\n65534\n65534 5\n/work/dir\ndenied\n");
    assert!(
        f.p("upper/work/dir").is_dir(),
        "a missing workdir is created for good"
    );
}

fn bind_and_tmpfs_mounts() {
    let f = Fixture::new();
    let host = f.p("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let mut spec = f.spec("cat /mnt/ro/in; echo x > /mnt/ro/y 2>/dev/null || echo ro; echo t > /scratch/t && cat /scratch/t");
    spec.mounts = vec![
        Mount::Bind {
            source: host.clone(),
            target: "/mnt/ro".into(),
            readonly: true,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            size_bytes: Some(1 << 20),
            mode: None,
        },
    ];
    let (code, out, err) = run(&spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from host\nro\nt\n");
    assert!(!f.p("upper/scratch/t").exists(), "tmpfs writes vanish");
    assert!(!f.p("upper/mnt").exists(), "mount points are stubs");
}

fn deep_layer_stacks_mount() {
    let f = Fixture::new();
    let mut lowers = Vec::new();
    for i in 0..130 {
        let dir = f.p(&format!(
            "layers/a-rather-long-directory-name-for-layer-{i:03}/fs"
        ));
        std::fs::create_dir_all(dir.join("layers")).unwrap();
        std::fs::write(dir.join(format!("layers/{i}")), "").unwrap();
        lowers.push(dir);
    }
    lowers.reverse();
    lowers.push(f.p("base"));
    let mut spec = f.spec("ls /layers | wc -l");
    spec.rootfs.lowers = lowers;
    let (code, out, err) = run(&spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "130");
}

fn host_network_sees_host_interfaces() {
    let f = Fixture::new();
    let mut spec = f.spec("ls /sys/class/net | wc -l");
    spec.network = Network::Host;
    let (code, out, err) = run(&spec);
    assert_eq!(code, 0, "{err}");
    let host_count = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.trim(), host_count.to_string());
}

fn signals_sent_to_the_helper_reach_pid_1() {
    use std::io::{BufRead, BufReader};
    let f = Fixture::new();
    let spec =
        f.spec("trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.05; done");
    let mut child = sandbox::spawn(&spec, Stdio::null(), Stdio::piped(), Stdio::piped()).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    assert_eq!(sandbox::exit_code(child.wait().unwrap()), 9);
}

fn the_command_starts_with_no_blocked_signals() {
    let f = Fixture::new();
    let (code, out, err) = run(&f.spec("grep SigBlk /proc/1/status"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "SigBlk:\t0000000000000000\n");
}

fn tty_gives_the_command_a_terminal() {
    let f = Fixture::new();
    let mut spec = f.spec("tty; echo out; echo err >&2");
    spec.tty = true;
    let (code, out, err) = run(&spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/dev/pts/0\r\nout\r\nerr\r\n");
}

fn detached_runs_record_state_and_output() {
    let f = Fixture::new();
    let mut spec = f.spec("echo started; sleep 0.2; exit 4");
    spec.state_dir = Some(f.p("state"));
    let log = f.p("log");
    let started = sandbox::start_detached(&spec, &log, &[]).unwrap();
    assert_eq!(started, sandbox::Started::Running);
    assert!(matches!(
        sandbox::status(&f.p("state")),
        sandbox::Status::Running { .. }
    ));
    assert!(sandbox::wait_stopped(
        &f.p("state"),
        std::time::Duration::from_secs(20)
    ));
    match sandbox::status(&f.p("state")) {
        sandbox::Status::Exited {
            exit_code,
            finished_ns,
            ..
        } => {
            assert_eq!(exit_code, 4);
            assert!(finished_ns.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\n");
    // A command that cannot start is reported, with its exit code.
    let mut spec = f.spec("");
    spec.args = vec!["/no/such/binary".into()];
    spec.state_dir = Some(f.p("state2"));
    std::fs::remove_dir_all(f.p("upper")).unwrap();
    std::fs::create_dir(f.p("upper")).unwrap();
    let started = sandbox::start_detached(&spec, &f.p("log2"), &[f.p("gone")]).unwrap();
    assert_eq!(started, sandbox::Started::Exited(127));
}

fn attached_runs_record_their_exit() {
    let f = Fixture::new();
    let mut spec = f.spec("exit 5");
    spec.state_dir = Some(f.p("state"));
    let code = sandbox::run_attached(&spec, Stdio::null(), Stdio::null(), Stdio::null()).unwrap();
    assert_eq!(code, 5);
    assert!(matches!(
        sandbox::status(&f.p("state")),
        sandbox::Status::Exited { exit_code: 5, .. }
    ));
}

fn pids_limit_through_a_cgroup() {
    let f = Fixture::new();
    let mut spec = f.spec("for i in 1 2 3 4 5 6; do sleep 1 & done; wait");
    spec.resources = Some(sandbox::Resources {
        name: format!("sandbox-test-{}", std::process::id()),
        pids_limit: Some(3),
        ..Default::default()
    });
    let (_, _, err) = run(&spec);
    assert!(err.contains("can't fork"), "{err}");
}

fn main() {
    sandbox::maybe_run_helper();
    assert!(
        rustix::process::geteuid().is_root(),
        "the sandbox tests need root (CI runs as root)"
    );
    let tests: &[(&str, fn())] = &[
        ("exit_codes_come_back", exit_codes_come_back),
        ("namespaces_are_new", namespaces_are_new),
        (
            "writes_land_in_upper_and_deletes_become_whiteouts",
            writes_land_in_upper_and_deletes_become_whiteouts,
        ),
        (
            "no_mount_stubs_are_left_in_the_upper_dir",
            no_mount_stubs_are_left_in_the_upper_dir,
        ),
        ("user_and_workdir_apply", user_and_workdir_apply),
        ("bind_and_tmpfs_mounts", bind_and_tmpfs_mounts),
        ("deep_layer_stacks_mount", deep_layer_stacks_mount),
        (
            "host_network_sees_host_interfaces",
            host_network_sees_host_interfaces,
        ),
        (
            "signals_sent_to_the_helper_reach_pid_1",
            signals_sent_to_the_helper_reach_pid_1,
        ),
        (
            "the_command_starts_with_no_blocked_signals",
            the_command_starts_with_no_blocked_signals,
        ),
        (
            "tty_gives_the_command_a_terminal",
            tty_gives_the_command_a_terminal,
        ),
        (
            "detached_runs_record_state_and_output",
            detached_runs_record_state_and_output,
        ),
        (
            "attached_runs_record_their_exit",
            attached_runs_record_their_exit,
        ),
        ("pids_limit_through_a_cgroup", pids_limit_through_a_cgroup),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let result = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}
