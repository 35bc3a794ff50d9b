//! Image-spec types and identifiers shared by every strata crate.
//!
//! This crate owns the vocabulary: digests (with distinct types for blob digests, diff ids and
//! chain ids so they cannot be mixed up), media types, descriptors, manifests, indexes, the image
//! config, platforms and image references with docker's normalization. It also owns the one
//! canonical JSON writer, so that every blob strata produces has a reproducible digest, and the
//! small error helpers every crate shares ([`error_chain`], [`io_context!`]).
//!
//! It never does I/O and never reads the clock: callers pass timestamps in.
//!
//! We keep our own serde types instead of `oci-spec`: its image config drops Docker's
//! `Healthcheck`, `OnBuild`, `Shell` and `ArgsEscaped`, and its builders pull in a large
//! dependency tree for what is a handful of plain structs.

mod config;
mod digest;
mod errors;
mod json;
mod manifest;
mod media;
mod platform;
mod reference;
mod signal;

pub use config::{ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs};
pub use digest::{ChainId, DiffId, Digest, DigestError, Sha256Hasher, chain_ids};
pub use errors::error_chain;
pub use json::{canonical_json, canonical_json_pretty};
pub use manifest::{Descriptor, Index, Manifest, annotations};
pub use media::MediaType;
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use signal::signal_number;
