//! Diff ids computed while a blob is copied, in the same pass.
//!
//! This module owns the one way strata learns a blob's uncompressed identity while ingesting
//! it (a registry pull, an archive load): the bytes go to their destination as they arrive,
//! and on the way they are decompressed exactly as [`decompress`] does for `apply` and the
//! store (so the diff id is the one those would compute) and hashed. A blob that turns out not
//! to decompress is simply not a layer (a config, say): sniffing never fails the copy.

use std::io::{self, BufReader, Read, Write};

use oci::DiffId;

use crate::compression::{Compression, decompress};
use crate::hashing::HashingWriter;

/// How much of the stream the decompressor pulls at a time.
const CHUNK: usize = 256 << 10;

/// The uncompressed identity of a blob that decompressed as a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sniffed {
    /// sha256 of the uncompressed stream.
    pub diff_id: DiffId,
    /// Length of the uncompressed stream in bytes.
    pub uncompressed_size: u64,
    /// The codec the magic bytes selected.
    pub compression: Compression,
}

/// Which side of a [`copy_sniffing`] failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed.
    Source(io::Error),
    /// Writing the destination failed.
    Sink(io::Error),
}

impl CopyError {
    /// The I/O error, whichever side it came from.
    pub fn into_io(self) -> io::Error {
        match self {
            CopyError::Source(e) | CopyError::Sink(e) => e,
        }
    }
}

/// Copies all of `src` into `dst`. With `sniff`, the stream is also decompressed on the fly
/// (gzip, zstd or plain, as [`decompress`] detects) and hashed, giving the diff id and the
/// uncompressed size; a stream that does not decompress is copied whole all the same, and
/// gives `None`. `on_bytes` hears the running total copied after each chunk.
pub fn copy_sniffing<R: Read, W: Write + ?Sized>(
    src: R,
    dst: &mut W,
    sniff: bool,
    on_bytes: &dyn Fn(u64),
) -> Result<Option<Sniffed>, CopyError> {
    let mut tee = Tee {
        src,
        dst,
        on_bytes,
        total: 0,
        failed: None,
    };
    let mut sniffed = None;
    if sniff {
        let reader = BufReader::with_capacity(CHUNK, &mut tee);
        if let Ok(mut dec) = decompress(reader) {
            let compression = dec.compression();
            let mut hashing = HashingWriter::new(io::sink());
            if io::copy(&mut dec, &mut hashing).is_ok() {
                let (digest, uncompressed_size, _) = hashing.finish();
                sniffed = Some(Sniffed {
                    diff_id: DiffId(digest),
                    uncompressed_size,
                    compression,
                });
            }
        }
    }
    if let Some(failed) = tee.failed.take() {
        return Err(failed);
    }
    // What the decompressor did not need (all of it, without `sniff`).
    let drained = io::copy(&mut tee, &mut io::sink());
    if let Some(failed) = tee.failed.take() {
        return Err(failed);
    }
    drained.map_err(CopyError::Source)?;
    Ok(sniffed)
}

/// Writes everything it reads to `dst`, and remembers which side failed.
struct Tee<'a, R, W: ?Sized> {
    src: R,
    dst: &'a mut W,
    on_bytes: &'a dyn Fn(u64),
    total: u64,
    failed: Option<CopyError>,
}

impl<R: Read, W: Write + ?Sized> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.src.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(CopyError::Source(e));
                return Err(copy);
            }
        };
        if let Err(e) = self.dst.write_all(&buf[..n]) {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.failed = Some(CopyError::Sink(e));
            return Err(copy);
        }
        self.total += n as u64;
        if n > 0 {
            (self.on_bytes)(self.total);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its data 3 bytes at a time, as a slow network or a tar entry might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn sniff(data: &[u8]) -> Option<Sniffed> {
        let mut copy = Vec::new();
        let sniffed = copy_sniffing(Trickle(data), &mut copy, true, &|_| {})
            .ok()
            .unwrap();
        assert_eq!(copy, data);
        sniffed
    }

    #[test]
    fn plain_gzip_and_zstd_give_the_same_diff_id() {
        let tar = vec![7u8; 5000];
        let plain = sniff(&tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = sniff(&gz.finish().unwrap()).unwrap();
        let zs = sniff(&zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        assert_eq!(plain.diff_id, gz.diff_id);
        assert_eq!(plain.diff_id, zs.diff_id);
        assert_eq!(gz.uncompressed_size, 5000);
        assert_eq!(zs.compression, Compression::Zstd);
        assert_eq!(sniff(b"ab").unwrap().uncompressed_size, 2);
    }

    #[test]
    fn broken_gzip_is_not_a_layer() {
        assert!(sniff(&[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).is_none());
    }
}
