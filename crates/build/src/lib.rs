//! `strata build`: turns a Dockerfile, a context and build arguments into an image.
//!
//! It owns the build context (scanning, `.dockerignore`, content checksums with a stat cache),
//! cache keys, and the solver that runs steps: COPY/ADD natively into new snapshots, RUN in the
//! sandbox over an overlay of the parent's snapshots, metadata steps as config changes. It
//! never parses Dockerfile syntax (the `dockerfile` crate does) and never talks to a registry.

pub mod context;
pub mod copy;
pub mod names;
pub mod plan;
pub use sandbox::users;
pub mod cachekey;
pub mod progress;
pub mod solve;
pub mod ssh;

pub use progress::{Progress, ProgressEvent};
pub use solve::{
    BuildError, BuildOutput, BuildRequest, DEFAULT_MAX_LAYERS, ImageResolver, Squash, UrlFetcher,
    build,
};
