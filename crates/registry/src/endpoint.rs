//! Where a registry's API is and which scheme may reach it.

use std::net::IpAddr;

/// How a registry may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// HTTPS only: every registry that is neither loopback nor marked insecure.
    Https,
    /// HTTPS when the registry speaks it, else plain HTTP: loopback hosts and registries the
    /// user marked insecure. Never chosen silently for any other host.
    HttpsOrHttp,
}

/// A registry as a reference names it (`docker.io`, `localhost:5000`), and the host its API is
/// served from (`registry-1.docker.io` for Docker Hub).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry name used in references, credentials and messages.
    pub registry: String,
    /// `host[:port]` of the API.
    pub host: String,
    pub scheme: Scheme,
}

impl Endpoint {
    /// The endpoint for a registry name; `insecure` lists the registries (`host[:port]`, or a
    /// bare host for every port) the user allowed plain HTTP for.
    pub fn new(registry: &str, insecure: &[String]) -> Endpoint {
        let host = if registry == "docker.io" || registry == "index.docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let marked = insecure.iter().any(|i| {
            let i = i
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            i == registry || i == host || i == host_without_port(&host)
        });
        let scheme = if marked || is_loopback(&host) {
            Scheme::HttpsOrHttp
        } else {
            Scheme::Https
        };
        Endpoint {
            registry: registry.to_string(),
            host,
            scheme,
        }
    }

    /// The base URL (`https://host`) for a scheme choice.
    pub fn base(&self, https: bool) -> String {
        format!("{}://{}", if https { "https" } else { "http" }, self.host)
    }
}

/// `host` of `host:port` (and `[v6]` of `[v6]:port`).
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Whether `host[:port]` is this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let h = host_without_port(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `/v2/<repository>/<rest>`, with the repository path kept as is (it is already validated by
/// the reference grammar: lowercase letters, digits, separators and slashes).
pub(crate) fn v2_path(repository: &str, rest: &str) -> String {
    format!("/v2/{repository}/{rest}")
}

/// Percent-encodes a query value (digests and repository names only need `:` and `/`).
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_may_use_http_and_nothing_else_does() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
            assert_eq!(Endpoint::new(h, &[]).scheme, Scheme::HttpsOrHttp, "{h}");
        }
        for h in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "192.168.1.2",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(h), "{h}");
            assert_eq!(Endpoint::new(h, &[]).scheme, Scheme::Https, "{h}");
        }
    }

    #[test]
    fn insecure_marks_match_host_and_port() {
        let marks = vec!["reg.lan:5000".to_string(), "http://other.lan".to_string()];
        assert_eq!(
            Endpoint::new("reg.lan:5000", &marks).scheme,
            Scheme::HttpsOrHttp
        );
        assert_eq!(Endpoint::new("reg.lan:6000", &marks).scheme, Scheme::Https);
        assert_eq!(
            Endpoint::new("other.lan:443", &marks).scheme,
            Scheme::HttpsOrHttp
        );
    }

    #[test]
    fn references_map_to_api_urls() {
        let hub = Endpoint::new("docker.io", &[]);
        assert_eq!(hub.host, "registry-1.docker.io");
        assert_eq!(hub.base(true), "https://registry-1.docker.io");
        let r = oci::Reference::parse("localhost:5000/team/app:1").unwrap();
        let e = Endpoint::new(r.domain(), &[]);
        assert_eq!(
            format!(
                "{}{}",
                e.base(false),
                v2_path(r.path(), &format!("manifests/{}", r.tag().unwrap()))
            ),
            "http://localhost:5000/v2/team/app/manifests/1"
        );
        assert_eq!(query_escape("team/app"), "team%2Fapp");
        assert_eq!(query_escape("sha256:ab"), "sha256%3Aab");
    }
}
