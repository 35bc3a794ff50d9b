//! How strata isolates what it runs, chosen once per process from what the kernel allows.
//!
//! - **Namespaces**: root on the host (or a privileged container): mount, PID, UTS, IPC and
//!   network namespaces over kernel overlayfs.
//! - **Rootless**: an ordinary user. The whole strata process re-executes itself inside a new
//!   user namespace that maps the user to root and the user's subordinate ranges
//!   (`/etc/subuid`, `/etc/subgid`, through `newuidmap`/`newgidmap`) to uids 1…N, as podman
//!   and buildah do. Inside it, every other part of strata works unchanged: it is root there,
//!   may mount overlayfs (Linux ≥ 5.11) and chown to every mapped id, so a layer it writes has
//!   the same tar headers as a root build. Without ranges, only the user is mapped (uid 0
//!   inside), and chown to any other id fails.
//! - **Chroot**: root without the right to make namespaces or mounts (an unprivileged
//!   container under the engine's default seccomp profile). RUN steps run chrooted into a
//!   copied root filesystem; snapshots are made by copying.
//!
//! The choice is made by [`enter`] at the top of `main`, before any thread starts, and read
//! anywhere through [`current`].

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The isolation in force for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    Namespaces,
    Rootless {
        /// Only the user itself is mapped (no subordinate ranges).
        single_id: bool,
    },
    Chroot,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Rootless { .. } => "rootless",
            Isolation::Chroot => "chroot",
        }
    }

    /// Mounts (overlayfs, binds, tmpfs) are possible.
    pub fn can_mount(self) -> bool {
        !matches!(self, Isolation::Chroot)
    }

    pub fn is_rootless(self) -> bool {
        matches!(self, Isolation::Rootless { .. })
    }
}

/// What `--isolation` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requested {
    #[default]
    Auto,
    Namespaces,
    Rootless,
    Chroot,
}

impl std::str::FromStr for Requested {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Requested::Auto,
            "namespaces" => Requested::Namespaces,
            "rootless" => Requested::Rootless,
            "chroot" => Requested::Chroot,
            other => {
                return Err(format!(
                    "unknown isolation {other:?}: expected auto, namespaces, rootless or chroot"
                ));
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("{what}")]
    Refused { what: String, hint: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl IsolationError {
    /// How to fix it, for the CLI to show under the error.
    pub fn hint(&self) -> Option<&str> {
        match self {
            IsolationError::Refused { hint, .. } if !hint.is_empty() => Some(hint),
            _ => None,
        }
    }

    fn refused(what: impl Into<String>, hint: impl Into<String>) -> Self {
        IsolationError::Refused {
            what: what.into(),
            hint: hint.into(),
        }
    }

    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        IsolationError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What [`enter`] decided for this process.
pub enum Entered {
    /// Go on in this process, under this isolation.
    Here(Isolation),
    /// The work ran in a re-executed child inside a user namespace; exit with its code.
    Exited(i32),
}

/// Carries the sync pipe fds (`read,write`) to the re-executed child.
const SYNC_ENV: &str = "STRATA_USERNS_SYNC";
/// Tells the re-executed child which mapping it got (`full` or `single`).
const MAPPING_ENV: &str = "STRATA_USERNS_MAPPING";

static CURRENT: OnceLock<Isolation> = OnceLock::new();

/// The isolation chosen by [`enter`] (namespaces for a process that never called it, such as
/// a test harness running as root).
pub fn current() -> Isolation {
    *CURRENT.get().unwrap_or(&Isolation::Namespaces)
}

/// Chooses the isolation: must run first in `main`, while the process has one thread. For a
/// non-root user it re-executes the process in a user namespace and waits for it.
pub fn enter(requested: Requested) -> Result<Entered, IsolationError> {
    if let Some(sync) = std::env::var_os(SYNC_ENV) {
        let single_id = std::env::var_os(MAPPING_ENV).is_some_and(|m| m == "single");
        become_mapped_child(&sync)?;
        return Ok(Entered::Here(set(Isolation::Rootless { single_id })));
    }
    let root = rustix::process::geteuid().is_root();
    let isolation = match (requested, root) {
        (Requested::Auto, true) => {
            if mount_namespaces_allowed() {
                Isolation::Namespaces
            } else {
                Isolation::Chroot
            }
        }
        (Requested::Namespaces, true) => {
            if !mount_namespaces_allowed() {
                return Err(IsolationError::refused(
                    "--isolation namespaces: this process may not create mount namespaces \
                     (no CAP_SYS_ADMIN, or a seccomp profile refuses unshare)",
                    "run with --isolation chroot (or auto), or give the container the right \
                     (docker run --privileged)",
                ));
            }
            Isolation::Namespaces
        }
        (Requested::Chroot, true) => Isolation::Chroot,
        (Requested::Rootless, true) => {
            return Err(IsolationError::refused(
                "--isolation rootless is for ordinary users; this process runs as root",
                "drop --isolation, or run strata as the user who should own the store",
            ));
        }
        (Requested::Auto | Requested::Rootless, false) => {
            return reexec_in_user_namespace().map(Entered::Exited);
        }
        (Requested::Namespaces | Requested::Chroot, false) => {
            return Err(IsolationError::refused(
                format!(
                    "--isolation {} needs root; this process runs as uid {}",
                    if requested == Requested::Chroot {
                        "chroot"
                    } else {
                        "namespaces"
                    },
                    rustix::process::getuid().as_raw()
                ),
                "as an ordinary user strata runs rootless (--isolation auto or rootless)",
            ));
        }
    };
    Ok(Entered::Here(set(isolation)))
}

fn set(isolation: Isolation) -> Isolation {
    let _ = CURRENT.set(isolation);
    isolation
}

/// Whether a thread may take a mount namespace of its own: what every overlay mount of the
/// builder needs. Probed on a throwaway thread, whose namespace dies with it.
fn mount_namespaces_allowed() -> bool {
    std::thread::spawn(|| {
        let flags = rustix::thread::UnshareFlags::FS | rustix::thread::UnshareFlags::NEWNS;
        #[allow(unsafe_code)]
        // SAFETY: a fresh thread that does nothing else and ends right after: no other thread
        // shares or relies on its filesystem context or mount namespace.
        unsafe { rustix::thread::unshare_unsafe(flags) }.is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// One subordinate id range: ids `start..start+count` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The ranges `/etc/subuid` or `/etc/subgid` (text given) grants the user `name` (or `id`).
pub fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<IdRange> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            if owner != id && Some(owner) != name {
                return None;
            }
            let start = start.trim().parse().ok()?;
            let count: u32 = count.trim().parse().ok()?;
            (count > 0).then_some(IdRange { start, count })
        })
        .collect()
}

/// The user's name from `/etc/passwd` (text given).
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// The user namespace's mapping for one kind of id: the user as 0, then its ranges as 1…N.
fn mapping_triples(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut inside: u64 = 1;
    for r in ranges {
        args.extend([inside.to_string(), r.start.to_string(), r.count.to_string()]);
        inside += u64::from(r.count);
    }
    args
}

struct Mapping {
    uid: u32,
    gid: u32,
    uid_ranges: Vec<IdRange>,
    gid_ranges: Vec<IdRange>,
    user: String,
}

impl Mapping {
    fn of_this_user() -> Mapping {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let name = user_name(&passwd, uid);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Mapping {
            uid,
            gid,
            uid_ranges: subordinate_ranges(&read("/etc/subuid"), name.as_deref(), uid),
            gid_ranges: subordinate_ranges(&read("/etc/subgid"), name.as_deref(), uid),
            user: name.unwrap_or_else(|| uid.to_string()),
        }
    }

    fn single_id(&self) -> bool {
        self.uid_ranges.is_empty() || self.gid_ranges.is_empty()
    }
}

/// Finds a program on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn new_pipe() -> Result<(OwnedFd, OwnedFd), IsolationError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| IsolationError::io("creating a pipe", e.into()))
}

/// Runs this same command line again in a new user namespace and returns its exit code.
fn reexec_in_user_namespace() -> Result<i32, IsolationError> {
    let mapping = Mapping::of_this_user();
    let tools = if mapping.single_id() {
        eprintln!(
            "WARNING: no subordinate id ranges for user {user} in /etc/subuid and /etc/subgid: \
             running rootless with only uid {uid} mapped (as root inside). Builds cannot chown \
             files to other users, and layers that own files as other users cannot be \
             unpacked. Add ranges with: usermod --add-subuids 100000-165535 --add-subgids \
             100000-165535 {user}",
            user = mapping.user,
            uid = mapping.uid
        );
        None
    } else {
        let find = |name: &str| {
            find_program(name).ok_or_else(|| {
                IsolationError::refused(
                    format!(
                        "{name} not found: rootless strata maps user {}'s subordinate ids with \
                         newuidmap and newgidmap",
                        mapping.user
                    ),
                    "install them: apt-get install uidmap",
                )
            })
        };
        Some((find("newuidmap")?, find("newgidmap")?))
    };
    let (child_read, parent_write) = new_pipe()?;
    let (parent_read, child_write) = new_pipe()?;
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut command = Command::new("/proc/self/exe");
    if let Some(argv0) = args.first() {
        command.arg0(argv0);
    }
    command
        .args(args.iter().skip(1))
        .env(
            SYNC_ENV,
            format!("{},{}", child_read.as_raw_fd(), child_write.as_raw_fd()),
        )
        .env(MAPPING_ENV, if tools.is_some() { "full" } else { "single" });
    let (cr, cw) = (child_read.as_raw_fd(), child_write.as_raw_fd());
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec and only makes raw system calls (fcntl,
    // prctl) on fd numbers fixed before the fork: async-signal-safe, no allocation, no locks.
    unsafe {
        command.pre_exec(move || {
            for fd in [cr, cw] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| IsolationError::io("re-executing strata in a user namespace", e))?;
    drop((child_read, child_write));
    // The child inherits the terminal's process group, so Ctrl-C reaches it directly; this
    // process only waits for it and passes its exit code on.
    ignore_terminal_signals();
    let mut ready = [0u8; 1];
    let mut from_child = std::fs::File::from(parent_read);
    if !matches!(from_child.read(&mut ready), Ok(1)) {
        // The child failed before unsharing, and said why.
        return wait_code(&mut child);
    }
    let pid = child.id();
    let mapped = match &tools {
        Some((newuidmap, newgidmap)) => map_with_tools(pid, &mapping, newuidmap, newgidmap),
        None => map_single_id(pid, &mapping),
    };
    if let Err(e) = mapped {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let mut to_child = std::fs::File::from(parent_write);
    to_child
        .write_all(b"1")
        .map_err(|e| IsolationError::io("resuming the rootless process", e))?;
    drop(to_child);
    wait_code(&mut child)
}

fn wait_code(child: &mut std::process::Child) -> Result<i32, IsolationError> {
    let status = child
        .wait()
        .map_err(|e| IsolationError::io("waiting for the rootless process", e))?;
    Ok(crate::exit_code(status))
}

fn ignore_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        #[allow(unsafe_code)]
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code, so
        // nothing can run in signal context.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

fn map_with_tools(
    pid: u32,
    m: &Mapping,
    newuidmap: &Path,
    newgidmap: &Path,
) -> Result<(), IsolationError> {
    for (tool, own, ranges) in [
        (newuidmap, m.uid, &m.uid_ranges),
        (newgidmap, m.gid, &m.gid_ranges),
    ] {
        let out = Command::new(tool)
            .arg(pid.to_string())
            .args(mapping_triples(own, ranges))
            .output()
            .map_err(|e| IsolationError::io(format!("running {}", tool.display()), e))?;
        if !out.status.success() {
            return Err(IsolationError::refused(
                format!(
                    "{} refused to map user {}'s subordinate ids: {}",
                    tool.display(),
                    m.user,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "check /etc/subuid and /etc/subgid, and that newuidmap/newgidmap are setuid \
                 root (ls -l /usr/bin/newuidmap)",
            ));
        }
    }
    Ok(())
}

/// Maps only the user itself, which an unprivileged process may do for its child alone
/// (after denying setgroups).
fn map_single_id(pid: u32, m: &Mapping) -> Result<(), IsolationError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    for (file, content) in [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("0 {} 1\n", m.uid)),
        ("gid_map", format!("0 {} 1\n", m.gid)),
    ] {
        std::fs::write(proc.join(file), content)
            .map_err(|e| IsolationError::io(format!("writing /proc/{pid}/{file}"), e))?;
    }
    Ok(())
}

/// Whether this process runs in a user namespace other than the host's (its uid map is not
/// the identity over all ids).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let f: Vec<&str> = m.split_whitespace().collect();
        f != ["0", "0", "4294967295"]
    })
}

/// In the re-executed child: unshare the user namespace, tell the parent, and wait until it
/// has written the mapping.
fn become_mapped_child(sync: &std::ffi::OsStr) -> Result<(), IsolationError> {
    let bad = || IsolationError::refused(format!("bad {SYNC_ENV}"), "");
    let text = sync.to_str().ok_or_else(bad)?;
    let (r, w) = text.split_once(',').ok_or_else(bad)?;
    let (r, w): (i32, i32) = (r.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
    #[allow(unsafe_code)]
    // SAFETY: these fd numbers were made for this process by its parent (see
    // `reexec_in_user_namespace`) and nothing else in it uses them; each is taken over once.
    let (mut from_parent, mut to_parent) =
        unsafe { (std::fs::File::from_raw_fd(r), std::fs::File::from_raw_fd(w)) };
    let unshared = {
        #[allow(unsafe_code)]
        // SAFETY: unshare(CLONE_NEWUSER) requires a single-threaded caller, which this is:
        // `enter` runs first in main, before any thread is started.
        unsafe {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER)
        }
    };
    if let Err(e) = unshared {
        return Err(IsolationError::refused(
            format!("creating a user namespace: {}", std::io::Error::from(e)),
            "user namespaces are disabled here: enable them (sysctl user.max_user_namespaces, \
             kernel.unprivileged_userns_clone=1), or run strata as root with --isolation chroot",
        ));
    }
    to_parent
        .write_all(b"1")
        .map_err(|e| IsolationError::io("telling the parent process", e))?;
    drop(to_parent);
    let mut go = [0u8; 1];
    if !matches!(from_parent.read(&mut go), Ok(1)) {
        // The parent failed to map us and reports why.
        std::process::exit(crate::EXIT_SETUP_FAILED);
    }
    // The variables must not reach the commands strata runs.
    #[allow(unsafe_code)]
    // SAFETY: still single-threaded (see above), so nothing reads the environment
    // concurrently.
    unsafe {
        std::env::remove_var(SYNC_ENV);
        std::env::remove_var(MAPPING_ENV);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_the_name_or_the_uid() {
        let text =
            "alice:100000:65536\n1001:200000:1000\nbob:300000:0\nbad line\nalice:400000:10\n";
        assert_eq!(
            subordinate_ranges(text, Some("alice"), 1000),
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 400000,
                    count: 10
                }
            ]
        );
        assert_eq!(
            subordinate_ranges(text, None, 1001),
            vec![IdRange {
                start: 200000,
                count: 1000
            }]
        );
        assert!(subordinate_ranges(text, Some("bob"), 1002).is_empty());
    }

    #[test]
    fn the_mapping_puts_the_user_at_zero_and_the_ranges_after_it() {
        let ranges = [
            IdRange {
                start: 100000,
                count: 65536,
            },
            IdRange {
                start: 400000,
                count: 10,
            },
        ];
        assert_eq!(
            mapping_triples(1000, &ranges).join(" "),
            "0 1000 1 1 100000 65536 65537 400000 10"
        );
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 5), None);
    }

    #[test]
    fn isolation_names_parse() {
        assert_eq!("chroot".parse(), Ok(Requested::Chroot));
        assert_eq!("auto".parse(), Ok(Requested::Auto));
        assert!("vm".parse::<Requested>().is_err());
    }
}
