//! `RUN --mount=type=ssh`: a socket in the step's scratch directory that forwards every
//! connection to an ssh-agent of the host, so the container can use the agent's keys without
//! ever seeing them or the host's socket.
//!
//! Why a proxy rather than a bind of the agent's socket: as in BuildKit, the socket the step
//! sees has the owner and mode the mount asks for (`uid=`, `gid=`, `mode=`); changing those on
//! the user's own agent socket is not ours to do. The agent protocol is opaque here: bytes are
//! copied both ways, nothing is parsed.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A listening proxy; dropping it stops accepting (connections in flight finish on their own
/// when either end closes).
pub struct AgentProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens at `path` (owned by `owner`, with permissions `mode`) and forwards to the agent
    /// listening at `agent`.
    pub fn start(path: &Path, agent: &Path, owner: (u32, u32), mode: u32) -> io::Result<Self> {
        // Fail now, not in the container, when the agent is not there.
        UnixStream::connect(agent)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", agent.display())))?;
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (stop, agent) = (stop.clone(), agent.to_path_buf());
            std::thread::Builder::new()
                .name("ssh-agent-proxy".into())
                .spawn(move || accept_until_stopped(&listener, &agent, &stop))?
        };
        Ok(AgentProxy {
            path: path.to_path_buf(),
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept; it then sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_until_stopped(listener: &UnixListener, agent: &Path, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(upstream) = UnixStream::connect(agent) else {
            continue;
        };
        let _ = std::thread::Builder::new()
            .name("ssh-agent-conn".into())
            .spawn(move || relay(client, upstream));
    }
}

/// Copies both ways until each side has finished sending.
fn relay(client: UnixStream, upstream: UnixStream) {
    let (Ok(mut client_read), Ok(mut upstream_read)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let back = std::thread::spawn(move || {
        let mut client = client;
        let _ = io::copy(&mut upstream_read, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
    });
    let mut upstream = upstream;
    let _ = io::copy(&mut client_read, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn connections_reach_the_agent_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            // The proxy's own check connects once first.
            for _ in 0..2 {
                let (mut conn, _) = agent.accept().unwrap();
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                conn.write_all(&buf.iter().rev().copied().collect::<Vec<u8>>())
                    .unwrap();
            }
        });
        let proxy_path = dir.path().join("proxy");
        let proxy = AgentProxy::start(&proxy_path, &agent_path, (0, 0), 0o600).unwrap();
        let meta = std::fs::metadata(&proxy_path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let mut conn = UnixStream::connect(&proxy_path).unwrap();
        conn.write_all(b"abc").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "cba");
        echo.join().unwrap();
        drop(proxy);
    }

    #[test]
    fn a_missing_agent_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let err = AgentProxy::start(
            &dir.path().join("proxy"),
            &dir.path().join("no-agent"),
            (0, 0),
            0o600,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no-agent"), "{err}");
    }
}
