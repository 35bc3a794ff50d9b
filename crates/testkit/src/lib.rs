//! Test fixtures shared by strata's test suites (a dev-dependency only): a busybox root
//! filesystem, in-memory tar builders, and helpers that run the reference tools (docker,
//! skopeo, umoci) and fail loudly when one is missing — an interop test never skips quietly.
//!
//! It never ships in the `strata` binary.
#![allow(clippy::unwrap_used)]

pub mod http;
pub mod registry;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The static busybox this machine has (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Fills `dir` with a minimal root filesystem: static busybox with an applet symlink for each
/// command it has, `/etc/passwd` and `/etc/group` with root and nobody, `/tmp` (1777).
pub fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install the busybox-static package (.ci/run does)"
    );
    for d in ["bin", "etc", "tmp", "root", "var", "proc", "sys", "dev"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for applet in busybox_applets() {
        let link = dir.join("bin").join(&applet);
        if !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

fn busybox_applets() -> Vec<String> {
    let out = Command::new(BUSYBOX).arg("--list").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .collect()
}

/// A busybox rootfs as a tar file inside `dir`; returns its path.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    busybox_rootfs(&root);
    let tar_path = dir.join("busybox-rootfs.tar");
    let status = Command::new("tar")
        .args(["-C"])
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tar_path
}

/// Builds tars in memory, entry by entry, with full control of headers — including the
/// malformed and malicious ones the breakout tests need.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Sets the raw name bytes, bypassing the tar crate's path checks (which refuse `..`).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
    }

    fn append(mut self, mut h: tar::Header, name: &str, data: &[u8]) -> Self {
        Self::raw_name(&mut h, name);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.append(h, name, data)
    }

    pub fn dir(self, name: &str) -> Self {
        let h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.append(h, name, &[])
    }

    fn link(self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(kind, 0o777, 0);
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        field[..target.len()].copy_from_slice(target.as_bytes());
        self.append(h, name, &[])
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, name, target)
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// Runs a reference tool and returns its output; panics with its stderr when it fails or is
/// not installed (.ci/run installs docker.io, skopeo and umoci and starts the engine).
pub fn run_tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is not runnable ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The Docker CLI from Debian's docker.io (`/usr/bin/docker`), talking to the local engine.
pub fn docker(args: &[&str]) -> Output {
    run_tool("/usr/bin/docker", args)
}

/// A unique-enough name for images a test creates in a shared engine.
pub fn unique_name(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("strata-test-{prefix}-{}-{nanos}", std::process::id())
}

/// One line per entry of a tar (a flattened image): path, type, mode, owner, size, content
/// digest and link target — everything a differential test compares, never mtimes. Sorted.
pub fn tar_listing(path: &Path) -> Vec<String> {
    use sha2::Digest as _;
    use std::io::Read;
    let file = fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let kind = format!("{:?}", header.entry_type());
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut hasher = sha2::Sha256::new();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        hasher.update(&data);
        let digest: String = hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(format!(
            "{path} {kind} {:o} {}:{} {} {digest} {link}",
            header.mode().unwrap() & 0o7777,
            header.uid().unwrap(),
            header.gid().unwrap(),
            data.len(),
        ));
    }
    out.sort();
    out
}

/// The content of one regular file in a tar (`path` without a leading `/`).
pub fn file_in_tar(tar_path: &Path, path: &str) -> Option<String> {
    use std::io::Read;
    let file = fs::File::open(tar_path).unwrap();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name == path.trim_start_matches('/') {
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            return Some(s);
        }
    }
    None
}
