use super::*;

fn matcher(patterns: &[&str]) -> IgnoreMatcher {
    IgnoreMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

/// `(pattern, path, pattern alone matches the path, path or a parent is excluded)`.
const SINGLE: &[(&str, &str, bool, bool)] = &[
    ("**", "file", true, true),
    ("**", "dir/file", true, true),
    ("**/", "file", true, true),
    ("**/**", "dir/file", true, true),
    ("dir/**", "dir/file", true, true),
    ("dir/**", "dir/dir2/file", true, true),
    ("dir/**", "dir", false, false),
    ("**/dir", "dir", true, true),
    ("**/dir", "a/b/dir", true, true),
    ("**/dir", "dir/file", false, true),
    ("**/dir", "xdir", false, false),
    ("**/dir2/*", "dir/dir2/file", true, true),
    ("**/dir2/**", "dir/dir2/dir3/file", true, true),
    ("**file", "file", true, true),
    ("**file", "dir/dir/file", true, true),
    ("**file", "dir/xfile", true, true),
    ("**/file*", "dir/dir/file.txt", true, true),
    ("**/file*.txt", "dir/dir/file.txt", true, true),
    ("**/**/*.txt", "file.txt", true, true),
    ("**/**/*.txt2", "dir/dir/file.txt", false, false),
    ("a**/*.txt", "a/dir/dir/file.txt", true, true),
    ("a/*.txt", "a/dir/file.txt", false, false),
    ("a/*.txt", "a/file.txt", true, true),
    ("a/*.txt**", "a/file.txt", true, true),
    ("a[b-d]e", "ace", true, true),
    ("a[b-d]e", "aae", false, false),
    ("a[b-d]e", "ae", false, false),
    ("a[^b-d]e", "aze", true, true),
    ("a[\\]x]e", "a]e", true, true),
    ("[\\-x]", "-", true, true),
    ("[x\\-]", "z", false, false),
    ("[a-ζ]*", "α", true, true),
    (".*", ".foo", true, true),
    (".*", "foo", false, false),
    ("abc.def", "abcZdef", false, false),
    ("abc?def", "abcZdef", true, true),
    ("abc?def", "abc/def", false, false),
    ("a?b", "a☺b", true, true),
    ("a???b", "a☺b", false, false),
    ("a(b)c/def", "a(b)c/def", true, true),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true, true),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
        true,
    ),
    ("a\\\\", "a\\", true, true),
    ("a\\*b", "a*b", true, true),
    ("a\\*b", "axb", false, false),
    ("*", "abc", true, true),
    ("*", "a/b", false, true),
    ("a*", "ab/c", false, true),
    ("a*/b", "a/c/b", false, false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, true),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true, true),
    ("docs", "docs/a/b", false, true),
    ("./docs/../src/", "src/main.rs", false, true),
    ("^abc", "^abc", true, true),
    ("^abc", "abc", false, false),
    ("*^b", "a^b", false, false),
    ("^*b", "ab", true, true),
];

#[test]
fn single_patterns() {
    for &(pattern, path, alone, excluded) in SINGLE {
        let m = matcher(&[pattern]);
        let first = &m.patterns()[0];
        assert_eq!(
            first.matches(path),
            alone,
            "pattern {pattern:?} alone on {path:?}"
        );
        assert_eq!(
            m.is_excluded(path),
            excluded,
            "pattern {pattern:?} excluding {path:?}"
        );
    }
}

#[test]
fn later_patterns_win() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs", "!docs/README.md"], "docs/other.md", true),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy-1.0-py3-none-any.whl",
            false,
        ),
        (&["ba*", "Dockerfile", "!bay", ".dockerignore"], "bar", true),
        (
            &["ba*", "Dockerfile", "!bay", ".dockerignore"],
            "bay",
            false,
        ),
        (
            &["ba*", "Dockerfile", "!bay", ".dockerignore"],
            "foo",
            false,
        ),
        (
            &["ba*", "Dockerfile", "!bay", ".dockerignore"],
            "Dockerfile",
            true,
        ),
        (&["*", "!a", "a/b"], "a/b/c", true),
        (&["*", "!a", "a/b"], "a/c", false),
    ];
    for (patterns, path, excluded) in cases {
        assert_eq!(
            matcher(patterns).is_excluded(path),
            *excluded,
            "{patterns:?} on {path:?}"
        );
    }
}

#[test]
fn context_root_is_never_excluded() {
    let m = matcher(&["*", "**", "."]);
    assert!(!m.is_excluded("."));
    assert!(!m.is_excluded(""));
    assert!(!m.is_excluded("/"));
    assert!(m.is_excluded("anything"));
}

#[test]
fn malformed_patterns_are_errors() {
    for bad in [
        "[", "[^", "[^bc", "a[", "\\", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "!", "[z-a]",
    ] {
        assert!(
            IgnoreMatcher::new([bad]).is_err(),
            "{bad:?} should be refused"
        );
    }
    let error = IgnoreMatcher::new(["!"]).err();
    assert_eq!(
        error.map(|e| e.to_string()).as_deref(),
        Some("illegal exclusion pattern: \"!\"")
    );
    assert!(IgnoreMatcher::new(["", "   "]).is_ok_and(|m| m.is_empty()));
}

#[test]
fn dockerignore_file_reading() {
    let text = b"\xEF\xBB\xBFtest1\n/test2\r\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n  # indented is a pattern\n";
    let m = IgnoreMatcher::from_dockerignore(text).unwrap_or_else(|e| panic!("{e}"));
    let patterns: Vec<(bool, &str)> = m
        .patterns()
        .iter()
        .map(|p| (p.is_exclusion(), p.pattern()))
        .collect();
    assert_eq!(
        patterns,
        vec![
            (false, "test1"),
            (false, "test2"),
            (false, "a/file/here"),
            (false, "lastfile"),
            (true, "inverted/abs/path"),
            (false, "# indented is a pattern"),
        ]
    );
    assert!(m.has_exclusions());
    assert!(
        m.is_excluded("test2/sub"),
        "a leading / means the context root"
    );
    assert!(
        !IgnoreMatcher::new(["/test2"]).is_ok_and(|m| m.is_excluded("test2")),
        "COPY --exclude keeps it"
    );
    let error = IgnoreMatcher::from_dockerignore(b"ok\n\n!\n").err();
    assert_eq!(error.and_then(|e| e.line), Some(3));
    assert!(IgnoreMatcher::from_dockerignore(b"! \n").is_err());
    assert!(IgnoreMatcher::from_dockerignore(b"!/\n").is_err());
}

#[test]
fn skipping_directories() {
    let m = matcher(&["node_modules", "build/**", "!build/keep"]);
    assert!(m.may_skip_dir("node_modules"));
    assert!(m.may_skip_dir("a/node_modules") == m.is_excluded("a/node_modules"));
    assert!(
        !m.may_skip_dir("build"),
        "build itself is not excluded by build/**"
    );
    assert!(!m.is_excluded("build"));
    assert!(m.is_excluded("build/tmp"));
    assert!(m.may_skip_dir("build/tmp"));
    assert!(!m.is_excluded("build/keep"));
    assert!(!m.may_skip_dir("src"));

    let m = matcher(&["docs", "!docs/README.md"]);
    assert!(!m.may_skip_dir("docs"), "an exception lives below docs");
    assert!(m.is_excluded("docs/guide"));
    assert!(m.may_skip_dir("docs/guide"));

    let m = matcher(&["*", "!*/keep.txt"]);
    assert!(
        !m.may_skip_dir("a"),
        "a wildcard exception may match below any directory"
    );
    assert!(m.may_skip_dir("a/b"), "*/keep.txt cannot match below a/b");

    let m = matcher(&["vendor", "!**/LICENSE"]);
    assert!(!m.may_skip_dir("vendor"));

    let m = matcher(&["cache", "!cache-keep"]);
    assert!(
        m.may_skip_dir("cache"),
        "cache-keep is a sibling, not a child"
    );
}

#[test]
fn clean_like_go() {
    let cases = [
        ("", "."),
        (".", "."),
        ("./a", "a"),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("a/../b", "b"),
        ("../a", "../a"),
        ("a/../..", ".."),
        ("/", "/"),
        ("/..", "/"),
        ("/a/./b/", "/a/b"),
        ("!foo/", "!foo"),
    ];
    for (input, want) in cases {
        assert_eq!(clean_path(input), want, "{input:?}");
    }
}

#[test]
fn compile_kinds_match_moby() {
    let kind = |p: &str| match &matcher(&[p]).patterns()[0].matcher {
        Matcher::Exact => "exact",
        Matcher::Prefix(_) => "prefix",
        Matcher::Suffix(_) => "suffix",
        Matcher::Tokens(_) => "regexp",
    };
    for (pattern, want) in [
        ("*", "regexp"),
        ("**", "suffix"),
        ("**/**", "regexp"),
        ("dir/**", "prefix"),
        ("**/dir", "suffix"),
        ("**/dir2/*", "regexp"),
        ("**file", "suffix"),
        ("a[b-d]e", "regexp"),
        ("abc.def", "exact"),
        ("**/foo/bar", "suffix"),
        ("a(b)c/def", "exact"),
    ] {
        assert_eq!(kind(pattern), want, "{pattern:?}");
    }
}
