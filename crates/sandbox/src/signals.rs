//! Signals: the set strata forwards to a container's PID 1, blocked and read from a signalfd so
//! a single-threaded loop can forward them, reap the child and pump a terminal at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Signals forwarded to the container (docker's sig-proxy forwards every signal but these
/// few; the synchronous ones and SIGKILL/SIGSTOP cannot be caught anyway).
pub(crate) const FORWARDED: [i32; 10] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGPWR,
];

/// `si_code` of a signal the kernel sent on its own (e.g. the terminal's Ctrl-C to the
/// foreground process group), as opposed to one sent with kill(2).
pub(crate) const SI_KERNEL: i32 = 0x80;

/// A signalfd over a set of blocked signals.
pub(crate) struct SignalFd {
    fd: OwnedFd,
}

/// One signal read from a [`SignalFd`].
pub(crate) struct Received {
    pub signo: i32,
    pub code: i32,
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    #[allow(unsafe_code)]
    // SAFETY: sigset_t is a plain bitmask for which all-zero bytes are valid; sigemptyset and
    // sigaddset only write into the set we own, and fail only for invalid signal numbers
    // (ours are constants).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

impl SignalFd {
    /// Blocks `signals` in the calling thread (so their default actions never run) and opens
    /// a signalfd that reads them. Call it before any other thread starts.
    pub fn block(signals: &[i32]) -> io::Result<SignalFd> {
        let set = sigset(signals);
        #[allow(unsafe_code)]
        // SAFETY: `set` is a valid, initialized sigset_t; a null old-set pointer is allowed.
        // signalfd(-1, …) creates a new fd that we take ownership of right away.
        unsafe {
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The next pending signal, or None when none is pending.
    pub fn read(&self) -> io::Result<Option<Received>> {
        #[allow(unsafe_code)]
        // SAFETY: signalfd_siginfo is a plain C struct valid when zeroed; read(2) writes at
        // most its size into it, and we only look at it after a full-size read.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            );
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                return Err(e);
            }
            if n as usize != size {
                return Ok(None);
            }
            Ok(Some(Received {
                signo: info.ssi_signo as i32,
                code: info.ssi_code,
            }))
        }
    }
}

/// Unblocks every signal in the calling thread. Used between fork and exec (a child inherits
/// its parent's mask, and the command must start with a clean one): only a system call on a
/// stack value, so async-signal-safe.
pub(crate) fn unblock_all() -> io::Result<()> {
    let set = sigset(&[]);
    #[allow(unsafe_code)]
    // SAFETY: `set` is a valid, initialized (empty) sigset_t; a null old-set pointer is
    // allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Sends `signo` to `pid`; a process that is already gone is not an error.
pub(crate) fn send(pid: i32, signo: i32) -> io::Result<()> {
    let (Some(pid), Some(sig)) = (
        rustix::process::Pid::from_raw(pid),
        rustix::process::Signal::from_named_raw(signo),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    match rustix::process::kill_process(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A signal number from a name as docker accepts it (`TERM`, `SIGTERM`, `15`).
pub fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return rustix::process::Signal::from_named_raw(n).map(|s| s.as_raw());
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(n)
}
