//! The OCI distribution client: the only crate in strata that talks to a network.
//!
//! It owns:
//! - where a registry is and how to reach it ([`Endpoint`]): HTTPS with the system's CA store
//!   (plus per-registry CAs in `certs.d/`), plain HTTP only for loopback hosts and registries the
//!   user marks insecure;
//! - authentication: anonymous, Basic, and Bearer tokens through the `WWW-Authenticate`
//!   challenge, tokens cached per scope while valid ([`auth`]); credentials from `strata login`
//!   and from docker's `config.json` (`auths`, `credsStore`, `credHelpers`) ([`credentials`]);
//! - the HTTP exchanges of the distribution spec ([`RegistryClient`]): resolve a reference, fetch
//!   manifests, indexes and blobs straight into the store while hashing, check blob existence,
//!   mount across repositories, upload (monolithic or chunked with resume), put manifests; with
//!   retries and backoff ([`RetryPolicy`]);
//! - the two whole-image operations built on them, [`pull_image`] and [`push_image`], which
//!   report what they do through [`Progress`] and never print;
//! - build caches kept in a registry ([`push_cache`], [`fetch_cache`], [`fetch_cached_layer`]);
//! - plain HTTP(S) downloads for `ADD <url>` ([`HttpFetcher`]), on the same client and TLS setup.
//!
//! It never unpacks layers (it only hashes their uncompressed stream on the way in, to record
//! diff ids), never names an image before every blob it needs is verified in the store, and
//! never writes a secret to a log or an error message.

pub mod auth;
mod cache;
mod client;
mod config;
pub mod credentials;
mod endpoint;
mod error;
mod fetch;
mod progress;
mod pull;
mod push;
mod retry;
mod upload;

pub use auth::{Challenge, Credentials};
pub use cache::{CachePushed, fetch_cache, fetch_cached_layer, push_cache};
pub use client::{BlobPush, ClientOptions, RegistryClient};
pub use config::ConfigPaths;
pub use endpoint::{Endpoint, Scheme, is_loopback};
pub use error::{RegistryError, Result};
pub use fetch::{FetchError, Fetched, HttpFetcher, parse_http_date};
pub use progress::{Event, NoProgress, Progress, Status};
pub use pull::{Pulled, pull_image, select_platform};
pub use push::{Pushed, push_image};
pub use retry::{RetryPolicy, parse_retry_after};

/// Media types a manifest request accepts, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or index strata reads (containerd's limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
