//! Just enough of a shell reader to see which commands a RUN line runs: it splits a script
//! into simple commands at `&&`, `||`, `;`, `|`, `&`, parentheses and newlines, removes
//! quotes and escapes, drops comments, leading `VAR=value` assignments and wrappers such as
//! `sudo` or `env`. It does not expand anything; words that still hold a `$` are left as
//! written, and the rules that look at paths skip them.

/// The simple commands of a script, each as its words.
pub(crate) fn commands(script: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    let end_command = |words: &mut Vec<String>, out: &mut Vec<Vec<String>>| {
        let cmd = strip_prefixes(std::mem::take(words));
        if !cmd.is_empty() {
            out.push(cmd);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('\n') | None => {}
                            Some(n @ ('"' | '\\' | '$' | '`')) => word.push(n),
                            Some(n) => {
                                word.push('\\');
                                word.push(n);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(n) => {
                    in_word = true;
                    word.push(n);
                }
            },
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                end_word(&mut word, &mut in_word, &mut words);
                end_command(&mut words, &mut out);
            }
            ';' | '|' | '&' | '\n' | '(' | ')' => {
                end_word(&mut word, &mut in_word, &mut words);
                end_command(&mut words, &mut out);
            }
            c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut words),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut words);
    end_command(&mut words, &mut out);
    out
}

/// Drops `VAR=value` assignments and command wrappers from the front of a command.
fn strip_prefixes(mut words: Vec<String>) -> Vec<String> {
    loop {
        let Some(first) = words.first() else {
            return words;
        };
        let is_assignment = first.split_once('=').is_some_and(|(name, _)| is_name(name));
        let is_wrapper = matches!(
            first.as_str(),
            "sudo"
                | "env"
                | "exec"
                | "time"
                | "nice"
                | "nohup"
                | "command"
                | "then"
                | "do"
                | "else"
                | "!"
                | "{"
                | "}"
                | "if"
                | "while"
                | "until"
        );
        if !(is_assignment || is_wrapper) {
            return words;
        }
        words.remove(0);
        // `sudo -u x cmd`, `env -i cmd`: drop the wrapper's own options too.
        while words.first().is_some_and(|w| w.starts_with('-')) {
            words.remove(0);
        }
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The program name of a command (`/usr/bin/apt-get` → `apt-get`).
pub(crate) fn program(words: &[String]) -> &str {
    let first = words.first().map_or("", String::as_str);
    first.rsplit('/').next().unwrap_or(first)
}

/// The words after the program that are not options.
pub(crate) fn operands(words: &[String]) -> Vec<&str> {
    words
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|w| !w.starts_with('-'))
        .collect()
}

/// Whether the command has option `name` (`-o`, `--output`, or a bundle such as `-xzf` for
/// a one-letter name).
pub(crate) fn has_option(words: &[String], short: Option<char>, long: Option<&str>) -> bool {
    words.iter().skip(1).any(|w| {
        if let Some(long) = long
            && (w == long || w.starts_with(&format!("{long}=")))
        {
            return true;
        }
        if let Some(short) = short
            && w.starts_with('-')
            && !w.starts_with("--")
        {
            return w[1..].contains(short);
        }
        false
    })
}

/// The value of an option given as `-o VALUE`, `-oVALUE`, `--output VALUE` or
/// `--output=VALUE`.
pub(crate) fn option_value(
    words: &[String],
    short: Option<&str>,
    long: Option<&str>,
) -> Option<String> {
    let mut iter = words.iter().skip(1).peekable();
    let mut found = None;
    while let Some(w) = iter.next() {
        if let Some(long) = long {
            if w == long {
                found = iter.peek().map(|v| v.to_string());
                continue;
            }
            if let Some(v) = w.strip_prefix(&format!("{long}=")) {
                found = Some(v.to_string());
                continue;
            }
        }
        if let Some(short) = short {
            if w == short {
                found = iter.peek().map(|v| v.to_string());
                continue;
            }
            if let Some(v) = w.strip_prefix(short)
                && !w.starts_with("--")
                && !v.is_empty()
            {
                found = Some(v.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_scripts_into_commands() {
        let got = commands(
            "set -e; apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \"curl\" \\\n  wget # tools\nrm -rf '/var/lib/apt/lists/*' | cat",
        );
        assert_eq!(
            got,
            vec![
                words(&["set", "-e"]),
                words(&["apt-get", "update"]),
                words(&["apt-get", "install", "-y", "curl", "wget"]),
                words(&["rm", "-rf", "/var/lib/apt/lists/*"]),
                words(&["cat"]),
            ]
        );
        assert_eq!(
            commands("sudo -E pip install x")[0],
            words(&["pip", "install", "x"])
        );
        assert_eq!(program(&words(&["/usr/bin/apt-get", "x"])), "apt-get");
    }

    #[test]
    fn options_and_operands() {
        let w = words(&["curl", "-fsSL", "-o", "/tmp/x.tgz", "https://e/x.tgz"]);
        assert_eq!(
            option_value(&w, Some("-o"), Some("--output")).as_deref(),
            Some("/tmp/x.tgz")
        );
        assert!(has_option(&w, Some('L'), None));
        assert_eq!(operands(&w), ["/tmp/x.tgz", "https://e/x.tgz"]);
        let w = words(&["tar", "-xzf", "a.tgz", "--directory=/opt"]);
        assert_eq!(
            option_value(&w, Some("-C"), Some("--directory")).as_deref(),
            Some("/opt")
        );
    }
}
