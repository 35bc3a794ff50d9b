//! Writing and applying layers: round trips, determinism, overlay upper dirs, and the merged
//! view of a snapshot stack checked against a real overlay mount. Runs as root (mknod,
//! user.overlay xattrs, mount).

// Helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

use common::{OverlayMount, TarBuilder, mknod, set_mtime, set_xattr, snapshot, tar_listing};
use layer::{ApplyMode, Compression, DiffOptions, DiffSource, apply, write_diff, write_merged};
use oci::Digest;
use rustix::fs::FileType;

/// A `security.capability` v2 blob granting cap_net_bind_service.
const CAP_NET_BIND: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn long_dir() -> String {
    "d".repeat(200)
}

fn long_file() -> String {
    format!("{}.txt", "f".repeat(240))
}

/// A tree with every file type, odd modes and owners, xattrs, hardlinks and long names.
/// `reverse` creates the same tree in another order (other inode numbers, other readdir
/// order), which must not change the layer.
fn build_full_tree(root: &Path, reverse: bool) {
    let mut steps: Vec<fn(&Path)> = vec![
        |r| {
            common::mkdirs(r, &["dir/sub", "empty", "sticky", "dev"]);
            fs::set_permissions(r.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
            fs::set_permissions(r.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
        },
        |r| {
            fs::write(r.join("dir/file.txt"), b"hello").unwrap();
            fs::set_permissions(r.join("dir/file.txt"), fs::Permissions::from_mode(0o640)).unwrap();
            lchown(r.join("dir/file.txt"), Some(1000), Some(1000)).unwrap();
            set_xattr(&r.join("dir/file.txt"), "user.comment", b"c");
            set_xattr(&r.join("dir/file.txt"), "trusted.strata", b"bin\0ary");
            fs::hard_link(r.join("dir/file.txt"), r.join("hard1")).unwrap();
            fs::hard_link(r.join("dir/file.txt"), r.join("dir/sub/hard2")).unwrap();
        },
        |r| {
            fs::write(r.join("dir/sub/exec"), b"#!/bin/sh\necho hi\n").unwrap();
            set_xattr(
                &r.join("dir/sub/exec"),
                "security.capability",
                &CAP_NET_BIND,
            );
            fs::set_permissions(r.join("dir/sub/exec"), fs::Permissions::from_mode(0o4755))
                .unwrap();
            set_xattr(&r.join("dir/sub"), "user.d", b"1");
        },
        |r| {
            fs::write(r.join("big-ids"), b"ids").unwrap();
            lchown(r.join("big-ids"), Some(3_000_000), Some(4_000_000)).unwrap();
            fs::write(r.join("zero"), b"").unwrap();
            let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
            fs::write(r.join("bin"), data).unwrap();
        },
        |r| {
            std::os::unix::fs::symlink("dir/file.txt", r.join("link-rel")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", r.join("link-abs")).unwrap();
            std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
            std::os::unix::fs::symlink("t".repeat(300), r.join("long-target")).unwrap();
            set_xattr(&r.join("link-rel"), "trusted.onlink", b"l");
            lchown(r.join("link-rel"), Some(5), Some(6)).unwrap();
        },
        |r| {
            mknod(&r.join("dev/null"), FileType::CharacterDevice, 0o666, 1, 3);
            mknod(&r.join("dev/sda"), FileType::BlockDevice, 0o660, 8, 0);
            mknod(&r.join("dev/fifo"), FileType::Fifo, 0o644, 0, 0);
            std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
        },
        |r| {
            let d = r.join(long_dir());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(long_file()), b"long").unwrap();
        },
    ];
    if reverse {
        // Directories first either way; everything else in the opposite order.
        steps[1..].reverse();
    }
    for step in steps {
        step(root);
    }
    set_all_mtimes(root);
}

/// Deterministic mtimes for everything, children before their directories.
fn set_all_mtimes(root: &Path) {
    fn visit(p: &Path, n: &mut i64) {
        if fs::symlink_metadata(p).unwrap().is_dir() {
            let mut kids: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            kids.sort();
            for k in kids {
                visit(&k, n);
            }
        }
        *n += 1000;
        set_mtime(p, 1_500_000_000 + *n);
    }
    let mut n = 0;
    visit(root, &mut n);
}

fn layer_of(src: DiffSource<'_>, opts: &DiffOptions) -> (layer::LayerStats, Vec<u8>) {
    write_diff(src, opts, Vec::new()).unwrap()
}

fn plain() -> DiffOptions {
    DiffOptions {
        compression: Compression::None,
        source_date_epoch: None,
    }
}

#[test]
fn tree_round_trips_through_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    build_full_tree(&src, false);

    let (stats, blob) = layer_of(DiffSource::Tree(&src), &DiffOptions::default());
    let applied = apply(&blob[..], &dst, ApplyMode::Flatten).unwrap();
    assert_eq!(applied, stats);

    let mut expected = snapshot(&src);
    expected
        .remove("sock")
        .expect("the socket was in the source");
    let got = snapshot(&dst);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, node) in &expected {
        assert_eq!(&got[path], node, "{path}");
    }
    // The three names of one inode stay one inode.
    assert_eq!(got["hard1"].hardlink_group.as_deref(), Some("dir/file.txt"));
    assert_eq!(
        got["dir/sub/hard2"].hardlink_group.as_deref(),
        Some("dir/file.txt")
    );
}

#[test]
fn layer_bytes_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    build_full_tree(&a, false);
    build_full_tree(&b, true);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = DiffOptions {
            compression,
            source_date_epoch: None,
        };
        let (s1, l1) = layer_of(DiffSource::Tree(&a), &opts);
        let (s2, l2) = layer_of(DiffSource::Tree(&a), &opts);
        let (s3, l3) = layer_of(DiffSource::Tree(&b), &opts);
        assert_eq!(l1, l2, "{compression}: same tree twice");
        assert_eq!(l1, l3, "{compression}: same tree built in another order");
        assert_eq!((s1.clone(), s1), (s2, s3));
    }
}

#[test]
fn tar_layout_is_normalized() {
    let tmp = tempfile::tempdir().unwrap();
    build_full_tree(tmp.path(), false);
    let (stats, tar) = layer_of(DiffSource::Tree(tmp.path()), &plain());
    assert_eq!(stats.diff_id.0, Digest::of(&tar));
    assert_eq!(stats.uncompressed_size, tar.len() as u64);

    let names: Vec<String> = tar_listing(&tar).into_iter().map(|(p, _)| p).collect();
    let long = format!("{}/{}", long_dir(), long_file());
    let expected_order = [
        "big-ids",
        "bin",
        "dangling",
        "dev/",
        "dev/fifo",
        "dev/null",
        "dev/sda",
        "dir/",
        "dir/file.txt",
        "dir/sub/",
        "dir/sub/exec",
        "dir/sub/hard2",
        "empty/",
        "hard1",
        "link-abs",
        "link-rel",
        "long-target",
        "sticky/",
        "zero",
    ];
    // `d…d/` sorts between `dangling` and `dev/`; check it separately.
    let without_long: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with("ddd"))
        .collect();
    assert_eq!(without_long, expected_order);
    let pos = names
        .iter()
        .position(|n| *n == format!("{}/", long_dir()))
        .unwrap();
    assert_eq!(names[pos + 1], long);
    assert_eq!(names[pos - 1], "dangling");

    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        assert!(h.as_ustar().is_some(), "{path}: ustar header");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{path}");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{path}");
        assert!(!path.starts_with("./") && !path.starts_with('/'), "{path}");
        assert_eq!(h.entry_type().is_dir(), path.ends_with('/'), "{path}");
        match path.as_str() {
            "hard1" | "dir/sub/hard2" => {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                assert_eq!(&*e.link_name_bytes().unwrap(), b"dir/file.txt");
            }
            "dir/sub/exec" => assert_eq!(h.mode().unwrap(), 0o4755),
            "sticky/" => assert_eq!(h.mode().unwrap(), 0o1777),
            _ => {}
        }
    }
    let raw = String::from_utf8_lossy(&tar);
    assert!(raw.contains("SCHILY.xattr.security.capability="));
    assert!(!raw.contains("atime") && !raw.contains("ctime"));
}

#[test]
fn source_date_epoch_clamps_only_newer_times() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("new"), b"n").unwrap();
    fs::write(tmp.path().join("old"), b"o").unwrap();
    set_mtime(&tmp.path().join("new"), 2_000_000_000);
    set_mtime(&tmp.path().join("old"), 1_000_000_000);
    let opts = DiffOptions {
        compression: Compression::None,
        source_date_epoch: Some(1_500_000_000),
    };
    let (_, tar) = layer_of(DiffSource::Tree(tmp.path()), &opts);
    let mut ar = tar::Archive::new(&tar[..]);
    let times: Vec<(String, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        times,
        [
            ("new".to_string(), 1_500_000_000),
            ("old".to_string(), 1_000_000_000)
        ]
    );
}

#[test]
fn every_compression_applies_with_the_uncompressed_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    build_full_tree(&src, false);
    let (plain_stats, _) = layer_of(DiffSource::Tree(&src), &plain());
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = DiffOptions {
            compression,
            source_date_epoch: None,
        };
        let (stats, blob) = layer_of(DiffSource::Tree(&src), &opts);
        assert_eq!(stats, plain_stats, "{compression}");
        let dst = tmp.path().join(format!("dst-{compression}"));
        fs::create_dir_all(&dst).unwrap();
        assert_eq!(
            apply(&blob[..], &dst, ApplyMode::Flatten).unwrap(),
            plain_stats
        );
        let mut dec = layer::decompress(&blob[..]).unwrap();
        assert_eq!(dec.compression(), compression);
        let mut raw = Vec::new();
        dec.read_to_end(&mut raw).unwrap();
        assert_eq!(Digest::of(&raw), plain_stats.diff_id.0);
    }
}

#[test]
fn apply_hashes_bytes_after_the_end_of_archive() {
    // GNU tar pads archives to 10 KiB records; those bytes are part of the diff id.
    let mut tar = TarBuilder::new().file("a", b"x").finish();
    tar.resize(10240, 0);
    let tmp = tempfile::tempdir().unwrap();
    let stats = apply(&tar[..], tmp.path(), ApplyMode::Flatten).unwrap();
    assert_eq!(stats.diff_id.0, Digest::of(&tar));
    assert_eq!(stats.uncompressed_size, 10240);
    // …and through gzip too.
    let mut gz = Compression::Gzip.encoder(Vec::new()).unwrap();
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let tmp2 = tempfile::tempdir().unwrap();
    assert_eq!(
        apply(&gz[..], tmp2.path(), ApplyMode::Flatten).unwrap(),
        stats
    );
}

#[test]
fn a_root_entry_sets_the_roots_metadata() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Directory, b"./", b"", b"", 0o750)
        .file("./a", b"x")
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    apply(&tar[..], tmp.path(), ApplyMode::Flatten).unwrap();
    let md = fs::metadata(tmp.path()).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);
    assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"x");
}

#[test]
fn a_directory_listed_twice_gets_its_last_metadata() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Directory, b"d/", b"", b"", 0o700)
        .file("d/f", b"x")
        .raw(tar::EntryType::Directory, b"d/", b"", b"", 0o751)
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    apply(&tar[..], tmp.path(), ApplyMode::Flatten).unwrap();
    let md = fs::metadata(tmp.path().join("d")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o751);
    assert_eq!(fs::read(tmp.path().join("d/f")).unwrap(), b"x");
}

#[test]
fn names_are_bytes_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join(OsStr::from_bytes(b"caf\xe9"))).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"caf\xe9/\xff\xfe")), b"latin1").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"\xff\xfe"), src.join("l")).unwrap();
    let (_, tar) = layer_of(DiffSource::Tree(&src), &plain());
    fs::create_dir_all(&dst).unwrap();
    apply(&tar[..], &dst, ApplyMode::Flatten).unwrap();
    assert_eq!(
        fs::read(dst.join(OsStr::from_bytes(b"caf\xe9/\xff\xfe"))).unwrap(),
        b"latin1"
    );
    assert_eq!(
        fs::read_link(dst.join("l")).unwrap().as_os_str().as_bytes(),
        b"\xff\xfe"
    );
}

#[test]
fn aufs_metadata_is_ignored() {
    let tar = TarBuilder::new()
        .dir(".wh..wh.plnk/")
        .file(".wh..wh.plnk/123.456", b"x")
        .file(".wh..wh.aufs", b"")
        .file("real", b"r")
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    apply(&tar[..], tmp.path(), ApplyMode::Flatten).unwrap();
    let names: Vec<String> = snapshot(tmp.path()).into_keys().collect();
    assert_eq!(names, ["real"]);
}

#[test]
fn flatten_whiteouts_spare_the_layers_own_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = TarBuilder::new()
        .dir("d/")
        .file("d/lower", b"l")
        .dir("d/sub/")
        .file("d/sub/lower", b"l")
        .file("gone", b"g")
        .file("kept", b"k")
        .finish();
    apply(&base[..], root, ApplyMode::Flatten).unwrap();
    // Opaque marker *after* the layer's own children, a whiteout after the file it names:
    // both must apply to the lower layer only.
    let top = TarBuilder::new()
        .dir("d/")
        .file("d/mine", b"m")
        .dir("d/sub/")
        .file("d/sub/mine", b"m")
        .file("d/.wh..wh..opq", b"")
        .file("kept", b"new")
        .file(".wh.kept", b"")
        .file(".wh.gone", b"")
        .file(".wh.never-existed", b"")
        .file("nodir/.wh.x", b"")
        .finish();
    apply(&top[..], root, ApplyMode::Flatten).unwrap();
    let names: Vec<String> = snapshot(root).into_keys().collect();
    assert_eq!(names, ["d", "d/mine", "d/sub", "d/sub/mine", "kept"]);
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"new");
}

#[test]
fn overlay_mode_writes_overlay_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tar = TarBuilder::new()
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/x", b"x")
        .file(".wh.gone", b"")
        .file("implicit/.wh.y", b"")
        .file(".wh.z", b"")
        .dir("z/")
        .finish();
    apply(&tar[..], root, ApplyMode::Overlay).unwrap();
    assert_eq!(
        common::xattr(&root.join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(root.join("d/x")).unwrap(), b"x");
    let snap = snapshot(root);
    for w in ["gone", "implicit/y"] {
        assert_eq!(snap[w].kind, "char", "{w}");
        assert_eq!(snap[w].rdev, Some((0, 0)), "{w}");
    }
    assert_eq!(snap["implicit"].mode, 0o755);
    // Recreated after its whiteout: a directory hiding everything below.
    assert_eq!(snap["z"].kind, "dir");
    assert_eq!(
        common::xattr(&root.join("z"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

/// A lower tree for the overlay tests.
fn build_lower(root: &Path) {
    common::mkdirs(root, &["a", "b", "d", "e/sub", "f"]);
    for (p, c) in [
        ("a/1", "a1"),
        ("a/2", "a2"),
        ("b/x", "bx"),
        ("b/y", "by"),
        ("c", "c"),
        ("d/keep", "dk"),
        ("e/sub/deep", "ed"),
        ("f/file", "ff"),
    ] {
        fs::write(root.join(p), c).unwrap();
    }
    fs::hard_link(root.join("a/2"), root.join("f/hl")).unwrap();
    std::os::unix::fs::symlink("/a", root.join("abs-link")).unwrap();
    set_all_mtimes(root);
}

#[test]
fn overlay_upper_dir_becomes_whiteouts_and_opaque_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (lower, upper, work, merged) = (
        t.join("lower"),
        t.join("upper"),
        t.join("work"),
        t.join("m"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    build_lower(&lower);

    let expected = {
        let _m = OverlayMount::new(&[&lower], Some((&upper, &work)), &merged);
        fs::remove_file(merged.join("a/1")).unwrap();
        fs::remove_dir_all(merged.join("b")).unwrap();
        fs::create_dir(merged.join("b")).unwrap();
        fs::write(merged.join("b/new"), b"new").unwrap();
        fs::remove_file(merged.join("c")).unwrap();
        fs::write(merged.join("newfile"), b"nf").unwrap();
        fs::remove_dir_all(merged.join("e")).unwrap();
        fs::write(merged.join("d/added"), b"da").unwrap();
        fs::remove_dir_all(merged.join("f")).unwrap();
        fs::write(merged.join("f"), b"now a file").unwrap();
        snapshot(&merged)
    };

    let (_, upper_tar) = layer_of(DiffSource::OverlayUpper(&upper), &plain());
    let listing = tar_listing(&upper_tar);
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            ".wh.c",
            ".wh.e",
            "a/",
            "a/.wh.1",
            "b/",
            "b/.wh..wh..opq",
            "b/new",
            "d/",
            "d/added",
            "f",
            "newfile"
        ]
    );
    assert!(
        listing.iter().all(|(_, t)| *t != b'3'),
        "no char devices: {listing:?}"
    );
    assert!(!String::from_utf8_lossy(&upper_tar).contains("overlay"));

    // Flattened: lower layer, then the upper layer, docker style.
    let (_, lower_tar) = layer_of(DiffSource::Tree(&lower), &plain());
    let flat = t.join("flat");
    fs::create_dir_all(&flat).unwrap();
    apply(&lower_tar[..], &flat, ApplyMode::Flatten).unwrap();
    apply(&upper_tar[..], &flat, ApplyMode::Flatten).unwrap();
    assert_eq!(snapshot(&flat), expected);

    // As overlay snapshots, mounted read-only: the kernel must see the same tree.
    let (s1, s2, m2) = (t.join("s1"), t.join("s2"), t.join("m2"));
    for d in [&s1, &s2, &m2] {
        fs::create_dir_all(d).unwrap();
    }
    apply(&lower_tar[..], &s1, ApplyMode::Overlay).unwrap();
    apply(&upper_tar[..], &s2, ApplyMode::Overlay).unwrap();
    let _m = OverlayMount::new(&[&s2, &s1], None, &m2);
    assert_eq!(snapshot(&m2), expected);
}

/// Three overlay-format snapshots exercising every hiding rule.
fn snapshot_stack(t: &Path) -> Vec<std::path::PathBuf> {
    let bottom = t.join("bottom");
    fs::create_dir_all(&bottom).unwrap();
    common::mkdirs(&bottom, &["a/sub", "b", "d", "e/deep"]);
    for (p, c) in [
        ("a/1", "a1"),
        ("a/2", "a2"),
        ("a/sub/x", "ax"),
        ("b/1", "b1"),
        ("c", "c"),
        ("d/1", "d1"),
        ("e/deep/f", "ef"),
        ("hl1", "hl"),
    ] {
        fs::write(bottom.join(p), c).unwrap();
    }
    fs::hard_link(bottom.join("hl1"), bottom.join("hl2")).unwrap();
    std::os::unix::fs::symlink("a", bottom.join("link")).unwrap();
    set_xattr(&bottom.join("a/1"), "user.x", b"1");
    set_all_mtimes(&bottom);
    let (_, bottom_tar) = layer_of(DiffSource::Tree(&bottom), &plain());

    let mid_tar = TarBuilder::new()
        .dir("a/")
        .file("a/.wh.1", b"")
        .file("a/3", b"a3")
        .dir("b/")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"bnew")
        .dir("c/")
        .file("c/inside", b"ci")
        .file("d", b"d is a file")
        .file(".wh.e", b"")
        .finish();
    let top_tar = TarBuilder::new()
        .dir("a/")
        .dir("a/sub/")
        .file("a/sub/.wh.x", b"")
        .dir("b/")
        .file("b/.wh.new", b"")
        .dir("c/")
        .file("c/.wh.inside", b"")
        .dir("e/")
        .file("e/g", b"eg")
        .file("f", b"f")
        .file(".wh.hl1", b"")
        .finish();

    let mut dirs = Vec::new();
    for (name, tar) in [
        ("s-bottom", &bottom_tar),
        ("s-mid", &mid_tar),
        ("s-top", &top_tar),
    ] {
        let d = t.join(name);
        fs::create_dir_all(&d).unwrap();
        apply(&tar[..], &d, ApplyMode::Overlay).unwrap();
        dirs.push(d);
    }
    // Also flatten them in order into one tree: docker's way of getting the same view.
    let flat = t.join("flat");
    fs::create_dir_all(&flat).unwrap();
    for tar in [&bottom_tar, &mid_tar, &top_tar] {
        apply(&tar[..], &flat, ApplyMode::Flatten).unwrap();
    }
    dirs.reverse(); // top first
    dirs.push(flat);
    dirs
}

#[test]
fn write_merged_matches_a_real_overlay_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut dirs = snapshot_stack(t);
    let flat = dirs.pop().unwrap();
    let lowers: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

    let mnt = t.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = {
        let _m = OverlayMount::new(&lowers, None, &mnt);
        snapshot(&mnt)
    };
    let names: Vec<&str> = mounted.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "a", "a/2", "a/3", "a/sub", "b", "c", "d", "e", "e/g", "f", "hl2", "link"
        ],
        "sanity check of the kernel's view"
    );

    let (stats, tar) = write_merged(&lowers, &plain(), Vec::new()).unwrap();
    assert_eq!(stats.diff_id.0, Digest::of(&tar));
    let listing = tar_listing(&tar);
    assert!(
        listing
            .iter()
            .all(|(n, t)| !n.contains(".wh.") && *t != b'3'),
        "{listing:?}"
    );
    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    apply(&tar[..], &out, ApplyMode::Flatten).unwrap();
    assert_eq!(snapshot(&out), mounted);
    assert_eq!(snapshot(&flat), mounted);

    // Deterministic too.
    let (_, again) = write_merged(&lowers, &plain(), Vec::new()).unwrap();
    assert_eq!(again, tar);
}

#[test]
fn write_merged_of_one_layer_is_its_tree_without_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .file("a", b"1")
        .file(".wh.b", b"")
        .finish();
    apply(&tar[..], tmp.path(), ApplyMode::Overlay).unwrap();
    let (_, out) = write_merged(&[tmp.path()], &plain(), Vec::new()).unwrap();
    let names: Vec<String> = tar_listing(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a"]);
    let (_, empty) = write_merged(&[], &plain(), Vec::new()).unwrap();
    assert!(tar_listing(&empty).is_empty());
}

/// A tiny deterministic PRNG, so the mutation test needs no extra crate.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_layers_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    build_full_tree(&src, false);
    fs::remove_file(src.join("bin")).unwrap(); // keep the inputs small
    let (_, base) = layer_of(DiffSource::Tree(&src), &plain());
    let (_, base_gz) = layer_of(DiffSource::Tree(&src), &DiffOptions::default());

    let mut rng = Lcg(0x5eed);
    for i in 0..400 {
        let mut input = if i % 4 == 0 {
            base_gz.clone()
        } else {
            base.clone()
        };
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(8) {
                    let at = rng.below(input.len());
                    input[at] = rng.next() as u8;
                }
            }
            1 => input.truncate(rng.below(input.len())),
            2 => {
                // Overwrite a header's numeric fields with junk, keep the checksum valid.
                let block = rng.below(input.len() / 512) * 512;
                for b in &mut input[block + 100..block + 156] {
                    *b = rng.next() as u8;
                }
                let mut h = tar::Header::new_old();
                h.as_mut_bytes().copy_from_slice(&input[block..block + 512]);
                h.set_cksum();
                input[block..block + 512].copy_from_slice(h.as_bytes());
            }
            _ => {
                input = (0..rng.below(4096)).map(|_| rng.next() as u8).collect();
            }
        }
        for mode in [ApplyMode::Flatten, ApplyMode::Overlay] {
            let dst = tempfile::tempdir_in(tmp.path()).unwrap();
            // Ok or Err are both fine; a panic fails the test.
            let _ = apply(&input[..], dst.path(), mode);
        }
    }
}

/// Squashing: layers applied in turn onto one overlay-format directory keep only what the
/// last of them shows, and still hide what lies below the squashed layers.
#[test]
fn squash_mode_accumulates_layers_like_an_overlay_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("squash");
    std::fs::create_dir(&root).unwrap();
    let l1 = TarBuilder::new()
        .dir("a/")
        .file("a/f1", b"1")
        .dir("d/")
        .file("d/x", b"x")
        .file("gone", b"g")
        .finish();
    let l2 = TarBuilder::new()
        .file(".wh.a", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/y", b"y")
        .file(".wh.gone", b"")
        .file(".wh.from-base", b"")
        .finish();
    let l3 = TarBuilder::new().dir("a/").file("a/g", b"g").finish();
    for layer in [&l1, &l2, &l3] {
        layer::apply(&layer[..], &root, layer::ApplyMode::Squash).unwrap();
    }
    let is_whiteout = |p: &str| {
        let m = std::fs::symlink_metadata(root.join(p)).unwrap();
        std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type())
            && std::os::unix::fs::MetadataExt::rdev(&m) == 0
    };
    assert!(!root.join("a/f1").exists(), "deleted inside the build");
    assert_eq!(std::fs::read(root.join("a/g")).unwrap(), b"g");
    assert_eq!(
        common::xattr(&root.join("a"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!root.join("d/x").exists() && root.join("d/y").exists());
    assert_eq!(
        common::xattr(&root.join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        is_whiteout("gone") && is_whiteout("from-base"),
        "whiteouts stay to hide the base"
    );
}

/// The same changes made through a kernel overlay mount and in a copied-out tree: the copy's
/// recorded changes ([`layer::TreeState::write_upper`]) give the same layer as the kernel's
/// upper directory, whiteouts, opaque directories and hardlinks included.
fn change_tree(root: &Path) {
    fs::write(root.join("data/new.txt"), "new\n").unwrap();
    fs::write(root.join("data/old"), "rewritten\n").unwrap();
    fs::set_permissions(root.join("keep"), fs::Permissions::from_mode(0o600)).unwrap();
    lchown(root.join("data/sub/f"), Some(1000), Some(1000)).unwrap();
    fs::remove_file(root.join("gone")).unwrap();
    fs::remove_dir_all(root.join("olddir")).unwrap();
    fs::remove_dir_all(root.join("data/sub2")).unwrap();
    fs::create_dir(root.join("data/sub2")).unwrap();
    fs::write(root.join("data/sub2/fresh"), "fresh\n").unwrap();
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/one"), "1\n").unwrap();
    fs::hard_link(root.join("a/b/c/one"), root.join("a/two")).unwrap();
    std::os::unix::fs::symlink("../keep", root.join("a/link")).unwrap();
    fs::rename(root.join("data/moveme"), root.join("moved")).unwrap();
}

#[test]
fn copied_tree_changes_match_the_kernels_overlay_upper() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = t.join("base");
    for d in ["data/sub", "data/sub2", "olddir/inner"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    for (f, c) in [
        ("data/old", "old\n"),
        ("data/moveme", "move\n"),
        ("data/sub/f", "f\n"),
        ("data/sub2/stale", "stale\n"),
        ("olddir/inner/x", "x\n"),
        ("keep", "keep\n"),
        ("gone", "gone\n"),
    ] {
        fs::write(base.join(f), c).unwrap();
    }
    let (_, base_tar) = layer_of(DiffSource::Tree(&base), &plain());
    let lower = t.join("lower");
    fs::create_dir(&lower).unwrap();
    apply(&base_tar[..], &lower, ApplyMode::Overlay).unwrap();

    let (upper, work, mnt) = (t.join("upper"), t.join("work"), t.join("mnt"));
    for d in [&upper, &work, &mnt] {
        fs::create_dir(d).unwrap();
    }
    {
        let _m = OverlayMount::new(&[&lower], Some((&upper, &work)), &mnt);
        change_tree(&mnt);
    }
    let (copy, copied_upper) = (t.join("copy"), t.join("copied-upper"));
    fs::create_dir(&copy).unwrap();
    fs::create_dir(&copied_upper).unwrap();
    layer::materialize(&[&lower], &copy).unwrap();
    let state = layer::TreeState::record(&copy).unwrap();
    change_tree(&copy);
    state.write_upper(&copy, &copied_upper).unwrap();

    // Files made during the test are newer than the epoch, so every time is pinned to it.
    let opts = DiffOptions {
        compression: Compression::None,
        source_date_epoch: Some(1_000_000),
    };
    let (kernel, kernel_tar) = layer_of(DiffSource::OverlayUpper(&upper), &opts);
    let (copied, copied_tar) = layer_of(DiffSource::OverlayUpper(&copied_upper), &opts);
    assert_eq!(
        tar_listing(&copied_tar),
        tar_listing(&kernel_tar),
        "the same entries"
    );
    assert_eq!(copied.diff_id, kernel.diff_id, "the same bytes");
    let names: Vec<String> = tar_listing(&kernel_tar).into_iter().map(|e| e.0).collect();
    for expected in [
        "gone",
        ".wh.gone",
        ".wh.olddir",
        "data/sub2/.wh..wh..opq",
        "a/two",
    ] {
        if expected == "gone" {
            assert!(!names.iter().any(|n| n == "gone"), "{names:?}");
        } else {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
    }
}

#[test]
fn unchanged_trees_record_no_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, upper) = (tmp.path().join("tree"), tmp.path().join("upper"));
    fs::create_dir_all(tree.join("d/e")).unwrap();
    fs::write(tree.join("d/e/f"), "f").unwrap();
    fs::create_dir(&upper).unwrap();
    let state = layer::TreeState::record(&tree).unwrap();
    fs::read_to_string(tree.join("d/e/f")).unwrap();
    state.write_upper(&tree, &upper).unwrap();
    assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);
}
