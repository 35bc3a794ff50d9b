//! `-v`, `--mount` and `--tmpfs` as docker reads them.

use std::path::{Path, PathBuf};

use crate::config::parse_memory;
use crate::{Result, RuntimeError};

/// One mount a container asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountRequest {
    /// A host path. `create` (the `-v` form) makes a missing directory; `--mount` refuses.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        create: bool,
    },
    /// A named volume, or an anonymous one (`name: None`), created on first use.
    Volume {
        name: Option<String>,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
        mode: Option<u32>,
    },
}

impl MountRequest {
    pub fn target(&self) -> &str {
        match self {
            MountRequest::Bind { target, .. }
            | MountRequest::Volume { target, .. }
            | MountRequest::Tmpfs { target, .. } => target,
        }
    }
}

fn invalid(msg: String) -> RuntimeError {
    RuntimeError::Invalid(msg)
}

fn check_target(target: &str, spec: &str) -> Result<String> {
    if !target.starts_with('/') {
        return Err(invalid(format!(
            "invalid mount config: mount path must be absolute: {spec}"
        )));
    }
    if target == "/" {
        return Err(invalid(format!(
            "invalid mount config: destination can't be '/': {spec}"
        )));
    }
    Ok(target.to_string())
}

/// `-v [SOURCE:]TARGET[:OPTIONS]`: an absolute (or `./`-relative) source is a bind mount,
/// anything else names a volume; no source makes an anonymous volume. Options: `ro`, `rw`,
/// and the SELinux, copy and propagation options, which are accepted and ignored.
pub fn parse_volume_flag(spec: &str, cwd: &Path) -> Result<MountRequest> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] if t.starts_with('/') => (Some(*s), *t, ""),
        [t, o] => (None, *t, *o),
        [s, t, o] => (Some(*s), *t, *o),
        _ => return Err(invalid(format!("invalid volume specification: '{spec}'"))),
    };
    let mut readonly = false;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "nocopy" | "copy" | "private" | "rprivate" | "shared" | "rshared"
            | "slave" | "rslave" | "consistent" | "cached" | "delegated" => {}
            _ => return Err(invalid(format!("invalid mode: {o}"))),
        }
    }
    let target = check_target(target, spec)?;
    Ok(match source {
        Some(s) if s.starts_with('/') || s.starts_with('.') => MountRequest::Bind {
            source: absolute(s, cwd),
            target,
            readonly,
            create: true,
        },
        Some(s) => {
            if !store::is_valid_name(s) {
                return Err(invalid(format!(
                    "create {s}: \"{s}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                )));
            }
            MountRequest::Volume {
                name: Some(s.to_string()),
                target,
                readonly,
            }
        }
        None => MountRequest::Volume {
            name: None,
            target,
            readonly,
        },
    })
}

fn absolute(p: &str, cwd: &Path) -> PathBuf {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    // Lexical clean-up of `.` and `..`, as docker's CLI does for relative binds.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("1") | Some("true") => Ok(true),
        Some("0") | Some("false") => Ok(false),
        Some(other) => Err(invalid(format!("invalid value for {key}: {other}"))),
    }
}

fn parse_mode(s: &str) -> Result<u32> {
    u32::from_str_radix(s, 8).map_err(|_| invalid(format!("invalid tmpfs mode: {s}")))
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,readonly,…`.
pub fn parse_mount_flag(spec: &str, cwd: &Path) -> Result<MountRequest> {
    let mut kind = "volume".to_string();
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut readonly = false;
    let mut size = None;
    let mut mode = None;
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let need = || {
            value
                .ok_or_else(|| invalid(format!("invalid field '{field}' must be a key=value pair")))
        };
        match key.as_str() {
            "type" => kind = need()?.to_string(),
            "source" | "src" => source = Some(need()?.to_string()),
            "target" | "destination" | "dst" => target = Some(need()?.to_string()),
            "readonly" | "ro" => readonly = parse_bool(&key, value)?,
            "tmpfs-size" => size = Some(parse_memory(need()?)?),
            "tmpfs-mode" => mode = Some(parse_mode(need()?)?),
            "volume-nocopy" | "bind-propagation" | "consistency" | "volume-driver"
            | "volume-label" | "volume-opt" | "bind-recursive" | "bind-nonrecursive"
            | "volume-subpath" => {}
            _ => return Err(invalid(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    let target = target
        .ok_or_else(|| invalid(format!("invalid mount config: mount has no target: {spec}")))?;
    let target = check_target(&target, spec)?;
    match kind.as_str() {
        "bind" => {
            let s = source.ok_or_else(|| {
                invalid(
                    "invalid mount config for type \"bind\": field Source must not be empty"
                        .to_string(),
                )
            })?;
            let source = absolute(&s, cwd);
            if !source.exists() {
                return Err(invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    source.display()
                )));
            }
            Ok(MountRequest::Bind {
                source,
                target,
                readonly,
                create: false,
            })
        }
        "volume" => {
            if let Some(s) = &source
                && !store::is_valid_name(s)
            {
                return Err(invalid(format!("invalid volume name {s:?}")));
            }
            Ok(MountRequest::Volume {
                name: source,
                target,
                readonly,
            })
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(invalid(
                    "invalid mount config for type \"tmpfs\": field Source must be empty".into(),
                ));
            }
            Ok(MountRequest::Tmpfs {
                target,
                size_bytes: size,
                mode,
            })
        }
        other => Err(invalid(format!("invalid mount type: {other:?}"))),
    }
}

/// `--tmpfs PATH[:OPTIONS]` with `size=` and `mode=` honoured and mount flags accepted.
pub fn parse_tmpfs_flag(spec: &str) -> Result<MountRequest> {
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    let target = check_target(target, spec)?;
    let mut size = None;
    let mut mode = None;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => size = Some(parse_memory(v)?),
            Some(("mode", v)) => mode = Some(parse_mode(v)?),
            Some(("uid" | "gid" | "nr_inodes", _)) => {}
            None if matches!(
                o,
                "rw" | "ro"
                    | "exec"
                    | "noexec"
                    | "suid"
                    | "nosuid"
                    | "dev"
                    | "nodev"
                    | "atime"
                    | "noatime"
                    | "relatime"
                    | "strictatime"
                    | "sync"
                    | "async"
            ) => {}
            _ => return Err(invalid(format!("invalid tmpfs option {o:?}"))),
        }
    }
    Ok(MountRequest::Tmpfs {
        target,
        size_bytes: size,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flag_forms() {
        let cwd = Path::new("/work");
        assert_eq!(
            parse_volume_flag("/h:/c:ro", cwd).unwrap(),
            MountRequest::Bind {
                source: "/h".into(),
                target: "/c".into(),
                readonly: true,
                create: true
            }
        );
        assert_eq!(
            parse_volume_flag("./d/../e:/c", cwd).unwrap(),
            MountRequest::Bind {
                source: "/work/e".into(),
                target: "/c".into(),
                readonly: false,
                create: true
            }
        );
        assert_eq!(
            parse_volume_flag("data:/c", cwd).unwrap(),
            MountRequest::Volume {
                name: Some("data".into()),
                target: "/c".into(),
                readonly: false
            }
        );
        assert_eq!(
            parse_volume_flag("/c", cwd).unwrap(),
            MountRequest::Volume {
                name: None,
                target: "/c".into(),
                readonly: false
            }
        );
        assert!(parse_volume_flag("data:rel", cwd).is_err());
        assert!(parse_volume_flag("/h:/c:bogus", cwd).is_err());
        assert!(parse_volume_flag("a:b:c:d", cwd).is_err());
    }

    #[test]
    fn mount_and_tmpfs_flags() {
        let cwd = Path::new("/");
        assert_eq!(
            parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=700", cwd).unwrap(),
            MountRequest::Tmpfs {
                target: "/t".into(),
                size_bytes: Some(1 << 20),
                mode: Some(0o700)
            }
        );
        assert_eq!(
            parse_mount_flag("type=volume,src=v1,dst=/v,readonly", cwd).unwrap(),
            MountRequest::Volume {
                name: Some("v1".into()),
                target: "/v".into(),
                readonly: true
            }
        );
        assert!(parse_mount_flag("type=bind,source=/no/such/dir,target=/x", cwd).is_err());
        assert!(parse_mount_flag("type=bind,source=/,target=/x,ro=false", cwd).is_ok());
        assert!(parse_mount_flag("type=nfs,target=/x", cwd).is_err());
        assert_eq!(
            parse_tmpfs_flag("/run:rw,noexec,size=65536k").unwrap(),
            MountRequest::Tmpfs {
                target: "/run".into(),
                size_bytes: Some(65536 << 10),
                mode: None
            }
        );
    }
}
