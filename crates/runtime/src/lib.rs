//! Containers as docker users know them, over the store's images.
//!
//! This crate owns docker's run semantics (how an image's Entrypoint, Cmd, Env, WorkingDir and
//! User combine with `run`'s flags; `-v`, `--mount` and `--tmpfs` syntax), the container
//! lifecycle (create, run attached or detached, stop, remove) on top of the sandbox, and the
//! container's copy-on-write layer as a change list (`diff`), a new image (`commit`) or a
//! flattened tar (`export`).
//!
//! It never parses command lines or prints tables (the CLI does), never mounts anything or
//! forks itself (the sandbox does), and keeps its records in the store.

mod changes;
mod config;
mod container;
mod mounts;
mod names;

pub use changes::{Change, ChangeKind, CommitOptions, apply_changes, commit, diff, export};
pub use config::{RunOptions, parse_env_file, parse_memory, parse_nano_cpus, resolve_env_arg};
pub use container::{
    Created, State, create, remove, run_attached, start_detached, state, stop, wait_exit,
};
pub use mounts::{MountRequest, parse_mount_flag, parse_tmpfs_flag, parse_volume_flag};

/// Exit codes docker uses for its own failures, as the process's own exit code stands for the
/// command's.
pub const EXIT_RUNTIME_FAILED: i32 = sandbox::EXIT_SETUP_FAILED;
pub const EXIT_NOT_EXECUTABLE: i32 = sandbox::EXIT_NOT_EXECUTABLE;
pub const EXIT_NOT_FOUND: i32 = sandbox::EXIT_NOT_FOUND;

/// Everything that can go wrong with a container, each naming the object involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// A flag or a `-c` change that makes no sense; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the container's state (e.g. removing a running one).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    User(#[from] sandbox::users::UserError),
    #[error("writing the layer: {0}")]
    Layer(#[from] layer::LayerError),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

oci::io_context!(RuntimeError);

/// Looks a container up by id, id prefix or name.
pub fn find(store: &store::Store, query: &str) -> Result<store::ContainerRecord> {
    store
        .find_container(query)?
        .ok_or_else(|| RuntimeError::NoSuchContainer(query.to_string()))
}

/// A new random 64-hex-digit id (containers, anonymous volumes).
pub fn new_id() -> String {
    names::new_id()
}

/// RFC 3339 "now", as records keep times.
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}
