use std::os::unix::fs::MetadataExt;

use super::*;

struct Dirs {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dest: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dest).unwrap();
    Dirs {
        _tmp: tmp,
        src,
        dest,
    }
}

fn spec<'a>(sources: &'a [String], dest: &'a str) -> CopySpec<'a> {
    CopySpec {
        sources,
        dest,
        owner: None,
        chmod: None,
        parents: false,
        excludes: None,
        epoch: None,
        unpack: false,
    }
}

fn run(d: &Dirs, spec: &CopySpec<'_>, keep_owner: bool) -> Result<(), CopyError> {
    let root = SourceRoot::open(&d.src).unwrap();
    let src = SourceRoot {
        root,
        include: None,
        keep_owner,
    };
    sandbox::in_private_mounts(|| {
        let guard = sandbox::enter_root(&d.dest).unwrap();
        let unpacks = copy(&src, spec);
        guard.leave().unwrap();
        unpacks?.run(&src)
    })
    .unwrap()
}

fn srcs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

#[test]
fn files_directories_and_trailing_slashes() {
    let d = dirs();
    write(&d.src.join("a.txt"), "a");
    write(&d.src.join("dir/sub/b.txt"), "b");
    let s = srcs(&["a.txt"]);
    run(&d, &spec(&s, "/x/"), false).unwrap();
    run(&d, &spec(&s, "/renamed"), false).unwrap();
    let s = srcs(&["dir"]);
    run(&d, &spec(&s, "/y"), false).unwrap();
    assert_eq!(fs::read_to_string(d.dest.join("x/a.txt")).unwrap(), "a");
    assert_eq!(fs::read_to_string(d.dest.join("renamed")).unwrap(), "a");
    assert_eq!(
        fs::read_to_string(d.dest.join("y/sub/b.txt")).unwrap(),
        "b",
        "directory contents, not the directory"
    );
    assert!(!d.dest.join("y/dir").exists());
}

#[test]
fn wildcards_match_per_element_and_may_match_nothing() {
    let d = dirs();
    write(&d.src.join("a.go"), "1");
    write(&d.src.join("b.go"), "2");
    write(&d.src.join("c.rs"), "3");
    let s = srcs(&["*.go", "nomatch*"]);
    run(&d, &spec(&s, "/out/"), false).unwrap();
    let mut names: Vec<_> = fs::read_dir(d.dest.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a.go", "b.go"]);
    let s = srcs(&["missing"]);
    assert!(
        matches!(run(&d, &spec(&s, "/out/"), false), Err(CopyError::NotFound(p)) if p == "/missing")
    );
    let s = srcs(&["nodir/*.go"]);
    assert!(
        run(&d, &spec(&s, "/out/"), false).is_err(),
        "the directory before a wildcard must exist"
    );
    assert!(
        glob_match("[a-c]?.t*", "b1.txt") && !glob_match("[^a]*", "abc") && glob_match("\\*", "*")
    );
}

#[test]
fn owners_modes_and_times() {
    let d = dirs();
    write(&d.src.join("f"), "x");
    std::os::unix::fs::chown(d.src.join("f"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(d.src.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let s = srcs(&["f"]);
    run(&d, &spec(&s, "/ctx"), false).unwrap();
    run(&d, &spec(&s, "/stage"), true).unwrap();
    let mut chowned = spec(&s, "/new/dir/");
    chowned.owner = Some((7, 8));
    chowned.chmod = Chmod::parse("u+x,g=u");
    chowned.epoch = Some(1_000_000);
    run(&d, &chowned, false).unwrap();
    let m = |p: &str| fs::symlink_metadata(d.dest.join(p)).unwrap();
    assert_eq!(
        (m("ctx").uid(), m("ctx").gid()),
        (0, 0),
        "context files become root's"
    );
    assert_eq!(
        (m("stage").uid(), m("stage").gid()),
        (1234, 5678),
        "stage files keep owners"
    );
    assert_eq!(m("stage").mode() & 0o7777, 0o640);
    let f = m("new/dir/f");
    assert_eq!(
        (f.uid(), f.gid(), f.mode() & 0o7777, f.mtime()),
        (7, 8, 0o770, 1_000_000)
    );
    let parent = m("new/dir");
    assert_eq!(
        (parent.uid(), parent.mode() & 0o7777, parent.mtime()),
        (7, 0o755, 1_000_000),
        "--chown applies to created parents"
    );
}

#[test]
fn links_inside_directories_are_kept_and_top_level_links_followed() {
    let d = dirs();
    write(&d.src.join("tree/real"), "data");
    std::os::unix::fs::symlink("real", d.src.join("tree/link")).unwrap();
    fs::hard_link(d.src.join("tree/real"), d.src.join("tree/hard")).unwrap();
    std::os::unix::fs::symlink("tree/real", d.src.join("toplink")).unwrap();
    let s = srcs(&["tree", "toplink"]);
    run(&d, &spec(&s, "/o/"), false).unwrap();
    assert_eq!(
        fs::read_link(d.dest.join("o/link")).unwrap(),
        Path::new("real")
    );
    let (a, b) = (
        fs::metadata(d.dest.join("o/real")).unwrap(),
        fs::metadata(d.dest.join("o/hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hardlinks stay hardlinks");
    let top = fs::symlink_metadata(d.dest.join("o/toplink")).unwrap();
    assert!(top.is_file(), "a top-level source symlink is followed");
}

#[test]
fn destination_symlinks_resolve_inside_the_root() {
    let d = dirs();
    write(&d.src.join("f"), "x");
    fs::create_dir(d.dest.join("real")).unwrap();
    std::os::unix::fs::symlink("/real", d.dest.join("via")).unwrap();
    std::os::unix::fs::symlink("/", d.dest.join("escape")).unwrap();
    let s = srcs(&["f"]);
    run(&d, &spec(&s, "/via/"), false).unwrap();
    run(&d, &spec(&s, "/escape/../../../../x/"), false).unwrap();
    assert!(d.dest.join("real/f").is_file());
    assert!(d.dest.join("x/f").is_file(), "`..` stops at the root");
}

#[test]
fn conflicts_between_files_and_directories() {
    let d = dirs();
    write(&d.src.join("f"), "x");
    write(&d.src.join("dir/f"), "y");
    fs::create_dir_all(d.dest.join("taken/f")).unwrap();
    let s = srcs(&["f"]);
    assert!(matches!(
        run(&d, &spec(&s, "/taken/"), false),
        Err(CopyError::ReplaceDirectory(_))
    ));
    write(&d.dest.join("file"), "z");
    let s = srcs(&["dir"]);
    assert!(matches!(
        run(&d, &spec(&s, "/file"), false),
        Err(CopyError::NotADirectory(_))
    ));
}

#[test]
fn parents_excludes_and_archives() {
    let d = dirs();
    write(&d.src.join("a/b/c.txt"), "c");
    write(&d.src.join("a/b/skip.log"), "s");
    let s = srcs(&["a/./b/c.txt"]);
    let mut p = spec(&s, "/p/");
    p.parents = true;
    run(&d, &p, false).unwrap();
    assert!(d.dest.join("p/b/c.txt").is_file());

    write(&d.src.join("a/x/y/deep.txt"), "deep");
    let s = srcs(&["a/**/*.txt"]);
    let mut p = spec(&s, "/globstar/");
    p.parents = true;
    run(&d, &p, false).unwrap();
    assert!(
        d.dest.join("globstar/a/b/c.txt").is_file()
            && d.dest.join("globstar/a/x/y/deep.txt").is_file()
    );
    assert!(
        !d.dest.join("globstar/a/b/skip.log").exists(),
        "** matches at any depth, and only what matches"
    );

    let s = srcs(&["a"]);
    let mut e = spec(&s, "/e/");
    e.excludes = Some(IgnoreMatcher::new(["**/*.log"]).unwrap());
    run(&d, &e, false).unwrap();
    assert!(d.dest.join("e/b/c.txt").is_file() && !d.dest.join("e/b/skip.log").exists());

    let tar_path = d.src.join("t.tar.gz");
    let out = std::process::Command::new("tar")
        .args([
            "-czf",
            tar_path.to_str().unwrap(),
            "-C",
            d.src.join("a").to_str().unwrap(),
            "b",
        ])
        .status()
        .unwrap();
    assert!(out.success());
    let s = srcs(&["t.tar.gz"]);
    let mut add = spec(&s, "/unpacked");
    add.unpack = true;
    run(&d, &add, false).unwrap();
    assert_eq!(
        fs::read_to_string(d.dest.join("unpacked/b/c.txt")).unwrap(),
        "c"
    );
    for (name, flag) in [
        ("t.tar.bz2", "-cjf"),
        ("t.tar.xz", "-cJf"),
        ("t.tar.zst", "--zstd"),
    ] {
        let path = d.src.join(name);
        let mut args = vec![flag];
        if flag == "--zstd" {
            args.push("-cf");
        }
        let a_dir = d.src.join("a");
        args.extend([path.to_str().unwrap(), "-C", a_dir.to_str().unwrap(), "b"]);
        assert!(
            std::process::Command::new("tar")
                .args(&args)
                .status()
                .unwrap()
                .success()
        );
        let s = srcs(&[name]);
        let dest = format!("/unpacked-{name}/");
        let mut add = spec(&s, &dest);
        add.unpack = true;
        run(&d, &add, false).unwrap();
        assert_eq!(
            fs::read_to_string(d.dest.join(format!("unpacked-{name}/b/c.txt"))).unwrap(),
            "c",
            "{name}"
        );
    }
    let mut plain = spec(&s, "/notunpacked/");
    plain.unpack = false;
    run(&d, &plain, false).unwrap();
    assert!(d.dest.join("notunpacked/t.tar.gz").is_file());
}

#[test]
fn symbolic_modes() {
    let m = |s: &str, mode: u32, dir: bool| Chmod::parse(s).unwrap().apply(mode, dir);
    assert_eq!(m("755", 0o600, false), 0o755);
    assert_eq!(m("+x", 0o644, false), 0o755);
    assert_eq!(m("go-w", 0o777, false), 0o755);
    assert_eq!(m("a=rX", 0o600, true), 0o555);
    assert_eq!(m("a=rX", 0o600, false), 0o444);
    assert_eq!(m("u=rwx,g=u,o=", 0o000, false), 0o770);
    assert!(Chmod::parse("z+q").is_none() && Chmod::parse("9999").is_none());
}
