//! Byte counters that hash what passes through them, so a digest is computed in the same
//! streaming pass that moves the bytes (never by reading a blob twice).

use std::io::{self, Read, Write};

use oci::{Digest, Sha256Hasher};

/// A writer that sha256-hashes and counts every byte the inner writer accepts.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
    len: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256Hasher::new(),
            len: 0,
        }
    }

    /// Bytes accepted by the inner writer so far.
    pub fn bytes_written(&self) -> u64 {
        self.len
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writing through this reference bypasses the hash; it exists for flushing or syncing.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and length of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finish(), self.len, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer took is part of the stream.
        let taken = buf.get(..n).unwrap_or(buf);
        self.hasher.update(taken);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that sha256-hashes and counts every byte read from the inner reader.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
    len: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256Hasher::new(),
            len: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.len
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The digest and length of everything read, and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        (self.hasher.finish(), self.len, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or(buf);
        self.hasher.update(got);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree_with_digest_of() {
        let data = b"hello layer".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (digest, len, inner) = w.finish();
        assert_eq!(inner, data);
        assert_eq!(len, data.len() as u64);
        assert_eq!(digest, Digest::of(&data));

        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        let (rdigest, rlen, _) = r.finish();
        assert_eq!((rdigest, rlen), (digest, len));
    }

    #[test]
    fn writer_hashes_only_accepted_bytes() {
        // A writer that takes at most 3 bytes per call.
        struct Trickle(Vec<u8>);
        impl Write for Trickle {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = HashingWriter::new(Trickle(Vec::new()));
        w.write_all(b"abcdefghij").unwrap();
        let (digest, len, inner) = w.finish();
        assert_eq!(inner.0, b"abcdefghij");
        assert_eq!(len, 10);
        assert_eq!(digest, Digest::of(b"abcdefghij"));
    }
}
