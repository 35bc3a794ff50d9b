//! Image analysis: what every layer of an image costs and why.
//!
//! This crate owns:
//! - reading an image's layers as they are stored — from the local store, or from a
//!   docker-archive or OCI archive file read in place ([`ImageSource`]) — streamed, one layer
//!   at a time, keeping only entry metadata and content hashes in memory;
//! - per-layer change sets (files added, modified, removed, with sizes), the bytes lower
//!   layers keep that later layers delete or overwrite ([`Waste`], chmod/chown-only rewrites
//!   included, counted as reclaimable bytes: every hidden copy, never the one still visible),
//!   dive's efficiency score, and the split between the base image's layers and the user's
//!   ([`BaseSplit`], found from the image history);
//! - dive's CI rules ([`ci`]);
//! - image-to-image layer diffs and pull costs ([`diff`]);
//! - the terminal, JSON and HTML renderings of an [`Analysis`].
//!
//! It never writes to the store, never unpacks a layer to disk, never talks to a registry,
//! and never parses a Dockerfile (the lint rules live in the `dockerfile` crate).

pub mod ci;
pub mod diff;
mod engine;
mod html;
mod report;
mod source;
pub mod units;

use std::io::BufReader;

pub use engine::{ChangeKind, ChangeStats, FileChange, Waste, WasteReason};
pub use html::render_html;
pub use report::{TextOptions, render_text};
pub use source::{ImageSource, LayerInput};

use oci::{DiffId, ImageConfig};
use serde::Serialize;

/// Everything that can go wrong, each naming the object involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {index} ({digest}): {reason}")]
    Layer {
        index: usize,
        digest: String,
        reason: String,
    },
    #[error("{path} is not a usable image archive: {reason}")]
    Archive { path: String, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

pub type Result<T, E = AnalyzeError> = std::result::Result<T, E>;

/// The comment BuildKit (and `strata build`) puts on every history entry it writes.
pub const BUILDKIT_HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// How the base image's layers were told apart from the user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseMethod {
    /// The history entries before the first one BuildKit wrote (comment
    /// `buildkit.dockerfile.v0`) are the FROM image's.
    BuildkitHistory,
    /// No history entry carries BuildKit's marker, so the boundary is unknown; the first
    /// layer is taken as the base, as dive does.
    FirstLayer,
}

/// Where the base image ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BaseSplit {
    /// How many layers, from the bottom, belong to the base image.
    pub layers: usize,
    pub method: BaseMethod,
}

impl BaseSplit {
    /// Finds the boundary from the history: the base's entries come before the first
    /// BuildKit entry. Without any BuildKit entry, the first layer is the base.
    pub fn from_config(config: &ImageConfig) -> BaseSplit {
        let total = config.rootfs.diff_ids.len();
        let mut layers = 0;
        for (history, layer) in config.history_with_layers() {
            if history.comment.as_deref() == Some(BUILDKIT_HISTORY_COMMENT) {
                return BaseSplit {
                    layers,
                    method: BaseMethod::BuildkitHistory,
                };
            }
            if layer.is_some() {
                layers += 1;
            }
        }
        BaseSplit {
            layers: total.min(1),
            method: BaseMethod::FirstLayer,
        }
    }

    /// One line saying how the split was made.
    pub fn describe(&self) -> String {
        let n = match self.layers {
            1 => "1 layer".to_string(),
            n => format!("{n} layers"),
        };
        match self.method {
            BaseMethod::BuildkitHistory => {
                format!("{n} (the history entries before the first BuildKit entry)")
            }
            BaseMethod::FirstLayer => format!(
                "{n} (no BuildKit entry in the history, so the boundary is unknown: the first layer is taken as the base, as dive does)"
            ),
        }
    }
}

/// One layer of the analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    /// Position, bottom first.
    pub index: usize,
    /// The blob digest.
    pub digest: String,
    pub diff_id: Option<String>,
    /// Bytes as stored and transferred.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// File bytes the layer carries (dive's layer size).
    pub size: u64,
    /// The instruction that made it, from the history.
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether it belongs to the base image.
    pub base: bool,
    pub added: ChangeStats,
    pub modified: ChangeStats,
    pub removed: ChangeStats,
    /// Every non-directory path the layer added, modified or removed.
    pub changes: Vec<FileChange>,
}

impl LayerReport {
    /// The instruction, or the comment for entries without one (an import), for display.
    pub fn instruction(&self) -> String {
        let text = if self.created_by.is_empty() {
            self.comment.clone().unwrap_or_default()
        } else {
            self.created_by.clone()
        };
        text.strip_suffix(" # buildkit")
            .unwrap_or(&text)
            .trim()
            .to_string()
    }
}

/// The whole analysis of an image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// The image as the user named it.
    pub image: String,
    /// The image id.
    pub id: String,
    /// "store", or the archive file it was read from.
    pub source: String,
    pub layers: Vec<LayerReport>,
    pub base: BaseSplit,
    /// File bytes over all layers (dive's image size).
    pub total_size: u64,
    /// File bytes of the layers above the base.
    pub user_size: u64,
    /// Bytes of all blobs as stored and transferred.
    pub compressed_size: u64,
    /// Bytes lower layers keep that later layers delete or overwrite (reclaimable).
    pub wasted_bytes: u64,
    /// The part of `wasted_bytes` that user layers deleted or overwrote.
    pub user_wasted_bytes: u64,
    /// dive's efficiency score, 0 to 1.
    pub efficiency: f64,
    /// `user_wasted_bytes / user_size` as a ratio (dive's "percent" is a ratio too).
    pub user_wasted_percent: f64,
    /// Every hidden copy, largest first.
    pub wasted: Vec<Waste>,
    /// Anything the reader should know about how the numbers were made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Analysis {
    /// The waste of one path summed over its hidden copies.
    pub fn wasted_for(&self, path: &str) -> u64 {
        self.wasted
            .iter()
            .filter(|w| w.path == path)
            .map(|w| w.size)
            .sum()
    }
}

/// What is known about an image before its layers are read.
pub(crate) struct ImageMeta {
    pub name: String,
    pub id: String,
    pub source: String,
    pub config: ImageConfig,
    pub notes: Vec<String>,
}

/// Builds an analysis layer by layer.
pub(crate) struct Builder {
    meta: ImageMeta,
    history: Vec<oci::History>,
    stacker: engine::Stacker,
    layers: Vec<LayerReport>,
    split: BaseSplit,
}

impl Builder {
    pub fn new(meta: ImageMeta) -> Builder {
        let history = meta
            .config
            .history_with_layers()
            .into_iter()
            .filter(|(_, layer)| layer.is_some())
            .map(|(h, _)| h)
            .collect();
        let split = BaseSplit::from_config(&meta.config);
        Builder {
            meta,
            history,
            stacker: engine::Stacker::new(),
            layers: Vec::new(),
            split,
        }
    }

    pub fn add(&mut self, input: &LayerInput, scanned: &engine::ScannedLayer) {
        let index = self.layers.len();
        let changes = self.stacker.apply(scanned);
        let history = self.history.get(index).cloned().unwrap_or_default();
        self.layers.push(LayerReport {
            index,
            digest: input.digest.to_string(),
            diff_id: scanned
                .diff_id
                .as_ref()
                .or(input.diff_id.as_ref())
                .map(DiffId::to_string),
            compressed_size: input.compressed_size,
            tar_size: scanned.tar_size,
            size: changes.size,
            created_by: history.created_by.unwrap_or_default(),
            comment: history.comment,
            base: index < self.split.layers,
            added: changes.added,
            modified: changes.modified,
            removed: changes.removed,
            changes: changes.changes,
        });
    }

    pub fn finish(self) -> Analysis {
        let Builder {
            meta,
            stacker,
            layers,
            split,
            ..
        } = self;
        let efficiency = stacker.efficiency();
        let mut wasted = stacker.waste;
        wasted.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.added_in.cmp(&b.added_in))
        });
        let total_size = layers.iter().map(|l| l.size).sum();
        let user_size: u64 = layers.iter().filter(|l| !l.base).map(|l| l.size).sum();
        let wasted_bytes = wasted.iter().map(|w| w.size).sum();
        let user_wasted_bytes: u64 = wasted
            .iter()
            .filter(|w| w.removed_in >= split.layers)
            .map(|w| w.size)
            .sum();
        let mut notes = meta.notes;
        let user_wasted_percent = if user_size == 0 {
            if user_wasted_bytes > 0 {
                notes.push(
                    "the user layers add no file bytes, so user_wasted_percent is taken over 1 byte"
                        .to_string(),
                );
            }
            user_wasted_bytes as f64
        } else {
            user_wasted_bytes as f64 / user_size as f64
        };
        Analysis {
            image: meta.name,
            id: meta.id,
            source: meta.source,
            compressed_size: layers.iter().map(|l| l.compressed_size).sum(),
            layers,
            base: split,
            total_size,
            user_size,
            wasted_bytes,
            user_wasted_bytes,
            efficiency,
            user_wasted_percent,
            wasted,
            notes,
        }
    }
}

/// Analyses an image, reading each layer once, streamed.
pub fn analyze(source: &ImageSource) -> Result<Analysis> {
    let mut notes = Vec::new();
    if !source.others.is_empty() {
        notes.push(format!(
            "the archive holds {} images; this is the first (the others: {})",
            source.others.len() + 1,
            source.others.join(", ")
        ));
    }
    let mut builder = Builder::new(ImageMeta {
        name: source.name.clone(),
        id: source.id.to_string(),
        source: source.origin.clone(),
        config: source.config.clone(),
        notes,
    });
    for (index, input) in source.layers.iter().enumerate() {
        let layer_err = |reason: String| AnalyzeError::Layer {
            index,
            digest: input.digest.to_string(),
            reason,
        };
        let raw = source.open_layer(index)?;
        let tar = layer::decompress(BufReader::with_capacity(1 << 20, raw))
            .map_err(|e| layer_err(e.to_string()))?;
        let scanned = engine::scan_layer(tar).map_err(|e| layer_err(e.to_string()))?;
        if let (Some(expected), Some(actual)) = (&input.diff_id, &scanned.diff_id)
            && expected != actual
        {
            return Err(layer_err(format!(
                "its content hashes to {actual}, but the image config says {expected}"
            )));
        }
        builder.add(input, &scanned);
    }
    Ok(builder.finish())
}

/// Analyses layers given as uncompressed tars in memory (for tests and tools).
#[doc(hidden)]
pub fn analyze_tars(name: &str, config: &ImageConfig, tars: &[Vec<u8>]) -> Result<Analysis> {
    let mut builder = Builder::new(ImageMeta {
        name: name.to_string(),
        id: oci::Digest::of(name.as_bytes()).to_string(),
        source: "memory".to_string(),
        config: config.clone(),
        notes: Vec::new(),
    });
    for (index, tar) in tars.iter().enumerate() {
        let scanned = engine::scan_layer(&tar[..]).map_err(|e| AnalyzeError::Layer {
            index,
            digest: String::new(),
            reason: e.to_string(),
        })?;
        let digest = scanned
            .diff_id
            .as_ref()
            .map(|d| d.digest().clone())
            .unwrap_or_else(|| oci::Digest::of(tar));
        let input = LayerInput {
            digest,
            media_type: oci::MediaType::OciLayer,
            compressed_size: tar.len() as u64,
            diff_id: scanned.diff_id.clone(),
        };
        builder.add(&input, &scanned);
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests;
