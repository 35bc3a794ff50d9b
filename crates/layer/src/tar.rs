//! The streaming tar reader for untrusted input: layers, and image archives read in place.
//!
//! This module owns reading tar streams for the whole project (`apply` here, `analyze`
//! elsewhere); nothing else in strata parses tar headers from a stream.
//!
//! The tar crate parses each 512-byte header for us, but we walk the stream ourselves rather
//! than use its `Archive::entries`: that iterator reads PAX and GNU long-name records into
//! memory with no size limit (a compressed layer could declare gigabytes of "path"), and it
//! treats a few things differently from Go's archive/tar, which docker and containerd use. A
//! layer must mean the same thing to strata as to them, or an image could show one tree to a
//! scanner and another at run time. So, as in Go:
//! - header-only types (links, devices, directories, fifos) carry no data, whatever their
//!   size field says;
//! - an old-style regular entry (type `\0`) whose name ends in `/` is a directory;
//! - PAX `path`, `linkpath`, `size`, `uid`, `gid`, `mtime` override the header, and GNU
//!   long-name records are honoured; global PAX headers are ignored;
//! - the archive ends at the first all-zero block (or at a clean EOF between entries).
//!
//! Every buffered extension record is capped. Data nobody reads is skipped by reading it, or,
//! for a reader made with [`TarReader::seeking`], by seeking, so an archive file on disk is
//! walked without reading the layers it holds.
//!
//! Nothing here panics on malformed input; every problem is a [`ReadError`].

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

use crate::header::{PAX_XATTR_PREFIX, Pairs};

const BLOCK: u64 = 512;
/// Caps on metadata records that are buffered in memory. Real ones are tiny (a path is at most
/// 4 KiB, an xattr value 64 KiB); anything past these is hostile or broken.
const MAX_PAX_BYTES: u64 = 1 << 20;
const MAX_LONG_NAME_BYTES: u64 = 64 << 10;
/// How many extension headers may precede one entry.
const MAX_EXTENSION_HEADERS: usize = 64;

/// Why a tar stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream is not a well-formed tar; `String` says how.
    #[error("malformed tar: {0}")]
    Malformed(String),
    /// Reading the underlying stream failed (I/O, or a decompression error).
    #[error("{0}")]
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Malformed("the stream ends in the middle of an entry".into())
        } else {
            ReadError::Io(e)
        }
    }
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Malformed(msg.into()))
}

/// The kinds of entries a layer may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One entry's metadata, extension headers already folded in.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RawEntry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    /// Bytes of data the entry carries: 0 for every type but regular files.
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records, name without the prefix.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads a tar stream entry by entry: [`TarReader::next_entry`], then (optionally) the entry's
/// data with [`TarReader::read_data`].
pub struct TarReader<R> {
    inner: R,
    /// Unread data of the current entry.
    remaining: u64,
    /// Padding after the current entry's data, up to the next 512-byte boundary.
    padding: u64,
    finished: bool,
    /// Bytes consumed from `inner` (read or skipped) since the reader was made.
    position: u64,
    /// How skipped data is passed over: `None` reads it.
    seek: Option<Seeker<R>>,
}

/// Skipping by seeking, within a stream of known length.
struct Seeker<R> {
    forward: fn(&mut R, u64) -> io::Result<()>,
    /// Bytes from where the reader started to the end of the stream.
    len: u64,
}

impl<R: Read> TarReader<R> {
    /// A reader over any stream; data nobody reads is skipped by reading it.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            finished: false,
            position: 0,
            seek: None,
        }
    }

    /// The next entry, skipping whatever is left of the previous one; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>, ReadError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest_of_entry()?;

        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let Some(header) = self.read_header()? else {
                self.finished = true;
                if !pax.is_empty() || long_name.is_some() || long_link.is_some() {
                    return malformed("extension headers at the end of the archive");
                }
                return Ok(None);
            };
            let size = unsigned_field(&header.as_bytes()[124..136], "size")?;
            match header.entry_type().as_byte() {
                b'x' => {
                    let data = self.read_record(size, MAX_PAX_BYTES, "PAX header")?;
                    for (k, v) in parse_pax(&data)? {
                        pax.insert(k, v);
                    }
                }
                b'g' => {
                    // Global PAX headers describe the archive, not a file: ignored, as docker
                    // and containerd do.
                    self.start_data(size);
                    self.skip_rest_of_entry()?;
                }
                b'L' => {
                    long_name = Some(trim_nul(self.read_record(
                        size,
                        MAX_LONG_NAME_BYTES,
                        "GNU long name",
                    )?));
                }
                b'K' => {
                    long_link = Some(trim_nul(self.read_record(
                        size,
                        MAX_LONG_NAME_BYTES,
                        "GNU long link",
                    )?));
                }
                _ => {
                    return self
                        .entry(&header, size, pax, long_name, long_link)
                        .map(Some);
                }
            }
        }
        malformed(format!(
            "more than {MAX_EXTENSION_HEADERS} extension headers before one entry"
        ))
    }

    /// Reads the current entry's data. Ends (returns 0) at the end of the entry; fails if the
    /// stream ends first.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..want]).map_err(ReadError::from)?;
        if n == 0 {
            return malformed("the stream ends in the middle of a file's data");
        }
        self.remaining -= n as u64;
        self.position += n as u64;
        Ok(n)
    }

    /// Bytes consumed from the underlying stream (read or skipped) since this reader was
    /// made. Right after [`TarReader::next_entry`], it is where the entry's data starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, positioned after the end-of-archive block once `next_entry` has
    /// returned `None`.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn entry(
        &mut self,
        header: &tar::Header,
        header_size: u64,
        pax: BTreeMap<Vec<u8>, Vec<u8>>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<RawEntry, ReadError> {
        let path = match (pax.get(&b"path"[..]), long_name) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => header.path_bytes().into_owned(),
        };
        let link = match (pax.get(&b"linkpath"[..]), long_link) {
            (Some(l), _) => l.clone(),
            (None, Some(l)) => l,
            (None, None) => header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        };
        // The raw byte: the tar crate folds `\0` into `0`, but the difference matters here.
        let kind = match header.as_bytes()[156] {
            b'\0' if path.ends_with(b"/") => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'S' => return malformed("GNU sparse entries are not supported"),
            other => {
                return malformed(format!(
                    "unsupported entry type {:?}",
                    char::from(other).escape_default().to_string()
                ));
            }
        };
        let fields = header.as_bytes();
        let size = match kind {
            Kind::File => pax_number(&pax, b"size")?.unwrap_or(header_size),
            _ => 0,
        };
        if i64::try_from(size).is_err() {
            return malformed(format!("entry size {size} is out of range"));
        }
        let uid = match pax_number(&pax, b"uid")? {
            Some(v) => v,
            None => unsigned_field(&fields[108..116], "uid")?,
        };
        let gid = match pax_number(&pax, b"gid")? {
            Some(v) => v,
            None => unsigned_field(&fields[116..124], "gid")?,
        };
        let mtime = match pax_time(&pax)? {
            Some(t) => t,
            None => numeric_field(&fields[136..148], "mtime")?,
        };
        let mode = (unsigned_field(&fields[100..108], "mode")? & 0o7777) as u32;
        let (dev_major, dev_minor) = match kind {
            Kind::CharDevice | Kind::BlockDevice => (
                device_number(&fields[329..337], "major")?,
                device_number(&fields[337..345], "minor")?,
            ),
            _ => (0, 0),
        };
        let xattrs = pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(PAX_XATTR_PREFIX)
                    .map(|name| (name.to_vec(), v.clone()))
            })
            .collect();

        self.start_data(size);
        Ok(RawEntry {
            kind,
            path,
            link,
            size,
            mode,
            uid,
            gid,
            mtime,
            dev_major,
            dev_minor,
            xattrs,
        })
    }

    /// Reads one header block; `None` at the end of the archive (a zero block or a clean EOF).
    fn read_header(&mut self) -> Result<Option<tar::Header>, ReadError> {
        let mut header = tar::Header::new_old();
        let block = header.as_mut_bytes();
        let got = read_full(&mut self.inner, block)?;
        self.position += got as u64;
        if got == 0 {
            return Ok(None);
        }
        if got < block.len() {
            return malformed("the stream ends in the middle of a header");
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        verify_checksum(block)?;
        Ok(Some(header))
    }

    fn start_data(&mut self, size: u64) {
        self.remaining = size;
        self.padding = (BLOCK - size % BLOCK) % BLOCK;
    }

    /// Buffers an extension record's data, refusing absurd sizes before reading any of it.
    fn read_record(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>, ReadError> {
        if size > max {
            return malformed(format!(
                "{what} of {size} bytes is larger than the {max} allowed"
            ));
        }
        self.start_data(size);
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        self.position += data.len() as u64;
        if (data.len() as u64) < size {
            return malformed(format!("the stream ends inside a {what}"));
        }
        self.remaining = 0;
        self.skip_rest_of_entry()?;
        Ok(data)
    }

    fn skip_rest_of_entry(&mut self) -> Result<(), ReadError> {
        let todo = self.remaining.saturating_add(self.padding);
        if todo > 0 {
            let truncated = match &self.seek {
                Some(seek) => {
                    let past_end = self.position.saturating_add(todo) > seek.len;
                    if !past_end {
                        (seek.forward)(&mut self.inner, todo)?;
                    }
                    past_end
                }
                None => io::copy(&mut (&mut self.inner).take(todo), &mut io::sink())? < todo,
            };
            if truncated {
                return malformed("the stream ends in the middle of an entry");
            }
            self.position += todo;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }
}

impl<R: Read + Seek> TarReader<R> {
    /// A reader that skips data nobody reads by seeking, so an archive file is walked without
    /// reading the files it holds. The stream is read from its current position (position 0
    /// for [`TarReader::position`]); its length is taken now, so an entry that would reach past
    /// the end is a truncated archive, as when reading. A `BufReader` keeps its buffer across
    /// short skips.
    pub fn seeking(mut inner: R) -> io::Result<Self> {
        let start = inner.stream_position()?;
        let end = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(start))?;
        let mut reader = TarReader::new(inner);
        reader.seek = Some(Seeker {
            forward: seek_forward::<R>,
            len: end.saturating_sub(start),
        });
        Ok(reader)
    }
}

fn seek_forward<R: Seek>(r: &mut R, n: u64) -> io::Result<()> {
    let delta = i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    r.seek_relative(delta)
}

/// A tar path made relative to the root, `/`-separated, with `.` components and trailing
/// slashes removed, `..` taken lexically. `None` for the root itself and for paths that climb
/// above it.
pub fn clean_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Like `read_exact`, but reports how much was read instead of failing on a short stream.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The header checksum: the byte sum with the checksum field counted as spaces. Accepts the
/// signed variant some old tars wrote, as Go does.
fn verify_checksum(block: &[u8; 512]) -> Result<(), ReadError> {
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| !matches!(b, b' ' | 0))
        .collect();
    let stored = std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| i64::from_str_radix(s, 8).ok());
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    match stored {
        Some(s) if s == unsigned || s == signed => Ok(()),
        _ => malformed("header checksum mismatch (not a tar stream, or a corrupt one)"),
    }
}

/// Splits a PAX extended header into its records.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Pairs, ReadError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // Some writers pad the block with NULs after the last record.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let bad = || ReadError::Malformed("malformed PAX record".into());
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn pax_number(pax: &BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8]) -> Result<Option<u64>, ReadError> {
    let Some(v) = pax.get(key) else {
        return Ok(None);
    };
    match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
        Some(n) => Ok(Some(n)),
        None => malformed(format!(
            "PAX {} is not a number: {:?}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(v)
        )),
    }
}

/// PAX `mtime`, in whole seconds (the fraction is dropped, towards zero).
fn pax_time(pax: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Option<i64>, ReadError> {
    let Some(v) = pax.get(&b"mtime"[..]) else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(v);
    let whole = s.split('.').next().unwrap_or("");
    match whole.parse::<i64>() {
        Ok(t) => Ok(Some(t)),
        Err(_) if whole == "-" || whole.is_empty() => Ok(Some(0)),
        Err(_) => malformed(format!("PAX mtime is not a time: {s:?}")),
    }
}

fn device_number(field: &[u8], what: &str) -> Result<u32, ReadError> {
    let n = unsigned_field(field, what)?;
    u32::try_from(n).or_else(|_| malformed(format!("device {what} number {n} is out of range")))
}

fn unsigned_field(field: &[u8], what: &str) -> Result<u64, ReadError> {
    let n = numeric_field(field, what)?;
    u64::try_from(n).or_else(|_| malformed(format!("negative {what} field")))
}

/// A numeric header field as Go's archive/tar reads it: octal text, padded with spaces or
/// NULs on either side (all padding means 0), or GNU base-256 when the high bit of the first
/// byte is set (two's complement, so it can be negative).
fn numeric_field(field: &[u8], what: &str) -> Result<i64, ReadError> {
    let Some(&first) = field.first() else {
        return Ok(0);
    };
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0;
        let inv = if negative { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let mut c = b ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return malformed(format!("{what} field overflows"));
            }
            x = (x << 8) | u64::from(c);
        }
        let Ok(x) = i64::try_from(x) else {
            return malformed(format!("{what} field overflows"));
        };
        return Ok(if negative { !x } else { x });
    }
    let text = field
        .iter()
        .copied()
        .skip_while(|b| matches!(b, b' ' | 0))
        .collect::<Vec<u8>>();
    let end = text
        .iter()
        .rposition(|b| !matches!(b, b' ' | 0))
        .map_or(0, |i| i + 1);
    let text = &text[..end];
    if text.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| i64::from_str_radix(t, 8).ok())
        .filter(|_| text.iter().all(|b| (b'0'..=b'7').contains(b)))
        .map_or_else(
            || {
                malformed(format!(
                    "{what} field is not an octal number: {:?}",
                    String::from_utf8_lossy(text)
                ))
            },
            Ok,
        )
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_of(bytes: &[u8]) -> Result<Vec<(RawEntry, Vec<u8>)>, ReadError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((e, data));
        }
        Ok(out)
    }

    fn gnu_tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        // The tar crate's own writer, including its GNU long-name records.
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_mtime(1234);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_what_the_tar_crate_writes_including_gnu_long_names() {
        let long = format!("{}/file", "x".repeat(200));
        let bytes = gnu_tar_with(&[("a", b"hello"), (&long, b"")]);
        let got = entries_of(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.path, b"a");
        assert_eq!(got[0].1, b"hello");
        assert_eq!(got[0].0.mode, 0o640);
        assert_eq!(got[0].0.mtime, 1234);
        assert_eq!(got[1].0.path, long.as_bytes());
    }

    #[test]
    fn pax_records_override_the_header() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("path", &b"the/real/name"[..]),
            ("size", b"5"),
            ("uid", b"4000000"),
            ("mtime", b"-1.5"),
            ("SCHILY.xattr.user.k", b"v\0w"),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("short").unwrap();
        h.set_size(0); // PAX says 5: the data is there
        h.set_cksum();
        let mut bytes = b.get_ref().clone(); // without the end-of-archive blocks
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(b"hello");
        bytes.resize(bytes.len() + 507 + 1024, 0);
        let got = entries_of(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        let (e, data) = &got[0];
        assert_eq!(e.path, b"the/real/name");
        assert_eq!(data, b"hello");
        assert_eq!(e.uid, 4_000_000);
        assert_eq!(e.mtime, -1);
        assert_eq!(e.xattrs, vec![(b"user.k".to_vec(), b"v\0w".to_vec())]);
    }

    #[test]
    fn absurd_pax_sizes_are_malformed_not_overflows() {
        for size in [&b"18446744073709551615"[..], b"-1", b"1e9"] {
            let mut b = tar::Builder::new(Vec::new());
            b.append_pax_extensions([("size", size)]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path("f").unwrap();
            h.set_size(0);
            h.set_cksum();
            let mut bytes = b.get_ref().clone();
            bytes.extend_from_slice(h.as_bytes());
            assert!(matches!(entries_of(&bytes), Err(ReadError::Malformed(_))));
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        use crate::header::{EntryKind, EntryMeta, append_entry};
        let mut b = tar::Builder::new(Vec::new());
        let metas = [
            (
                format!("{}/long", "p".repeat(120)),
                EntryKind::File { size: 600 },
            ),
            (
                "l".into(),
                EntryKind::Symlink {
                    target: "t".repeat(150).into_bytes(),
                },
            ),
            ("d/".into(), EntryKind::Dir),
            ("c".into(), EntryKind::CharDevice { major: 1, minor: 3 }),
        ];
        for (path, kind) in metas {
            let size = match kind {
                EntryKind::File { size } => size as usize,
                _ => 0,
            };
            let meta = EntryMeta {
                path: path.into_bytes(),
                kind,
                mode: 0o644,
                uid: 3_000_000,
                gid: 1,
                mtime: -7,
                xattrs: vec![(b"user.x".to_vec(), b"y".to_vec())],
            };
            append_entry(&mut b, &meta, &vec![1u8; size][..]).unwrap();
        }
        let base = b.into_inner().unwrap();
        assert_eq!(entries_of(&base).unwrap().len(), 4);

        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Header blocks: re-checksummed after mutation so the junk gets past the checksum.
        let headers: Vec<usize> = (0..base.len() / 512)
            .map(|i| i * 512)
            .filter(|&at| {
                let block: &[u8; 512] = base[at..at + 512].try_into().unwrap();
                block.iter().any(|&b| b != 0) && verify_checksum(block).is_ok()
            })
            .collect();
        assert!(headers.len() >= 6, "{headers:?}");
        for round in 0..20_000 {
            let mut input = base.clone();
            for _ in 0..=(next() % 6) {
                let at = (next() % input.len() as u64) as usize;
                input[at] = next() as u8;
            }
            if round % 2 == 0 {
                for &at in &headers {
                    let mut h = tar::Header::new_old();
                    h.as_mut_bytes().copy_from_slice(&input[at..at + 512]);
                    h.set_cksum();
                    input[at..at + 512].copy_from_slice(h.as_bytes());
                }
            }
            if next() % 4 == 0 {
                input.truncate((next() % input.len() as u64) as usize);
            }
            let _ = entries_of(&input);
        }
    }

    #[test]
    fn header_only_types_carry_no_data() {
        // A directory header claiming 512 bytes of data, followed directly by a file header:
        // Go (and so docker) reads the file; so must we.
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_path("d/").unwrap();
        dir.set_size(512);
        dir.set_cksum();
        let mut file = tar::Header::new_ustar();
        file.set_path("f").unwrap();
        file.set_size(0);
        file.set_cksum();
        let mut bytes = dir.as_bytes().to_vec();
        bytes.extend_from_slice(file.as_bytes());
        bytes.extend_from_slice(&[0; 1024]);
        let got = entries_of(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0.path, b"f");
    }

    #[test]
    fn old_style_names_ending_in_slash_are_directories() {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..3].copy_from_slice(b"d2/");
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        assert_eq!(entries_of(&bytes).unwrap()[0].0.kind, Kind::Dir);
    }

    #[test]
    fn oversized_pax_headers_are_refused_before_buffering() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(1 << 40);
        h.set_cksum();
        let err = entries_of(h.as_bytes()).err().unwrap();
        assert!(matches!(err, ReadError::Malformed(m) if m.contains("larger")));
    }

    #[test]
    fn truncation_anywhere_is_an_error_or_a_clean_prefix() {
        let bytes = gnu_tar_with(&[("a", &[7u8; 700]), ("b", b"x")]);
        let end_of_entries = bytes.len() - 1024;
        for cut in 0..bytes.len() {
            // Must not panic; a cut inside an entry must be reported.
            let res = entries_of(&bytes[..cut]);
            if cut % 512 != 0 && cut < end_of_entries {
                assert!(res.is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            entries_of(&[0x41; 1024]),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn numeric_fields_parse_like_go() {
        assert_eq!(numeric_field(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(numeric_field(b"\0\0\0\0\0\0\0\0", "m").unwrap(), 0);
        assert_eq!(numeric_field(b"  755 \0", "m").unwrap(), 0o755);
        assert_eq!(
            numeric_field(&[0x80, 0, 0, 0, 0, 0, 1, 0], "m").unwrap(),
            256
        );
        assert_eq!(numeric_field(&[0xff; 8], "m").unwrap(), -1);
        assert!(numeric_field(b"00008\0\0\0", "m").is_err());
        assert!(numeric_field(b"0x10\0\0\0\0", "m").is_err());
        assert!(numeric_field(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "m").is_err());
    }

    fn walk(bytes: &[u8]) -> Result<Vec<(RawEntry, Vec<u8>)>, ReadError> {
        let mut w = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = w.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = w.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((e, data));
        }
        Ok(out)
    }

    #[test]
    fn reads_testkit_tars_and_long_names() {
        let long = format!("{}/f", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut bytes = b.into_inner().unwrap();
        bytes.extend(
            testkit::TarBuilder::new()
                .dir("x/")
                .symlink("x/l", "../t")
                .finish(),
        );
        let got = walk(&bytes).unwrap();
        // The first archive's end blocks stop the walk, as in Go.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.path, long.as_bytes());
        assert_eq!(got[0].1, b"abc");
        assert_eq!(got[0].0.mode, 0o600);

        let t = testkit::TarBuilder::new()
            .dir("x/")
            .file("x/a", b"hello")
            .symlink("x/l", "a")
            .hardlink("x/h", "x/a")
            .finish();
        let got = walk(&t).unwrap();
        let kinds: Vec<Kind> = got.iter().map(|(e, _)| e.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Dir, Kind::File, Kind::Symlink, Kind::Hardlink]
        );
        assert_eq!(got[1].0.size, 5);
        assert_eq!(got[2].0.link, b"a");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert!(walk(&[0x41; 1024]).is_err());
        let t = testkit::TarBuilder::new().file("a", &[1u8; 700]).finish();
        for cut in [100, 513, 700, 1100] {
            assert!(walk(&t[..cut]).is_err(), "cut at {cut}");
        }
        assert!(walk(&[]).unwrap().is_empty());
    }

    #[test]
    fn seeking_skips_like_reading_and_knows_where_data_starts() {
        let t = testkit::TarBuilder::new()
            .file("a", &[1u8; 700])
            .file("b", b"xyz")
            .finish();
        let mut r = TarReader::seeking(io::Cursor::new(&t[..])).unwrap();
        let a = r.next_entry().unwrap().unwrap();
        assert_eq!((a.size, r.position()), (700, 512));
        let b = r.next_entry().unwrap().unwrap();
        assert_eq!((b.size, r.position()), (3, 512 + 1024 + 512));
        let mut buf = [0u8; 8];
        let n = r.read_data(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"xyz");
        assert!(r.next_entry().unwrap().is_none());

        // Cut inside the data being skipped: an error, as when reading.
        let mut r = TarReader::seeking(io::Cursor::new(&t[..1000])).unwrap();
        r.next_entry().unwrap();
        assert!(matches!(r.next_entry(), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn paths_are_cleaned_inside_the_root() {
        assert_eq!(clean_path(b"./a/b/").as_deref(), Some("a/b"));
        assert_eq!(clean_path(b"/a/./b").as_deref(), Some("a/b"));
        assert_eq!(clean_path(b"a/../b").as_deref(), Some("b"));
        assert_eq!(clean_path(b"../x"), None);
        assert_eq!(clean_path(b"./"), None);
    }

    #[test]
    fn pax_records_parse_strictly() {
        assert_eq!(
            parse_pax(b"11 path=ab\n").unwrap(),
            vec![(b"path".to_vec(), b"ab".to_vec())]
        );
        assert!(parse_pax(b"12 path=ab\n").is_err());
        assert!(parse_pax(b"99 path=ab\n").is_err());
        assert!(parse_pax(b"x path=ab\n").is_err());
        assert!(parse_pax(b"9 pathab\n").is_err());
        assert!(parse_pax(b"1 \n").is_err());
    }
}
