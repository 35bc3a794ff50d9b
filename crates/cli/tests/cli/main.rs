//! The `strata` command end to end: every verb run as a user runs it, against a temporary
//! store, and interop with the reference tools (docker, skopeo, umoci) in both directions.
//! The interop tests need those tools; .ci/run installs them and starts the Docker engine, and
//! a missing tool fails the test rather than skipping it.
//!
//! One test binary (as the project's standard asks), one module per area: this file holds
//! the shared harness.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;
use testkit::run_tool;

pub const EPOCH: &str = "1700000000";

/// A temporary store and scratch directory, with the strata command pointed at the store.
pub struct Env {
    dir: TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.path("store")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("strata").unwrap();
        c.env("STRATA_ROOT", self.root())
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Runs strata, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "strata {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs strata, expecting failure; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd().args(args).output().unwrap();
        assert!(!out.status.success(), "strata {} succeeded", args.join(" "));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Imports a busybox root filesystem (tar) as `name`, with pinned timestamps.
    pub fn import_busybox(&self, name: &str) -> String {
        self.import_busybox_with(self.cmd(), name)
    }

    /// [`Env::import_busybox`] through `cmd` (strata run another way, e.g. as another user).
    pub fn import_busybox_with(&self, mut cmd: Command, name: &str) -> String {
        let tar = self.busybox_tar();
        let out = cmd
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["import", tar.to_str().unwrap(), name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn busybox_tar(&self) -> PathBuf {
        let tar = self.path("busybox-rootfs.tar");
        if !tar.exists() {
            testkit::busybox_tar(self.dir.path());
        }
        tar
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// Every file under the store's content and snapshot folders (for "nothing changed" checks).
    pub fn store_files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for sub in ["content", "snapshots-v2", "meta-v1"] {
            collect(&self.root().join(sub), &self.root(), &mut out);
        }
        out
    }
}

pub fn collect(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.insert(p.strip_prefix(base).unwrap().display().to_string());
        if p.is_dir() && !p.is_symlink() {
            collect(&p, base, out);
        }
    }
}

/// Entry names of a tar file, cleaned of `./` and trailing `/`.
pub fn tar_names(path: &Path) -> BTreeSet<String> {
    let out = run_tool("tar", &["-tf", path.to_str().unwrap()]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

pub fn table_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\b[0-9a-f]{12}\b", "[ID]"),
        (r"sha256:[0-9a-f]{64}", "[DIGEST]"),
        (r"\d+(\.\d+)?[kMG]?B\b", "[SIZE]"),
        (r"(\d+|About an?|Less than a) \w+ ago", "[AGO]"),
    ]
}

pub fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
        });
    assert!(
        dir.is_dir(),
        "the BuildKit conformance corpus is missing at {} (set STRATA_CONFORMANCE_DIR)",
        dir.display()
    );
    dir.join("buildkit/frontend/dockerfile/parser")
}

mod analyze;
mod build;
mod build_remote;
mod containers;
mod differential;
mod dockerignore;
mod errors;
mod images;
mod isolation;
mod registry;
mod registry_interop;
mod rootless;
