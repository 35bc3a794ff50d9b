use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use layer::ParallelHashingWriter;
use oci::{Digest, Sha256Hasher};

use crate::{IoContext, Result, Store, StoreError, sync_dir};

/// Streams a blob into the store: bytes go to a temp file on the store's filesystem while they
/// are hashed; [`BlobWriter::commit`] fsyncs, checks the digest and size it was told to expect,
/// renames the file into `blobs/sha256/` and fsyncs the directory. Dropped without a commit, the
/// temp file is removed, so a failed ingest leaves nothing visible.
pub struct BlobWriter {
    store: Store,
    file: Ingest,
}

enum Ingest {
    /// Hashed here, on a helper thread, as the bytes arrive.
    Hashing(ParallelHashingWriter<tempfile::NamedTempFile>),
    /// Hashed by the caller, in the pass that produced the bytes (an uncompressed layer tar,
    /// whose diff id is its digest): hashing it twice cost a fifth of a big build step.
    Prehashed {
        file: BufWriter<tempfile::NamedTempFile>,
        len: u64,
    },
}

impl BlobWriter {
    pub(crate) fn new(store: &Store, hashing: bool) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(store.tmp_dir())
            .ctx(|| format!("creating a temp file in {}", store.tmp_dir().display()))?;
        let file = if hashing {
            Ingest::Hashing(ParallelHashingWriter::new(tmp))
        } else {
            Ingest::Prehashed {
                file: BufWriter::with_capacity(1 << 20, tmp),
                len: 0,
            }
        };
        Ok(BlobWriter {
            store: store.clone(),
            file,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        match &self.file {
            Ingest::Hashing(w) => w.bytes_written(),
            Ingest::Prehashed { len, .. } => *len,
        }
    }

    /// Finishes the blob. `expected` (digest and optionally size) is checked before anything
    /// becomes visible; a blob that is already present is success.
    pub fn commit(self, expected: Option<(&Digest, Option<u64>)>) -> Result<(Digest, u64)> {
        let Ingest::Hashing(writer) = self.file else {
            return Err(StoreError::Invalid(
                "a blob written unhashed must be committed with its digest".into(),
            ));
        };
        let (digest, size, tmp) = writer.finish().ctx(|| "writing a blob".to_string())?;
        if let Some((want, want_size)) = expected
            && (want != &digest || want_size.is_some_and(|s| s != size))
        {
            return Err(StoreError::DigestMismatch {
                expected: want.clone(),
                expected_size: want_size.unwrap_or(size),
                actual: digest,
                actual_size: size,
            });
        }
        persist(&self.store, tmp, digest, size)
    }

    /// Finishes a blob from [`Store::prehashed_blob_writer`] under the digest its producer
    /// computed over exactly the bytes written, and the size, which is checked.
    pub fn commit_prehashed(self, digest: Digest, size: u64) -> Result<(Digest, u64)> {
        let Ingest::Prehashed { file, len } = self.file else {
            return self.commit(Some((&digest, Some(size))));
        };
        if len != size {
            return Err(StoreError::Invalid(format!(
                "blob {digest}: {len} bytes were written, its producer counted {size}"
            )));
        }
        let tmp = file
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| format!("storing blob {digest}"))?;
        persist(&self.store, tmp, digest, size)
    }
}

/// Makes a finished temp file the blob `digest` (unless it is there already): fsync, rename
/// into `blobs/sha256/`, fsync of the directory.
fn persist(
    store: &Store,
    tmp: tempfile::NamedTempFile,
    digest: Digest,
    size: u64,
) -> Result<(Digest, u64)> {
    let target = store.blob_path(&digest);
    if target.is_file() {
        return Ok((digest, size));
    }
    let ctx = || format!("storing blob {digest}");
    tmp.as_file().sync_all().ctx(ctx)?;
    tmp.persist(&target).map_err(|e| e.error).ctx(ctx)?;
    sync_dir(&store.blobs_dir())?;
    Ok((digest, size))
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Ingest::Hashing(w) => w.write(buf),
            Ingest::Prehashed { file, len } => {
                let n = file.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Ingest::Hashing(w) => w.flush(),
            Ingest::Prehashed { file, .. } => file.flush(),
        }
    }
}

/// Reads a blob and checks, when the stream ends, that what was read has the digest and size it
/// should have; a mismatch is an `InvalidData` error at EOF instead of a silent success. Used
/// wherever blob content leaves the store (export, save, push, unpack).
pub struct VerifiedReader<R> {
    inner: R,
    hasher: Sha256Hasher,
    read: u64,
    expected: Digest,
    expected_size: Option<u64>,
    checked: bool,
}

impl<R: Read> VerifiedReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifiedReader {
            inner,
            hasher: Sha256Hasher::new(),
            read: 0,
            expected,
            expected_size,
            checked: false,
        }
    }

    fn check_at_eof(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected || self.expected_size.is_some_and(|s| s != self.read) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} is corrupt: read {} bytes with digest {actual}",
                    self.expected, self.read
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.check_at_eof()?;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.expected_size.is_some_and(|s| self.read > s) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {} is longer than its recorded size", self.expected),
            ));
        }
        Ok(n)
    }
}

impl Store {
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self, true)
    }

    /// A writer for bytes whose digest the caller computes as it produces them; finish it
    /// with [`BlobWriter::commit_prehashed`].
    pub fn prehashed_blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self, false)
    }

    /// Stores a small blob held in memory (a config, a manifest).
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        // A rebuild stores the same config and manifest again: nothing to write then.
        let digest = Digest::of(data);
        if self.blob_path(&digest).is_file() {
            return Ok(digest);
        }
        // Hashed just above: written as prehashed, so it is not hashed a second time.
        let mut w = self.prehashed_blob_writer()?;
        w.write_all(data).ctx(|| "writing blob".to_string())?;
        Ok(w.commit_prehashed(digest, data.len() as u64)?.0)
    }

    /// Opens a blob for streaming, verified at EOF.
    pub fn open_blob(&self, digest: &Digest) -> Result<VerifiedReader<File>> {
        let file = File::open(self.blob_path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound {
                digest: digest.clone(),
            },
            _ => StoreError::Io {
                context: format!("opening blob {digest}"),
                source: e,
            },
        })?;
        let size = file
            .metadata()
            .ctx(|| format!("reading blob {digest}"))?
            .len();
        Ok(VerifiedReader::new(file, digest.clone(), Some(size)))
    }

    /// Reads a small blob fully, verifying it.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut out)
            .ctx(|| format!("reading blob {digest}"))?;
        Ok(out)
    }

    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(StoreError::Io {
                context: format!("reading blob {digest}"),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    #[test]
    fn ingest_verifies_and_is_idempotent() {
        let (_d, store) = temp_store();
        let data = b"hello blob";
        let want = Digest::of(data);
        let mut w = store.blob_writer().unwrap();
        w.write_all(data).unwrap();
        let (got, size) = w.commit(Some((&want, Some(10)))).unwrap();
        assert_eq!((got.clone(), size), (want.clone(), 10));
        assert_eq!(store.read_blob(&want).unwrap(), data);
        assert_eq!(store.put_blob(data).unwrap(), want);
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn wrong_digest_or_size_is_refused_and_leaves_nothing() {
        let (_d, store) = temp_store();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        assert!(matches!(
            w.commit(Some((&wrong, None))),
            Err(StoreError::DigestMismatch { .. })
        ));
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        assert!(w.commit(Some((&Digest::of(b"abc"), Some(4)))).is_err());
        assert_eq!(std::fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn prehashed_blobs_are_stored_under_their_producers_digest_and_counted() {
        let (_d, store) = temp_store();
        let data = b"a layer tar";
        let mut w = store.prehashed_blob_writer().unwrap();
        w.write_all(data).unwrap();
        assert_eq!(w.written(), data.len() as u64);
        let (got, _) = w
            .commit_prehashed(Digest::of(data), data.len() as u64)
            .unwrap();
        assert_eq!(store.read_blob(&got).unwrap(), data);

        let mut short = store.prehashed_blob_writer().unwrap();
        short.write_all(b"abc").unwrap();
        assert!(short.commit_prehashed(Digest::of(b"abcd"), 4).is_err());
        let mut unnamed = store.prehashed_blob_writer().unwrap();
        unnamed.write_all(b"abc").unwrap();
        assert!(unnamed.commit(None).is_err());
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn corrupted_blob_fails_at_eof() {
        let (_d, store) = temp_store();
        let d = store.put_blob(b"original").unwrap();
        std::fs::write(store.blob_path(&d), b"tampered").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
