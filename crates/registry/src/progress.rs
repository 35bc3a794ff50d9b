//! What a pull or push reports while it works. The CLI turns these into docker's lines or
//! progress bars; the library never prints.

use oci::Digest;

/// One thing that happened to one blob, named as docker names it in its progress output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Pull: the blob is queued (`Pulling fs layer`).
    Waiting,
    /// Pull: the store has it already (`Already exists`).
    AlreadyExists,
    /// Pull: bytes are arriving (`Downloading`).
    Downloading,
    /// Pull: a transfer failed and is tried again.
    Retrying { attempt: u32, reason: String },
    /// Pull: all bytes are in and verified (`Download complete`).
    DownloadComplete,
    /// Pull: the blob is committed to the store (`Pull complete`).
    PullComplete,
    /// Push: queued (`Preparing`).
    Preparing,
    /// Push: the registry has it (`Layer already exists`).
    LayerAlreadyExists,
    /// Push: bytes are being sent (`Pushing`).
    Pushing,
    /// Push: mounted from another repository of the same registry (`Mounted from REPO`).
    MountedFrom(String),
    /// Push: an upload was cut and continues at this offset.
    Resuming { offset: u64 },
    /// Push: uploaded (`Pushed`).
    Pushed,
}

impl Status {
    /// docker's wording for the status.
    pub fn docker_text(&self) -> String {
        match self {
            Status::Waiting => "Pulling fs layer".into(),
            Status::AlreadyExists => "Already exists".into(),
            Status::Downloading => "Downloading".into(),
            Status::Retrying { attempt, .. } => format!("Retrying (attempt {attempt})"),
            Status::DownloadComplete => "Download complete".into(),
            Status::PullComplete => "Pull complete".into(),
            Status::Preparing => "Preparing".into(),
            Status::LayerAlreadyExists => "Layer already exists".into(),
            Status::Pushing => "Pushing".into(),
            Status::MountedFrom(repo) => format!("Mounted from {repo}"),
            Status::Resuming { offset } => format!("Resuming at byte {offset}"),
            Status::Pushed => "Pushed".into(),
        }
    }
}

/// An event of a pull or a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A blob changed status. `size` is its size in bytes.
    Blob {
        digest: Digest,
        size: u64,
        status: Status,
    },
    /// Bytes moved for a blob so far (of `total`).
    Bytes {
        digest: Digest,
        done: u64,
        total: u64,
    },
}

/// Receives events from the worker threads of a transfer.
pub trait Progress: Sync {
    fn event(&self, event: Event);
}

/// Ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: Event) {}
}
