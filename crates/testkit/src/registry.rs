//! A registry on loopback for push/pull tests: the CNCF distribution registry (Debian's
//! `docker-registry`) on 127.0.0.1 with a free port and temporary storage, optionally behind
//! htpasswd Basic auth; and a small HTTP proxy to put in front of it that can demand Bearer
//! tokens (with its own token endpoint) and inject faults (corrupt or truncated blob
//! downloads, uploads cut mid-way). Both listen on 127.0.0.1 only and stop when dropped.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Standard base64, for tests that look for an encoded secret.
pub fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The registry binary from Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running CNCF distribution registry.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends one raw request and returns the whole answer (for readiness checks).
fn raw_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Registry {
    /// A registry without auth.
    pub fn start() -> Registry {
        Self::launch(None, None)
    }

    /// A registry that wants htpasswd Basic auth for this user.
    pub fn with_basic_auth(user: &str, password: &str) -> Registry {
        Self::launch(Some((user, password)), None)
    }

    /// A registry serving HTTPS only, with this certificate and key (PEM files; see
    /// [`TlsFiles::generate`]).
    pub fn with_tls(tls: &TlsFiles) -> Registry {
        Self::launch(None, Some(tls))
    }

    fn launch(auth: Option<(&str, &str)>, tls: Option<&TlsFiles>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: install the docker-registry package (scripts/setup does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut auth_yaml = String::new();
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "htpasswd is not runnable ({e}); install apache2-utils (scripts/setup does)"
                    )
                });
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            );
        }
        let tls_yaml = tls
            .map(|t| {
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    t.server_cert.display(),
                    t.server_key.display()
                )
            })
            .unwrap_or_default();
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: strata-test-secret\n{tls_yaml}{auth_yaml}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut child = child;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // Over TLS, the plain request still gets an answer (a 400) once it listens.
                if raw_get(addr, "/v2/").is_some_and(|r| r.starts_with("HTTP/1.")) {
                    return Registry { child, dir, addr };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The port was taken in the meantime, or the start failed: try another port.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the registry did not start")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log (with its access log: one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests the registry served, as `METHOD URI STATUS`, from its access log.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let start = l.find("] \"")? + 3;
                let rest = &l[start..];
                let end = rest.find('"')?;
                let mut parts = rest[..end].split(' ');
                let (method, uri) = (parts.next()?, parts.next()?);
                let status = rest[end + 1..].split_whitespace().next()?;
                Some(format!("{method} {uri} {status}"))
            })
            .collect()
    }

    /// The digests of every blob the registry stores.
    pub fn blobs(&self) -> BTreeSet<String> {
        let root = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256");
        let mut out = BTreeSet::new();
        for prefix in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if blob.path().join("data").is_file() {
                    out.insert(format!("sha256:{}", blob.file_name().to_string_lossy()));
                }
            }
        }
        out
    }

    /// Where the registry keeps blob data (to corrupt one on disk).
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{digest_hex}/data",
            &digest_hex[..2]
        ))
    }
}

/// A test CA and a server certificate it signed for 127.0.0.1 (and `localhost`), made with
/// `openssl` (EC P-256, valid for two days), as PEM files in a temporary directory.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| {
                    panic!("openssl is not runnable ({e}); install openssl (scripts/setup does)")
                });
            assert!(
                out.status.success(),
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=strata test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&csr);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TlsFiles {
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Faults a [`Proxy`] injects; each counter is how many more times to do it.
#[derive(Default)]
pub struct Faults {
    /// Flip one byte in the middle of the next N blob downloads.
    pub corrupt_blob_downloads: AtomicUsize,
    /// Send half of the next N blob downloads, then close the connection.
    pub truncate_blob_downloads: AtomicUsize,
    /// PATCH requests to let through before cutting any.
    pub patches_before_cut: AtomicUsize,
    /// Cut the next N PATCH requests (after the allowance above) before the registry sees them.
    pub cut_patches_before_forwarding: AtomicUsize,
    /// Forward the next N PATCH requests, then close without passing the answer on.
    pub cut_patches_after_forwarding: AtomicUsize,
}

/// How a [`Proxy`] authenticates clients.
pub struct BearerAuth {
    /// Credentials the token endpoint demands (Basic); `None` gives anonymous tokens.
    pub user: Option<(String, String)>,
    /// The `expires_in` of the tokens it hands out.
    pub expires_in: u64,
}

struct ProxyState {
    upstream: SocketAddr,
    addr: SocketAddr,
    bearer: Option<BearerAuth>,
    faults: Faults,
    /// token → granted scopes (`repository:NAME:ACTIONS`).
    tokens: Mutex<Vec<(String, Vec<String>)>>,
    log: Mutex<Vec<String>>,
}

/// An HTTP proxy on 127.0.0.1 in front of a [`Registry`]: logs every request
/// (`METHOD PATH?QUERY`), and can demand Bearer tokens and inject [`Faults`].
pub struct Proxy {
    state: Arc<ProxyState>,
    _acceptor: Acceptor,
}

impl Proxy {
    pub fn start(upstream: &Registry, bearer: Option<BearerAuth>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream: upstream.addr(),
            addr,
            bearer,
            faults: Faults::default(),
            tokens: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let acceptor = Acceptor::start(listener, state.clone(), handle_connection);
        Proxy {
            state,
            _acceptor: acceptor,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.state.addr.to_string()
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Every request seen, in order: `METHOD PATH?QUERY`, and `TOKEN scope…` for token
    /// requests.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

/// Accepts connections on a loopback listener, each served on its own thread, until dropped.
pub(crate) struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(crate) fn start<S: Send + Sync + 'static>(
        listener: TcpListener,
        state: Arc<S>,
        serve: fn(&S, TcpStream) -> std::io::Result<()>,
    ) -> Acceptor {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sp = stop.clone();
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(&st, conn);
                });
            }
        });
        Acceptor {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Headers = Vec<(String, String)>;

pub(crate) fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<(String, Headers)>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((start.trim_end().to_string(), headers)))
}

fn read_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
    until_eof: bool,
) -> std::io::Result<Vec<u8>> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut trailer = String::new();
                while r.read_line(&mut trailer)? > 2 {
                    trailer.clear();
                }
                break;
            }
            let mut chunk = vec![0u8; n];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0u8; n];
        r.read_exact(&mut body)?;
    } else if until_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len() + 1
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// The repository and the action a `/v2/NAME/(blobs|manifests|tags)/…` request needs.
fn needed_scope(method: &str, path: &str) -> Option<(String, &'static str)> {
    let rest = path.strip_prefix("/v2/")?;
    let cut = ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()?;
    let action = if matches!(method, "GET" | "HEAD") {
        "pull"
    } else {
        "push"
    };
    Some((rest[..cut].to_string(), action))
}

fn handle_connection(state: &ProxyState, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let Some((start, headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    if !start.ends_with("HTTP/1.1") && !start.ends_with("HTTP/1.0") {
        return conn.shutdown(Shutdown::Both);
    }
    let body = read_body(&mut reader, &headers, false)?;
    let request = Message {
        start,
        headers,
        body,
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));

    if let Some(bearer) = &state.bearer {
        if path == "/token" {
            return token_endpoint(state, bearer, &mut conn, &request, query);
        }
        let token = request
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_string);
        let granted = token.and_then(|t| {
            state
                .tokens
                .lock()
                .unwrap()
                .iter()
                .find(|(tok, _)| *tok == t)
                .map(|(_, s)| s.clone())
        });
        let need = needed_scope(&method, path);
        let allowed = match (&granted, &need) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(scopes), Some((repo, action))) => scopes.iter().any(|s| {
                s.strip_prefix("repository:")
                    .and_then(|s| s.rsplit_once(':'))
                    .is_some_and(|(r, actions)| {
                        r == repo && actions.split(',').any(|a| a == *action)
                    })
            }),
        };
        if !allowed {
            let scope = need
                .map(|(r, a)| {
                    format!(
                        ",scope=\"repository:{r}:{}\"",
                        if a == "push" { "pull,push" } else { "pull" }
                    )
                })
                .unwrap_or_default();
            state
                .log
                .lock()
                .unwrap()
                .push(format!("{method} {target} -> 401"));
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate".into(),
                    format!(
                        "Bearer realm=\"http://{}/token\",service=\"strata-test\"{scope}",
                        state.addr
                    ),
                )],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
    }
    state.log.lock().unwrap().push(format!("{method} {target}"));

    let faults = &state.faults;
    let take = |counter: &AtomicUsize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let is_patch = method == "PATCH";
    let mut cut_after = false;
    if is_patch && !take(&faults.patches_before_cut) {
        if take(&faults.cut_patches_before_forwarding) {
            state
                .log
                .lock()
                .unwrap()
                .push("CUT before forwarding".into());
            return conn.shutdown(Shutdown::Both);
        }
        cut_after = take(&faults.cut_patches_after_forwarding);
    }

    // Forward to the registry: same request line and headers (Host kept, so the registry's
    // Location URLs point back here), a plain Content-Length body, one request per connection.
    let mut up = TcpStream::connect(state.upstream)?;
    let mut head = format!("{}\r\n", request.start);
    for (k, v) in &request.headers {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) || (state.bearer.is_some() && lower == "authorization")
        {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    up.write_all(head.as_bytes())?;
    up.write_all(&request.body)?;
    let mut upr = BufReader::new(up);
    let Some((status_line, resp_headers)) = read_head(&mut upr)? else {
        return conn.shutdown(Shutdown::Both);
    };
    let status = status_line
        .split_once(' ')
        .map_or("502 Bad Gateway", |x| x.1)
        .to_string();
    let code: u16 = status
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let no_body = method == "HEAD" || code == 204 || code == 304 || code < 200;
    let mut resp_body = if no_body {
        Vec::new()
    } else {
        read_body(&mut upr, &resp_headers, true)?
    };
    if cut_after {
        state
            .log
            .lock()
            .unwrap()
            .push("CUT after forwarding".into());
        return conn.shutdown(Shutdown::Both);
    }
    let upstream_length = resp_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.clone());
    let mut out_headers: Vec<(String, String)> = resp_headers
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.to_ascii_lowercase().as_str(),
                "connection" | "transfer-encoding" | "content-length" | "keep-alive"
            )
        })
        .collect();
    let is_blob_get = method == "GET" && path.contains("/blobs/sha256:") && code == 200;
    if is_blob_get && !resp_body.is_empty() && take(&faults.corrupt_blob_downloads) {
        let mid = resp_body.len() / 2;
        resp_body[mid] ^= 0x5a;
        state.log.lock().unwrap().push("CORRUPTED".into());
    }
    if is_blob_get && resp_body.len() > 1 && take(&faults.truncate_blob_downloads) {
        state.log.lock().unwrap().push("TRUNCATED".into());
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in &out_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            resp_body.len()
        ));
        conn.write_all(head.as_bytes())?;
        conn.write_all(&resp_body[..resp_body.len() / 2])?;
        conn.flush()?;
        return conn.shutdown(Shutdown::Both);
    }
    if no_body {
        // HEAD keeps the registry's Content-Length; there is no body to count.
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in &out_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "HEAD"
            && let Some(len) = upstream_length
        {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        conn.write_all(head.as_bytes())?;
        return conn.flush();
    }
    out_headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
    respond(&mut conn, &status, &out_headers, &resp_body)
}

fn token_endpoint(
    state: &ProxyState,
    bearer: &BearerAuth,
    conn: &mut TcpStream,
    request: &Message,
    query: &str,
) -> std::io::Result<()> {
    let params = if request.start.starts_with("POST") {
        String::from_utf8_lossy(&request.body).into_owned()
    } else {
        query.to_string()
    };
    let scopes: Vec<String> = params
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    if let Some((user, password)) = &bearer.user {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        if request.header("authorization") != Some(want.as_str()) {
            state
                .log
                .lock()
                .unwrap()
                .push(format!("TOKEN refused {}", scopes.join(" ")));
            return respond(
                conn,
                "401 Unauthorized",
                &[],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#,
            );
        }
    }
    let mut tokens = state.tokens.lock().unwrap();
    let token = format!("test-token-{}", tokens.len() + 1);
    tokens.push((token.clone(), scopes.clone()));
    drop(tokens);
    state
        .log
        .lock()
        .unwrap()
        .push(format!("TOKEN {}", scopes.join(" ")));
    let body = format!(
        "{{\"token\":\"{token}\",\"expires_in\":{}}}",
        bearer.expires_in
    );
    respond(
        conn,
        "200 OK",
        &[("Content-Type".into(), "application/json".into())],
        body.as_bytes(),
    )
}
