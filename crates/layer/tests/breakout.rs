//! The breakout catalogue: hostile layers that try to write, link, delete or mark something
//! outside the directory they are applied to. Each builds its tar in memory, applies it into
//! `<tmp>/root` in both apply modes, and checks that nothing beside the root changed (the
//! sentinels `<tmp>/sentinel`, `<tmp>/x`, `<tmp>/outside-dir/file`) and, where an attack aims
//! at the host's own `/`, that nothing appeared there either.

// Helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{Node, TarBuilder, snapshot, xattr};
use layer::{ApplyMode, Compression, LayerError, LayerStats, apply};

const MODES: [ApplyMode; 3] = [ApplyMode::Flatten, ApplyMode::Overlay, ApplyMode::Squash];

/// A temp dir holding the apply root and sentinels beside it.
struct Jail {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Jail {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(tmp.path().join("sentinel"), b"keep").unwrap();
        fs::write(tmp.path().join("x"), b"outside x").unwrap();
        fs::create_dir(tmp.path().join("outside-dir")).unwrap();
        fs::write(tmp.path().join("outside-dir/file"), b"keep too").unwrap();
        Jail { tmp, root }
    }

    fn outside(&self) -> (BTreeMap<String, Node>, Option<Vec<u8>>) {
        let mut all = snapshot(self.tmp.path());
        all.retain(|path, _| path != "root" && !path.starts_with("root/"));
        (all, xattr(self.tmp.path(), "user.overlay.opaque"))
    }

    /// Applies `tar` and asserts that nothing outside the root changed.
    fn apply(&self, tar: &[u8], mode: ApplyMode) -> Result<LayerStats, LayerError> {
        let before = self.outside();
        let res = apply(tar, &self.root, mode);
        assert_eq!(
            self.outside(),
            before,
            "{mode:?}: something outside the root changed"
        );
        res
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The absolute host path of a sentinel (for absolute symlinks aimed at it).
    fn host(&self, rel: &str) -> String {
        self.tmp.path().join(rel).display().to_string()
    }
}

/// A name that cannot exist on the host unless an attack worked.
fn host_marker(tag: &str) -> String {
    format!("strata-breakout-{}-{tag}", std::process::id())
}

fn assert_breakout(res: Result<LayerStats, LayerError>, what: &str) {
    match res {
        Err(LayerError::Breakout { .. }) => {}
        other => panic!("{what}: expected a Breakout error, got {other:?}"),
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn absolute_path_is_made_relative() {
    let name = host_marker("abs");
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .file(&format!("/etc/{name}"), b"x")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path(&format!("etc/{name}"))), b"x");
        assert!(!Path::new("/etc").join(&name).exists());
    }
}

#[test]
fn dotdot_is_refused() {
    for mode in MODES {
        let jail = Jail::new();
        assert_breakout(
            jail.apply(&TarBuilder::new().file("../x", b"evil").finish(), mode),
            "../x",
        );
    }
}

#[test]
fn nested_dotdot_that_escapes_is_refused() {
    for name in ["a/../../x", "a/b/../../../x", "./../x", "/../x"] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new().dir("a/").file(name, b"evil").finish();
            assert_breakout(jail.apply(&tar, mode), name);
        }
    }
    // `..` that stays inside is fine.
    let jail = Jail::new();
    let tar = TarBuilder::new().file("a/../b", b"ok").finish();
    jail.apply(&tar, ApplyMode::Flatten).unwrap();
    assert_eq!(read(&jail.path("b")), b"ok");
}

#[test]
fn symlink_to_slash_then_write_through_it() {
    let name = host_marker("slash");
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("a", "/")
            .file(&format!("a/{name}"), b"evil")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path(&name)), b"evil", "landed inside the root");
        assert!(!Path::new("/").join(&name).exists());
    }
}

#[test]
fn symlink_to_dotdot_then_write_through_it() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("a", "..")
            .file("a/x", b"evil")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path("x")), b"evil");
    }
}

#[test]
fn symlink_chain_stays_inside() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .dir("c/")
            .symlink("b", "c/../..")
            .symlink("a", "b/../..")
            .symlink("d", "/a/../b")
            .file("a/x", b"evil-a")
            .file("d/sentinel", b"evil-d")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path("x")), b"evil-a");
        assert_eq!(read(&jail.path("sentinel")), b"evil-d");
    }
}

#[test]
fn absolute_symlink_to_the_host_path_of_a_sentinel() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("a", &jail.host("outside-dir"))
            .file("a/file", b"evil")
            .finish();
        // The link resolves to <root><tmp>/outside-dir, which does not exist: an error, and
        // nothing written outside.
        assert!(jail.apply(&tar, mode).is_err());
    }
}

#[test]
fn symlink_loop_is_an_error_not_a_hang() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("a", "a")
            .symlink("b", "c")
            .symlink("c", "b")
            .file("a/x", b"evil")
            .finish();
        assert!(jail.apply(&tar, mode).is_err());
        let tar = TarBuilder::new()
            .symlink("b", "c")
            .symlink("c", "b")
            .file("b/x", b"e")
            .finish();
        assert!(jail.apply(&tar, mode).is_err());
    }
}

#[test]
fn hardlink_to_host_etc_passwd() {
    let links_before = fs::metadata("/etc/passwd").unwrap().nlink();
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new().hardlink("l", "/etc/passwd").finish();
        assert!(
            jail.apply(&tar, mode).is_err(),
            "no etc/passwd inside the root"
        );
        assert!(!jail.path("l").exists());

        // With one inside the root, the link points at that one.
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .file("etc/passwd", b"inner")
            .hardlink("l", "/etc/passwd")
            .finish();
        jail.apply(&tar, mode).unwrap();
        let inner = fs::metadata(jail.path("etc/passwd")).unwrap();
        assert_eq!(fs::metadata(jail.path("l")).unwrap().ino(), inner.ino());
    }
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), links_before);
}

#[test]
fn hardlink_to_dotdot_is_refused() {
    for target in ["../sentinel", "a/../../sentinel"] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new().hardlink("l", target).finish();
            assert_breakout(jail.apply(&tar, mode), target);
            assert_eq!(
                fs::metadata(jail.tmp.path().join("sentinel"))
                    .unwrap()
                    .nlink(),
                1
            );
        }
    }
}

#[test]
fn hardlink_through_a_symlinked_dir_resolves_inside() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("s", "..")
            .hardlink("l", "s/sentinel")
            .finish();
        assert!(
            jail.apply(&tar, mode).is_err(),
            "root/sentinel does not exist"
        );
        let tar = TarBuilder::new()
            .symlink("abs", &jail.host(""))
            .hardlink("l2", "abs/sentinel")
            .finish();
        assert!(jail.apply(&tar, mode).is_err());
        assert_eq!(
            fs::metadata(jail.tmp.path().join("sentinel"))
                .unwrap()
                .nlink(),
            1
        );
    }
}

#[test]
fn hardlink_then_write_through_it() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .file("f", b"inner")
            .hardlink("l", "f")
            .file("l", b"evil")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(
            read(&jail.path("f")),
            b"inner",
            "the other name is untouched"
        );
        assert_eq!(read(&jail.path("l")), b"evil");

        // A hardlink to a symlink links the symlink itself; writing the name replaces it.
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("s", "../sentinel")
            .hardlink("l", "s")
            .file("l", b"evil")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path("l")), b"evil");
        assert!(fs::symlink_metadata(jail.path("s")).unwrap().is_symlink());
    }
}

#[test]
fn file_entry_replaces_a_symlink_of_the_same_name() {
    for mode in MODES {
        let jail = Jail::new();
        let abs = jail.host("sentinel");
        for target in ["../sentinel", abs.as_str()] {
            let tar = TarBuilder::new()
                .symlink("s", target)
                .file("s", b"evil")
                .finish();
            jail.apply(&tar, mode).unwrap();
            let md = fs::symlink_metadata(jail.path("s")).unwrap();
            assert!(md.is_file(), "the link itself was replaced");
            assert_eq!(read(&jail.path("s")), b"evil");
        }
        // Same for a device node or a fifo: created in place of the link.
        let tar = TarBuilder::new()
            .symlink("dev", "../x")
            .char_device("dev", 1, 3)
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert!(!fs::symlink_metadata(jail.path("dev")).unwrap().is_symlink());
    }
}

#[test]
fn dir_entry_replaces_a_symlink_of_the_same_name() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("d", "../outside-dir")
            .dir("d/")
            .file("d/file", b"evil")
            .finish();
        jail.apply(&tar, mode).unwrap();
        assert!(fs::symlink_metadata(jail.path("d")).unwrap().is_dir());
        assert_eq!(read(&jail.path("d/file")), b"evil");
    }
}

#[test]
fn symlink_left_by_a_lower_layer_is_followed_only_inside() {
    // Layer 1 plants a link aimed outside; layer 2 writes through it.
    let jail = Jail::new();
    let l1 = TarBuilder::new()
        .symlink("escape", "../outside-dir")
        .finish();
    let l2 = TarBuilder::new().file("escape/file", b"evil").finish();
    jail.apply(&l1, ApplyMode::Flatten).unwrap();
    assert!(
        jail.apply(&l2, ApplyMode::Flatten).is_err(),
        "resolves to a missing inner dir"
    );
    let l3 = TarBuilder::new().dir("outside-dir/").finish();
    jail.apply(&l3, ApplyMode::Flatten).unwrap();
    jail.apply(&l2, ApplyMode::Flatten).unwrap();
    assert_eq!(
        read(&jail.path("outside-dir/file")),
        b"evil",
        "inside the root"
    );
}

#[test]
fn whiteout_of_dot_or_dotdot_is_refused() {
    for name in [".wh..", ".wh...", "a/.wh..", "a/.wh...", ".wh."] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new().dir("a/").file(name, b"").finish();
            assert_breakout(jail.apply(&tar, mode), name);
        }
    }
}

#[test]
fn whiteout_in_a_parent_that_escapes_is_refused() {
    for name in ["../.wh.x", "a/../../.wh.x", "../.wh..wh..opq"] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new().file(name, b"").finish();
            assert_breakout(jail.apply(&tar, mode), name);
        }
    }
}

#[test]
fn whiteout_through_a_symlinked_dir_stays_inside() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .file("x", b"inner x")
            .symlink("a", "..")
            .symlink("b", "/")
            .file("a/.wh.x", b"")
            .file("b/.wh.sentinel", b"")
            .finish();
        jail.apply(&tar, mode).unwrap();
        // Outside is untouched (checked by the jail); inside, the layer's own x survives its
        // whiteout in both modes.
        assert_eq!(read(&jail.path("x")), b"inner x");
        if mode == ApplyMode::Overlay {
            let snap = snapshot(&jail.root);
            assert_eq!(
                snap["sentinel"].kind, "char",
                "whiteout device created inside"
            );
        }
    }
    // With x from a lower layer, the whiteout deletes the inner x only.
    let jail = Jail::new();
    jail.apply(
        &TarBuilder::new().file("x", b"lower").finish(),
        ApplyMode::Flatten,
    )
    .unwrap();
    let tar = TarBuilder::new()
        .symlink("a", "..")
        .file("a/.wh.x", b"")
        .finish();
    jail.apply(&tar, ApplyMode::Flatten).unwrap();
    assert!(!jail.path("x").exists());
}

#[test]
fn whiteout_named_like_a_path_is_not_a_whiteout() {
    // `.wh.a/b` is a file `b` in a directory literally named `.wh.a`.
    for mode in MODES {
        let jail = Jail::new();
        jail.apply(&TarBuilder::new().file("a", b"a").finish(), mode)
            .unwrap();
        jail.apply(&TarBuilder::new().file(".wh.a/b", b"b").finish(), mode)
            .unwrap();
        assert_eq!(read(&jail.path("a")), b"a");
        assert_eq!(read(&jail.path(".wh.a/b")), b"b");
    }
}

#[test]
fn opaque_marker_under_a_symlinked_dir_stays_inside() {
    for mode in MODES {
        let jail = Jail::new();
        jail.apply(&TarBuilder::new().file("lower", b"l").finish(), mode)
            .unwrap();
        let tar = TarBuilder::new()
            .symlink("a", "..")
            .file("a/.wh..wh..opq", b"")
            .symlink("b", "/")
            .file("b/.wh..wh..opq", b"")
            .finish();
        jail.apply(&tar, mode).unwrap();
        match mode {
            // The root was made opaque: the lower file is gone, the layer's links stay.
            ApplyMode::Flatten | ApplyMode::Squash => {
                let names: Vec<String> = snapshot(&jail.root).into_keys().collect();
                assert_eq!(names, ["a", "b"]);
            }
            ApplyMode::Overlay => {
                assert_eq!(
                    xattr(&jail.root, "user.overlay.opaque").as_deref(),
                    Some(&b"y"[..])
                );
            }
        }
    }
}

#[test]
fn overlay_xattrs_in_pax_headers_are_refused() {
    for key in [
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "user.overlay.opaque",
    ] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new().xattr(key, b"y").dir("d/").finish();
            assert_breakout(jail.apply(&tar, mode), key);
            assert!(
                !jail.path("d").exists(),
                "{key}: refused before anything was created"
            );
            let tar = TarBuilder::new().xattr(key, b"y").file("f", b"").finish();
            assert_breakout(jail.apply(&tar, mode), key);
        }
    }
    // Other trusted.* xattrs are fine.
    let jail = Jail::new();
    let tar = TarBuilder::new()
        .xattr("trusted.other", b"v")
        .file("f", b"")
        .finish();
    jail.apply(&tar, ApplyMode::Overlay).unwrap();
    assert_eq!(
        xattr(&jail.path("f"), "trusted.other").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn device_node_named_through_a_symlink_is_created_inside() {
    let name = host_marker("dev");
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new()
            .symlink("a", "..")
            .char_device("a/x", 1, 3)
            .symlink("b", "/")
            .char_device(&format!("b/{name}"), 1, 3)
            .raw(tar::EntryType::Fifo, b"a/fifo", b"", b"", 0o644)
            .raw(tar::EntryType::Block, b"b/blk", b"", b"", 0o600)
            .finish();
        jail.apply(&tar, mode).unwrap();
        let snap = snapshot(&jail.root);
        assert_eq!(snap["x"].kind, "char");
        assert_eq!(snap["x"].rdev, Some((1, 3)));
        assert_eq!(snap["fifo"].kind, "fifo");
        assert_eq!(snap["blk"].kind, "block");
        assert!(!Path::new("/").join(&name).exists());
    }
}

#[test]
fn very_long_names_are_errors_not_panics() {
    for mode in MODES {
        let jail = Jail::new();
        // A component longer than NAME_MAX.
        let tar = TarBuilder::new().file(&"n".repeat(300), b"x").finish();
        assert!(jail.apply(&tar, mode).is_err());
        // A path longer than PATH_MAX.
        let deep = vec!["d".repeat(200); 30].join("/");
        let tar = TarBuilder::new().file(&format!("{deep}/f"), b"x").finish();
        assert!(jail.apply(&tar, mode).is_err());
        // A symlink target longer than PATH_MAX.
        let tar = TarBuilder::new().symlink("l", &"t/".repeat(3000)).finish();
        assert!(jail.apply(&tar, mode).is_err());
        // A hardlink target longer than PATH_MAX.
        let tar = TarBuilder::new().hardlink("h", &deep).finish();
        assert!(jail.apply(&tar, mode).is_err());
        // Long but legal: fine.
        let ok = vec!["o".repeat(250); 3].join("/");
        let tar = TarBuilder::new().file(&ok, b"fine").finish();
        jail.apply(&tar, mode).unwrap();
        assert_eq!(read(&jail.path(&ok)), b"fine");
    }
}

#[test]
fn entries_naming_the_root_itself() {
    for name in [&b"./"[..], b"/", b".", b"a/.."] {
        for mode in MODES {
            let jail = Jail::new();
            let tar = TarBuilder::new()
                .raw(tar::EntryType::Regular, name, b"", b"evil", 0o644)
                .finish();
            assert!(
                matches!(jail.apply(&tar, mode), Err(LayerError::Malformed { .. })),
                "{name:?}"
            );
            let tar = TarBuilder::new()
                .raw(tar::EntryType::Symlink, name, b"/", b"", 0o777)
                .finish();
            assert!(jail.apply(&tar, mode).is_err());
            assert!(jail.root.is_dir() && !jail.root.is_symlink());
        }
    }
}

#[test]
fn hardlink_to_a_directory_is_refused() {
    for mode in MODES {
        let jail = Jail::new();
        let tar = TarBuilder::new().dir("d/").hardlink("l", "d").finish();
        assert!(jail.apply(&tar, mode).is_err());
        let tar = TarBuilder::new().hardlink("l", ".").finish();
        assert!(jail.apply(&tar, mode).is_err());
    }
}

#[test]
fn compression_does_not_hide_an_attack() {
    let tar = TarBuilder::new().file("../x", b"evil").finish();
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut enc = c.encoder(Vec::new()).unwrap();
        enc.write_all(&tar).unwrap();
        let blob = enc.finish().unwrap();
        for mode in MODES {
            let jail = Jail::new();
            assert_breakout(jail.apply(&blob, mode), c.as_str());
        }
    }
}

#[test]
fn gnu_long_names_are_checked_like_any_other() {
    // The tar crate's builder writes a GNU `L` record for long names; smuggle `..` in one.
    let long_escape = format!("{}/../../x", "a".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    let mut b = tar::Builder::new(Vec::new());
    // append_data refuses `..`, so write the GNU long-name record by hand.
    let mut ln = tar::Header::new_gnu();
    ln.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    ln.set_entry_type(tar::EntryType::GNULongName);
    ln.set_size(long_escape.len() as u64 + 1);
    ln.set_cksum();
    let mut name = long_escape.clone().into_bytes();
    name.push(0);
    b.append(&ln, &name[..]).unwrap();
    h.as_old_mut().name[..5].copy_from_slice(b"short");
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    for mode in MODES {
        let jail = Jail::new();
        assert_breakout(jail.apply(&tar, mode), "GNU long name");
    }
}
