//! COPY and ADD: BuildKit's file-copy semantics (tonistiigi/fsutil `copy`), written by hand
//! because no crate implements them.
//!
//! The copy runs in a thread that has made the destination filesystem its root directory
//! (`sandbox::enter_root`), so every destination path, `..` and symlink resolves inside it as
//! the kernel resolves it. The source is reached through a directory fd opened before that,
//! and is only ever walked relative to that fd: its top-level paths follow symlinks (resolved
//! by hand, inside the source root), everything below is read as it is.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dockerfile::IgnoreMatcher;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::names::{display, fs_path, link_target, name_from_bytes};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("\"{0}\": not found")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy to non-directory: {0}")]
    NotADirectory(String),
    #[error("cannot replace to directory {0} with file")]
    ReplaceDirectory(String),
    #[error("{0}")]
    Invalid(String),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let context = context.into();
    move |source| CopyError::Io { context, source }
}

/// A `--chmod` value: octal, or chmod(1)'s symbolic form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<SymbolicClause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolicClause {
    who: u32,
    op: char,
    perms: String,
}

impl Chmod {
    pub fn parse(s: &str) -> Option<Chmod> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        parse_symbolic_mode(s).map(Chmod::Symbolic)
    }

    /// The new permission bits for an entry that had `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => clauses
                .iter()
                .fold(mode & 0o7777, |m, c| c.apply(m, is_dir)),
        }
    }
}

impl SymbolicClause {
    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let any_exec = mode & 0o111 != 0;
        let mut bits = 0u32;
        for p in self.perms.chars() {
            bits |= match p {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || any_exec => 0o111,
                's' => 0o6000,
                't' => 0o1000,
                'u' => copy_class(mode, 6),
                'g' => copy_class(mode, 3),
                'o' => copy_class(mode, 0),
                _ => 0,
            };
        }
        let mask = self.who;
        match self.op {
            '+' => mode | (bits & mask),
            '-' => mode & !(bits & mask),
            _ => (mode & !mask) | (bits & mask),
        }
    }
}

/// The rwx bits of one class (shift 6 user, 3 group, 0 other), spread to all three classes.
fn copy_class(mode: u32, shift: u32) -> u32 {
    let b = (mode >> shift) & 0o7;
    b | (b << 3) | (b << 6)
}

/// `[ugoa]*[+-=][rwxXstugo]*` clauses separated by commas.
pub fn parse_symbolic_mode(s: &str) -> Option<Vec<SymbolicClause>> {
    let mut out = Vec::new();
    for clause in s.split(',') {
        let op_at = clause.find(['+', '-', '='])?;
        let (who_text, rest) = clause.split_at(op_at);
        let mut who = 0u32;
        for c in who_text.chars() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        if who == 0 {
            who = 0o7777;
        }
        let mut chars = rest.chars();
        let op = chars.next()?;
        let perms: String = chars.collect();
        if !perms.chars().all(|c| "rwxXstugo".contains(c)) {
            return None;
        }
        out.push(SymbolicClause { who, op, perms });
    }
    (!out.is_empty()).then_some(out)
}

/// Where files come from, reached through a directory fd.
pub struct SourceRoot<'a> {
    pub root: OwnedFd,
    /// For the build context: only these relative paths exist (after .dockerignore).
    pub include: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// Keep source owners (stages and images); the context's files become root's.
    pub keep_owner: bool,
}

impl SourceRoot<'_> {
    pub fn open(dir: &Path) -> io::Result<OwnedFd> {
        rustix::fs::open(
            dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }

    fn visible(&self, rel: &str) -> bool {
        rel.is_empty() || self.include.is_none_or(|f| f(rel))
    }
}

/// What one COPY/ADD instruction asks for.
pub struct CopySpec<'a> {
    pub sources: &'a [String],
    /// Absolute; a trailing `/` means "into this directory".
    pub dest: &'a str,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
    pub parents: bool,
    pub excludes: Option<IgnoreMatcher>,
    /// Pins every mtime written (SOURCE_DATE_EPOCH).
    pub epoch: Option<i64>,
    /// ADD: unpack local tar archives into the destination.
    pub unpack: bool,
}

/// Copies into the current root (see the module doc). Archives that ADD unpacks are left
/// for [`Unpacks::run`], which must run after leaving the root: the extractor needs `/proc`.
pub fn copy(src: &SourceRoot<'_>, spec: &CopySpec<'_>) -> Result<Unpacks, CopyError> {
    let dest_is_dir = spec.dest.ends_with('/');
    let mut ctx = Copier {
        src,
        spec,
        links: HashMap::new(),
        dir_times: Vec::new(),
        unpacks: Vec::new(),
    };
    for pattern in spec.sources {
        let matches = ctx.expand_source(pattern)?;
        for rel in matches {
            ctx.copy_one(&rel, pattern, dest_is_dir)?;
        }
    }
    ctx.finish_dir_times()?;
    Ok(Unpacks(ctx.unpacks))
}

/// Archives to extract: the destination directory (opened inside the root, so it is the
/// right one whatever symlinks led there) and the source file.
#[must_use]
pub struct Unpacks(Vec<(OwnedFd, String)>);

impl Unpacks {
    /// Extracts each archive with the layer extractor, which keeps every entry inside its
    /// directory.
    pub fn run(self, src: &SourceRoot<'_>) -> Result<(), CopyError> {
        for (dir, path) in self.0 {
            let file = rustix::fs::openat(
                &src.root,
                fs_path(&path).as_ref(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(io::Error::from)
            .map_err(io_ctx(format!("reading /{}", display(&path))))?;
            let root = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&dir)
            ));
            let stream =
                archive_stream(file).map_err(io_ctx(format!("reading /{}", display(&path))))?;
            layer::apply(stream, &root, layer::ApplyMode::Flatten)
                .map_err(|e| CopyError::Invalid(format!("unpacking /{}: {e}", display(&path))))?;
        }
        Ok(())
    }
}

struct Copier<'a, 'b> {
    src: &'a SourceRoot<'b>,
    spec: &'a CopySpec<'a>,
    /// Source (dev, ino) → the first destination path written for it (hardlinks).
    links: HashMap<(u64, u64), PathBuf>,
    /// Directory mtimes, set last (writing into a directory changes its mtime).
    dir_times: Vec<(PathBuf, i64, i64)>,
    unpacks: Vec<(OwnedFd, String)>,
}

/// A source entry as stat saw it.
struct Node {
    kind: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    dev: u64,
    ino: u64,
    nlink: u64,
    rdev: u64,
}

fn node_of(st: &rustix::fs::Stat) -> Node {
    Node {
        kind: FileType::from_raw_mode(st.st_mode),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        dev: st.st_dev,
        ino: st.st_ino,
        #[allow(clippy::useless_conversion)]
        nlink: u64::from(st.st_nlink),
        rdev: st.st_rdev,
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path element.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let mut lo = p[i];
                    if lo == '\\' && i + 1 < p.len() {
                        i += 1;
                        lo = p[i];
                    }
                    let mut hi = lo;
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= *c && *c <= hi {
                        matched = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    return false;
                }
                matched != negate && go(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Cleans a source path to a relative one inside the source root (`/a/../b/` → `b`).
fn clean_rel(p: &str) -> String {
    crate::plan::clean_path(&format!("/{p}"))
        .trim_start_matches('/')
        .to_string()
}

const MAX_SYMLINKS: usize = 40;

impl Copier<'_, '_> {
    fn root(&self) -> BorrowedFd<'_> {
        self.src.root.as_fd()
    }

    fn lstat(&self, rel: &str) -> io::Result<rustix::fs::Stat> {
        let path = if rel.is_empty() { "." } else { rel };
        rustix::fs::statat(
            self.root(),
            fs_path(path).as_ref(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
    }

    /// Follows symlinks in `rel` (every component), never leaving the source root.
    fn resolve(&self, rel: &str) -> io::Result<String> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = rel
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let current = done.join("/");
            let st = self.lstat(&current)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc_eloop()));
                }
                let target =
                    rustix::fs::readlinkat(self.root(), fs_path(&current).as_ref(), Vec::new())
                        .map_err(io::Error::from)?;
                let target = link_target(target.as_bytes());
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
        }
        Ok(done.join("/"))
    }

    /// The source paths a pattern names: itself, or its wildcard matches (none is fine, as in
    /// BuildKit, but the directory before the first wildcard must exist).
    fn expand_source(&self, pattern: &str) -> Result<Vec<String>, CopyError> {
        let rel = clean_rel(pattern);
        let not_found = || CopyError::NotFound(format!("/{}", display(&rel)));
        if !has_wildcard(&rel) {
            let resolved = self.resolve(&rel).map_err(|_| not_found())?;
            if !self.src.visible(&resolved) || self.lstat(&resolved).is_err() {
                return Err(not_found());
            }
            return Ok(vec![rel]);
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let first_wild = parts.iter().position(|p| has_wildcard(p)).unwrap_or(0);
        let prefix = parts[..first_wild].join("/");
        let prefix_ok = self.resolve(&prefix).is_ok_and(|r| {
            self.lstat(&r)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        });
        if !prefix_ok {
            return Err(CopyError::Io {
                context: format!("lstat /{}", display(&prefix)),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        if parts.contains(&"**") {
            return self.expand_recursive(&rel, &prefix);
        }
        let mut candidates = vec![prefix];
        for part in &parts[first_wild..] {
            let mut next = Vec::new();
            for base in &candidates {
                if !has_wildcard(part) {
                    next.push(join_rel(base, part));
                    continue;
                }
                let Ok(dir) = self.resolve(base) else {
                    continue;
                };
                if self.lstat(&dir).is_err() {
                    continue;
                }
                for name in self.list(&dir).unwrap_or_default() {
                    if glob_match(part, &name) && self.src.visible(&join_rel(&dir, &name)) {
                        next.push(join_rel(base, &name));
                    }
                }
            }
            candidates = next;
        }
        candidates.retain(|c| {
            self.resolve(c)
                .is_ok_and(|r| self.src.visible(&r) && self.lstat(&r).is_ok())
        });
        candidates.sort();
        Ok(candidates)
    }

    /// A pattern with `**` (any number of directories, as in `.dockerignore`): every visible
    /// path below the pattern's fixed prefix that the pattern matches, leaving out paths
    /// inside a match (the match copies them already).
    fn expand_recursive(&self, pattern: &str, prefix: &str) -> Result<Vec<String>, CopyError> {
        let matcher = IgnoreMatcher::new([pattern])
            .map_err(|e| CopyError::Invalid(format!("{pattern}: {e}")))?;
        let mut out: Vec<String> = Vec::new();
        let mut pending = vec![prefix.to_string()];
        while let Some(dir) = pending.pop() {
            let Ok(real) = self.resolve(&dir) else {
                continue;
            };
            for name in self.list(&real).unwrap_or_default() {
                let rel = join_rel(&dir, &name);
                if !self.src.visible(&join_rel(&real, &name)) {
                    continue;
                }
                let is_dir = self
                    .lstat(&join_rel(&real, &name))
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if matcher.is_excluded(&rel) {
                    out.push(rel);
                } else if is_dir {
                    pending.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, CopyError> {
        let path = if dir.is_empty() { "." } else { dir };
        let fd = rustix::fs::openat(
            self.root(),
            fs_path(path).as_ref(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CopyError::Io {
            context: format!("reading /{}", display(dir)),
            source: e.into(),
        })?;
        let mut names = Vec::new();
        let d = rustix::fs::Dir::read_from(&fd)
            .map_err(io::Error::from)
            .map_err(io_ctx(format!("reading /{}", display(dir))))?;
        for entry in d {
            let entry = entry
                .map_err(io::Error::from)
                .map_err(io_ctx(format!("reading /{}", display(dir))))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name_from_bytes(name).ok_or_else(|| {
                    CopyError::Invalid(format!(
                        "/{dir}/{}: a file name holding a character from U+10FF80 to U+10FFFF \
                         cannot be copied (strata uses those to carry bytes that are not UTF-8)",
                        String::from_utf8_lossy(name)
                    ))
                })?);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Copies one matched source. `rel` is as matched (before symlink resolution).
    fn copy_one(&mut self, rel: &str, pattern: &str, dest_is_dir: bool) -> Result<(), CopyError> {
        let resolved = self
            .resolve(rel)
            .map_err(|_| CopyError::NotFound(format!("/{}", display(rel))))?;
        let st = self
            .lstat(&resolved)
            .map_err(|_| CopyError::NotFound(format!("/{}", display(rel))))?;
        let node = node_of(&st);
        let base_name = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest_root = self.spec.dest.trim_end_matches('/');
        let dest_root = if dest_root.is_empty() { "/" } else { dest_root };
        if self.spec.unpack && node.kind == FileType::RegularFile && self.is_archive(&resolved)? {
            return self.unpack(&resolved, Path::new(dest_root));
        }
        let target: PathBuf = if self.spec.parents {
            Path::new(dest_root).join(fs_path(&parents_path(pattern, rel)))
        } else if node.kind == FileType::Directory {
            PathBuf::from(dest_root)
        } else if dest_is_dir || fs::metadata(dest_root).is_ok_and(|m| m.is_dir()) {
            Path::new(dest_root).join(fs_path(&base_name))
        } else {
            PathBuf::from(dest_root)
        };
        if let Some(parent) = target.parent() {
            self.mkdir_all(parent)?;
        }
        if node.kind == FileType::Directory {
            // BuildKit creates the destination itself (`CreateDestPath`) before copying the
            // directory's contents into it, so a new destination gets mkdir's 0755 and the
            // --chown owner (root otherwise), not the source directory's metadata.
            match fs::metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(CopyError::NotADirectory(target.display().to_string())),
                Err(_) => self.mkdir_all(&target)?,
            }
            self.copy_dir_contents(&resolved, "", &target)
        } else {
            self.copy_entry(&resolved, &node, &target)
        }
    }

    fn excluded(&self, rel_in_source: &str) -> bool {
        self.spec
            .excludes
            .as_ref()
            .is_some_and(|m| !rel_in_source.is_empty() && m.is_excluded(rel_in_source))
    }

    fn copy_dir_contents(
        &mut self,
        src_dir: &str,
        rel_in_source: &str,
        dest_dir: &Path,
    ) -> Result<(), CopyError> {
        for name in self.list(src_dir)? {
            let src = join_rel(src_dir, &name);
            let rel = join_rel(rel_in_source, &name);
            if !self.src.visible(&src) || self.excluded(&rel) {
                continue;
            }
            let st = self
                .lstat(&src)
                .map_err(io_ctx(format!("lstat /{}", display(&src))))?;
            let node = node_of(&st);
            let target = dest_dir.join(fs_path(&name));
            if node.kind == FileType::Directory {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => self.set_metadata(&target, &node, true)?,
                    Ok(_) => return Err(CopyError::NotADirectory(target.display().to_string())),
                    Err(_) => self.make_dir(&target, &node)?,
                }
                self.copy_dir_contents(&src, &rel, &target)?;
            } else {
                self.copy_entry(&src, &node, &target)?;
            }
        }
        Ok(())
    }

    fn owner(&self, node: &Node) -> (u32, u32) {
        match self.spec.owner {
            Some(o) => o,
            None if self.src.keep_owner => (node.uid, node.gid),
            None => (0, 0),
        }
    }

    fn mode(&self, node: &Node, is_dir: bool) -> u32 {
        match &self.spec.chmod {
            Some(c) => c.apply(node.mode, is_dir),
            None => node.mode,
        }
    }

    fn mtime(&self, node: &Node) -> (i64, i64) {
        match self.spec.epoch {
            Some(e) => (e, 0),
            None => node.mtime,
        }
    }

    fn make_dir(&mut self, target: &Path, node: &Node) -> Result<(), CopyError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(target)
            .map_err(io_ctx(format!("creating {}", target.display())))?;
        self.set_metadata(target, node, true)
    }

    fn set_metadata(&mut self, target: &Path, node: &Node, is_dir: bool) -> Result<(), CopyError> {
        let (uid, gid) = self.owner(node);
        let ctx = || format!("setting metadata of {}", target.display());
        std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(io_ctx(ctx()))?;
        fs::set_permissions(target, fs::Permissions::from_mode(self.mode(node, is_dir)))
            .map_err(io_ctx(ctx()))?;
        let (s, ns) = self.mtime(node);
        if is_dir {
            self.dir_times.push((target.to_path_buf(), s, ns));
            Ok(())
        } else {
            set_times(target, s, ns).map_err(io_ctx(ctx()))
        }
    }

    /// Removes what stands at `target` so a non-directory can take its place.
    fn clear_for_file(target: &Path) -> Result<(), CopyError> {
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => Err(CopyError::ReplaceDirectory(target.display().to_string())),
            Ok(_) => {
                fs::remove_file(target).map_err(io_ctx(format!("replacing {}", target.display())))
            }
            Err(_) => Ok(()),
        }
    }

    fn copy_entry(&mut self, src: &str, node: &Node, target: &Path) -> Result<(), CopyError> {
        Self::clear_for_file(target)?;
        let ctx = || format!("copying /{} to {}", display(src), target.display());
        if node.nlink > 1 && node.kind != FileType::Directory {
            if let Some(first) = self.links.get(&(node.dev, node.ino)) {
                return fs::hard_link(first, target).map_err(io_ctx(ctx()));
            }
            self.links
                .insert((node.dev, node.ino), target.to_path_buf());
        }
        let (uid, gid) = self.owner(node);
        let (s, ns) = self.mtime(node);
        match node.kind {
            FileType::RegularFile | FileType::Socket => {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc_o_nofollow())
                    .mode(0o600)
                    .open(target)
                    .map_err(io_ctx(ctx()))?;
                if node.kind == FileType::RegularFile {
                    let fd = rustix::fs::openat(
                        self.root(),
                        fs_path(src).as_ref(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(io::Error::from)
                    .map_err(io_ctx(ctx()))?;
                    let mut input = File::from(fd);
                    io::copy(&mut input, &mut out).map_err(io_ctx(ctx()))?;
                    copy_xattrs(&input, &out);
                }
                rustix::fs::fchown(
                    &out,
                    Some(rustix::process::Uid::from_raw(uid)),
                    Some(rustix::process::Gid::from_raw(gid)),
                )
                .map_err(io::Error::from)
                .map_err(io_ctx(ctx()))?;
                out.set_permissions(fs::Permissions::from_mode(self.mode(node, false)))
                    .map_err(io_ctx(ctx()))?;
                set_times(target, s, ns).map_err(io_ctx(ctx()))
            }
            FileType::Symlink => {
                let link = rustix::fs::readlinkat(self.root(), fs_path(src).as_ref(), Vec::new())
                    .map_err(io::Error::from)
                    .map_err(io_ctx(ctx()))?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link.as_bytes()), target)
                    .map_err(io_ctx(ctx()))?;
                std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(io_ctx(ctx()))?;
                set_times(target, s, ns).map_err(io_ctx(ctx()))
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    target,
                    node.kind,
                    Mode::from_raw_mode(node.mode),
                    node.rdev,
                )
                .map_err(io::Error::from)
                .map_err(io_ctx(ctx()))?;
                std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(io_ctx(ctx()))?;
                fs::set_permissions(target, fs::Permissions::from_mode(self.mode(node, false)))
                    .map_err(io_ctx(ctx()))?;
                set_times(target, s, ns).map_err(io_ctx(ctx()))
            }
            _ => Ok(()),
        }
    }

    /// `mkdir -p` for destination parents (see [`make_dirs`]); their times are set last.
    fn mkdir_all(&mut self, dir: &Path) -> Result<(), CopyError> {
        let created = make_dirs(dir, self.spec.owner.unwrap_or((0, 0)))?;
        if let Some(e) = self.spec.epoch {
            self.dir_times
                .extend(created.into_iter().map(|d| (d, e, 0)));
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<(), CopyError> {
        for (path, s, ns) in self.dir_times.iter().rev() {
            set_times(path, *s, *ns)
                .map_err(io_ctx(format!("setting times of {}", path.display())))?;
        }
        Ok(())
    }

    fn open_source(&self, src: &str) -> Result<File, CopyError> {
        rustix::fs::openat(
            self.root(),
            fs_path(src).as_ref(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(io::Error::from)
        .map_err(io_ctx(format!("reading /{}", display(src))))
    }

    /// ADD unpacks a file when, after decompression, it starts with a valid tar header —
    /// by content, never by name.
    fn is_archive(&self, src: &str) -> Result<bool, CopyError> {
        let file = self.open_source(src)?;
        let Ok(mut reader) = archive_stream(file) else {
            return Ok(false);
        };
        let mut header = [0u8; 512];
        if io::Read::read_exact(&mut reader, &mut header).is_err() {
            return Ok(false);
        }
        Ok(valid_tar_header(&header))
    }

    /// Prepares an archive's destination directory; the extraction itself happens in
    /// [`Unpacks::run`].
    fn unpack(&mut self, src: &str, dir: &Path) -> Result<(), CopyError> {
        self.mkdir_all(dir)?;
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .map_err(io_ctx(format!("opening {}", dir.display())))?;
        self.unpacks.push((fd, src.to_string()));
        Ok(())
    }
}

/// `mkdir -p` inside the current root: each missing directory is created 0755 and owned by
/// `owner` (BuildKit's rule for COPY destinations and WORKDIR). Returns the ones created.
pub fn make_dirs(dir: &Path, owner: (u32, u32)) -> Result<Vec<PathBuf>, CopyError> {
    let mut created = Vec::new();
    let mut current = PathBuf::from("/");
    for c in dir.components().skip(1) {
        current.push(c);
        match fs::metadata(&current) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(CopyError::NotADirectory(current.display().to_string())),
            Err(_) => {
                let ctx = || format!("creating {}", current.display());
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .map_err(io_ctx(ctx()))?;
                fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                    .map_err(io_ctx(ctx()))?;
                std::os::unix::fs::lchown(&current, Some(owner.0), Some(owner.1))
                    .map_err(io_ctx(ctx()))?;
                created.push(current.clone());
            }
        }
    }
    Ok(created)
}

/// The uncompressed stream of an archive ADD may unpack: gzip, zstd, bzip2, xz or plain,
/// told apart by their magic bytes (BuildKit detects by content, never by file name).
fn archive_stream(file: File) -> io::Result<Box<dyn io::Read + Send>> {
    use io::BufRead;
    const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    let mut reader = io::BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf()?.to_vec();
    if head.starts_with(b"BZh") {
        return Ok(Box::new(bzip2::read::MultiBzDecoder::new(reader)));
    }
    if head.starts_with(XZ_MAGIC) {
        // lzma-rs decodes into a writer; a pipe and a thread turn that into a reader.
        let (read_end, mut write_end) = io::pipe()?;
        std::thread::spawn(move || {
            let _ = lzma_rs::xz_decompress(&mut reader, &mut write_end);
        });
        return Ok(Box::new(read_end));
    }
    layer::decompress(reader)
        .map(|d| Box::new(d) as Box<dyn io::Read + Send>)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// With `--parents`, the part of the source path that is kept under the destination: all of
/// it, or what follows a `/./` pivot in the pattern.
fn parents_path(pattern: &str, matched: &str) -> String {
    match pattern.find("/./") {
        Some(i) => {
            let skip = clean_rel(&pattern[..i])
                .split('/')
                .filter(|c| !c.is_empty())
                .count();
            matched.split('/').skip(skip).collect::<Vec<_>>().join("/")
        }
        None => matched.to_string(),
    }
}

fn valid_tar_header(h: &[u8; 512]) -> bool {
    let stored = std::str::from_utf8(&h[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let Some(stored) = stored else { return false };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Sets a path's access and modification times (not following a final symlink).
pub fn set_times(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// Extended attributes of a regular file (file capabilities above all); failures are
/// ignored, as BuildKit ignores them.
fn copy_xattrs(from: &File, to: &File) {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::flistxattr(from, &mut names) else {
        return;
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.")
            || name.starts_with(b"user.overlay.")
            || name == b"security.selinux"
        {
            continue;
        }
        let Ok(name) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::fgetxattr(from, name.as_c_str(), &mut value) {
            let _ = rustix::fs::fsetxattr(
                to,
                name.as_c_str(),
                &value[..len],
                rustix::fs::XattrFlags::empty(),
            );
        }
    }
}

fn libc_o_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

#[cfg(test)]
mod tests;
