//! The BuildKit conformance corpus (see `shared/conformance/FORMAT.md`): parser cases, the
//! line-number case, the derived heredoc vectors, and the shell lexer's `envVarTest`,
//! `wordsTest` and modifier vectors. The corpus is read in place, never copied; if it is
//! missing, every test here fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use dockerfile::{
    CaseInsensitiveEnv, Expander, dump, dump_record, heredocs_from_line, parse, parse_heredoc,
};
use serde_json::Value;

fn corpus() -> PathBuf {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/conformance"
            ))
        });
    assert!(
        dir.join("FORMAT.md").is_file(),
        "the BuildKit conformance corpus is missing at {} (set STRATA_CONFORMANCE_DIR to its folder)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn parser_dir() -> PathBuf {
    corpus().join("buildkit/frontend/dockerfile/parser")
}

fn shell_dir() -> PathBuf {
    corpus().join("buildkit/frontend/dockerfile/shell")
}

fn line_diff(expected: &str, actual: &str) -> String {
    let mut out = String::new();
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    for i in 0..expected.len().max(actual.len()) {
        let (e, a) = (expected.get(i), actual.get(i));
        if e != a {
            let _ = writeln!(
                out,
                "  line {}:\n    expected: {:?}\n    actual:   {:?}",
                i + 1,
                e,
                a
            );
        }
    }
    out
}

#[test]
fn positive_parser_cases_dump_exactly() {
    let cases = case_dirs(&parser_dir().join("testfiles"));
    assert_eq!(
        cases.len(),
        33,
        "expected the 33 positive cases of the corpus"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = read_text(&case.join("result"));
        match parse(&read(&case.join("Dockerfile"))) {
            Ok(ast) => {
                let actual = dump(&ast);
                if actual != expected {
                    failures.push(format!(
                        "{name}: dump differs\n{}",
                        line_diff(&expected, &actual)
                    ));
                }
            }
            Err(error) => failures.push(format!("{name}: refused: {error}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_parser_cases_are_refused() {
    let cases = case_dirs(&parser_dir().join("testfiles-negative"));
    assert_eq!(
        cases.len(),
        4,
        "expected the 4 negative cases of the corpus"
    );
    for case in &cases {
        let result = parse(&read(&case.join("Dockerfile")));
        assert!(
            result.is_err(),
            "{} was accepted: {:?}",
            case.display(),
            result.map(|ast| dump(&ast))
        );
    }
}

#[test]
fn line_numbers_match_buildkit() {
    let ast =
        parse(&read(&parser_dir().join("testfile-line/Dockerfile"))).expect("testfile-line parses");
    let span = ast.span();
    assert_eq!((span.start, span.end), (5, 31));
    let ranges: Vec<(usize, usize)> = ast
        .records
        .iter()
        .map(|r| (r.span.start, r.span.end))
        .collect();
    assert_eq!(ranges, vec![(5, 5), (11, 12), (17, 31)]);
    let keywords: Vec<String> = ast.records.iter().map(|r| r.command.name()).collect();
    assert_eq!(keywords, ["from", "env", "run"]);
    assert_eq!(ast.warnings.len(), 1, "one empty continuation line warning");
}

fn check_heredoc_file(stem: &str) {
    let dir = corpus().join("derived/heredoc");
    let expected = read_json(&dir.join(format!("{stem}.expected.json")));
    let ast = parse(&read(&dir.join(format!("{stem}.Dockerfile")))).expect("heredoc file parses");
    assert_eq!(
        Some(dump(&ast).as_str()),
        expected["full_dump"].as_str(),
        "{stem}: full dump"
    );
    assert_eq!(
        Some(ast.warnings.len() as u64),
        expected["warnings"].as_u64(),
        "{stem}: warnings"
    );
    let instructions = expected["instructions"]
        .as_array()
        .expect("instructions array");
    assert_eq!(
        ast.records.len(),
        instructions.len(),
        "{stem}: instruction count"
    );
    for (record, want) in ast.records.iter().zip(instructions) {
        let at = format!("{stem} instruction {}", want["index"]);
        assert_eq!(
            Some(dump_record(record).as_str()),
            want["dump"].as_str(),
            "{at}: dump"
        );
        assert_eq!(
            Some(record.span.start as u64),
            want["start_line"].as_u64(),
            "{at}: start line"
        );
        assert_eq!(
            Some(record.span.end as u64),
            want["end_line"].as_u64(),
            "{at}: end line"
        );
        let heredocs = want["heredocs"].as_array().expect("heredocs array");
        assert_eq!(record.heredocs.len(), heredocs.len(), "{at}: heredoc count");
        for (heredoc, want) in record.heredocs.iter().zip(heredocs) {
            assert_eq!(
                Some(heredoc.name.as_str()),
                want["name"].as_str(),
                "{at}: name"
            );
            assert_eq!(Some(heredoc.fd), want["fd"].as_u64(), "{at}: fd");
            assert_eq!(
                Some(heredoc.expand),
                want["expand"].as_bool(),
                "{at}: expand"
            );
            assert_eq!(Some(heredoc.chomp), want["chomp"].as_bool(), "{at}: chomp");
            assert_eq!(
                Some(heredoc.content.as_str()),
                want["content"].as_str(),
                "{at}: content"
            );
        }
    }
}

#[test]
fn derived_heredoc_extraction() {
    check_heredoc_file("extracts-heredoc");
}

#[test]
fn derived_json_form_has_no_heredocs() {
    check_heredoc_file("json-heredoc");
}

#[test]
fn derived_heredoc_words_and_lines() {
    let expected = read_json(&corpus().join("derived/heredoc/heredoc-words.expected.json"));
    let words = expected["parse_heredoc_word"]
        .as_array()
        .expect("parse_heredoc_word");
    assert_eq!(words.len(), 20);
    for case in words {
        let word = case["word"].as_str().expect("word");
        let got = parse_heredoc(word);
        match case["result"].as_str() {
            Some("heredoc") => {
                let heredoc = got
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("{word:?} should be a heredoc"));
                assert_eq!(
                    Some(heredoc.name.as_str()),
                    case["name"].as_str(),
                    "{word:?}"
                );
                assert_eq!(Some(heredoc.fd), case["fd"].as_u64(), "{word:?}");
                assert_eq!(Some(heredoc.expand), case["expand"].as_bool(), "{word:?}");
                assert_eq!(Some(heredoc.chomp), case["chomp"].as_bool(), "{word:?}");
            }
            Some("not_heredoc") => assert!(
                matches!(got, Ok(None)),
                "{word:?} is not a heredoc: {got:?}"
            ),
            Some("error") => {
                let error = got.expect_err(&format!("{word:?} should fail"));
                assert_eq!(
                    Some(error.to_string().as_str()),
                    case["error"].as_str(),
                    "{word:?}"
                );
            }
            other => panic!("unknown result {other:?}"),
        }
    }
    let lines = expected["heredocs_from_line"]
        .as_array()
        .expect("heredocs_from_line");
    assert_eq!(lines.len(), 10);
    for case in lines {
        let line = case["line"].as_str().expect("line");
        let names: Vec<String> = heredocs_from_line(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .into_iter()
            .map(|h| h.name)
            .collect();
        let want: Vec<String> = case["names"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        assert_eq!(names, want, "{line:?}");
    }
}

/// Splits an `envVarTest` line into its three trimmed fields.
fn env_var_rows() -> Vec<(String, String, String)> {
    let text = read_text(&shell_dir().join("envVarTest"));
    let mut rows = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "malformed envVarTest line {line:?}");
        let [platform, source, expected] =
            [fields[0], fields[1], fields[2]].map(|f| f.trim().to_string());
        rows.push((platform, source, expected));
    }
    rows
}

fn check_env_var_rows<E: dockerfile::Env>(platform: &str, env: &E) -> usize {
    let lexer = Expander::new('\\');
    let mut failures = Vec::new();
    let mut count = 0;
    for (tag, source, expected) in env_var_rows() {
        assert!(
            matches!(tag.as_str(), "A" | "U" | "W"),
            "unknown platform tag {tag:?}"
        );
        if tag != "A" && tag != platform {
            continue;
        }
        count += 1;
        let got = lexer.process_word(&source, env);
        let ok = match (&got, expected.as_str()) {
            (Err(_), "error") => true,
            (Ok(text), want) => text == want && want != "error",
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!("{source:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{platform}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

const ENV_VAR_TEST_ENV: [(&str, &str); 4] = [
    ("PWD", "/home"),
    ("SHELL", "bash"),
    ("KOREAN", "한국어"),
    ("NULL", ""),
];

#[test]
fn env_var_test_unix() {
    let env: Vec<(&str, &str)> = ENV_VAR_TEST_ENV.to_vec();
    assert_eq!(check_env_var_rows("U", &env), 228);
}

#[test]
fn env_var_test_windows() {
    let env: CaseInsensitiveEnv = ENV_VAR_TEST_ENV.into_iter().collect();
    assert_eq!(check_env_var_rows("W", &env), 228);
}

#[test]
fn words_test() {
    let text = read_text(&shell_dir().join("wordsTest"));
    let lexer = Expander::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut cases = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(definition) = line.strip_prefix("ENV ") {
            let definition = definition.trim_start_matches(' ');
            let (name, value) = definition.split_once('=').expect("ENV name=value");
            env.push((name.to_string(), value.to_string()));
            continue;
        }
        let (input, expected) = line.split_once('|').expect("INPUT | EXPECTED");
        let (input, expected) = (input.trim(), expected.trim_start_matches(' '));
        cases += 1;
        let got = lexer.process_words(input, &env);
        let ok = match &got {
            Err(_) => expected == "error",
            Ok(words) => expected != "error" && *words == expected.split(',').collect::<Vec<_>>(),
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert_eq!(cases, 24);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn derived_lexer_modifiers() {
    let cases = read_json(&corpus().join("derived/lexer/process-word-modifiers.expected.json"));
    let cases = cases.as_array().expect("array of cases");
    assert_eq!(cases.len(), 53);
    let lexer = Expander::new('\\');
    let mut failures = Vec::new();
    for case in cases {
        let input = case["input"].as_str().expect("input");
        let env: BTreeMap<String, String> = case["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let got = lexer.process(input, &env);
        match (case["result"].as_str(), &got) {
            (Some(want), Ok(expansion)) => {
                let matched: Vec<String> = expansion.matched.iter().cloned().collect();
                let unmatched: Vec<String> = expansion.unmatched.iter().cloned().collect();
                if expansion.text != want
                    || matched != names(&case["matched"])
                    || unmatched != names(&case["unmatched"])
                {
                    failures.push(format!(
                        "{input:?} with {env:?}: expected {want:?} {} {}, got {expansion:?}",
                        case["matched"], case["unmatched"]
                    ));
                }
            }
            (None, Err(error)) => {
                if Some(error.to_string().as_str()) != case["error"].as_str() {
                    failures.push(format!(
                        "{input:?}: expected error {}, got {error}",
                        case["error"]
                    ));
                }
            }
            (want, got) => failures.push(format!(
                "{input:?} with {env:?}: expected {want:?}, got {got:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
