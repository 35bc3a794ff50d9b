//! File names that are not UTF-8. Inside a build, paths are `String`s: they meet the
//! Dockerfile, `.dockerignore` patterns and cache keys, all text. Linux names are bytes,
//! though, and docker copies any of them; so a name's bytes that are not UTF-8 travel as
//! characters of the last 128 code points of plane 16 (private use: U+10FF80 + byte − 0x80)
//! and become the same bytes again wherever a path meets the filesystem ([`fs_path`]).
//! A name that already holds one of those characters would be ambiguous, and is refused.

use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Bytes 0x80..=0xFF (the only ones that can be invalid UTF-8) map to BASE + byte.
const BASE: u32 = 0x10_FF00;
/// Every carrier character starts with this byte in UTF-8 (F4 8F BE/BF ..).
const CARRIER_LEAD: u8 = 0xF4;

fn is_carrier(c: char) -> bool {
    (BASE + 0x80..=BASE + 0xFF).contains(&(c as u32))
}

/// A directory entry's name as a build path; `None` when it contains a carrier character
/// (it could not be told apart from an escaped byte).
pub fn name_from_bytes(bytes: &[u8]) -> Option<String> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if bytes.contains(&CARRIER_LEAD) && s.chars().any(is_carrier) {
            return None;
        }
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        if chunk.valid().chars().any(is_carrier) {
            return None;
        }
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(BASE + u32::from(b))?);
        }
    }
    Some(out)
}

/// A symlink's target as a build path; a target that cannot be carried exactly is taken
/// lossily, as it only feeds cache keys and source resolution.
pub fn link_target(bytes: &[u8]) -> String {
    name_from_bytes(bytes).unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

/// The filesystem path a build path stands for: carrier characters back to their bytes.
pub fn fs_path(rel: &str) -> Cow<'_, Path> {
    if !rel.as_bytes().contains(&CARRIER_LEAD) {
        return Cow::Borrowed(Path::new(rel));
    }
    let mut out = Vec::with_capacity(rel.len());
    for c in rel.chars() {
        if is_carrier(c) {
            out.push((c as u32 - BASE) as u8);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    Cow::Owned(PathBuf::from(OsString::from_vec(out)))
}

/// A build path for people: carried bytes shown as `\xNN`, as a shell would quote them.
pub fn display(rel: &str) -> Cow<'_, str> {
    if !rel.as_bytes().contains(&CARRIER_LEAD) {
        return Cow::Borrowed(rel);
    }
    let mut out = String::with_capacity(rel.len() + 8);
    for c in rel.chars() {
        if is_carrier(c) {
            out.push_str(&format!("\\x{:02x}", c as u32 - BASE));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn any_name_survives_the_round_trip() {
        for name in [
            &b"plain.txt"[..],
            b"caf\xe9.txt",
            b"\xff\xfe",
            b"mixed-\xc3\xa9-\xe9-\xf4",
            "ünïcödé".as_bytes(),
        ] {
            let s = name_from_bytes(name).unwrap();
            assert_eq!(fs_path(&s).as_os_str().as_bytes(), name, "{s:?}");
        }
        assert_eq!(name_from_bytes(b"ok").unwrap(), "ok");
        assert_eq!(display(&name_from_bytes(b"caf\xe9").unwrap()), "caf\\xe9");
        assert!(matches!(fs_path("a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn names_holding_a_carrier_are_refused() {
        let carrier = char::from_u32(BASE + 0xE9).unwrap().to_string();
        assert!(name_from_bytes(carrier.as_bytes()).is_none());
        let mut both = b"\xe9".to_vec();
        both.extend_from_slice(carrier.as_bytes());
        assert!(name_from_bytes(&both).is_none());
        // Other plane-16 characters are ordinary.
        let other = char::from_u32(0x10_0000).unwrap().to_string();
        assert_eq!(name_from_bytes(other.as_bytes()).unwrap(), other);
    }
}
