//! [`RegistryClient`]: the distribution-spec exchanges with one registry, with auth and retries.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use oci::{Descriptor, DiffId, Digest, MediaType, Reference};
use store::{LayerInfo, Store};
use ureq::http::{self, Method, Response};

use crate::auth::{Challenge, Credentials, Scope, TokenCache, TokenResponse, scope_key};
use crate::config::ConfigPaths;
use crate::endpoint::{Endpoint, Scheme, query_escape, v2_path};
use crate::error::{RegistryError, Result, error_detail};
use crate::progress::{Event, Progress, Status};
use crate::retry::{Failure, RetryPolicy, parse_retry_after};
use crate::{MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};

/// How a client behaves; [`ClientOptions::new`] gives docker's defaults.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub paths: ConfigPaths,
    /// Registries (`host[:port]`) allowed to use plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Use these credentials instead of looking them up (for `login`).
    pub credentials: Option<Credentials>,
    /// Look credentials up in strata's and docker's files when none are given.
    pub lookup_credentials: bool,
    pub retry: RetryPolicy,
    /// Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks of this size.
    pub chunk_size: u64,
    /// Blobs transferred at once.
    pub parallel: usize,
    pub user_agent: String,
}

impl ClientOptions {
    /// Defaults, with the insecure registries of `registries.json` added.
    pub fn new(paths: ConfigPaths) -> Result<ClientOptions> {
        let insecure_registries = paths.insecure_registries()?;
        Ok(ClientOptions {
            paths,
            insecure_registries,
            credentials: None,
            lookup_credentials: true,
            retry: RetryPolicy::default(),
            chunk_size: 16 << 20,
            parallel: 4,
            user_agent: format!("strata/{}", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// What happened to a blob during a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it already.
    Exists,
    /// Mounted from this repository of the same registry.
    Mounted(String),
    /// Uploaded.
    Uploaded,
}

impl BlobPush {
    /// The status docker shows for a layer pushed this way.
    pub(crate) fn status(&self) -> Status {
        match self {
            BlobPush::Exists => Status::LayerAlreadyExists,
            BlobPush::Mounted(from) => Status::MountedFrom(from.clone()),
            BlobPush::Uploaded => Status::Pushed,
        }
    }
}

/// How a mount request ended.
pub(crate) enum Mount {
    Done,
    /// The registry started an ordinary upload session instead, at this URL.
    Upload(String),
}

/// The request body of an exchange held in memory (manifests, empty bodies).
pub(crate) struct Exchange<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a [u8],
    pub scopes: &'a [Scope],
    /// Retry on connection errors and transient statuses (not for non-idempotent uploads).
    pub retry: bool,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(method: Method, url: String, scopes: &'a [Scope]) -> Self {
        Exchange {
            method,
            url,
            headers: Vec::new(),
            body: &[],
            scopes,
            retry: true,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A client for one registry. Cheap to share between threads (`&RegistryClient` is `Sync`):
/// pulls and pushes use it from several worker threads at once.
pub struct RegistryClient {
    endpoint: Endpoint,
    agent: ureq::Agent,
    options: ClientOptions,
    credentials: Option<Credentials>,
    /// `https://host` or `http://host`, once the first exchange has decided.
    base: OnceLock<String>,
    /// The registry's auth challenge; `None` until a 401 (or the ping) has shown one.
    challenge: Mutex<Option<Challenge>>,
    tokens: TokenCache,
    /// Held while the base URL is decided and while a token is fetched, so parallel workers
    /// ping once and share one token per scope.
    init: Mutex<()>,
    token_fetch: Mutex<()>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A transport failure of one attempt (the connection, not the registry's answer).
pub(crate) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads a small body (an error document, a token answer), at most `limit` bytes.
pub(crate) fn small_body(resp: Response<ureq::Body>, limit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(limit)
        .read_to_end(&mut out);
    out
}

pub(crate) fn tls_config(paths: &ConfigPaths, host: &str) -> ureq::tls::TlsConfig {
    let mut roots: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("loading system CA certificates: {e}");
    }
    roots.extend(
        native
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()),
    );
    for file in paths.ca_files(host) {
        match std::fs::read(&file) {
            Ok(pem) => {
                for item in ureq::tls::parse_pem(&pem) {
                    if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                        roots.push(cert);
                    }
                }
                tracing::debug!("trusting CA certificates in {}", file.display());
            }
            Err(e) => tracing::warn!("cannot read {}: {e}", file.display()),
        }
    }
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build()
}

impl RegistryClient {
    /// A client for `registry` (a reference's domain: `docker.io`, `localhost:5000`).
    pub fn new(registry: &str, options: &ClientOptions) -> Result<RegistryClient> {
        let endpoint = Endpoint::new(registry, &options.insecure_registries);
        let credentials = match &options.credentials {
            Some(c) => Some(c.clone()),
            None if options.lookup_credentials => {
                crate::credentials::lookup(&options.paths, registry)?
            }
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(options.user_agent.as_str())
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(options.parallel.max(1) * 2)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .tls_config(tls_config(&options.paths, &endpoint.host))
            .build();
        Ok(RegistryClient {
            agent: config.new_agent(),
            endpoint,
            options: options.clone(),
            credentials,
            base: OnceLock::new(),
            challenge: Mutex::new(None),
            tokens: TokenCache::default(),
            init: Mutex::new(()),
            token_fetch: Mutex::new(()),
        })
    }

    /// A client for the registry a reference names.
    pub fn for_reference(reference: &Reference, options: &ClientOptions) -> Result<RegistryClient> {
        Self::new(reference.domain(), options)
    }

    pub fn registry(&self) -> &str {
        &self.endpoint.registry
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn transport_error(&self, reason: String) -> RegistryError {
        RegistryError::Transport {
            registry: self.endpoint.registry.clone(),
            reason,
        }
    }

    /// The base URL, pinging `/v2/` on first use: that decides HTTPS or (for loopback and
    /// insecure registries only) plain HTTP, and learns the auth challenge.
    pub(crate) fn base(&self) -> Result<&str> {
        if let Some(b) = self.base.get() {
            return Ok(b);
        }
        let _init = self.init.lock();
        if let Some(b) = self.base.get() {
            return Ok(b);
        }
        let https = self.endpoint.base(true);
        let chosen = match self.ping(&https, self.endpoint.scheme == Scheme::Https) {
            Ok(_) => https,
            Err(tls_err) if self.endpoint.scheme == Scheme::HttpsOrHttp => {
                let http = self.endpoint.base(false);
                tracing::debug!(
                    "{}: HTTPS failed ({tls_err}); using plain HTTP (loopback or insecure registry)",
                    self.endpoint.registry
                );
                if self.ping(&http, true)? == 400 {
                    // An HTTPS server refusing plain HTTP (Go's answer to it is a 400): the
                    // HTTPS failure is the real one, usually a certificate strata does not trust.
                    return Err(self.untrusted_https(tls_err));
                }
                http
            }
            Err(e) => return Err(e),
        };
        Ok(self.base.get_or_init(|| chosen))
    }

    /// The error for a registry that speaks HTTPS only, when HTTPS failed.
    fn untrusted_https(&self, https_error: RegistryError) -> RegistryError {
        let reason = match https_error {
            RegistryError::Transport { reason, .. } => reason,
            other => other.to_string(),
        };
        let certs = self
            .options
            .paths
            .strata_dir
            .join("certs.d")
            .join(&self.endpoint.host);
        self.transport_error(format!(
            "{reason} (it serves HTTPS only; if its certificate is signed by your own CA, put the CA certificate in {}/ca.crt)",
            certs.display()
        ))
    }

    /// `GET /v2/`; the status of the answer.
    fn ping(&self, base: &str, retry: bool) -> Result<u16> {
        let url = format!("{base}/v2/");
        let mut attempt = 0;
        loop {
            let result =
                self.agent
                    .run(http::Request::get(&url).body(()).map_err(|e| {
                        self.transport_error(format!("building a request for {url}: {e}"))
                    })?);
            match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if retry
                        && self.options.retry.wait_to_retry(
                            &mut attempt,
                            Failure::Status(status),
                            None,
                            format_args!("{url}: {status}"),
                        )
                    {
                        continue;
                    }
                    if status == 401 {
                        self.learn_challenge(&resp);
                    }
                    tracing::debug!("{url}: {status}");
                    return Ok(status);
                }
                Err(e) => {
                    let again = retry
                        && self.options.retry.wait_to_retry(
                            &mut attempt,
                            Failure::Transport,
                            None,
                            format_args!("{url}: {}", describe(&e)),
                        );
                    if !again {
                        return Err(self.transport_error(describe(&e)));
                    }
                }
            }
        }
    }

    /// Remembers the challenge of a 401 answer; whether it is one we can answer.
    fn learn_challenge(&self, resp: &Response<ureq::Body>) -> bool {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(crate::auth::parse_challenges)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| c.is_bearer() && c.param("realm").is_some())
            .or_else(|| challenges.iter().find(|c| c.is_basic()))
            .cloned();
        let Some(chosen) = chosen else {
            return false;
        };
        tracing::debug!(
            "{}: auth challenge {} (realm {:?}, service {:?})",
            self.endpoint.registry,
            chosen.scheme,
            chosen.param("realm"),
            chosen.param("service")
        );
        if let Ok(mut c) = self.challenge.lock() {
            *c = Some(chosen);
        }
        true
    }

    fn current_challenge(&self) -> Option<Challenge> {
        self.challenge.lock().ok().and_then(|c| c.clone())
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token if needed.
    fn authorization(&self, scopes: &[Scope], repository: Option<&str>) -> Result<Option<String>> {
        let Some(challenge) = self.current_challenge() else {
            return Ok(None);
        };
        if challenge.is_basic() {
            return Ok(self
                .credentials
                .as_ref()
                .and_then(Credentials::basic_header));
        }
        let key = scope_key(scopes);
        if let Some(token) = self.tokens.get(&key) {
            return Ok(Some(format!("Bearer {token}")));
        }
        let _fetching = self.token_fetch.lock();
        if let Some(token) = self.tokens.get(&key) {
            return Ok(Some(format!("Bearer {token}")));
        }
        let (token, lifetime) = self.fetch_token(&challenge, scopes, repository)?;
        self.tokens.put(&key, token.clone(), lifetime);
        Ok(Some(format!("Bearer {token}")))
    }

    /// Asks the challenge's realm for a token covering `scopes`.
    fn fetch_token(
        &self,
        challenge: &Challenge,
        scopes: &[Scope],
        repository: Option<&str>,
    ) -> Result<(String, Duration)> {
        let realm = challenge.param("realm").unwrap_or_default();
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::BadResponse {
                registry: self.endpoint.registry.clone(),
                what: "its auth challenge".into(),
                reason: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(("service", service.to_string()));
        }
        for s in scopes {
            query.push(("scope", s.to_string()));
        }
        let encoded = |q: &[(&str, String)]| {
            q.iter()
                .map(|(k, v)| format!("{k}={}", query_escape(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let mut attempt = 0;
        loop {
            let request = match &self.credentials {
                Some(Credentials::IdentityToken { token, .. }) => {
                    let mut form = query.clone();
                    form.push(("grant_type", "refresh_token".into()));
                    form.push(("refresh_token", token.clone()));
                    form.push(("client_id", "strata".into()));
                    http::Request::post(realm)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(encoded(&form).into_bytes())
                }
                other => {
                    let sep = if realm.contains('?') { '&' } else { '?' };
                    let url = if query.is_empty() {
                        realm.to_string()
                    } else {
                        format!("{realm}{sep}{}", encoded(&query))
                    };
                    let mut b = http::Request::get(url);
                    if let Some(h) = other.as_ref().and_then(Credentials::basic_header) {
                        b = b.header("authorization", h);
                    }
                    b.body(Vec::new())
                }
            }
            .map_err(|e| self.transport_error(format!("building a token request: {e}")))?;
            match self.agent.run(request) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if self.options.retry.wait_to_retry(
                        &mut attempt,
                        Failure::Status(status),
                        None,
                        format_args!("token server {realm}: {status}"),
                    ) {
                        continue;
                    }
                    if status == 401 || status == 403 {
                        let detail = error_detail(&small_body(resp, 64 << 10));
                        let registry = self.endpoint.registry.clone();
                        let repository = repository.map(str::to_string);
                        let detail = if self.credentials.is_some() {
                            format!("the token server refused the credentials ({detail})")
                        } else {
                            format!("the token server refused anonymous access ({detail})")
                        };
                        return Err(if status == 401 {
                            RegistryError::Unauthorized {
                                registry,
                                repository,
                                detail,
                            }
                        } else {
                            RegistryError::Denied {
                                registry,
                                repository,
                                detail,
                            }
                        });
                    }
                    if status != 200 {
                        return Err(RegistryError::Status {
                            registry: self.endpoint.registry.clone(),
                            method: "GET".into(),
                            path: "token".into(),
                            status,
                            detail: error_detail(&small_body(resp, 64 << 10)),
                        });
                    }
                    let body = small_body(resp, 1 << 20);
                    let parsed: TokenResponse =
                        serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
                            registry: self.endpoint.registry.clone(),
                            what: "a token request".into(),
                            reason: format!("not a token answer: {e}"),
                        })?;
                    tracing::debug!(
                        "{}: got a token for {}",
                        self.endpoint.registry,
                        scope_key(scopes)
                    );
                    return parsed
                        .into_token()
                        .ok_or_else(|| RegistryError::BadResponse {
                            registry: self.endpoint.registry.clone(),
                            what: "a token request".into(),
                            reason: "the answer holds no token".into(),
                        });
                }
                Err(e) => {
                    let why = format!("token server {realm}: {}", describe(&e));
                    if !self.options.retry.wait_to_retry(
                        &mut attempt,
                        Failure::Transport,
                        None,
                        &why,
                    ) {
                        return Err(self.transport_error(why));
                    }
                }
            }
        }
    }

    /// Whether a URL is on this registry (auth headers go nowhere else).
    fn same_origin(&self, url: &str) -> bool {
        self.base
            .get()
            .is_some_and(|b| url.starts_with(&format!("{b}/")))
    }

    /// An absolute URL for a `Location` header (absolute or relative to the registry).
    pub(crate) fn absolute(&self, location: &str) -> Result<String> {
        if location.starts_with("https://") || location.starts_with("http://") {
            return Ok(location.to_string());
        }
        let base = self.base()?;
        if location.starts_with('/') {
            Ok(format!("{base}{location}"))
        } else {
            Ok(format!("{base}/{location}"))
        }
    }

    /// A URL for a repository path (`manifests/…`, `blobs/…`).
    pub(crate) fn url(&self, repository: &str, rest: &str) -> Result<String> {
        Ok(format!("{}{}", self.base()?, v2_path(repository, rest)))
    }

    /// One exchange with auth (a 401 refreshes the token once) and, when asked, retries.
    pub(crate) fn execute(
        &self,
        ex: &Exchange<'_>,
        repository: Option<&str>,
    ) -> Result<Response<ureq::Body>> {
        self.base()?;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let auth = if self.same_origin(&ex.url) {
                self.authorization(ex.scopes, repository)?
            } else {
                None
            };
            let mut builder = http::Request::builder()
                .method(ex.method.clone())
                .uri(&ex.url);
            for (k, v) in &ex.headers {
                builder = builder.header(*k, v);
            }
            if let Some(a) = &auth {
                builder = builder.header("authorization", a);
            }
            let needs_length = matches!(ex.method, Method::PUT | Method::POST | Method::PATCH);
            if needs_length {
                builder = builder.header("content-length", ex.body.len().to_string());
            }
            let request = builder
                .body(ex.body)
                .map_err(|e| self.transport_error(format!("building a request: {e}")))?;
            tracing::trace!("{} {}", ex.method, redact_url(&ex.url));
            match self.agent.run(request) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    tracing::debug!("{} {} -> {status}", ex.method, redact_url(&ex.url));
                    if status == 401 && !reauthenticated && self.same_origin(&ex.url) {
                        reauthenticated = true;
                        self.tokens.forget(&scope_key(ex.scopes));
                        if self.learn_challenge(&resp) {
                            let again = match self.current_challenge() {
                                Some(c) if c.is_bearer() => true,
                                Some(c) if c.is_basic() => {
                                    auth.is_none() && self.credentials.is_some()
                                }
                                _ => false,
                            };
                            if again {
                                continue;
                            }
                        }
                        return Ok(resp);
                    }
                    if ex.retry && RetryPolicy::is_retryable_status(status) {
                        let retry_after = header(&resp, "retry-after")
                            .and_then(|v| parse_retry_after(&v, SystemTime::now()));
                        if self.options.retry.wait_to_retry(
                            &mut attempt,
                            Failure::Status(status),
                            retry_after,
                            format_args!("{} {}: {status}", ex.method, redact_url(&ex.url)),
                        ) {
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let again = ex.retry
                        && self.options.retry.wait_to_retry(
                            &mut attempt,
                            Failure::Transport,
                            None,
                            format_args!("{} {}: {}", ex.method, redact_url(&ex.url), describe(&e)),
                        );
                    if !again {
                        return Err(self.transport_error(describe(&e)));
                    }
                }
            }
        }
    }

    /// Sends a streamed body once (uploads): auth, no retries; the caller resumes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_stream(
        &self,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: &mut dyn Read,
        len: u64,
        scopes: &[Scope],
        repository: &str,
    ) -> Result<std::result::Result<Response<ureq::Body>, String>> {
        let auth = if self.same_origin(url) {
            self.authorization(scopes, Some(repository))?
        } else {
            None
        };
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = &auth {
            builder = builder.header("authorization", a);
        }
        builder = builder.header("content-length", len.to_string());
        let request = builder
            .body(ureq::SendBody::from_reader(body))
            .map_err(|e| self.transport_error(format!("building a request: {e}")))?;
        match self.agent.run(request) {
            Ok(resp) => {
                tracing::debug!(
                    "{method} {} ({len} bytes) -> {}",
                    redact_url(url),
                    resp.status()
                );
                Ok(Ok(resp))
            }
            Err(e) => Ok(Err(describe(&e))),
        }
    }

    /// Turns an unexpected answer into the error that names what was asked.
    pub(crate) fn status_error(
        &self,
        resp: Response<ureq::Body>,
        method: &str,
        repository: &str,
        what: &str,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let path = format!("{repository} ({what})");
        let detail = error_detail(&small_body(resp, 64 << 10));
        let registry = self.endpoint.registry.clone();
        match status {
            401 => RegistryError::Unauthorized {
                registry,
                repository: Some(repository.to_string()),
                detail,
            },
            403 => RegistryError::Denied {
                registry,
                repository: Some(repository.to_string()),
                detail,
            },
            404 => RegistryError::NotFound {
                registry,
                repository: repository.to_string(),
                what: what.to_string(),
                detail,
            },
            _ => RegistryError::Status {
                registry,
                method: method.to_string(),
                path,
                status,
                detail,
            },
        }
    }

    fn bad(&self, what: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::BadResponse {
            registry: self.endpoint.registry.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    /// Checks that the registry accepts these credentials (or needs none): `GET /v2/` with
    /// them, through the token server when the registry uses bearer tokens.
    pub fn check_login(&self) -> Result<()> {
        self.base()?;
        let url = format!("{}/v2/", self.base()?);
        let ex = Exchange::new(Method::GET, url, &[]);
        let resp = self.execute(&ex, None)?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => Err(RegistryError::Unauthorized {
                registry: self.endpoint.registry.clone(),
                repository: None,
                detail: "incorrect username or password".into(),
            }),
            _ => Err(self.status_error(resp, "GET", "", "the API root /v2/")),
        }
    }

    /// A request on `/v2/<repository>/manifests/<tag or digest>`.
    fn manifest_exchange<'s>(
        &self,
        method: Method,
        repository: &str,
        tag_or_digest: &str,
        scopes: &'s [Scope],
    ) -> Result<Exchange<'s>> {
        let url = self.url(repository, &format!("manifests/{tag_or_digest}"))?;
        Ok(Exchange::new(method, url, scopes))
    }

    /// The descriptor a reference points at (`HEAD` on the manifest, falling back to `GET`):
    /// what `FROM` pins and `pull` starts from.
    pub fn resolve(&self, reference: &Reference) -> Result<Descriptor> {
        let repository = reference.path();
        let tag_or_digest = reference_part(reference);
        let scopes = [Scope::pull(repository)];
        let ex = self
            .manifest_exchange(Method::HEAD, repository, &tag_or_digest, &scopes)?
            .header("accept", MANIFEST_ACCEPT);
        let resp = self.execute(&ex, Some(repository))?;
        if resp.status().as_u16() == 200 {
            let digest = header(&resp, "docker-content-digest").and_then(|d| d.parse().ok());
            let size = header(&resp, "content-length").and_then(|s| s.parse::<u64>().ok());
            let media = header(&resp, "content-type")
                .map(|c| MediaType::parse(c.split(';').next().unwrap_or("").trim()));
            if let (Some(digest), Some(size), Some(media)) = (digest, size, media)
                && (media.is_index() || media.is_manifest())
                && reference.digest().is_none_or(|d| d == &digest)
            {
                return Ok(Descriptor::new(media, digest, size));
            }
        }
        Ok(self.fetch_manifest(repository, &tag_or_digest)?.0)
    }

    /// Fetches a manifest or index by tag or digest, verified: by digest, the content must
    /// hash to it; by tag, to the `Docker-Content-Digest` the registry names, if any.
    pub fn fetch_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<(Descriptor, Vec<u8>)> {
        let scopes = [Scope::pull(repository)];
        let what = match tag_or_digest.parse::<Digest>() {
            Ok(_) => format!("manifest {tag_or_digest}"),
            Err(_) => format!("manifest for tag {tag_or_digest}"),
        };
        let ex = self
            .manifest_exchange(Method::GET, repository, tag_or_digest, &scopes)?
            .header("accept", MANIFEST_ACCEPT);
        let resp = self.execute(&ex, Some(repository))?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(resp, "GET", repository, &what));
        }
        let content_type = header(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let named_digest = header(&resp, "docker-content-digest");
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.transport_error(format!("reading {what}: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(self.bad(&what, format!("larger than {MAX_MANIFEST_SIZE} bytes")));
        }
        let digest = Digest::of(&bytes);
        let expected = match tag_or_digest.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => named_digest.and_then(|d| d.parse::<Digest>().ok()),
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(crate::error::Mismatch {
                registry: self.endpoint.registry.clone(),
                repository: repository.to_string(),
                what,
                expected,
                expected_size: bytes.len() as u64,
                actual: digest,
                actual_size: bytes.len() as u64,
            }
            .into());
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(&what, format!("not JSON: {e}")))?;
        if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err(RegistryError::Unsupported(format!(
                "{}/{repository}: {what} uses Docker image manifest schema 1, which is deprecated and not supported; push the image again with a current client",
                self.endpoint.registry
            )));
        }
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(MediaType::parse)
            .or_else(|| content_type.as_deref().map(MediaType::parse))
            .filter(|m| m.is_index() || m.is_manifest())
            .or_else(|| {
                if value.get("manifests").is_some() {
                    Some(MediaType::OciIndex)
                } else if value.get("config").is_some() {
                    Some(MediaType::OciManifest)
                } else {
                    None
                }
            })
            .ok_or_else(|| self.bad(&what, "neither an image manifest nor an index"))?;
        Ok((
            Descriptor::new(media_type, digest, bytes.len() as u64),
            bytes,
        ))
    }

    /// Streams a blob into the store: hashed while it is written, committed only when its
    /// digest and size match `desc`. For layers, the uncompressed stream is hashed on the way
    /// (the diff id), and recorded with the store. A cut connection restarts the blob; a wrong
    /// digest does not (the registry would send the same bytes again).
    pub fn fetch_blob(
        &self,
        repository: &str,
        desc: &Descriptor,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<Option<LayerInfo>> {
        let scopes = [Scope::pull(repository)];
        let what = format!("blob {}", desc.digest);
        let url = self.url(repository, &format!("blobs/{}", desc.digest))?;
        let sniff = desc.media_type.is_layer();
        let mut attempt = 0;
        loop {
            let ex = Exchange::new(Method::GET, url.clone(), &scopes);
            let resp = self.execute(&ex, Some(repository))?;
            if resp.status().as_u16() != 200 {
                return Err(self.status_error(resp, "GET", repository, &what));
            }
            if let Some(len) = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok())
                && len != desc.size
            {
                return Err(self.bad(
                    &what,
                    format!("it announces {len} bytes, the manifest says {}", desc.size),
                ));
            }
            let mut writer = store.blob_writer()?;
            let on_bytes = |done: u64| {
                progress.event(Event::Bytes {
                    digest: desc.digest.clone(),
                    done,
                    total: desc.size,
                })
            };
            let body = resp.into_body().into_reader().take(desc.size + 1);
            match stream_into(body, &mut writer, sniff, &on_bytes) {
                Ok(sniffed) => {
                    let committed = writer.commit(Some((&desc.digest, Some(desc.size))));
                    match committed {
                        Ok(_) => {}
                        Err(store::StoreError::DigestMismatch {
                            actual,
                            actual_size,
                            ..
                        }) => {
                            return Err(crate::error::Mismatch {
                                registry: self.endpoint.registry.clone(),
                                repository: repository.to_string(),
                                what,
                                expected: desc.digest.clone(),
                                expected_size: desc.size,
                                actual,
                                actual_size,
                            }
                            .into());
                        }
                        Err(e) => return Err(e.into()),
                    }
                    let info = sniffed.map(|(diff_id, uncompressed_size)| LayerInfo {
                        diff_id,
                        uncompressed_size,
                    });
                    if let Some(info) = &info {
                        store.put_layer_info(&desc.digest, info)?;
                    }
                    return Ok(info);
                }
                Err(StreamError::Sink(e)) => {
                    return Err(RegistryError::Io {
                        context: format!("storing {what}"),
                        source: e,
                    });
                }
                Err(StreamError::Source(e)) => {
                    drop(writer);
                    match self
                        .options
                        .retry
                        .next_delay(attempt, Failure::Transport, None)
                    {
                        Some(d) => {
                            attempt += 1;
                            tracing::info!("{what}: {e}; retrying in {d:?}");
                            progress.event(Event::Blob {
                                digest: desc.digest.clone(),
                                size: desc.size,
                                status: Status::Retrying {
                                    attempt: attempt + 1,
                                    reason: e.to_string(),
                                },
                            });
                            std::thread::sleep(d);
                        }
                        None => {
                            return Err(self.transport_error(format!("downloading {what}: {e}")));
                        }
                    }
                }
            }
        }
    }

    /// Reads a small blob (a config) into memory, verified.
    pub fn fetch_small_blob(&self, repository: &str, desc: &Descriptor) -> Result<Vec<u8>> {
        self.fetch_small_blob_limited(repository, desc, MAX_MANIFEST_SIZE * 4)
    }

    /// Reads a blob of at most `limit` bytes into memory, verified.
    pub fn fetch_small_blob_limited(
        &self,
        repository: &str,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let scopes = [Scope::pull(repository)];
        let what = format!("blob {}", desc.digest);
        if desc.size > limit {
            return Err(self.bad(&what, format!("{} bytes is too large", desc.size)));
        }
        let url = self.url(repository, &format!("blobs/{}", desc.digest))?;
        let mut attempt = 0;
        let bytes = loop {
            let ex = Exchange::new(Method::GET, url.clone(), &scopes);
            let resp = self.execute(&ex, Some(repository))?;
            if resp.status().as_u16() != 200 {
                return Err(self.status_error(resp, "GET", repository, &what));
            }
            let mut bytes = Vec::new();
            match resp
                .into_body()
                .into_reader()
                .take(desc.size + 1)
                .read_to_end(&mut bytes)
            {
                Ok(_) => break bytes,
                Err(e) => {
                    if !self.options.retry.wait_to_retry(
                        &mut attempt,
                        Failure::Transport,
                        None,
                        format_args!("{what}: {e}"),
                    ) {
                        return Err(self.transport_error(format!("reading {what}: {e}")));
                    }
                }
            }
        };
        let actual = Digest::of(&bytes);
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            return Err(crate::error::Mismatch {
                registry: self.endpoint.registry.clone(),
                repository: repository.to_string(),
                what,
                expected: desc.digest.clone(),
                expected_size: desc.size,
                actual,
                actual_size: bytes.len() as u64,
            }
            .into());
        }
        Ok(bytes)
    }

    /// Whether the repository has a blob (`HEAD`).
    pub fn blob_exists(&self, repository: &str, digest: &Digest, scopes: &[Scope]) -> Result<bool> {
        let ex = Exchange::new(
            Method::HEAD,
            self.url(repository, &format!("blobs/{digest}"))?,
            scopes,
        );
        let resp = self.execute(&ex, Some(repository))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, "HEAD", repository, &format!("blob {digest}"))),
        }
    }

    /// Asks the registry to mount a blob from another of its repositories.
    pub(crate) fn mount(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
        scopes: &[Scope],
    ) -> Result<Mount> {
        let url = format!(
            "{}?mount={}&from={}",
            self.url(repository, "blobs/uploads/")?,
            query_escape(&digest.to_string()),
            query_escape(from)
        );
        let ex = Exchange::new(Method::POST, url, scopes);
        let resp = self.execute(&ex, Some(repository))?;
        match resp.status().as_u16() {
            201 => Ok(Mount::Done),
            202 => {
                let location = header(&resp, "location")
                    .ok_or_else(|| self.bad("a mount request", "202 without a Location"))?;
                Ok(Mount::Upload(self.absolute(&location)?))
            }
            _ => Err(self.status_error(resp, "POST", repository, "a blob mount")),
        }
    }

    /// Starts an upload session; returns its URL.
    pub(crate) fn start_upload(&self, repository: &str, scopes: &[Scope]) -> Result<String> {
        let ex = Exchange::new(
            Method::POST,
            self.url(repository, "blobs/uploads/")?,
            scopes,
        );
        let resp = self.execute(&ex, Some(repository))?;
        match resp.status().as_u16() {
            202 => {
                let location = header(&resp, "location")
                    .ok_or_else(|| self.bad("an upload request", "202 without a Location"))?;
                self.absolute(&location)
            }
            _ => Err(self.status_error(resp, "POST", repository, "a blob upload")),
        }
    }

    /// Puts a manifest or index under a tag or digest; returns the digest the registry gives.
    pub fn put_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
        media_type: &MediaType,
        bytes: &[u8],
    ) -> Result<Digest> {
        let scopes = [Scope::push(repository)];
        let mut ex = self
            .manifest_exchange(Method::PUT, repository, tag_or_digest, &scopes)?
            .header("content-type", media_type.as_str());
        ex.body = bytes;
        let resp = self.execute(&ex, Some(repository))?;
        let ours = Digest::of(bytes);
        match resp.status().as_u16() {
            200..=202 => {
                if let Some(theirs) =
                    header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok())
                    && theirs != ours
                {
                    return Err(self.bad(
                        "a manifest upload",
                        format!("it stored {theirs}, but the manifest is {ours}"),
                    ));
                }
                Ok(ours)
            }
            _ => Err(self.status_error(
                resp,
                "PUT",
                repository,
                &format!("manifest {tag_or_digest}"),
            )),
        }
    }

    /// Makes sure the repository has a blob: existence check, then a mount from another
    /// repository on this registry the blob is known in (`sources`, `registry/path` form),
    /// then an upload read through the store's verified reader.
    pub fn push_blob(
        &self,
        repository: &str,
        desc: &Descriptor,
        store: &Store,
        sources: &[String],
        progress: &dyn Progress,
    ) -> Result<BlobPush> {
        let push_scope = [Scope::push(repository)];
        if self.blob_exists(repository, &desc.digest, &push_scope)? {
            return Ok(BlobPush::Exists);
        }
        let prefix = format!("{}/", self.endpoint.registry);
        let mut session = None;
        for source in sources {
            let Some(from) = source.strip_prefix(&prefix) else {
                continue;
            };
            if from == repository {
                continue;
            }
            let scopes = [Scope::push(repository), Scope::pull(from)];
            match self.mount(repository, &desc.digest, from, &scopes) {
                Ok(Mount::Done) => return Ok(BlobPush::Mounted(from.to_string())),
                Ok(Mount::Upload(url)) => {
                    session = Some(url);
                    break;
                }
                Err(e) => tracing::debug!("mounting {} from {from}: {e}", desc.digest),
            }
        }
        crate::upload::upload(self, repository, desc, store, session, progress)?;
        Ok(BlobPush::Uploaded)
    }
}

/// The tag or digest part of a reference, as the manifest URL takes it.
pub(crate) fn reference_part(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// The URL without its query (upload URLs carry state tokens in theirs).
pub(crate) fn redact_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Which side of a blob download failed: `Source` is the network, `Sink` the store.
type StreamError = layer::CopyError;

/// Copies `src` into the blob writer; with `sniff`, also decompresses the stream on the fly
/// and hashes it, in the same pass: the diff id and the uncompressed size. A stream that does
/// not decompress is simply not sniffed.
fn stream_into<R: Read>(
    src: R,
    dst: &mut store::BlobWriter,
    sniff: bool,
    on_bytes: &dyn Fn(u64),
) -> std::result::Result<Option<(DiffId, u64)>, StreamError> {
    let sniffed = layer::copy_sniffing(src, dst, sniff, on_bytes)?;
    Ok(sniffed.map(|s| (s.diff_id, s.uncompressed_size)))
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    use super::*;

    #[test]
    fn streaming_records_the_diff_id_of_gzip_layers_and_skips_other_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = b"pretend tar ".repeat(10_000);
        let mut enc = layer::Compression::Gzip.encoder(Vec::new()).unwrap();
        enc.write_all(&tar).unwrap();
        let gz = enc.finish().unwrap();

        let mut w = store.blob_writer().unwrap();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let on = |n: u64| seen.store(n, std::sync::atomic::Ordering::Relaxed);
        let sniffed = stream_into(&gz[..], &mut w, true, &on)
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!(sniffed.0, DiffId(Digest::of(&tar)));
        assert_eq!(sniffed.1, tar.len() as u64);
        assert_eq!(seen.into_inner(), gz.len() as u64);
        let (d, n) = w
            .commit(Some((&Digest::of(&gz), Some(gz.len() as u64))))
            .unwrap();
        assert_eq!((d, n), (Digest::of(&gz), gz.len() as u64));

        // Not compressed and not a tar: hashed as plain bytes, still stored whole.
        let mut w = store.blob_writer().unwrap();
        let none = stream_into(&b"{}"[..], &mut w, false, &|_| {})
            .ok()
            .unwrap();
        assert!(none.is_none());
        w.commit(Some((&Digest::of(b"{}"), Some(2)))).unwrap();

        // A broken gzip stream is stored (its digest decides) but gives no diff id.
        let mut broken = gz.clone();
        broken.truncate(gz.len() / 2);
        let mut w = store.blob_writer().unwrap();
        let r = stream_into(&broken[..], &mut w, true, &|_| {})
            .ok()
            .unwrap();
        assert!(r.is_none());
        assert_eq!(w.written(), broken.len() as u64);
    }

    #[test]
    fn a_cut_stream_is_a_source_error() {
        struct Cut(usize);
        impl Read for Cut {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"));
                }
                let n = self.0.min(buf.len());
                buf[..n].fill(0x1f);
                self.0 -= n;
                Ok(n)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for sniff in [true, false] {
            let mut w = store.blob_writer().unwrap();
            assert!(matches!(
                stream_into(Cut(1000), &mut w, sniff, &|_| {}),
                Err(StreamError::Source(_))
            ));
        }
    }

    #[test]
    fn reference_parts_and_redaction() {
        let r = Reference::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(reference_part(&r), "v1");
        let d = Digest::of(b"x");
        assert_eq!(reference_part(&r.with_digest(d.clone())), d.to_string());
        assert_eq!(
            redact_url("http://h/v2/a/blobs/uploads/u?_state=secret"),
            "http://h/v2/a/blobs/uploads/u"
        );
    }
}
