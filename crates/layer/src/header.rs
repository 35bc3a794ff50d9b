//! Normalized tar headers: one [`EntryMeta`] becomes a ustar header, preceded by a PAX
//! extended header when a value does not fit (long names and link names, big sizes, ids or
//! times, xattrs).
//!
//! We fill the header fields ourselves instead of using the tar crate's `Builder::append_data`
//! helpers: those fall back to GNU long-name records and silently normalize paths, and the
//! bytes of every header are part of a layer's digest, so we want to own each one.

use std::io::{self, Read, Write};

/// Type flags we write (POSIX ustar).
pub(crate) const TYPE_REGULAR: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_CHAR: u8 = b'3';
const TYPE_BLOCK: u8 = b'4';
const TYPE_DIR: u8 = b'5';
const TYPE_FIFO: u8 = b'6';
const TYPE_PAX_LOCAL: u8 = b'x';

/// Field capacities of the ustar format.
const NAME_LEN: usize = 100;
const MAX_OCTAL_7: u64 = 0o7777777; // mode, uid, gid, devmajor, devminor
const MAX_OCTAL_11: u64 = 0o77777777777; // size, mtime (8 GiB - 1)

pub(crate) const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Name/value byte pairs: extended attributes, or PAX records.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What kind of filesystem object an entry describes, with its type-specific data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    Hardlink { target: Vec<u8> },
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

/// Everything strata records about one entry; the header bytes are a pure function of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    /// Relative path without `./`; directories end in `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits plus setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Whole seconds since the epoch.
    pub mtime: i64,
    /// Sorted by name, overlay-internal names already removed.
    pub xattrs: Pairs,
}

impl EntryMeta {
    /// An empty regular file; used for whiteouts and opaque markers.
    pub fn empty_file(path: Vec<u8>, mode: u32, uid: u64, gid: u64, mtime: i64) -> Self {
        EntryMeta {
            path,
            kind: EntryKind::File { size: 0 },
            mode,
            uid,
            gid,
            mtime,
            xattrs: Vec::new(),
        }
    }
}

/// Appends the entry (its PAX header when needed, its header, `data` padded to 512 bytes).
/// `data` must yield exactly the file size: the caller wraps it in [`ExactReader`].
pub(crate) fn append_entry<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    meta: &EntryMeta,
    data: R,
) -> io::Result<()> {
    let (header, pax) = build_header(meta)?;
    if !pax.is_empty() {
        builder.append(&pax_header(&meta.path, pax.len() as u64), &pax[..])?;
    }
    builder.append(&header, data)
}

/// The ustar header for `meta` and the PAX records it needs (empty when none).
pub(crate) fn build_header(meta: &EntryMeta) -> io::Result<(tar::Header, Vec<u8>)> {
    let mut records: Pairs = Vec::new();
    let mut header = tar::Header::new_ustar();

    let (type_flag, size, link, dev) = match &meta.kind {
        EntryKind::File { size } => (TYPE_REGULAR, *size, None, None),
        EntryKind::Dir => (TYPE_DIR, 0, None, None),
        EntryKind::Symlink { target } => (TYPE_SYMLINK, 0, Some(target), None),
        EntryKind::Hardlink { target } => (TYPE_HARDLINK, 0, Some(target), None),
        EntryKind::CharDevice { major, minor } => (TYPE_CHAR, 0, None, Some((*major, *minor))),
        EntryKind::BlockDevice { major, minor } => (TYPE_BLOCK, 0, None, Some((*major, *minor))),
        EntryKind::Fifo => (TYPE_FIFO, 0, None, None),
    };
    header.set_entry_type(tar::EntryType::new(type_flag));

    set_name_field(
        &mut header.as_old_mut().name,
        &meta.path,
        b"path",
        &mut records,
    );
    if let Some(target) = link {
        set_name_field(
            &mut header.as_old_mut().linkname,
            target,
            b"linkpath",
            &mut records,
        );
    }

    header.set_mode(meta.mode & 0o7777);
    header.set_uid(fit_or_pax(meta.uid, MAX_OCTAL_7, b"uid", &mut records));
    header.set_gid(fit_or_pax(meta.gid, MAX_OCTAL_7, b"gid", &mut records));
    header.set_size(fit_or_pax(size, MAX_OCTAL_11, b"size", &mut records));
    match u64::try_from(meta.mtime) {
        Ok(t) if t <= MAX_OCTAL_11 => header.set_mtime(t),
        // Before 1970 or after 2242: only PAX can say it.
        _ => {
            records.push((b"mtime".to_vec(), meta.mtime.to_string().into_bytes()));
            header.set_mtime(0);
        }
    }

    let (major, minor) = dev.unwrap_or((0, 0));
    if u64::from(major) > MAX_OCTAL_7 || u64::from(minor) > MAX_OCTAL_7 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device number {major}:{minor} does not fit a tar header"),
        ));
    }
    header.set_device_major(major)?;
    header.set_device_minor(minor)?;

    for (name, value) in &meta.xattrs {
        let mut key = PAX_XATTR_PREFIX.to_vec();
        key.extend_from_slice(name);
        records.push((key, value.clone()));
    }

    header.set_cksum();
    // Sorted keys make the PAX block a function of its content, not of the code order above.
    records.sort();
    let mut pax = Vec::new();
    for (key, value) in &records {
        pax.extend_from_slice(&pax_record(key, value));
    }
    Ok((header, pax))
}

/// Copies a name into a fixed ustar field, or records it for PAX when it is too long. The
/// field then keeps a truncated copy, as Go's archive/tar does, for readers without PAX.
fn set_name_field(field: &mut [u8; NAME_LEN], name: &[u8], pax_key: &[u8], records: &mut Pairs) {
    if name.len() > NAME_LEN {
        records.push((pax_key.to_vec(), name.to_vec()));
    }
    let n = name.len().min(NAME_LEN);
    field[..n].copy_from_slice(&name[..n]);
}

/// The value itself when it fits its octal field; otherwise 0, with a PAX record instead.
fn fit_or_pax(value: u64, max: u64, key: &[u8], records: &mut Pairs) -> u64 {
    if value <= max {
        value
    } else {
        records.push((key.to_vec(), value.to_string().into_bytes()));
        0
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record,
/// including its own digits.
pub(crate) fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + decimal_digits(len) {
        len = rest + decimal_digits(len);
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn decimal_digits(n: usize) -> usize {
    n.to_string().len()
}

/// The header of a PAX extended-header block. Named like Go's archive/tar names them
/// (`dir/PaxHeaders.0/base`), every other field fixed, so it never varies.
fn pax_header(entry_path: &[u8], size: u64) -> tar::Header {
    let trimmed = entry_path.strip_suffix(b"/").unwrap_or(entry_path);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(base);
    name.truncate(NAME_LEN);

    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::new(TYPE_PAX_LOCAL));
    header.as_old_mut().name[..name.len()].copy_from_slice(&name);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_cksum();
    header
}

/// Reads exactly `len` bytes from `inner`, failing if it ends early, so a file that shrinks
/// while it is archived breaks the write instead of producing a corrupt tar.
pub(crate) struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> ExactReader<R> {
    pub fn new(inner: R, len: u64) -> Self {
        ExactReader {
            inner,
            remaining: len,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, kind: EntryKind) -> EntryMeta {
        EntryMeta {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        }
    }

    fn archive_of(metas: &[EntryMeta]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in metas {
            let size = match m.kind {
                EntryKind::File { size } => size,
                _ => 0,
            };
            let data = vec![b'x'; size as usize];
            append_entry(&mut b, m, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"ab"), b"11 path=ab\n");
        // The length includes its own digits; check sizes that cross digit boundaries.
        for n in 0..2000 {
            let rec = pax_record(b"k", &vec![b'v'; n]);
            let space = rec.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rec[..space]).unwrap().parse().unwrap();
            assert_eq!(len, rec.len(), "value length {n}");
        }
    }

    #[test]
    fn short_names_need_no_pax() {
        let (_, pax) = build_header(&meta(&"a".repeat(100), EntryKind::File { size: 1 })).unwrap();
        assert!(pax.is_empty());
    }

    #[test]
    fn long_names_and_big_numbers_go_to_pax_and_read_back() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
        let mut m = meta(&long, EntryKind::File { size: 3 });
        m.uid = 5_000_000;
        m.gid = 7;
        m.xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
            (b"user.a".to_vec(), b"1".to_vec()),
        ];
        let link = meta(
            "l",
            EntryKind::Symlink {
                target: "t".repeat(300).into_bytes(),
            },
        );
        let bytes = archive_of(&[m, link]);

        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), long.as_bytes());
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().gid().unwrap(), 7);
        let xattrs: Pairs = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|r| r.key_bytes().starts_with(PAX_XATTR_PREFIX))
            .map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec()))
            .collect();
        assert_eq!(xattrs.len(), 2);
        assert_eq!(xattrs[0].1, vec![1, 0, 0, 2]);
        let l = entries.next().unwrap().unwrap();
        assert_eq!(l.link_name_bytes().unwrap().len(), 300);
    }

    #[test]
    fn huge_sizes_and_old_times_use_pax() {
        let mut m = meta(
            "big",
            EntryKind::File {
                size: MAX_OCTAL_11 + 1,
            },
        );
        m.mtime = -5;
        let (header, pax) = build_header(&m).unwrap();
        let pax = String::from_utf8(pax).unwrap();
        assert!(pax.contains("size=8589934592\n"), "{pax}");
        assert!(pax.contains("mtime=-5\n"), "{pax}");
        assert_eq!(header.entry_size().unwrap(), 0);
    }

    #[test]
    fn headers_are_plain_ustar_with_empty_owner_names() {
        let (h, _) = build_header(&meta("dir/", EntryKind::Dir)).unwrap();
        assert!(h.as_ustar().is_some());
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.entry_type(), tar::EntryType::Directory);
    }

    #[test]
    fn exact_reader_fails_when_the_source_is_short() {
        let mut out = Vec::new();
        assert!(
            ExactReader::new(&b"abc"[..], 5)
                .read_to_end(&mut out)
                .is_err()
        );
        out.clear();
        ExactReader::new(&b"abcdef"[..], 4)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abcd");
    }
}
