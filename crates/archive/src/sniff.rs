use std::io::{self, Sink, Write};

use layer::{Compression, HashingWriter};
use oci::DiffId;

/// Computes the diff id of a blob while it is being ingested, in the same pass: the bytes are
/// fed here as they go to the store, decompressed on the fly when they start with a gzip or
/// zstd magic number, and hashed. A blob that turns out not to decompress is simply not a layer
/// (a config, say): the sniffer never fails the ingest.
pub(crate) struct DiffIdSniffer {
    state: State,
}

enum State {
    Undecided(Vec<u8>),
    Plain(HashingWriter<Sink>),
    Gzip(Box<flate2::write::MultiGzDecoder<HashingWriter<Sink>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashingWriter<Sink>>>),
    Failed,
}

/// The uncompressed identity of a blob that looked like a layer.
#[derive(Clone, Debug)]
pub(crate) struct Sniffed {
    pub diff_id: DiffId,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

const MAGIC_LEN: usize = 4;

impl DiffIdSniffer {
    pub fn new() -> Self {
        DiffIdSniffer {
            state: State::Undecided(Vec::with_capacity(MAGIC_LEN)),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if let State::Undecided(head) = &mut self.state {
            head.extend_from_slice(data);
            if head.len() < MAGIC_LEN {
                return;
            }
            let head = std::mem::take(head);
            self.decide(&head);
            return;
        }
        self.write_through(data);
    }

    fn decide(&mut self, head: &[u8]) {
        let sink = HashingWriter::new(io::sink());
        let detected = layer::decompress(head).map_or(Compression::None, |d| d.compression());
        self.state = match detected {
            Compression::Gzip => State::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
            Compression::Zstd => match zstd::stream::write::Decoder::new(sink) {
                Ok(d) => State::Zstd(Box::new(d)),
                Err(_) => State::Failed,
            },
            Compression::None => State::Plain(sink),
        };
        self.write_through(head);
    }

    fn write_through(&mut self, data: &[u8]) {
        let ok = match &mut self.state {
            State::Plain(w) => w.write_all(data).is_ok(),
            State::Gzip(w) => w.write_all(data).is_ok(),
            State::Zstd(w) => w.write_all(data).is_ok(),
            State::Undecided(_) | State::Failed => true,
        };
        if !ok {
            self.state = State::Failed;
        }
    }

    pub fn finish(mut self) -> Option<Sniffed> {
        if let State::Undecided(head) = &mut self.state {
            let head = std::mem::take(head);
            self.decide(&head);
        }
        let (hasher, compression) = match self.state {
            State::Plain(w) => (w, Compression::None),
            State::Gzip(w) => (w.finish().ok()?, Compression::Gzip),
            State::Zstd(mut w) => {
                w.flush().ok()?;
                (w.into_inner(), Compression::Zstd)
            }
            State::Undecided(_) | State::Failed => return None,
        };
        let (digest, uncompressed_size, _) = hasher.finish();
        Some(Sniffed {
            diff_id: DiffId(digest),
            uncompressed_size,
            compression,
        })
    }
}

/// Copies `src` into `dst`, feeding the sniffer on the way.
pub(crate) fn copy_sniffing(
    src: &mut impl io::Read,
    dst: &mut impl Write,
    sniffer: &mut DiffIdSniffer,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        sniffer.feed(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(data: &[u8]) -> Option<Sniffed> {
        let mut s = DiffIdSniffer::new();
        for chunk in data.chunks(3) {
            s.feed(chunk);
        }
        s.finish()
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
