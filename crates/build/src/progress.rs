//! What the solver reports while it works. The CLI turns these into BuildKit-like output
//! (plain lines for CI, a live view on a terminal, or JSON events).

use serde::Serialize;

/// One event about one step (a "vertex" in BuildKit's words), numbered from 1 in plan order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// The step started (or was looked up), with its display name: `[build 2/4] RUN make`.
    Started { id: usize, name: String },
    /// It was found in the cache.
    Cached { id: usize },
    /// It missed the cache, and why.
    Miss { id: usize, reason: String },
    /// Output of a RUN, as it came.
    Log {
        id: usize,
        #[serde(serialize_with = "lossy")]
        data: Vec<u8>,
    },
    /// It finished.
    Done { id: usize, seconds: f64 },
    /// It failed.
    Failed { id: usize, message: String },
    /// A build-wide warning (unused build args, lint findings).
    Warning { message: String },
}

fn lossy<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

/// Receives events; called from several threads at once.
pub trait Progress: Sync {
    fn event(&self, event: ProgressEvent);
}

/// Discards everything.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: ProgressEvent) {}
}

impl<F: Fn(ProgressEvent) + Sync> Progress for F {
    fn event(&self, event: ProgressEvent) {
        self(event)
    }
}
