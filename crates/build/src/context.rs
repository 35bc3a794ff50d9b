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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dockerfile::IgnoreMatcher;
use oci::{Digest, Sha256Hasher};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::names::{fs_path, link_target, name_from_bytes};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading the build context at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the build context holds a file name strata cannot carry: {path} (it contains a character from U+10FF80 to U+10FFFF, which strata uses to carry bytes that are not UTF-8)"
    )]
    UnsupportedName { path: PathBuf },
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl StatKey {
    fn of(st: &rustix::fs::Stat) -> StatKey {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        StatKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

/// A change within this margin before the cache was written is treated as racy: the file
/// may change again within the same timestamp tick without its mtime moving. Linux
/// filesystems stamp files from the kernel's coarse clock (a few milliseconds per tick), so
/// 100 ms is ample; a context on a filesystem with coarser timestamps (FAT's 2 s) could see
/// a racy change missed, which is why the rule exists at all.
const RACY_MARGIN_NS: i128 = 100_000_000;

#[derive(Default)]
struct StatCacheFile {
    written_at_ns: i128,
    entries: HashMap<String, (StatKey, Digest)>,
}

/// The stat cache on disk: a versioned magic, the write time, then per entry the path, the
/// stat key and the raw 32-byte hash. Binary rather than JSON because loading it is on the
/// no-op rebuild's critical path (JSON parsing was a fifth of it for 5,600 files).
const STAT_CACHE_MAGIC: &[u8; 8] = b"strstat1";

impl StatCacheFile {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 120);
        out.extend_from_slice(STAT_CACHE_MAGIC);
        out.extend_from_slice(&self.written_at_ns.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, (key, digest)) in &self.entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&key.dev.to_le_bytes());
            out.extend_from_slice(&key.ino.to_le_bytes());
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&key.mtime_ns.to_le_bytes());
            out.extend_from_slice(&key.ctime_ns.to_le_bytes());
            out.extend_from_slice(digest.sha256_bytes());
        }
        out
    }

    /// `None` for anything but a well-formed cache of this version (it is then rebuilt).
    fn decode(data: &[u8]) -> Option<StatCacheFile> {
        let mut r = Cursor { data, pos: 0 };
        if r.take(8)? != STAT_CACHE_MAGIC {
            return None;
        }
        let written_at_ns = i128::from_le_bytes(r.take(16)?.try_into().ok()?);
        let count = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let mut entries = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            let key = StatKey {
                dev: u64::from_le_bytes(r.take(8)?.try_into().ok()?),
                ino: u64::from_le_bytes(r.take(8)?.try_into().ok()?),
                size: u64::from_le_bytes(r.take(8)?.try_into().ok()?),
                mtime_ns: i128::from_le_bytes(r.take(16)?.try_into().ok()?),
                ctime_ns: i128::from_le_bytes(r.take(16)?.try_into().ok()?),
            };
            let digest = Digest::from_sha256_bytes(r.take(32)?.try_into().ok()?);
            entries.insert(path, (key, digest));
        }
        Some(StatCacheFile {
            written_at_ns,
            entries,
        })
    }
}

/// Reads consecutive fields out of a byte slice.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
}

/// The scanned context.
pub struct BuildContext {
    root: PathBuf,
    entries: BTreeMap<String, ContextEntry>,
    /// The fewest paths whose hiding leaves exactly `entries` visible: what `.dockerignore`
    /// excluded, minus directories kept as parents of re-included files, minus paths under
    /// another hidden one.
    hidden: Vec<String>,
    cache_file: Option<PathBuf>,
    previous: StatCacheFile,
    /// Content hashes known in this build.
    hashes: Mutex<HashMap<String, Digest>>,
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
        // The stat cache loads while the walk runs: neither needs the other until the end.
        let (walked, previous) = std::thread::scope(|scope| {
            let loading = scope.spawn(|| {
                cache_file
                    .as_deref()
                    .and_then(|p| std::fs::read(p).ok())
                    .and_then(|d| StatCacheFile::decode(&d))
                    .unwrap_or_default()
            });
            let walked = walk(root, ignore);
            (walked, loading.join().unwrap_or_default())
        });
        let (mut entries, excluded) = walked?;
        add_implicit_parents(&mut entries);
        let hidden = fewest_hiding(excluded, &entries);
        let known = previous.entries.len();
        Ok(BuildContext {
            root: root.to_path_buf(),
            entries,
            hidden,
            cache_file,
            previous,
            hashes: Mutex::new(HashMap::with_capacity(known)),
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

    /// Creates `mask`, an overlay layer that, stacked above the context, hides what
    /// `.dockerignore` excludes: a whiteout for each hidden path, under copies of the
    /// context's directories (overlay shows the topmost directory's owner, mode and times,
    /// so the copies carry the originals'). Returns false, creating nothing, when nothing is
    /// excluded, so the caller can mount the context bare.
    pub fn write_ignore_mask(&self, mask: &Path) -> Result<bool, ContextError> {
        if self.hidden.is_empty() {
            return Ok(false);
        }
        mirror_dir(&self.root, mask)?;
        let mut mirrored = vec![PathBuf::new()];
        for rel in &self.hidden {
            let rel = fs_path(rel);
            let mut done = PathBuf::new();
            for part in rel.parent().into_iter().flat_map(Path::components) {
                done.push(part);
                if !mask.join(&done).exists() {
                    mirror_dir(&self.root.join(&done), &mask.join(&done))?;
                    mirrored.push(done.clone());
                }
            }
            let path = mask.join(&rel);
            layer::make_whiteout(&path).map_err(|source| ContextError::Io { path, source })?;
        }
        // Last, as creating the whiteouts changed the copies' times.
        for rel in mirrored {
            copy_times(&self.root.join(&rel), &mask.join(&rel))?;
        }
        Ok(true)
    }

    /// The sha256 of a regular file's content: from the stat cache when the file's stat is
    /// unchanged and not racy, otherwise by reading it.
    pub fn content_hash(&self, rel: &str) -> Result<Digest, ContextError> {
        if let Some(d) = lock(&self.hashes).get(rel) {
            return Ok(d.clone());
        }
        let cached = self
            .entries
            .get(rel)
            .and_then(|e| self.previous.fresh(rel, e))
            .cloned();
        let digest = match cached {
            Some(digest) => digest,
            None => {
                *lock(&self.reads) += 1;
                hash_file(&self.root.join(fs_path(rel)))?
            }
        };
        lock(&self.hashes).insert(rel.to_string(), digest.clone());
        Ok(digest)
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
        // Unchanged: nothing was read, so every hash known came from a fresh recorded entry
        // (still there, same stat, no longer racy), and either there are as many as were
        // recorded (the common case, no lookups) or the ones not asked for are fresh too.
        let unchanged = self.files_read() == 0
            && (hashes.len() == self.previous.entries.len()
                || self.previous.entries.keys().all(|rel| {
                    self.entries
                        .get(rel)
                        .is_some_and(|e| self.previous.fresh(rel, e).is_some())
                }));
        if unchanged {
            return Ok(());
        }
        let mut out = StatCacheFile {
            written_at_ns: now_ns,
            entries: HashMap::with_capacity(self.entries.len()),
        };
        for (rel, entry) in &self.entries {
            let digest = match hashes.get(rel) {
                Some(digest) => digest.clone(),
                None => match self.previous.entries.get(rel) {
                    Some((key, digest)) if *key == entry.stat => digest.clone(),
                    _ => continue,
                },
            };
            out.entries.insert(rel.clone(), (entry.stat, digest));
        }
        let io_err = |source| ContextError::Io {
            path: path.clone(),
            source,
        };
        let data = out.encode();
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
    fn fresh(&self, rel: &str, entry: &ContextEntry) -> Option<&Digest> {
        let (key, digest) = self.entries.get(rel)?;
        let trusted = *key == entry.stat
            && key.mtime_ns + RACY_MARGIN_NS < self.written_at_ns
            && key.ctime_ns + RACY_MARGIN_NS < self.written_at_ns;
        trusted.then_some(digest)
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
) -> Result<(BTreeMap<String, ContextEntry>, Vec<String>), ContextError> {
    let mut dirs: Vec<String> = vec![String::new()];
    let mut found: Vec<Found> = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    list(root, 0, &mut dirs, ignore, &mut found, &mut excluded)?;
    // Each entry is stat'ed relative to its open directory: no path walk per file.
    let dir_fds = dirs
        .iter()
        .map(|d| {
            let path = root.join(fs_path(d));
            rustix::fs::open(
                &path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ContextError::Io {
                path,
                source: e.into(),
            })
        })
        .collect::<Result<Vec<OwnedFd>, _>>()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = found.len().div_ceil(threads).max(1);
    let mut parts = Vec::with_capacity(threads);
    while found.len() > chunk {
        let rest = found.split_off(chunk);
        parts.push(std::mem::replace(&mut found, rest));
    }
    parts.push(found);
    let dir_fds = &dir_fds;
    let stated: Vec<Result<Vec<(String, ContextEntry)>, ContextError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    scope.spawn(move || {
                        part.into_iter()
                            .map(|f| {
                                let entry =
                                    entry_of(dir_fds[f.dir].as_fd(), &f.name, &root.join(&f.rel))?;
                                Ok((f.rel, entry))
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
    let stated = stated.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut all = Vec::with_capacity(stated.iter().map(Vec::len).sum());
    for part in stated {
        all.extend(part);
    }
    // Sorted first, the map is built in one pass instead of by thousands of inserts.
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((all.into_iter().collect(), excluded))
}

/// Creates the directory `copy` with `real`'s owner and permissions (not its content).
fn mirror_dir(real: &Path, copy: &Path) -> Result<(), ContextError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let io_err = |source: io::Error| ContextError::Io {
        path: real.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(real).map_err(io_err)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(copy)
        .map_err(io_err)?;
    std::os::unix::fs::chown(copy, Some(meta.uid()), Some(meta.gid())).map_err(io_err)?;
    std::fs::set_permissions(copy, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err)
}

fn copy_times(real: &Path, copy: &Path) -> Result<(), ContextError> {
    let io_err = |source: io::Error| ContextError::Io {
        path: real.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(real).map_err(io_err)?;
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(io_err)?)
        .set_modified(meta.modified().map_err(io_err)?);
    File::open(copy)
        .and_then(|f| f.set_times(times))
        .map_err(io_err)
}

/// Of the excluded paths, those to hide: not the directories that still hold included files,
/// and nothing under a path already hidden (overlay cannot see past a whiteout anyway).
fn fewest_hiding(
    mut excluded: Vec<String>,
    entries: &BTreeMap<String, ContextEntry>,
) -> Vec<String> {
    // Sorted, a path comes after its ancestors, so checking the ones kept so far suffices.
    excluded.sort();
    let mut hidden: Vec<String> = Vec::new();
    let mut kept = std::collections::HashSet::new();
    for rel in excluded {
        let under_hidden = Path::new(&rel)
            .ancestors()
            .skip(1)
            .any(|a| kept.contains(a.to_string_lossy().as_ref()));
        if !under_hidden && !entries.contains_key(&rel) {
            kept.insert(rel.clone());
            hidden.push(rel);
        }
    }
    hidden
}

/// A path the listing found: its directory (an index into the listed directories), its name
/// there, and its path relative to the context.
struct Found {
    dir: usize,
    name: String,
    rel: String,
}

/// The included paths under the listed directory `dir_index`, from directory listings alone.
fn list(
    root: &Path,
    dir_index: usize,
    dirs: &mut Vec<String>,
    ignore: &IgnoreMatcher,
    found: &mut Vec<Found>,
    excluded_out: &mut Vec<String>,
) -> Result<(), ContextError> {
    let rel_dir = dirs[dir_index].clone();
    let dir = if rel_dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(fs_path(&rel_dir))
    };
    let io_err = |source| ContextError::Io {
        path: dir.clone(),
        source,
    };
    for dir_entry in std::fs::read_dir(&dir).map_err(io_err)? {
        let dir_entry = dir_entry.map_err(io_err)?;
        let name = dir_entry.file_name();
        let Some(name) = name_from_bytes(name.as_encoded_bytes()) else {
            return Err(ContextError::UnsupportedName {
                path: dir.join(&name),
            });
        };
        let name = name.as_str();
        let rel = if rel_dir.is_empty() {
            name.to_string()
        } else {
            format!("{rel_dir}/{name}")
        };
        let is_dir = dir_entry.file_type().map_err(io_err)?.is_dir();
        let excluded = ignore.is_excluded(&rel);
        if excluded {
            excluded_out.push(rel.clone());
        }
        if is_dir && excluded && ignore.may_skip_dir(&rel) {
            continue;
        }
        if !excluded {
            found.push(Found {
                dir: dir_index,
                name: name.to_string(),
                rel: rel.clone(),
            });
        }
        if is_dir {
            dirs.push(rel);
            list(root, dirs.len() - 1, dirs, ignore, found, excluded_out)?;
        }
    }
    Ok(())
}

fn entry_of(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<ContextEntry, ContextError> {
    let io_err = |source: io::Error| ContextError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = fs_path(name);
    let st = rustix::fs::statat(dir, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(e.into()))?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name.as_ref(), Vec::new())
                .map_err(|e| io_err(e.into()))?;
            EntryKind::Symlink(link_target(target.as_bytes()))
        }
        _ => EntryKind::Other,
    };
    Ok(ContextEntry {
        size: if kind == EntryKind::File {
            u64::try_from(st.st_size).unwrap_or(0)
        } else {
            0
        },
        kind,
        mode: st.st_mode & 0o7777,
        stat: StatKey::of(&st),
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
    fn the_ignore_mask_hides_the_fewest_paths() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in ["logs/a.log", "logs/keep/b.log", "a/x", "a-b", "kept.txt"] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), f).unwrap();
        }
        let ctx = BuildContext::scan(r, &matcher("logs\n!logs/keep/b.log\na*\n"), None).unwrap();
        assert_eq!(ctx.hidden, ["a", "a-b", "logs/a.log"]);
        let nothing = BuildContext::scan(r, &matcher(""), None).unwrap();
        assert!(!nothing.write_ignore_mask(&dir.path().join("mask")).unwrap());
        assert!(!dir.path().join("mask").exists());
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
        // Nothing new learned, whether every recorded file was asked for or only some: the
        // cache is left as it is (a rewrite would replace the file, and its inode).
        use std::os::unix::fs::MetadataExt;
        let inode = || std::fs::metadata(&cache).unwrap().ino();
        let before = inode();
        second.save_stat_cache(now_ns()).unwrap();
        assert_eq!(inode(), before);
        let all = BuildContext::scan(&r, &matcher(""), Some(cache.clone())).unwrap();
        for i in 0..50 {
            all.content_hash(&format!("f{i}")).unwrap();
        }
        all.save_stat_cache(now_ns()).unwrap();
        assert_eq!(inode(), before);

        // A changed file is re-read, even with the same size.
        std::fs::write(r.join("f7"), "content X").unwrap();
        let third = BuildContext::scan(&r, &matcher(""), Some(cache)).unwrap();
        assert_ne!(third.content_hash("f7").unwrap(), want);
        assert_eq!(third.files_read(), 1);
    }

    #[test]
    fn the_stat_cache_round_trips_and_refuses_garbage() {
        let mut file = StatCacheFile {
            written_at_ns: 42,
            ..Default::default()
        };
        let key = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 5,
        };
        file.entries.insert("a/b".into(), (key, Digest::of(b"ab")));
        let back = StatCacheFile::decode(&file.encode()).unwrap();
        assert_eq!(back.written_at_ns, 42);
        assert_eq!(back.entries.get("a/b"), Some(&(key, Digest::of(b"ab"))));
        let bytes = file.encode();
        for cut in 0..bytes.len() {
            assert!(StatCacheFile::decode(&bytes[..cut]).is_none() || cut == bytes.len());
        }
        assert!(StatCacheFile::decode(b"{\"json\": true}").is_none());
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
