//! A streaming walk over the headers of a tar (a layer, or an image archive on disk).
//!
//! The `layer` crate's own reader is private to that crate, and the `tar` crate's
//! `Archive::entries` buffers PAX and GNU long-name records with no size limit, so a hostile
//! layer could make an analysis hold gigabytes. This walker reads one 512-byte header at a
//! time, caps every buffered extension record, and reads entries the way Go's archive/tar does
//! (and so docker): header-only types carry no data whatever their size field says, an
//! old-style regular entry whose name ends in `/` is a directory, PAX `path`/`linkpath`/`size`/
//! `uid`/`gid` override the header, global PAX headers are ignored, and the archive ends at the
//! first zero block or at a clean end of stream.
//!
//! Skipping data goes through [`TarInput::skip`], so an archive file on disk is walked by
//! seeking, never by reading the layers it holds.

use std::fs::File;
use std::io::{self, BufReader, Read};

const BLOCK: u64 = 512;
const MAX_PAX_BYTES: u64 = 1 << 20;
const MAX_LONG_NAME_BYTES: u64 = 64 << 10;
const MAX_EXTENSION_HEADERS: usize = 64;

/// A byte stream a tar can be walked over.
pub(crate) trait TarInput: Read + Sized {
    /// Moves `n` bytes forward; fails if the stream ends first.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let skipped = io::copy(&mut self.by_ref().take(n), &mut io::sink())?;
        if skipped < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Any reader, skipped by reading.
pub(crate) struct Streamed<R>(pub R);

impl<R: Read> Read for Streamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> TarInput for Streamed<R> {}

/// A file, skipped by seeking, that knows its position (so data offsets can be recorded).
pub(crate) struct Seekable {
    file: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Seekable {
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Seekable {
            file: BufReader::with_capacity(64 << 10, file),
            pos: 0,
            len,
        })
    }

    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for Seekable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarInput for Seekable {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        if self.pos.saturating_add(n) > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let delta = i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.file.seek_relative(delta)?;
        self.pos += n;
        Ok(())
    }
}

/// Why a tar could not be walked.
#[derive(Debug)]
pub(crate) enum WalkError {
    Malformed(String),
    Io(io::Error),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Malformed(m) => write!(f, "malformed tar: {m}"),
            WalkError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WalkError::Malformed("the stream ends in the middle of an entry".into())
        } else {
            WalkError::Io(e)
        }
    }
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, WalkError> {
    Err(WalkError::Malformed(msg.into()))
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    /// Devices and fifos.
    Special,
}

/// One entry's metadata, extension headers folded in.
#[derive(Clone, Debug)]
pub(crate) struct TarEntry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    /// Data bytes (0 for every type but regular files).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

pub(crate) struct TarWalker<R> {
    inner: R,
    remaining: u64,
    padding: u64,
    finished: bool,
}

impl<R: TarInput> TarWalker<R> {
    pub fn new(inner: R) -> Self {
        TarWalker {
            inner,
            remaining: 0,
            padding: 0,
            finished: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, skipping whatever is left of the previous one; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, WalkError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut pax_path = None;
        let mut pax_link = None;
        let mut pax_size = None;
        let mut pax_uid = None;
        let mut pax_gid = None;
        let mut long_name = None;
        let mut long_link = None;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let Some(header) = self.read_header()? else {
                self.finished = true;
                return Ok(None);
            };
            let fields = header.as_bytes();
            let size = unsigned_field(&fields[124..136], "size")?;
            match header.as_bytes()[156] {
                b'x' => {
                    let data = self.read_record(size, MAX_PAX_BYTES, "PAX header")?;
                    for ext in tar::PaxExtensions::new(&data) {
                        let ext = ext.or_else(|_| malformed("malformed PAX record"))?;
                        let value = ext.value_bytes().to_vec();
                        match ext.key_bytes() {
                            b"path" => pax_path = Some(value),
                            b"linkpath" => pax_link = Some(value),
                            b"size" => pax_size = Some(pax_number(&value, "size")?),
                            b"uid" => pax_uid = Some(pax_number(&value, "uid")?),
                            b"gid" => pax_gid = Some(pax_number(&value, "gid")?),
                            _ => {}
                        }
                    }
                }
                b'g' => {
                    self.start_data(size);
                    self.skip_rest()?;
                }
                b'L' => {
                    long_name = Some(trim_nul(self.read_record(
                        size,
                        MAX_LONG_NAME_BYTES,
                        "GNU long name",
                    )?))
                }
                b'K' => {
                    long_link = Some(trim_nul(self.read_record(
                        size,
                        MAX_LONG_NAME_BYTES,
                        "GNU long link",
                    )?))
                }
                typ => {
                    let path = pax_path
                        .or(long_name)
                        .unwrap_or_else(|| header.path_bytes().into_owned());
                    let link = pax_link.or(long_link).unwrap_or_else(|| {
                        header
                            .link_name_bytes()
                            .map(|l| l.into_owned())
                            .unwrap_or_default()
                    });
                    let kind = match typ {
                        b'\0' if path.ends_with(b"/") => Kind::Dir,
                        b'0' | b'\0' | b'7' => Kind::File,
                        b'1' => Kind::Hardlink,
                        b'2' => Kind::Symlink,
                        b'3' | b'4' | b'6' => Kind::Special,
                        b'5' => Kind::Dir,
                        other => {
                            return malformed(format!(
                                "unsupported entry type {:?}",
                                char::from(other)
                            ));
                        }
                    };
                    let size = match kind {
                        Kind::File => pax_size.unwrap_or(size),
                        _ => 0,
                    };
                    if i64::try_from(size).is_err() {
                        return malformed(format!("entry size {size} is out of range"));
                    }
                    let mode = (unsigned_field(&fields[100..108], "mode")? & 0o7777) as u32;
                    let uid = match pax_uid {
                        Some(v) => v,
                        None => unsigned_field(&fields[108..116], "uid")?,
                    };
                    let gid = match pax_gid {
                        Some(v) => v,
                        None => unsigned_field(&fields[116..124], "gid")?,
                    };
                    self.start_data(size);
                    return Ok(Some(TarEntry {
                        kind,
                        path,
                        link,
                        size,
                        mode,
                        uid,
                        gid,
                    }));
                }
            }
        }
        malformed(format!(
            "more than {MAX_EXTENSION_HEADERS} extension headers before one entry"
        ))
    }

    /// Reads the current entry's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, WalkError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return malformed("the stream ends in the middle of a file's data");
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    fn read_header(&mut self) -> Result<Option<tar::Header>, WalkError> {
        let mut header = tar::Header::new_old();
        let block = header.as_mut_bytes();
        let mut got = 0;
        while got < block.len() {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
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

    fn read_record(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>, WalkError> {
        if size > max {
            return malformed(format!(
                "{what} of {size} bytes is larger than the {max} allowed"
            ));
        }
        self.start_data(size);
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if (data.len() as u64) < size {
            return malformed(format!("the stream ends inside a {what}"));
        }
        self.remaining = 0;
        self.skip_rest()?;
        Ok(data)
    }

    fn skip_rest(&mut self) -> Result<(), WalkError> {
        let todo = self.remaining.saturating_add(self.padding);
        if todo > 0 {
            self.inner.skip(todo)?;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }
}

fn pax_number(value: &[u8], what: &str) -> Result<u64, WalkError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or_else(|| malformed(format!("PAX {what} is not a number")), Ok)
}

fn unsigned_field(field: &[u8], what: &str) -> Result<u64, WalkError> {
    let n = numeric_field(field, what)?;
    u64::try_from(n).or_else(|_| malformed(format!("negative {what} field")))
}

/// A numeric header field as Go's archive/tar reads it: octal text padded with spaces or NULs
/// (all padding is 0), or GNU base-256 when the first byte's high bit is set.
fn numeric_field(field: &[u8], what: &str) -> Result<i64, WalkError> {
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
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| matches!(b, b' ' | 0))
        .collect();
    let end = text
        .iter()
        .rposition(|b| !matches!(b, b' ' | 0))
        .map_or(0, |i| i + 1);
    let text = &text[..end];
    if text.is_empty() {
        return Ok(0);
    }
    if !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return malformed(format!("{what} field is not an octal number"));
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| i64::from_str_radix(t, 8).ok())
        .map_or_else(|| malformed(format!("{what} field overflows")), Ok)
}

fn verify_checksum(block: &[u8; 512]) -> Result<(), WalkError> {
    let digits: Vec<u8> = block[148..156]
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

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

/// A tar path made relative to the root, `/`-separated, with `.` components and trailing
/// slashes removed. `None` for the root itself and for paths that climb above it.
pub(crate) fn clean_path(raw: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(bytes: &[u8]) -> Result<Vec<(TarEntry, Vec<u8>)>, WalkError> {
        let mut w = TarWalker::new(Streamed(bytes));
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
    fn paths_are_cleaned_inside_the_root() {
        assert_eq!(clean_path(b"./a/b/").as_deref(), Some("a/b"));
        assert_eq!(clean_path(b"/a/./b").as_deref(), Some("a/b"));
        assert_eq!(clean_path(b"a/../b").as_deref(), Some("b"));
        assert_eq!(clean_path(b"../x"), None);
        assert_eq!(clean_path(b"./"), None);
    }
}
