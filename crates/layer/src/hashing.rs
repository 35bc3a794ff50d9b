//! Byte counters that hash what passes through them, so a digest is computed in the same
//! streaming pass that moves the bytes (never by reading a blob twice).

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

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

/// How much [`ParallelHashingWriter`] gathers before handing a chunk to its hashing thread.
const PARALLEL_CHUNK: usize = 1 << 20;
/// Chunks in flight to the hashing thread; bounds the memory to a few chunks.
const PARALLEL_DEPTH: usize = 2;

/// A buffered [`HashingWriter`] that hashes on a helper thread. For a big layer, sha256 costs
/// about as much as producing and writing the bytes (a third of a 1 GiB build step went to
/// it); with a second core the two overlap. Chunks of 1 MiB are written to the inner writer,
/// then passed to the hasher, so the digest covers exactly what the inner writer took.
/// Dropped without [`Self::finish`], the channel closes and the thread ends by itself.
pub struct ParallelHashingWriter<W: Write> {
    inner: W,
    chunk: Vec<u8>,
    to_hasher: Option<SyncSender<Vec<u8>>>,
    /// Chunks the hasher is done with, to be filled again.
    spare: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<Sha256Hasher>>,
    /// Bytes handed to the inner writer.
    len: u64,
}

impl<W: Write> ParallelHashingWriter<W> {
    pub fn new(inner: W) -> Self {
        let (to_hasher, chunks) = sync_channel::<Vec<u8>>(PARALLEL_DEPTH);
        let (give_back, spare) = sync_channel::<Vec<u8>>(PARALLEL_DEPTH + 1);
        let hasher = std::thread::spawn(move || {
            let mut hasher = Sha256Hasher::new();
            for mut chunk in chunks {
                hasher.update(&chunk);
                chunk.clear();
                // A full return queue only means the writer has spares enough.
                let _ = give_back.try_send(chunk);
            }
            hasher
        });
        ParallelHashingWriter {
            inner,
            chunk: Vec::with_capacity(PARALLEL_CHUNK),
            to_hasher: Some(to_hasher),
            spare,
            hasher: Some(hasher),
            len: 0,
        }
    }

    /// Bytes accepted so far (written through or still buffered).
    pub fn bytes_written(&self) -> u64 {
        self.len + self.chunk.len() as u64
    }

    /// Writes out what is buffered and waits for the hash: the digest and length of everything
    /// written, and the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<(Digest, u64, W)> {
        self.pass_chunk()?;
        drop(self.to_hasher.take());
        let hasher = self
            .hasher
            .take()
            .ok_or_else(|| io::Error::other("the writer was already finished"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        Ok((hasher.finish(), self.len, self.inner))
    }

    /// Writes the buffered chunk to the inner writer, then hands it to the hasher.
    fn pass_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.inner.write_all(&self.chunk)?;
        self.len += self.chunk.len() as u64;
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PARALLEL_CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.to_hasher
            .as_ref()
            .ok_or_else(|| io::Error::other("the writer was already finished"))?
            .send(full)
            .map_err(|_| io::Error::other("the hashing thread stopped"))
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

impl<W: Write> Write for ParallelHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.len() == PARALLEL_CHUNK {
            self.pass_chunk()?;
        }
        let n = buf.len().min(PARALLEL_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pass_chunk()?;
        self.inner.flush()
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

        // Bigger than a chunk, in uneven writes, so chunks fill, pass and are reused.
        let big: Vec<u8> = (0..3 * PARALLEL_CHUNK + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut p = ParallelHashingWriter::new(Vec::new());
        for part in big.chunks(7777) {
            p.write_all(part).unwrap();
        }
        assert_eq!(p.bytes_written(), big.len() as u64);
        let (pdigest, plen, pinner) = p.finish().unwrap();
        assert_eq!((pdigest, plen), (Digest::of(&big), big.len() as u64));
        assert_eq!(pinner, big);

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
