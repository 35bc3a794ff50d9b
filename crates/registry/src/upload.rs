//! Blob uploads: one `PUT` for small blobs, `PATCH` chunks with `Content-Range` for large ones,
//! resuming at the offset the registry reports after a cut connection, and starting the
//! session over when the registry has lost it.

use std::io::{self, Read};

use oci::{Descriptor, Digest};
use store::Store;
use ureq::http::Method;

use crate::auth::Scope;
use crate::client::{Exchange, RegistryClient, header};
use crate::endpoint::query_escape;
use crate::error::{RegistryError, Result};
use crate::progress::{Event, Progress, Status};
use crate::retry::{Failure, RetryPolicy};

/// Whole-session restarts before an upload gives up.
const MAX_RESTARTS: u32 = 3;

/// Why an upload session ended without the blob.
enum Ended {
    /// Start a new session (the registry lost this one, or a monolithic PUT was cut).
    Restart(String),
    /// Give up.
    Fatal(RegistryError),
}

impl From<RegistryError> for Ended {
    fn from(e: RegistryError) -> Self {
        Ended::Fatal(e)
    }
}

/// Counts what the upload read from the store, and keeps a read error of the store (a corrupt
/// blob) apart from network errors.
struct Counting<'a, R> {
    inner: R,
    read: u64,
    base: u64,
    total: u64,
    local_error: Option<io::Error>,
    digest: &'a Digest,
    progress: &'a dyn Progress,
}

impl<'a, R> Counting<'a, R> {
    /// Counts `desc`'s bytes from its start.
    fn new(inner: R, desc: &'a Descriptor, progress: &'a dyn Progress) -> Self {
        Counting {
            inner,
            read: 0,
            base: 0,
            total: desc.size,
            local_error: None,
            digest: &desc.digest,
            progress,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                if n > 0 {
                    self.progress.event(Event::Bytes {
                        digest: self.digest.clone(),
                        done: self.base + self.read,
                        total: self.total,
                    });
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.local_error = Some(e);
                Err(copy)
            }
        }
    }
}

/// Appends `name=value` to a URL's query.
pub(crate) fn with_query(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={}", query_escape(value))
}

/// The offset after the last byte a `Range: 0-N` header reports (`0-0` reads as nothing: the
/// CNCF registry sends it for an empty upload; a 1-byte one is then simply sent again, and
/// a wrong total is caught by the digest check of the final PUT).
pub(crate) fn parse_range_end(range: &str) -> Option<u64> {
    let range = range.trim().trim_start_matches("bytes=");
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

pub(crate) fn upload(
    client: &RegistryClient,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    session: Option<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let stored = store.blob_size(&desc.digest)?;
    if stored != desc.size {
        return Err(RegistryError::Store(store::StoreError::DigestMismatch {
            expected: desc.digest.clone(),
            expected_size: desc.size,
            actual: desc.digest.clone(),
            actual_size: stored,
        }));
    }
    let scopes = [Scope::push(repository)];
    let mut session = session;
    let mut restarts = 0;
    loop {
        let url = match session.take() {
            Some(u) => u,
            None => client.start_upload(repository, &scopes)?,
        };
        progress.event(Event::Blob {
            digest: desc.digest.clone(),
            size: desc.size,
            status: Status::Pushing,
        });
        let ended = if desc.size <= client.options().chunk_size {
            monolithic(client, repository, desc, store, &url, &scopes, progress)
        } else {
            chunked(client, repository, desc, store, url, &scopes, progress)
        };
        match ended {
            Ok(()) => return Ok(()),
            Err(Ended::Fatal(e)) => return Err(e),
            Err(Ended::Restart(reason)) => {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(RegistryError::Transport {
                        registry: client.registry().to_string(),
                        reason: format!("uploading blob {} to {repository}: {reason}", desc.digest),
                    });
                }
                tracing::info!(
                    "uploading {} to {repository}: {reason}; starting the upload again",
                    desc.digest
                );
                progress.event(Event::Blob {
                    digest: desc.digest.clone(),
                    size: desc.size,
                    status: Status::Retrying {
                        attempt: restarts + 1,
                        reason: reason.clone(),
                    },
                });
                std::thread::sleep(client.options().retry.backoff(restarts - 1));
            }
        }
    }
}

/// Checks, after the last byte went out, that the store's verified reader reaches a clean
/// end: a corrupt local blob is never finalized.
fn verify_end<R: Read>(reader: &mut Counting<'_, R>) -> std::result::Result<(), Ended> {
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Ended::Fatal(RegistryError::Io {
            context: format!("blob {}", reader.digest),
            source: io::Error::new(io::ErrorKind::InvalidData, "longer than its recorded size"),
        })),
        Err(e) => Err(Ended::Fatal(RegistryError::Io {
            context: format!("reading blob {} from the store", reader.digest),
            source: e,
        })),
    }
}

fn monolithic(
    client: &RegistryClient,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    url: &str,
    scopes: &[Scope],
    progress: &dyn Progress,
) -> std::result::Result<(), Ended> {
    let blob = store.open_blob(&desc.digest).map_err(RegistryError::from)?;
    let mut reader = Counting::new(blob, desc, progress);
    let put_url = with_query(url, "digest", &desc.digest.to_string());
    let headers = [("content-type", "application/octet-stream".to_string())];
    let sent = client.send_stream(
        Method::PUT,
        &put_url,
        &headers,
        &mut reader,
        desc.size,
        scopes,
        repository,
    )?;
    if let Some(e) = reader.local_error.take() {
        return Err(Ended::Fatal(RegistryError::Io {
            context: format!("reading blob {} from the store", desc.digest),
            source: e,
        }));
    }
    let resp = sent.map_err(Ended::Restart)?;
    let status = resp.status().as_u16();
    match status {
        201 | 204 => verify_end(&mut reader),
        404 => Err(Ended::Restart(
            "the registry lost the upload session".into(),
        )),
        s if RetryPolicy::is_retryable_status(s) => Err(Ended::Restart(format!("answered {s}"))),
        _ => Err(Ended::Fatal(client.status_error(
            resp,
            "PUT",
            repository,
            &format!("blob upload {}", desc.digest),
        ))),
    }
}

/// Asks the registry how much of the upload it has: (offset, the session's new URL).
fn upload_status(
    client: &RegistryClient,
    repository: &str,
    url: &str,
    scopes: &[Scope],
) -> std::result::Result<(u64, String), Ended> {
    let ex = Exchange::new(Method::GET, url.to_string(), scopes);
    let resp = client.execute(&ex, Some(repository))?;
    match resp.status().as_u16() {
        204 | 200 => {
            let offset = header(&resp, "range")
                .as_deref()
                .and_then(parse_range_end)
                .unwrap_or(0);
            let next = match header(&resp, "location") {
                Some(l) => client.absolute(&l)?,
                None => url.to_string(),
            };
            Ok((offset, next))
        }
        s => Err(Ended::Restart(format!(
            "the registry no longer knows the upload ({s})"
        ))),
    }
}

fn chunked(
    client: &RegistryClient,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    mut url: String,
    scopes: &[Scope],
    progress: &dyn Progress,
) -> std::result::Result<(), Ended> {
    let chunk = client.options().chunk_size.max(1);
    let retry = client.options().retry.clone();
    let open = || store.open_blob(&desc.digest).map_err(RegistryError::from);
    let mut reader = Counting::new(open()?, desc, progress);
    let mut offset = 0u64;
    let mut failures = 0u32;
    while offset < desc.size {
        if reader.read != offset {
            // Start over from the store and skip what the registry has: the reader verifies
            // the whole blob, so it is read from its beginning.
            reader.inner = open()?;
            reader.read = 0;
            let skipped = io::copy(&mut (&mut reader.inner).take(offset), &mut io::sink())
                .map_err(|e| RegistryError::Io {
                    context: format!("reading blob {} from the store", desc.digest),
                    source: e,
                })?;
            reader.read = skipped;
        }
        let len = chunk.min(desc.size - offset);
        let headers = [
            ("content-type", "application/octet-stream".to_string()),
            ("content-range", format!("{offset}-{}", offset + len - 1)),
        ];
        let sent = {
            let mut body = (&mut reader).take(len);
            client.send_stream(
                Method::PATCH,
                &url,
                &headers,
                &mut body,
                len,
                scopes,
                repository,
            )?
        };
        if let Some(e) = reader.local_error.take() {
            return Err(Ended::Fatal(RegistryError::Io {
                context: format!("reading blob {} from the store", desc.digest),
                source: e,
            }));
        }
        let problem = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match status {
                    202 | 204 => {
                        let reported = header(&resp, "range").as_deref().and_then(parse_range_end);
                        if let Some(l) = header(&resp, "location") {
                            url = client.absolute(&l)?;
                        }
                        offset = match reported {
                            Some(r) if r <= offset + len => r,
                            _ => offset + len,
                        };
                        failures = 0;
                        continue;
                    }
                    404 => {
                        return Err(Ended::Restart(
                            "the registry lost the upload session".into(),
                        ));
                    }
                    416 => format!("answered 416 at offset {offset}"),
                    s if RetryPolicy::is_retryable_status(s) => format!("answered {s}"),
                    _ => {
                        return Err(Ended::Fatal(client.status_error(
                            resp,
                            "PATCH",
                            repository,
                            &format!("blob upload {}", desc.digest),
                        )));
                    }
                }
            }
            Err(transport) => transport,
        };
        let Some(delay) = retry.next_delay(failures, Failure::Transport, None) else {
            return Err(Ended::Restart(problem));
        };
        failures += 1;
        tracing::info!(
            "uploading {} to {repository}: {problem}; asking the registry where to resume",
            desc.digest
        );
        std::thread::sleep(delay);
        let (resume_at, next) = upload_status(client, repository, &url, scopes)?;
        if resume_at > desc.size {
            return Err(Ended::Restart(format!(
                "the registry reports {resume_at} bytes of a {}-byte blob",
                desc.size
            )));
        }
        url = next;
        offset = resume_at;
        progress.event(Event::Blob {
            digest: desc.digest.clone(),
            size: desc.size,
            status: Status::Resuming { offset },
        });
    }
    verify_end(&mut reader)?;
    let ex = Exchange::new(
        Method::PUT,
        with_query(&url, "digest", &desc.digest.to_string()),
        scopes,
    );
    // Not retried blindly: a lost answer to a finished PUT is checked with a HEAD below.
    let ex = Exchange { retry: false, ..ex };
    let resp = match client.execute(&ex, Some(repository)) {
        Ok(r) => r,
        Err(RegistryError::Transport { reason, .. }) => {
            if client.blob_exists(repository, &desc.digest, scopes)? {
                return Ok(());
            }
            return Err(Ended::Restart(reason));
        }
        Err(e) => return Err(Ended::Fatal(e)),
    };
    match resp.status().as_u16() {
        201 | 204 => Ok(()),
        400 | 404 | 416 => Err(Ended::Restart(format!(
            "the registry refused to finish the upload ({})",
            crate::error::error_detail(&crate::client::small_body(resp, 64 << 10))
        ))),
        s if RetryPolicy::is_retryable_status(s) => Err(Ended::Restart(format!("answered {s}"))),
        _ => Err(Ended::Fatal(client.status_error(
            resp,
            "PUT",
            repository,
            &format!("blob upload {}", desc.digest),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_give_the_resume_offset() {
        assert_eq!(parse_range_end("0-1023"), Some(1024));
        assert_eq!(parse_range_end("bytes=0-9"), Some(10));
        assert_eq!(parse_range_end("0-0"), Some(0));
        assert_eq!(parse_range_end("5-9"), None);
        assert_eq!(parse_range_end("junk"), None);
        assert_eq!(
            with_query("http://h/u?_state=x", "digest", "sha256:ab"),
            "http://h/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(with_query("http://h/u", "a", "b"), "http://h/u?a=b");
    }
}
