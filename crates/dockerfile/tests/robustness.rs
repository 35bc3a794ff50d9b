//! The parser, the typed layer, the expander and the ignore matcher must never panic: feed
//! them many pseudo-random Dockerfile-shaped inputs (a fixed seed, so failures reproduce).

use dockerfile::{
    Dockerfile, EmptyEnv, Expander, IgnoreMatcher, dump, heredocs_from_line, parse, parse_heredoc,
};

/// xorshift64*: small, deterministic, good enough to mix fragments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&[u8]] = &[
    b"FROM ",
    b"RUN ",
    b"COPY ",
    b"ADD ",
    b"ENV ",
    b"LABEL ",
    b"ARG ",
    b"ONBUILD ",
    b"HEALTHCHECK ",
    b"CMD ",
    b"ENTRYPOINT ",
    b"SHELL ",
    b"EXPOSE ",
    b"VOLUME ",
    b"USER ",
    b"WORKDIR ",
    b"STOPSIGNAL ",
    b"MAINTAINER ",
    b"FOO ",
    b"AS ",
    b"NONE",
    b"CMD",
    b"--mount=type=cache,target=/x ",
    b"--from=",
    b"--chmod=",
    b"--",
    b"-",
    b"=",
    b"a",
    b"b1",
    b"$x",
    b"${",
    b"}",
    b"${a:-",
    b"${a#",
    b"${a//",
    b"/",
    b":",
    b"?",
    b"*",
    b"**",
    b"[",
    b"]",
    b"[\"",
    b"\",",
    b"\"",
    b"'",
    b"\\",
    b"`",
    b"<<",
    b"<<-",
    b"EOF",
    b"'EOF'",
    b"3<<",
    b" ",
    b"  ",
    b"\t",
    b"\n",
    b"\r\n",
    b"\\\n",
    b"`\n",
    b"# c\n",
    b"# escape=`\n",
    b"# syntax=x\n",
    b"#",
    b"!",
    b"\xc3\xa9",
    b"\xe2\x99\xa5",
    b"\xff",
    b"\xc3",
    b"\xa0",
    b"\x85",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\\u0000",
    b"\\ud800",
    b"0",
    b"9",
    b"{",
    b"(",
    b")",
    b"|",
    b".",
    b",",
    b"'\\''",
];

fn random_input(rng: &mut Rng) -> Vec<u8> {
    let mut input = Vec::new();
    for _ in 0..rng.below(60) {
        input.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
    }
    input
}

fn exercise(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let lexer = Expander::new('\\');
    let env = vec![("a", "x y"), ("x", "")];
    let _ = lexer.process(&text, &env);
    let _ = lexer
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset(true)
        .process(&text, &EmptyEnv);
    let _ = Expander::new('`').skip_quotes(true).process(&text, &env);
    let _ = heredocs_from_line(&text);
    let _ = parse_heredoc(&text);
    let _ = IgnoreMatcher::from_dockerignore(input).map(|m| {
        m.is_excluded(&text);
        m.may_skip_dir(&text);
    });
    if let Ok(ast) = parse(input) {
        let _ = dump(&ast);
        for record in &ast.records {
            for arg in &record.command.args {
                let _ = lexer.process(arg, &env);
            }
        }
        if let Ok(file) = Dockerfile::from_ast(&ast) {
            for stage in &file.stages {
                for instruction in &stage.instructions {
                    if let dockerfile::Instruction::Run(run) = &instruction.value {
                        for mount in &run.mounts {
                            let _ = mount.resolve(|v| lexer.process_word(v, &env));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn random_inputs_never_panic() {
    // STRATA_ROBUSTNESS_ITERATIONS and STRATA_ROBUSTNESS_SEED allow longer searches by hand.
    let iterations = std::env::var("STRATA_ROBUSTNESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("STRATA_ROBUSTNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_d00d);
    let mut rng = Rng(seed);
    for _ in 0..iterations {
        let input = random_input(&mut rng);
        exercise(&input);
    }
}

#[test]
fn pathological_inputs_never_panic() {
    let cases: Vec<Vec<u8>> = vec![
        b"ONBUILD ".repeat(8000),
        [b"RUN ".as_slice(), &b"${a:-".repeat(10_000)].concat(),
        [b"RUN <<".as_slice(), &b"${a:-".repeat(10_000)].concat(),
        [b"CMD ".as_slice(), &b"[".repeat(30_000)].concat(),
        [b"FROM a\nRUN ".as_slice(), &b"\\\n".repeat(20_000)].concat(),
        [b"FROM a\nCOPY ".as_slice(), &b"<<A ".repeat(5_000), b"/\n"].concat(),
        vec![b'x'; 70_000],
        b"\\".to_vec(),
        b"`".to_vec(),
        Vec::new(),
    ];
    for case in cases {
        exercise(&case);
    }
}
