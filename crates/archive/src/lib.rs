//! Image archives in and out of the store.
//!
//! Reads docker-archive tars (`docker save`, including the combined layout of docker >= 25),
//! OCI archives (`skopeo copy … oci-archive:`) and OCI layout directories; writes
//! docker-archive tars that `docker load` and `podman load` take, and OCI archives that
//! `skopeo` and `umoci` read. Every digest an archive gives is verified before anything is
//! named; a bad archive leaves no named image behind.
//!
//! It never unpacks layers (that is the store's snapshot job) and never talks to a registry.

mod load;
mod save;

pub use load::{Loaded, load_dir, load_tar};
pub use save::{ArchiveFormat, SaveItem, save};

use oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not an image archive: {0}")]
    Format(String),
    #[error("archive is missing {what} {path}")]
    Missing { what: &'static str, path: String },
    #[error("archive entry {path}: content digest is {actual}, but its name says {expected}")]
    WrongDigest {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "image {image}: layer {index} ({path}) has diff id {actual}, but the config says {expected}"
    )]
    WrongDiffId {
        image: String,
        index: usize,
        path: String,
        expected: oci::DiffId,
        actual: String,
    },
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

oci::io_context!(ArchiveError);
