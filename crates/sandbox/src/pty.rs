//! The container's terminal (docker's `-t`): a pseudo-terminal allocated from the container's
//! own devpts instance (so `tty` inside prints `/dev/pts/0`), with the helper copying bytes
//! between its own stdio and the terminal's master side.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;

pub(crate) struct Pty {
    master: OwnedFd,
    slave_path: std::ffi::CString,
}

impl Pty {
    /// Opens a new terminal from `/dev/ptmx` (run after pivot_root and /dev setup).
    pub fn open() -> io::Result<Pty> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave_path = rustix::pty::ptsname(&master, Vec::new())?;
        Ok(Pty { master, slave_path })
    }

    pub fn master(&self) -> &OwnedFd {
        &self.master
    }

    /// A new fd on the terminal's slave side, for the command's stdio.
    pub fn slave(&self) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            self.slave_path.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Gives the container's terminal the size of `from` when that is a terminal.
    pub fn copy_size_from(&self, from: BorrowedFd<'_>) {
        if let Ok(size) = rustix::termios::tcgetwinsize(from) {
            let _ = rustix::termios::tcsetwinsize(&self.master, size);
        }
    }

    /// Copies what is available on `input` into the terminal. False at end of input.
    pub fn copy_input(&self, input: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; 8192];
        match rustix::io::read(input, &mut buf) {
            Ok(0) => false,
            Ok(n) => write_all(self.master.as_fd(), &buf[..n]).is_ok(),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
            Err(_) => false,
        }
    }

    /// Copies what the terminal has written to stdout. False once the terminal is closed.
    pub fn copy_output(&self) -> bool {
        let mut buf = [0u8; 8192];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                let _ = write_all(rustix::stdio::stdout(), &buf[..n]);
                true
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
            // EIO: every slave fd is closed.
            Err(_) => false,
        }
    }

    /// After the command exits: copies what is left, without waiting for stray holders of
    /// the terminal.
    pub fn drain_to_stdout(&self) {
        use rustix::event::{PollFd, PollFlags};
        let timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        loop {
            let mut fds = [PollFd::new(&self.master, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => return,
                Ok(_) => {
                    if !self.copy_output() {
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
        }
    }
}

pub(crate) fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The terminal strata itself runs in, in raw mode while a `-t` container is attached (as
/// docker's client does), restored when dropped.
pub struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal into raw mode; None when stdin is not a terminal.
    pub fn enter() -> Option<RawTerminal> {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
