use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use crate::{IoContext, Result, Store};

/// An advisory lock on a store file, released when dropped (or when the process dies, so a
/// crashed strata never wedges the store).
///
/// Two locks exist. The *store lock*: every command that reads or writes content holds it shared
/// for its whole run, and garbage collection holds it exclusive, so a sweep never deletes a blob
/// that another process has just written but not yet named. The *index lock*: held exclusive
/// around each read-modify-write of `index.json`.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn acquire(path: &Path, op: FlockOperation, nonblocking: FlockOperation) -> Result<StoreLock> {
        let ctx = || format!("locking {}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ctx(ctx)?;
        if flock(&file, nonblocking).is_err() {
            tracing::info!(
                "waiting for another strata process to release {}",
                path.display()
            );
            flock(&file, op).map_err(std::io::Error::from).ctx(ctx)?;
        }
        Ok(StoreLock { _file: file })
    }
}

impl Store {
    /// The store lock, shared: held by every command that touches content.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::acquire(
            &self.root().join("lock"),
            FlockOperation::LockShared,
            FlockOperation::NonBlockingLockShared,
        )
    }

    /// The store lock, exclusive: held by garbage collection.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        StoreLock::acquire(
            &self.root().join("lock"),
            FlockOperation::LockExclusive,
            FlockOperation::NonBlockingLockExclusive,
        )
    }

    pub(crate) fn lock_index(&self) -> Result<StoreLock> {
        StoreLock::acquire(
            &self.root().join("index.lock"),
            FlockOperation::LockExclusive,
            FlockOperation::NonBlockingLockExclusive,
        )
    }
}
