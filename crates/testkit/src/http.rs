//! A small HTTP server on 127.0.0.1 for download tests (`ADD <url>`): files with an optional
//! `Last-Modified`, redirects and fixed error statuses, one request per connection, every
//! request logged. It stops when dropped.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::registry::{Acceptor, read_head};

/// What the server answers for a path.
#[derive(Clone, Debug)]
pub enum Route {
    File {
        body: Vec<u8>,
        last_modified: Option<String>,
    },
    /// `302 Found` to this location (absolute, or a path on this server).
    Redirect(String),
    /// This status, with a short text body.
    Status(u16),
}

struct State {
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<String>>,
}

pub struct FileServer {
    addr: SocketAddr,
    state: Arc<State>,
    _acceptor: Acceptor,
}

impl Default for FileServer {
    fn default() -> Self {
        Self::start()
    }
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            routes: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let acceptor = Acceptor::start(listener, state.clone(), serve);
        FileServer {
            addr,
            state,
            _acceptor: acceptor,
        }
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), route);
    }

    pub fn file(&self, path: &str, body: &[u8], last_modified: Option<&str>) {
        self.route(
            path,
            Route::File {
                body: body.to_vec(),
                last_modified: last_modified.map(str::to_string),
            },
        );
    }

    /// Requests served, as `METHOD PATH STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn serve(state: &State, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let Some((start, _headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let route = state.routes.lock().unwrap().get(&path).cloned();
    let (status, headers, body): (u16, Vec<(String, String)>, Vec<u8>) = match route {
        Some(Route::File {
            body,
            last_modified,
        }) => {
            let mut h = vec![(
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            )];
            if let Some(lm) = last_modified {
                h.push(("Last-Modified".into(), lm));
            }
            (200, h, body)
        }
        Some(Route::Redirect(to)) => (302, vec![("Location".into(), to)], Vec::new()),
        Some(Route::Status(s)) => (s, Vec::new(), format!("status {s}\n").into_bytes()),
        None => (404, Vec::new(), b"not found\n".to_vec()),
    };
    state
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {target} {status}"));
    let reason = match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(&body)?;
    }
    conn.flush()
}
