//! Cache keys: the contract in `docs/cache-keys.md`. A key is the sha256 of a version tag and
//! an ordered list of named inputs; the same list is kept with the cache record so that a
//! later miss can say which input changed.

use std::collections::BTreeMap;

use dockerfile::IgnoreMatcher;
use oci::{Digest, Sha256Hasher};

use crate::context::{BuildContext, ContextEntry, ContextError, EntryKind};
use crate::copy::glob_match;

/// Bump when anything that feeds a key changes meaning: old records then simply miss.
pub const KEY_VERSION: &str = "strata-cache-v1";

/// More file inputs than this are summarized by one digest in the kept record (the key
/// still covers every file), so records stay small for large contexts.
const MAX_EXPLAINED_FILES: usize = 2000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyInputs {
    items: Vec<(String, String)>,
    files: Vec<(String, String)>,
}

impl KeyInputs {
    pub fn new(parent: &Digest) -> Self {
        let mut k = KeyInputs::default();
        k.push("parent", parent.to_string());
        k
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.items.push((name.into(), value.into()));
    }

    /// A file of a COPY selection: its path and what is copied of it.
    pub fn file(&mut self, path: String, what: String) {
        self.files.push((path, what));
    }

    pub fn key(&self) -> Digest {
        let mut h = Sha256Hasher::new();
        h.update(KEY_VERSION.as_bytes());
        for (k, v) in self.items.iter().chain(self.files.iter()) {
            h.update(&[0]);
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(v.as_bytes());
        }
        h.finish()
    }

    /// What to keep with the record for explaining a later miss.
    pub fn explained(&self) -> Vec<(String, String)> {
        let mut out = self.items.clone();
        if self.files.len() <= MAX_EXPLAINED_FILES {
            out.extend(
                self.files
                    .iter()
                    .map(|(p, w)| (format!("file {p}"), w.clone())),
            );
        } else {
            let mut h = Sha256Hasher::new();
            for (p, w) in &self.files {
                h.update(p.as_bytes());
                h.update(&[0]);
                h.update(w.as_bytes());
                h.update(&[0]);
            }
            out.push((
                format!("files ({} of them)", self.files.len()),
                h.finish().to_string(),
            ));
        }
        out
    }
}

/// Why `now` differs from `before`: the first changed inputs, in words.
pub fn explain_miss(before: &[(String, String)], now: &[(String, String)]) -> String {
    let old: BTreeMap<&str, &str> = before
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = now.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut reasons = Vec::new();
    if old.get("parent") != new.get("parent") {
        return "the step before it changed".to_string();
    }
    for (k, v) in &new {
        match old.get(k) {
            None => reasons.push(format!("{k} is new")),
            Some(o) if o != v => reasons.push(match k.strip_prefix("file ") {
                Some(path) => format!("file {} changed", crate::names::display(path)),
                None => format!("{k} changed ({} → {})", short(o), short(v)),
            }),
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            reasons.push(format!("{k} is gone"));
        }
    }
    if reasons.is_empty() {
        return "no earlier record of this step".to_string();
    }
    let more = reasons.len().saturating_sub(3);
    reasons.truncate(3);
    let mut text = reasons.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}

fn short(v: &str) -> String {
    if v.chars().count() > 40 {
        let mut s: String = v.chars().take(39).collect();
        s.push('…');
        s
    } else {
        v.to_string()
    }
}

/// Adds the context files a COPY of `sources` reads (after `.dockerignore`, minus
/// `excludes`) with their content hashes: path, type, mode, size, content, link target —
/// never mtime or owner (context files are copied as root's).
pub fn context_files(
    ctx: &BuildContext,
    sources: &[String],
    excludes: Option<&IgnoreMatcher>,
    inputs: &mut KeyInputs,
) -> Result<(), ContextError> {
    let mut selected: BTreeMap<&str, &ContextEntry> = BTreeMap::new();
    for pattern in sources {
        for top in matching_roots(ctx, pattern) {
            select_tree(ctx, &top, &mut selected, 0);
        }
    }
    for (path, entry) in selected {
        if excludes.is_some_and(|m| m.is_excluded(path)) {
            continue;
        }
        let what = match &entry.kind {
            EntryKind::File => format!(
                "file {:o} {} {}",
                entry.mode,
                entry.size,
                ctx.content_hash(path)?.hex()
            ),
            EntryKind::Dir => format!("dir {:o}", entry.mode),
            EntryKind::Symlink(t) => format!("symlink {t}"),
            EntryKind::Other => format!("other {:o}", entry.mode),
        };
        inputs.file(path.to_string(), what);
    }
    Ok(())
}

/// The context paths a source pattern names directly (wildcards matched per element).
fn matching_roots(ctx: &BuildContext, pattern: &str) -> Vec<String> {
    let rel = crate::plan::clean_path(&format!("/{pattern}"))
        .trim_start_matches('/')
        .to_string();
    if rel.is_empty() {
        return vec![String::new()];
    }
    if !rel.contains(['*', '?', '[']) {
        return vec![rel];
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.contains(&"**") {
        // `**` spans directories: the same matcher the copy uses decides.
        let Ok(matcher) = IgnoreMatcher::new([rel.as_str()]) else {
            return Vec::new();
        };
        return ctx
            .entries()
            .keys()
            .filter(|path| matcher.is_excluded(path))
            .cloned()
            .collect();
    }
    ctx.entries()
        .keys()
        .filter(|path| {
            let names: Vec<&str> = path.split('/').collect();
            names.len() == parts.len() && parts.iter().zip(&names).all(|(p, n)| glob_match(p, n))
        })
        .cloned()
        .collect()
}

/// A path, everything under it, and (for a top-level symlink, which COPY follows) what it
/// points to inside the context.
fn select_tree<'c>(
    ctx: &'c BuildContext,
    top: &str,
    out: &mut BTreeMap<&'c str, &'c ContextEntry>,
    depth: usize,
) {
    if top.is_empty() {
        out.extend(ctx.entries().iter().map(|(k, e)| (k.as_str(), e)));
        return;
    }
    if let Some((k, e)) = ctx.entries().get_key_value(top) {
        out.insert(k.as_str(), e);
    }
    let prefix = format!("{top}/");
    out.extend(
        ctx.entries()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, e)| (k.as_str(), e)),
    );
    if let Some(EntryKind::Symlink(target)) = ctx.entry(top).map(|e| &e.kind)
        && depth < 40
    {
        let base = std::path::Path::new(top)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let joined = if target.starts_with('/') {
            target.clone()
        } else {
            format!("/{base}/{target}")
        };
        let resolved = crate::plan::clean_path(&joined)
            .trim_start_matches('/')
            .to_string();
        select_tree(ctx, &resolved, out, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input_and_their_order() {
        let parent = Digest::of(b"p");
        let mut a = KeyInputs::new(&parent);
        a.push("instruction", "RUN x");
        let mut b = KeyInputs::new(&parent);
        b.push("instruction", "RUN y");
        assert_ne!(a.key(), b.key());
        let mut c = KeyInputs::new(&parent);
        c.push("instruction", "RUN x");
        assert_eq!(a.key(), c.key());
        c.file("f".into(), "file 644 1 ab".into());
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn misses_are_explained() {
        let before = vec![
            ("parent".to_string(), "p".to_string()),
            ("env A".to_string(), "1".to_string()),
            ("file src/main.rs".to_string(), "x".to_string()),
        ];
        let mut now = before.clone();
        now[2].1 = "y".into();
        assert_eq!(explain_miss(&before, &now), "file src/main.rs changed");
        now[1].1 = "2".into();
        assert_eq!(
            explain_miss(&before, &now),
            "env A changed (1 → 2); file src/main.rs changed"
        );
        now[0].1 = "q".into();
        assert_eq!(explain_miss(&before, &now), "the step before it changed");
    }

    #[test]
    fn context_selection_follows_patterns_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("src/a")).unwrap();
        std::fs::write(r.join("src/a/x.rs"), "x").unwrap();
        std::fs::write(r.join("Cargo.toml"), "t").unwrap();
        std::fs::write(r.join("README"), "r").unwrap();
        std::os::unix::fs::symlink("src", r.join("link")).unwrap();
        let ctx = BuildContext::scan(r, &IgnoreMatcher::new(Vec::<String>::new()).unwrap(), None)
            .unwrap();
        let names = |sources: &[&str]| {
            let mut k = KeyInputs::default();
            let s: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            context_files(&ctx, &s, None, &mut k).unwrap();
            k.files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&["src"]), ["src", "src/a", "src/a/x.rs"]);
        assert_eq!(names(&["*.toml"]), ["Cargo.toml"]);
        assert_eq!(names(&["src/**/*.rs"]), ["src/a/x.rs"]);
        assert_eq!(names(&["link"]), ["link", "src", "src/a", "src/a/x.rs"]);
        assert_eq!(names(&["."]).len(), 6);
    }
}
