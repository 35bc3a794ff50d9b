//! The build context: the files a build may COPY, after `.dockerignore`, with content hashes
//! that cost nothing on an unchanged rebuild.
//!
//! A scan stats every file (that is unavoidable and cheap); contents are hashed only when a
//! step asks, and a persistent stat cache (path → device, inode, size, mtime, ctime → hash)
//! answers for files whose stat has not changed. As in git, an entry whose mtime is too close
//! to the moment the cache was written is "racy" and re-hashed next time, so a file modified
//! within the same timestamp tick is never mistaken for unchanged.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dockerfile::IgnoreMatcher;
use oci::{Digest, Sha256Hasher};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading the build context at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a context path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(String),
    /// Fifos, sockets, devices: BuildKit copies sockets as empty files and refuses the rest;
    /// the copier decides, the context only reports them.
    Other,
}

/// One file of the context, as stat saw it.
#[derive(Clone, Debug)]
pub struct ContextEntry {
    pub kind: EntryKind,
    /// Permission bits (and setuid/setgid/sticky), without the file type.
    pub mode: u32,
    pub size: u64,
    stat: StatKey,
}

/// The parts of a stat that change whenever content could have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl StatKey {
    fn of(meta: &std::fs::Metadata) -> StatKey {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A change within this margin before the cache was written is treated as racy: the file
/// may change again within the same timestamp tick without its mtime moving. Linux
/// filesystems stamp files from the kernel's coarse clock (a few milliseconds per tick), so
/// 100 ms is ample; a context on a filesystem with coarser timestamps (FAT's 2 s) could see
/// a racy change missed, which is why the rule exists at all.
const RACY_MARGIN_NS: i128 = 100_000_000;

#[derive(Default, Serialize, Deserialize)]
struct StatCacheFile {
    written_at_ns: i128,
    entries: HashMap<String, (StatKey, String)>,
}

/// The scanned context.
pub struct BuildContext {
    root: PathBuf,
    entries: BTreeMap<String, ContextEntry>,
    cache_file: Option<PathBuf>,
    previous: StatCacheFile,
    /// Content hashes known in this build, as hex.
    hashes: Mutex<HashMap<String, String>>,
    /// How many files had to be read to hash them (for tests and `--explain-cache`).
    reads: Mutex<usize>,
}

impl BuildContext {
    /// Walks `root`, leaving out what `ignore` excludes, loading the stat cache from
    /// `cache_file` when given.
    pub fn scan(
        root: &Path,
        ignore: &IgnoreMatcher,
        cache_file: Option<PathBuf>,
    ) -> Result<BuildContext, ContextError> {
        let mut entries = BTreeMap::new();
        walk(root, ignore, &mut entries)?;
        add_implicit_parents(&mut entries);
        let previous = cache_file
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        Ok(BuildContext {
            root: root.to_path_buf(),
            entries,
            cache_file,
            previous,
            hashes: Mutex::new(HashMap::new()),
            reads: Mutex::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every included path (relative, `/`-separated, no leading `./`), sorted.
    pub fn entries(&self) -> &BTreeMap<String, ContextEntry> {
        &self.entries
    }

    pub fn entry(&self, rel: &str) -> Option<&ContextEntry> {
        self.entries.get(rel)
    }

    /// The sha256 of a regular file's content: from the stat cache when the file's stat is
    /// unchanged and not racy, otherwise by reading it.
    pub fn content_hash(&self, rel: &str) -> Result<Digest, ContextError> {
        let hex = self.content_hash_hex(rel)?;
        Digest::parse_hex(&hex).map_err(|e| ContextError::Io {
            path: self.root.join(rel),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// [`Self::content_hash`] as 64 hex digits, the form cache keys and the stat cache use,
    /// so a no-op rebuild never converts thousands of digests back and forth.
    pub fn content_hash_hex(&self, rel: &str) -> Result<String, ContextError> {
        if let Some(d) = lock(&self.hashes).get(rel) {
            return Ok(d.clone());
        }
        let cached = self
            .entries
            .get(rel)
            .and_then(|e| self.previous.fresh(rel, e))
            .filter(|hex| hex.len() == 64)
            .cloned();
        let hex = match cached {
            Some(hex) => hex,
            None => {
                *lock(&self.reads) += 1;
                hash_file(&self.root.join(rel))?.hex()
            }
        };
        lock(&self.hashes).insert(rel.to_string(), hex.clone());
        Ok(hex)
    }

    /// Files whose content had to be read so far.
    pub fn files_read(&self) -> usize {
        *lock(&self.reads)
    }

    /// Writes the stat cache: every hash known now (computed or carried over), stamped with
    /// the current time for the racy check. Nothing is written when the cache would say what it
    /// already says (no file read, every entry still there, unchanged and no longer racy).
    pub fn save_stat_cache(&self, now_ns: i128) -> Result<(), ContextError> {
        let Some(path) = &self.cache_file else {
            return Ok(());
        };
        let hashes = lock(&self.hashes);
        let mut out = StatCacheFile {
            written_at_ns: now_ns,
            entries: HashMap::new(),
        };
        let mut unchanged = self.files_read() == 0;
        for (rel, entry) in &self.entries {
            let hex = match hashes.get(rel) {
                Some(hex) => {
                    unchanged &= self.previous.fresh(rel, entry).is_some();
                    hex.clone()
                }
                None => match self.previous.entries.get(rel) {
                    Some((key, hex)) if *key == entry.stat => {
                        unchanged &= self.previous.fresh(rel, entry).is_some();
                        hex.clone()
                    }
                    _ => continue,
                },
            };
            out.entries.insert(rel.clone(), (entry.stat, hex));
        }
        if unchanged && out.entries.len() == self.previous.entries.len() {
            return Ok(());
        }
        let io_err = |source| ContextError::Io {
            path: path.clone(),
            source,
        };
        let data = serde_json::to_vec(&out).map_err(|e| io_err(io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    }
}

impl StatCacheFile {
    /// The recorded hash of `rel`, if its stat is unchanged and was not racy when recorded.
    fn fresh(&self, rel: &str, entry: &ContextEntry) -> Option<&String> {
        let (key, hex) = self.entries.get(rel)?;
        let trusted = *key == entry.stat
            && key.mtime_ns + RACY_MARGIN_NS < self.written_at_ns
            && key.ctime_ns + RACY_MARGIN_NS < self.written_at_ns;
        trusted.then_some(hex)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hash_file(path: &Path) -> Result<Digest, ContextError> {
    let io_err = |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Lists the context in two passes: a traversal that only reads directories (their entries'
/// types come with the listing), then the stats, spread over the machine's cores — a
/// no-op rebuild of a large context is mostly this.
fn walk(
    root: &Path,
    ignore: &IgnoreMatcher,
    out: &mut BTreeMap<String, ContextEntry>,
) -> Result<(), ContextError> {
    let mut found: Vec<String> = Vec::new();
    list(root, "", ignore, &mut found)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = found.len().div_ceil(threads).max(1);
    let stated: Vec<Result<Vec<(String, ContextEntry)>, ContextError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = found
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|rel| {
                                let path = root.join(rel);
                                let meta = std::fs::symlink_metadata(&path).map_err(|source| {
                                    ContextError::Io {
                                        path: path.clone(),
                                        source,
                                    }
                                })?;
                                Ok((rel.clone(), entry_of(&path, &meta)?))
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(ContextError::Io {
                            path: root.to_path_buf(),
                            source: io::Error::other("a context scanning thread panicked"),
                        })
                    })
                })
                .collect()
        });
    for part in stated {
        out.extend(part?);
    }
    Ok(())
}

/// The included paths under `rel_dir`, from directory listings alone.
fn list(
    root: &Path,
    rel_dir: &str,
    ignore: &IgnoreMatcher,
    found: &mut Vec<String>,
) -> Result<(), ContextError> {
    let dir = if rel_dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel_dir)
    };
    let io_err = |source| ContextError::Io {
        path: dir.clone(),
        source,
    };
    for dir_entry in std::fs::read_dir(&dir).map_err(io_err)? {
        let dir_entry = dir_entry.map_err(io_err)?;
        let name = dir_entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let rel = if rel_dir.is_empty() {
            name.to_string()
        } else {
            format!("{rel_dir}/{name}")
        };
        let is_dir = dir_entry.file_type().map_err(io_err)?.is_dir();
        let excluded = ignore.is_excluded(&rel);
        if is_dir {
            if excluded && ignore.may_skip_dir(&rel) {
                continue;
            }
            if !excluded {
                found.push(rel.clone());
            }
            list(root, &rel, ignore, found)?;
        } else if !excluded {
            found.push(rel);
        }
    }
    Ok(())
}

fn entry_of(path: &Path, meta: &std::fs::Metadata) -> Result<ContextEntry, ContextError> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| ContextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        EntryKind::Symlink(target.to_string_lossy().into_owned())
    } else {
        EntryKind::Other
    };
    Ok(ContextEntry {
        kind,
        mode: meta.mode() & 0o7777,
        size: if ft.is_file() { meta.size() } else { 0 },
        stat: StatKey::of(meta),
    })
}

/// A file re-included by a `!` exception under an excluded directory still needs its parent
/// directories in the context.
fn add_implicit_parents(entries: &mut BTreeMap<String, ContextEntry>) {
    let mut missing = Vec::new();
    for rel in entries.keys() {
        for ancestor in Path::new(rel).ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            let p = ancestor.to_string_lossy().into_owned();
            if !entries.contains_key(&p) {
                missing.push(p);
            }
        }
    }
    for p in missing {
        entries.entry(p).or_insert(ContextEntry {
            kind: EntryKind::Dir,
            mode: 0o755,
            size: 0,
            stat: StatKey {
                dev: 0,
                ino: 0,
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(lines: &str) -> IgnoreMatcher {
        IgnoreMatcher::from_dockerignore(lines.as_bytes()).unwrap()
    }

    fn now_ns() -> i128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128
    }

    #[test]
    fn scan_honours_dockerignore_with_exceptions() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("logs/keep")).unwrap();
        std::fs::write(r.join("logs/a.log"), "a").unwrap();
        std::fs::write(r.join("logs/keep/b.log"), "b").unwrap();
        std::fs::write(r.join("main.rs"), "fn main(){}").unwrap();
        std::os::unix::fs::symlink("main.rs", r.join("link")).unwrap();
        let ctx = BuildContext::scan(r, &matcher("logs\n!logs/keep/b.log\n"), None).unwrap();
        let paths: Vec<&str> = ctx.entries().keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["link", "logs", "logs/keep", "logs/keep/b.log", "main.rs"]
        );
        assert_eq!(
            ctx.entry("link").unwrap().kind,
            EntryKind::Symlink("main.rs".into())
        );
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("ctx");
        std::fs::create_dir(&r).unwrap();
        for i in 0..50 {
            std::fs::write(r.join(format!("f{i}")), format!("content {i}")).unwrap();
        }
        let cache = dir.path().join("stat.json");
        let first = BuildContext::scan(&r, &matcher(""), Some(cache.clone())).unwrap();
        let want = first.content_hash("f7").unwrap();
        for i in 0..50 {
            first.content_hash(&format!("f{i}")).unwrap();
        }
        assert_eq!(first.files_read(), 50);
        // Written "later" than the files' mtimes plus the racy margin.
        first
            .save_stat_cache(now_ns() + 10 * RACY_MARGIN_NS)
            .unwrap();

        let second = BuildContext::scan(&r, &matcher(""), Some(cache.clone())).unwrap();
        assert_eq!(second.content_hash("f7").unwrap(), want);
        assert_eq!(second.files_read(), 0);

        // A changed file is re-read, even with the same size.
        std::fs::write(r.join("f7"), "content X").unwrap();
        let third = BuildContext::scan(&r, &matcher(""), Some(cache)).unwrap();
        assert_ne!(third.content_hash("f7").unwrap(), want);
        assert_eq!(third.files_read(), 1);
    }

    #[test]
    fn racy_entries_are_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("ctx");
        std::fs::create_dir(&r).unwrap();
        std::fs::write(r.join("f"), "x").unwrap();
        let cache = dir.path().join("stat.json");
        let first = BuildContext::scan(&r, &matcher(""), Some(cache.clone())).unwrap();
        first.content_hash("f").unwrap();
        first.save_stat_cache(now_ns()).unwrap();
        let second = BuildContext::scan(&r, &matcher(""), Some(cache)).unwrap();
        second.content_hash("f").unwrap();
        assert_eq!(
            second.files_read(),
            1,
            "a file as new as the cache is not trusted"
        );
    }
}
