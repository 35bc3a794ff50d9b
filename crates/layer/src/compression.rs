//! Layer compression: which codec, its media type, and pinned encoder settings.
//!
//! A blob digest must never depend on the machine or thread count that produced it, so every
//! codec setting is fixed here: gzip level 6 (flate2 on the zlib-rs backend), zstd level 3,
//! single-threaded, no checksum or content-size fields. Changing any of these changes layer
//! digests, so it is part of the build cache key contract.

use std::fmt;
use std::io::{self, BufRead, Chain, Cursor, Read, Write};

use oci::MediaType;

use crate::LayerError;

const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    /// What registries and `docker` expect; the default.
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for blobs compressed this way.
    pub fn media_type(&self) -> MediaType {
        match self {
            Compression::None => MediaType::OciLayer,
            Compression::Gzip => MediaType::OciLayerGzip,
            Compression::Zstd => MediaType::OciLayerZstd,
        }
    }

    /// The compression of a layer media type (OCI, Docker, and the non-distributable and
    /// foreign variants); `None` when the type is not a layer.
    pub fn from_media_type(media_type: &MediaType) -> Option<Compression> {
        match media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// Parses a `--compression` flag value.
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// The flag spelling, the inverse of [`Compression::parse`].
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// A compressing writer with the pinned settings; call [`Encoder::finish`] to write the
    /// trailer and get `w` back.
    pub fn encoder<W: Write>(&self, w: W) -> Result<Encoder<W>, LayerError> {
        Ok(match self {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)
                    .map_err(|e| LayerError::io("starting the zstd encoder", e))?;
                // Pinned explicitly rather than trusting library defaults to stay put.
                enc.include_checksum(false)
                    .and_then(|()| enc.include_contentsize(false))
                    .map_err(|e| LayerError::io("configuring the zstd encoder", e))?;
                Encoder::Zstd(enc)
            }
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A writer compressing with one of the pinned codecs.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the codec trailer, flushes, and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(enc) => enc.finish()?,
            Encoder::Zstd(enc) => enc.finish()?,
        };
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// The magic bytes already consumed from the stream, put back in front of the rest.
type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// A reader yielding the uncompressed tar of a plain, gzip or zstd layer stream.
pub struct Decompressor<R: BufRead> {
    inner: DecoderKind<R>,
}

enum DecoderKind<R: BufRead> {
    Plain(Sniffed<R>),
    // Multi-member, like Go's gzip reader: concatenated gzip streams are one layer.
    Gzip(Box<flate2::bufread::MultiGzDecoder<Sniffed<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Sniffed<R>>>),
}

impl<R: BufRead> Decompressor<R> {
    /// Which codec the magic bytes selected.
    pub fn compression(&self) -> Compression {
        match self.inner {
            DecoderKind::Plain(_) => Compression::None,
            DecoderKind::Gzip(_) => Compression::Gzip,
            DecoderKind::Zstd(_) => Compression::Zstd,
        }
    }
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DecoderKind::Plain(r) => r.read(buf),
            DecoderKind::Gzip(r) => r.read(buf),
            DecoderKind::Zstd(r) => r.read(buf),
        }
    }
}

/// Wraps a layer stream in the decoder its magic bytes call for (gzip `1f 8b`, zstd
/// `28 b5 2f fd`, anything else is taken as a plain tar and left to the tar reader to judge).
pub fn decompress<R: BufRead>(mut r: R) -> Result<Decompressor<R>, LayerError> {
    let magic = read_magic(&mut r).map_err(|e| LayerError::io("reading the layer stream", e))?;
    let kind = sniff(&magic);
    let stream = Cursor::new(magic).chain(r);
    let inner = match kind {
        Compression::None => DecoderKind::Plain(stream),
        Compression::Gzip => {
            DecoderKind::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(stream)))
        }
        Compression::Zstd => DecoderKind::Zstd(Box::new(
            zstd::stream::read::Decoder::with_buffer(stream)
                .map_err(|e| LayerError::io("starting the zstd decoder", e))?,
        )),
    };
    Ok(Decompressor { inner })
}

/// Reads up to 4 bytes, looping because one `read` may return fewer than are coming (pipes).
fn read_magic<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut magic = Vec::with_capacity(ZSTD_MAGIC.len());
    r.take(ZSTD_MAGIC.len() as u64).read_to_end(&mut magic)?;
    Ok(magic)
}

fn sniff(magic: &[u8]) -> Compression {
    if magic.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if magic.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut enc = c.encoder(Vec::new()).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn every_codec_round_trips_through_sniffing() {
        let data = b"some tar bytes, pretend".repeat(500);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = compress(c, &data);
            let mut dec = decompress(&blob[..]).unwrap();
            assert_eq!(dec.compression(), c);
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn decompressors_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Decompressor<std::io::BufReader<std::fs::File>>>();
        assert_send::<Encoder<std::fs::File>>();
    }

    #[test]
    fn encoders_are_deterministic() {
        let data = b"determinism".repeat(10_000);
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(compress(c, &data), compress(c, &data), "{c}");
        }
    }

    #[test]
    fn short_and_empty_streams_are_plain() {
        for input in [&b""[..], b"\x1f", b"ab"] {
            let mut out = Vec::new();
            decompress(input).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, input);
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_panic() {
        let mut blob = compress(Compression::Gzip, b"hello world hello world");
        let mid = blob.len() / 2;
        blob[mid] ^= 0xff;
        blob.truncate(blob.len() - 3);
        let mut out = Vec::new();
        assert!(
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn media_types_map_both_ways() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_media_type(&c.media_type()), Some(c));
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type(&MediaType::DockerLayerGzip),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::DockerLayer),
            Some(Compression::None)
        );
        assert_eq!(Compression::from_media_type(&MediaType::OciConfig), None);
        assert_eq!(Compression::parse("uncompressed"), Some(Compression::None));
        assert_eq!(Compression::parse("lz4"), None);
    }
}
