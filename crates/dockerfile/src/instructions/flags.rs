//! BuildKit's `BFlags`: the `--name=value` flags an instruction accepts.

use crate::error::ErrorKind;
use crate::text::suggest;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    /// May be given several times (`--mount`, `--exclude`).
    Strings,
}

struct Definition {
    name: &'static str,
    kind: Kind,
    /// String flags: the value; bool flags: "true"/"false"; strings flags: unused.
    value: String,
    values: Vec<String>,
    used: bool,
}

/// The flags one instruction accepts, and their values after [`Flags::parse`].
pub(crate) struct Flags<'a> {
    words: &'a [String],
    definitions: Vec<Definition>,
    /// The word [`Flags::parse`] refused, by position.
    failed: Option<usize>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(words: &'a [String]) -> Self {
        Self {
            words,
            definitions: Vec::new(),
            failed: None,
        }
    }

    fn define(&mut self, name: &'static str, kind: Kind, default: &str) {
        self.definitions.push(Definition {
            name,
            kind,
            value: default.to_string(),
            values: Vec::new(),
            used: false,
        });
    }

    pub(crate) fn boolean(&mut self, name: &'static str) {
        self.define(name, Kind::Bool, "false");
    }

    pub(crate) fn string(&mut self, name: &'static str, default: &str) {
        self.define(name, Kind::String, default);
    }

    pub(crate) fn strings(&mut self, name: &'static str) {
        self.define(name, Kind::Strings, "");
    }

    /// Whether any flag words were given at all.
    pub(crate) fn given(&self) -> bool {
        !self.words.is_empty()
    }

    /// The flag names this instruction takes, as `--name`, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .definitions
            .iter()
            .map(|d| format!("--{}", d.name))
            .collect();
        names.sort();
        names
    }

    /// The position of the word that [`Flags::parse`] refused.
    pub(crate) fn failed(&self) -> Option<usize> {
        self.failed
    }

    /// Checks the words against the definitions, as `BFlags.Parse` does.
    pub(crate) fn parse(&mut self) -> Result<(), ErrorKind> {
        let words = self.words;
        for (index, word) in words.iter().enumerate() {
            match self.parse_word(word) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(kind) => {
                    self.failed = Some(index);
                    return Err(kind);
                }
            }
        }
        Ok(())
    }

    /// One word; `Ok(false)` for the `--` that ends the flags.
    fn parse_word(&mut self, word: &str) -> Result<bool, ErrorKind> {
        // The parser only produces words starting with `--`; a lone `--` ends the flags.
        let Some(body) = word.strip_prefix("--") else {
            return Err(ErrorKind::UnknownFlag {
                flag: word.to_string(),
                suggestion: None,
            });
        };
        if body.is_empty() {
            return Ok(false);
        }
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let names: Vec<&'static str> = self.definitions.iter().map(|d| d.name).collect();
        let Some(definition) = self.definitions.iter_mut().find(|d| d.name == name) else {
            return Err(ErrorKind::UnknownFlag {
                flag: name.to_string(),
                suggestion: suggest(name, names, true),
            });
        };
        if definition.used && definition.kind != Kind::Strings {
            return Err(ErrorKind::DuplicateFlag {
                flag: name.to_string(),
            });
        }
        definition.used = true;
        match (definition.kind, value) {
            (Kind::Bool, Some("")) => {
                return Err(ErrorKind::FlagMissingValue {
                    flag: name.to_string(),
                });
            }
            (Kind::Bool, value) => {
                let lower = value.unwrap_or_default().to_lowercase();
                definition.value = match lower.as_str() {
                    "" | "true" => "true".to_string(),
                    "false" => lower,
                    _ => {
                        return Err(ErrorKind::FlagNotBoolean {
                            flag: name.to_string(),
                            value: value.unwrap_or_default().to_string(),
                        });
                    }
                };
            }
            (_, None) => {
                return Err(ErrorKind::FlagMissingValue {
                    flag: name.to_string(),
                });
            }
            (Kind::String, Some(value)) => definition.value = value.to_string(),
            (Kind::Strings, Some(value)) => definition.values.push(value.to_string()),
        }
        Ok(true)
    }

    fn get(&self, name: &str) -> Option<&Definition> {
        self.definitions.iter().find(|d| d.name == name)
    }

    /// A string flag's value; the empty string (BuildKit's "unset") becomes `None`.
    pub(crate) fn value(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|d| d.value.clone())
            .filter(|v| !v.is_empty())
    }

    /// A string flag's value, with its default when not given.
    pub(crate) fn value_or_default(&self, name: &str) -> String {
        self.get(name).map(|d| d.value.clone()).unwrap_or_default()
    }

    pub(crate) fn is_true(&self, name: &str) -> bool {
        self.get(name).is_some_and(|d| d.value == "true")
    }

    pub(crate) fn is_used(&self, name: &str) -> bool {
        self.get(name).is_some_and(|d| d.used)
    }

    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.get(name).map(|d| d.values.clone()).unwrap_or_default()
    }

    /// The names of the flags that were given, in definition order.
    pub(crate) fn used(&self) -> Vec<String> {
        self.definitions
            .iter()
            .filter(|d| d.used)
            .map(|d| d.name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_like_bflags() {
        let given = words(&[
            "--link",
            "--chown=a:b",
            "--exclude=x",
            "--exclude=y",
            "--",
            "--ignored",
        ]);
        let mut flags = Flags::new(&given);
        flags.boolean("link");
        flags.string("chown", "");
        flags.strings("exclude");
        assert_eq!(flags.parse(), Ok(()));
        assert!(flags.is_true("link"));
        assert_eq!(flags.value("chown").as_deref(), Some("a:b"));
        assert_eq!(flags.values("exclude"), words(&["x", "y"]));
        assert_eq!(flags.used(), words(&["link", "chown", "exclude"]));
    }

    #[test]
    fn refuses_bad_flags() {
        let check = |given: &[&str]| {
            let given = words(given);
            let mut flags = Flags::new(&given);
            flags.boolean("link");
            flags.string("chmod", "");
            flags.parse().err()
        };
        assert_eq!(
            check(&["--chmd=1"]),
            Some(ErrorKind::UnknownFlag {
                flag: "chmd".into(),
                suggestion: Some("chmod".into())
            })
        );
        assert_eq!(
            check(&["--chmod"]),
            Some(ErrorKind::FlagMissingValue {
                flag: "chmod".into()
            })
        );
        assert_eq!(
            check(&["--link="]),
            Some(ErrorKind::FlagMissingValue {
                flag: "link".into()
            })
        );
        assert_eq!(
            check(&["--link=yes"]),
            Some(ErrorKind::FlagNotBoolean {
                flag: "link".into(),
                value: "yes".into()
            })
        );
        assert_eq!(
            check(&["--chmod=1", "--chmod=2"]),
            Some(ErrorKind::DuplicateFlag {
                flag: "chmod".into()
            })
        );
        assert_eq!(check(&["--link=FALSE"]), None);
    }
}
