//! Plain HTTP(S) downloads for `ADD <url>`: the same HTTP client and TLS setup as registry
//! exchanges (the system's CA store plus `certs.d/HOST/`), redirects followed, retries with
//! backoff before the body starts, and the `Last-Modified` time parsed (RFC 7231 HTTP-date).
//!
//! Plain `http://` is allowed here (unlike for registries), because the user wrote the URL.

use std::io::Read;
use std::time::{Duration, SystemTime};

use ureq::http;

use crate::client::{describe, header, small_body, tls_config};
use crate::config::ConfigPaths;
use crate::error::error_detail;
use crate::retry::{Failure, RetryPolicy, parse_retry_after};

/// Why a download failed; names the URL (as the user wrote it).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: only http:// and https:// URLs can be downloaded")]
    Scheme { url: String },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: the server answered {status}{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
}

/// A download in progress.
pub struct Fetched {
    /// The body, streamed.
    pub body: Box<dyn Read + Send>,
    /// `Last-Modified`, in seconds since the Unix epoch.
    pub last_modified: Option<i64>,
    /// `Content-Length`, when the server sent one.
    pub length: Option<u64>,
}

/// Downloads URLs. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct HttpFetcher {
    paths: ConfigPaths,
    retry: RetryPolicy,
    user_agent: String,
}

impl HttpFetcher {
    pub fn new(paths: ConfigPaths) -> HttpFetcher {
        HttpFetcher {
            paths,
            retry: RetryPolicy::default(),
            user_agent: format!("strata/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> HttpFetcher {
        self.retry = retry;
        self
    }

    fn agent(&self, host: &str) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(self.user_agent.as_str())
            .accept_encoding("identity")
            .max_redirects(10)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .tls_config(tls_config(&self.paths, host))
            .build()
            .new_agent()
    }

    /// Starts a `GET`: connection errors and transient statuses are retried with backoff, a
    /// 429's `Retry-After` honoured; any other answer than 200 is an error.
    pub fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(FetchError::Scheme { url: url.into() });
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let agent = self.agent(host);
        let mut attempt = 0;
        loop {
            let request = http::Request::get(url)
                .body(())
                .map_err(|e| FetchError::Transport {
                    url: url.into(),
                    reason: format!("not a valid URL: {e}"),
                })?;
            match agent.run(request) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 200 {
                        let last_modified =
                            header(&resp, "last-modified").and_then(|v| parse_http_date(&v));
                        let length =
                            header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok());
                        return Ok(Fetched {
                            body: Box::new(resp.into_body().into_reader()),
                            last_modified,
                            length,
                        });
                    }
                    let retry_after = header(&resp, "retry-after")
                        .and_then(|v| parse_retry_after(&v, SystemTime::now()));
                    if self.retry.wait_to_retry(
                        &mut attempt,
                        Failure::Status(status),
                        retry_after,
                        format_args!("GET {url}: {status}"),
                    ) {
                        continue;
                    }
                    return Err(FetchError::Status {
                        url: url.into(),
                        status,
                        detail: error_detail(&small_body(resp, 4 << 10)),
                    });
                }
                Err(e) => {
                    if !self.retry.wait_to_retry(
                        &mut attempt,
                        Failure::Transport,
                        None,
                        format_args!("GET {url}: {}", describe(&e)),
                    ) {
                        return Err(FetchError::Transport {
                            url: url.into(),
                            reason: describe(&e),
                        });
                    }
                }
            }
        }
    }
}

/// Parses an HTTP-date (RFC 7231 §7.1.1.1): the IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms recipients must accept. Seconds since the Unix epoch.
pub fn parse_http_date(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(z) = jiff::fmt::rfc2822::parse(value) {
        return Some(z.timestamp().as_second());
    }
    let utc = |dt: jiff::civil::DateTime| {
        jiff::tz::TimeZone::UTC
            .to_timestamp(dt)
            .ok()
            .map(|t| t.as_second())
    };
    if let Some((_, rest)) = value.split_once(", ")
        && let Some(rest) = rest.strip_suffix(" GMT")
        && let Ok(tm) = jiff::fmt::strtime::parse("%d-%b-%y %H:%M:%S", rest)
        && let Ok(dt) = tm.to_datetime()
    {
        return utc(dt);
    }
    // asctime: the day of the month is space-padded; normalize the spacing first.
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.len() == 5 {
        let joined = format!(
            "{} {} {} {} {}",
            words[0], words[1], words[2], words[3], words[4]
        );
        if let Ok(tm) = jiff::fmt::strtime::parse("%a %b %d %H:%M:%S %Y", &joined)
            && let Ok(dt) = tm.to_datetime()
        {
            return utc(dt);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_http_date_forms_parse() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(parse_http_date(v), Some(784_111_777), "{v}");
        }
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        for v in [
            "",
            "yesterday",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "1994-11-06",
        ] {
            assert_eq!(parse_http_date(v), None, "{v}");
        }
    }

    #[test]
    fn only_http_urls_are_fetched() {
        let f = HttpFetcher::new(ConfigPaths {
            strata_dir: "/nonexistent".into(),
            docker_dir: "/nonexistent".into(),
            helper_path: None,
        });
        for url in ["ftp://example.com/x", "file:///etc/passwd", "example.com/x"] {
            assert!(
                matches!(f.fetch(url), Err(FetchError::Scheme { .. })),
                "{url}"
            );
        }
    }
}
