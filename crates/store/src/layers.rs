use std::io::BufReader;

use oci::{DiffId, Digest};
use serde::{Deserialize, Serialize};

use crate::{IoContext, Result, Store, StoreError, write_atomic};

/// What the store knows about a layer blob beyond its digest: the digest and size of its
/// uncompressed tar. Recorded when the blob is ingested (the ingest computes both anyway), so
/// sizes and diff ids never need a second decompression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: DiffId,
    pub uncompressed_size: u64,
}

impl Store {
    /// A gzip-compressed twin of an uncompressed layer blob, made once and remembered
    /// (`meta-v1/gzip/<blob>`): what a push sends for layers strata keeps uncompressed, as
    /// docker compresses its layers on the way out. Compressed layers are returned as they are.
    pub fn gzip_twin(&self, layer: &oci::Descriptor) -> Result<oci::Descriptor> {
        use oci::MediaType;
        let gzip_type = match layer.media_type {
            MediaType::OciLayer => MediaType::OciLayerGzip,
            MediaType::DockerLayer => MediaType::DockerLayerGzip,
            _ => return Ok(layer.clone()),
        };
        let memo = self.meta_dir().join("gzip").join(layer.digest.hex());
        if let Ok(data) = std::fs::read(&memo)
            && let Ok(twin) = serde_json::from_slice::<oci::Descriptor>(&data)
            && self.has_blob(&twin.digest)
        {
            return Ok(twin);
        }
        let info = self.layer_info_or_compute(&layer.digest)?;
        let mut source = BufReader::with_capacity(1 << 20, self.open_blob(&layer.digest)?);
        let writer = self.blob_writer()?;
        let ctx = || format!("compressing layer {}", layer.digest);
        let mut encoder = layer::Compression::Gzip
            .encoder(writer)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", ctx())))?;
        std::io::copy(&mut source, &mut encoder).ctx(ctx)?;
        let writer = encoder.finish().ctx(ctx)?;
        let (digest, size) = writer.commit(None)?;
        self.put_layer_info(&digest, &info)?;
        let twin = oci::Descriptor::new(gzip_type, digest, size);
        if let Some(dir) = memo.parent() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(self, &memo, &crate::images::canonical(&twin)?)?;
        Ok(twin)
    }

    /// Writes a layer from a directory straight into the store (compressed as `opts` says),
    /// recording its diff id and size; returns its descriptor and diff id.
    pub fn write_layer(
        &self,
        source: layer::DiffSource<'_>,
        opts: &layer::DiffOptions,
    ) -> Result<(oci::Descriptor, DiffId)> {
        // An uncompressed layer's digest is its diff id, which the tar writer computes anyway.
        let uncompressed = opts.compression == layer::Compression::None;
        let writer = if uncompressed {
            self.prehashed_blob_writer()?
        } else {
            self.blob_writer()?
        };
        let (stats, writer) = layer::write_diff(source, opts, writer).map_err(|source| {
            StoreError::Invalid(format!("writing a layer: {}", oci::error_chain(&source)))
        })?;
        let (digest, size) = if uncompressed {
            writer.commit_prehashed(stats.diff_id.0.clone(), stats.uncompressed_size)?
        } else {
            writer.commit(None)?
        };
        self.put_layer_info(
            &digest,
            &LayerInfo {
                diff_id: stats.diff_id.clone(),
                uncompressed_size: stats.uncompressed_size,
            },
        )?;
        Ok((
            oci::Descriptor::new(opts.compression.media_type(), digest, size),
            stats.diff_id,
        ))
    }

    fn layer_info_path(&self, blob: &Digest) -> std::path::PathBuf {
        self.meta_layers_dir().join(format!("{}.json", blob.hex()))
    }

    pub fn put_layer_info(&self, blob: &Digest, info: &LayerInfo) -> Result<()> {
        let data = crate::images::canonical(info)?;
        write_atomic(self, &self.layer_info_path(blob), &data)
    }

    pub fn layer_info(&self, blob: &Digest) -> Result<Option<LayerInfo>> {
        let path = self.layer_info_path(blob);
        match std::fs::read(&path) {
            Ok(data) => Ok(serde_json::from_slice(&data).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
        }
    }

    /// The recorded info, or computed now by decompressing the blob once (and recorded).
    pub fn layer_info_or_compute(&self, blob: &Digest) -> Result<LayerInfo> {
        if let Some(info) = self.layer_info(blob)? {
            return Ok(info);
        }
        let reader = BufReader::new(self.open_blob(blob)?);
        let layer_err = |source| StoreError::Layer {
            blob: blob.clone(),
            source,
        };
        let mut tar = layer::decompress(reader).map_err(layer_err)?;
        let mut sink = layer::HashingWriter::new(std::io::sink());
        std::io::copy(&mut tar, &mut sink).ctx(|| format!("decompressing layer {blob}"))?;
        let (digest, size, _) = sink.finish();
        let info = LayerInfo {
            diff_id: DiffId(digest),
            uncompressed_size: size,
        };
        self.put_layer_info(blob, &info)?;
        Ok(info)
    }

    pub(crate) fn remove_layer_info(&self, blob: &Digest) {
        let _ = std::fs::remove_file(self.layer_info_path(blob));
    }
}
