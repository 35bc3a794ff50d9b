//! `RUN --mount=…`: BuildKit's `commands_runmount.go`.
//!
//! BuildKit reads a mount twice: when the Dockerfile is parsed (only the CSV syntax and the
//! ban on variables in `from=` are checked, because values may still hold `$VAR`), and again
//! when the step is planned, with each value expanded. [`MountSpec`] is the first reading;
//! [`MountSpec::resolve`] is the second.

use crate::error::ErrorKind;
use crate::text::{go_quote, with_suggestion};

use super::values::{parse_go_bool, parse_ram_in_bytes, parse_u32};

/// What a mount provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountType {
    /// A read-only (by default) view of the build context, a stage or an image.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name used in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Cache => "cache",
            Self::Tmpfs => "tmpfs",
            Self::Secret => "secret",
            Self::Ssh => "ssh",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "bind" => Self::Bind,
            "cache" => Self::Cache,
            "tmpfs" => Self::Tmpfs,
            "secret" => Self::Secret,
            "ssh" => Self::Ssh,
            _ => return None,
        })
    }
}

/// How concurrent builds share a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheSharing {
    /// Several writers at once (the default).
    Shared,
    /// A new directory for each concurrent writer.
    Private,
    /// One writer at a time.
    Locked,
}

impl CacheSharing {
    /// The name used in `sharing=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Private => "private",
            Self::Locked => "locked",
        }
    }
}

/// A `--mount` value as written, split into its CSV fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The flag value as written.
    pub raw: String,
    /// `(key, value)` fields; `value` is `None` for a bare key such as `ro`.
    pub fields: Vec<(String, Option<String>)>,
}

/// A fully resolved mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `type=` (bind by default).
    pub kind: MountType,
    /// `from=`: a stage or image name.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// Read-only; by default true for bind, secret and ssh, false for cache and tmpfs.
    pub read_only: bool,
    /// `size=` for tmpfs, in bytes.
    pub size_limit: Option<i64>,
    /// `id=`.
    pub id: Option<String>,
    /// `sharing=` for cache.
    pub sharing: Option<CacheSharing>,
    /// `required` for secret and ssh.
    pub required: bool,
    /// `env=` for secret: the variable to expose it as.
    pub env: Option<String>,
    /// `mode=` (octal) for cache, secret and ssh.
    pub mode: Option<u32>,
    /// `uid=` for cache, secret and ssh.
    pub uid: Option<u32>,
    /// `gid=` for cache, secret and ssh.
    pub gid: Option<u32>,
}

const ALL_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

fn invalid(message: String) -> ErrorKind {
    ErrorKind::InvalidMount { message }
}

/// One CSV record as Go's `encoding/csv` reads it (comma-separated, `"` quoting with `""`).
fn split_csv(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".to_string()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".to_string()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

impl MountSpec {
    /// The parse-time reading: CSV syntax, and no variable in `from=`.
    pub(crate) fn parse(raw: &str) -> Result<Self, ErrorKind> {
        let fields =
            split_csv(raw).map_err(|e| invalid(format!("failed to parse csv mounts: {e}")))?;
        let mut parsed = Vec::with_capacity(fields.len());
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => (field, None),
            };
            if key.to_lowercase() == "from"
                && let Some(value) = &value
                && value.find('$').is_some_and(|i| i + 1 != value.len())
            {
                return Err(invalid(
                    "'from' doesn't support variable expansion, define alias stage instead"
                        .to_string(),
                ));
            }
            parsed.push((key, value));
        }
        Ok(Self {
            raw: raw.to_string(),
            fields: parsed,
        })
    }

    /// The plan-time reading: every value goes through `expand` (the planner's word
    /// expansion in the step's scope), then the mount is validated as BuildKit does.
    pub fn resolve<F, E>(&self, mut expand: F) -> Result<Mount, MountError<E>>
    where
        F: FnMut(&str) -> Result<String, E>,
    {
        let mut mount = Mount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            size_limit: None,
            id: None,
            sharing: None,
            required: false,
            env: None,
            mode: None,
            uid: None,
            gid: None,
        };
        let mut read_only_auto = true;
        for (written_key, value) in &self.fields {
            let key = written_key.to_lowercase();
            let field = match value {
                Some(value) => format!("{written_key}={value}"),
                None => written_key.clone(),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => {
                        mount.read_only = true;
                        read_only_auto = false;
                    }
                    "readwrite" | "rw" => {
                        mount.read_only = false;
                        read_only_auto = false;
                    }
                    "required" if matches!(mount.kind, MountType::Secret | MountType::Ssh) => {
                        mount.required = true
                    }
                    "required" => return Err(unexpected_key(&key, mount.kind)),
                    _ => {
                        return Err(MountError::Invalid(invalid(format!(
                            "invalid field '{field}' must be a key=value pair"
                        ))));
                    }
                }
                continue;
            };
            let value = expand(value).map_err(MountError::Expand)?;
            let bad_value =
                || MountError::Invalid(invalid(format!("invalid value for {key}: {value}")));
            match key.as_str() {
                "type" => {
                    mount.kind = MountType::parse(&value.to_lowercase()).ok_or_else(|| {
                        let message = format!("unsupported mount type {}", go_quote(&value));
                        let names = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        MountError::Invalid(invalid(with_suggestion(message, &value, names, true)))
                    })?;
                }
                "from" => mount.from = Some(value),
                "source" | "src" => mount.source = Some(value),
                "target" | "dst" | "destination" => mount.target = Some(value),
                "readonly" | "ro" => {
                    mount.read_only = parse_go_bool(&value).ok_or_else(bad_value)?;
                    read_only_auto = false;
                }
                "readwrite" | "rw" => {
                    mount.read_only = !parse_go_bool(&value).ok_or_else(bad_value)?;
                    read_only_auto = false;
                }
                "required" if matches!(mount.kind, MountType::Secret | MountType::Ssh) => {
                    mount.required = parse_go_bool(&value).ok_or_else(bad_value)?;
                }
                "required" => return Err(unexpected_key(&key, mount.kind)),
                "size" if mount.kind == MountType::Tmpfs => {
                    mount.size_limit = Some(parse_ram_in_bytes(&value).ok_or_else(bad_value)?);
                }
                "size" => return Err(unexpected_key(&key, mount.kind)),
                "id" => mount.id = Some(value),
                "sharing" => {
                    mount.sharing = Some(match value.to_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            let message = format!("unsupported sharing value {}", go_quote(&value));
                            let names = ["shared", "private", "locked"];
                            return Err(MountError::Invalid(invalid(with_suggestion(
                                message, &value, names, true,
                            ))));
                        }
                    });
                }
                "mode" => {
                    let mode = parse_u32(&value, 8).ok_or_else(|| {
                        MountError::Invalid(invalid(format!("invalid value {value} for mode")))
                    })?;
                    mount.mode = Some(mode);
                }
                "uid" => {
                    let uid = parse_u32(&value, 10).ok_or_else(|| {
                        MountError::Invalid(invalid(format!("invalid value {value} for uid")))
                    })?;
                    mount.uid = Some(uid);
                }
                "gid" => {
                    let gid = parse_u32(&value, 10).ok_or_else(|| {
                        MountError::Invalid(invalid(format!("invalid value {value} for gid")))
                    })?;
                    mount.gid = Some(gid);
                }
                "env" => mount.env = Some(value),
                _ => {
                    let message = format!("unexpected key '{key}' in '{field}'");
                    return Err(MountError::Invalid(invalid(with_suggestion(
                        message, &key, ALL_KEYS, true,
                    ))));
                }
            }
        }
        validate(&mut mount, read_only_auto).map_err(MountError::Invalid)?;
        Ok(mount)
    }
}

fn unexpected_key<E>(key: &str, kind: MountType) -> MountError<E> {
    MountError::Invalid(invalid(format!(
        "unexpected key '{key}' for mount type '{}'",
        kind.as_str()
    )))
}

/// The checks BuildKit makes once every field is read.
fn validate(mount: &mut Mount, read_only_auto: bool) -> Result<(), ErrorKind> {
    let kind = mount.kind.as_str();
    let file_info_allowed = matches!(
        mount.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", mount.mode.is_some()),
            ("uid", mount.uid.is_some()),
            ("gid", mount.gid.is_some()),
        ] {
            if set {
                return Err(invalid(format!(
                    "{name} not allowed for {} type mounts",
                    go_quote(kind)
                )));
            }
        }
    }
    if read_only_auto {
        mount.read_only = !matches!(mount.kind, MountType::Cache | MountType::Tmpfs);
    }
    if mount.kind == MountType::Secret {
        if mount.from.is_some() {
            return Err(invalid("secret mount should not have a from".to_string()));
        }
        if mount.sharing.is_some() {
            return Err(invalid(
                "secret mount should not define sharing".to_string(),
            ));
        }
        if mount.source.is_none() && mount.target.is_none() && mount.id.is_none() {
            return Err(invalid(
                "invalid secret mount. one of source, target required".to_string(),
            ));
        }
        if mount.source.is_some() && mount.id.is_some() {
            return Err(invalid("both source and id can't be set".to_string()));
        }
    }
    if mount.sharing.is_some() && mount.kind != MountType::Cache {
        return Err(invalid(format!(
            "invalid cache sharing set for {kind} mount"
        )));
    }
    Ok(())
}

/// Resolving a mount failed: a value did not expand, or the mount is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError<E> {
    /// The expander refused a value.
    #[error("{0}")]
    Expand(E),
    /// The mount is malformed (BuildKit's message).
    #[error("{0}")]
    Invalid(ErrorKind),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: &str) -> Result<Mount, String> {
        let spec = MountSpec::parse(raw).map_err(|e| e.to_string())?;
        spec.resolve(|v| Ok::<_, String>(v.to_string()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn cache_mount() {
        let mount =
            resolve("type=cache,target=/root/.cache,sharing=locked,id=pip,mode=0755,uid=1000");
        let mount = mount.ok();
        assert_eq!(mount.as_ref().map(|m| m.kind), Some(MountType::Cache));
        assert_eq!(mount.as_ref().map(|m| m.read_only), Some(false));
        assert_eq!(
            mount.as_ref().and_then(|m| m.sharing),
            Some(CacheSharing::Locked)
        );
        assert_eq!(mount.as_ref().and_then(|m| m.mode), Some(0o755));
        assert_eq!(mount.as_ref().and_then(|m| m.uid), Some(1000));
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(
            resolve("target=/src").map(|m| (m.kind, m.read_only)),
            Ok((MountType::Bind, true))
        );
        assert_eq!(
            resolve("type=bind,target=/src,rw").map(|m| m.read_only),
            Ok(false)
        );
        assert_eq!(
            resolve("type=tmpfs,target=/t,size=64m").map(|m| m.size_limit),
            Ok(Some(64 << 20))
        );
        assert_eq!(
            resolve("type=secret,id=tok,required").map(|m| m.required),
            Ok(true)
        );
        assert_eq!(
            resolve("type=ssh,required=false").map(|m| (m.read_only, m.required)),
            Ok((true, false))
        );
        assert_eq!(
            resolve("\"type=cache\",\"target=/a,b\"").map(|m| m.target),
            Ok(Some("/a,b".to_string()))
        );
    }

    #[test]
    fn errors_match_buildkit() {
        assert_eq!(
            resolve("type=cahce").err().as_deref(),
            Some("unsupported mount type \"cahce\" (did you mean cache?)")
        );
        assert_eq!(
            resolve("type=bind,mode=0700").err().as_deref(),
            Some("mode not allowed for \"bind\" type mounts")
        );
        assert_eq!(
            resolve("type=bind,sharing=shared").err().as_deref(),
            Some("invalid cache sharing set for bind mount")
        );
        assert_eq!(
            resolve("type=secret").err().as_deref(),
            Some("invalid secret mount. one of source, target required")
        );
        assert_eq!(
            resolve("type=cache,targt=/x").err().as_deref(),
            Some("unexpected key 'targt' in 'targt=/x' (did you mean target?)")
        );
        assert_eq!(
            resolve("type=cache,foo").err().as_deref(),
            Some("invalid field 'foo' must be a key=value pair")
        );
        assert_eq!(
            resolve("type=cache,required").err().as_deref(),
            Some("unexpected key 'required' for mount type 'cache'")
        );
        assert_eq!(
            resolve("a\"b").err().as_deref(),
            Some("failed to parse csv mounts: bare \" in non-quoted-field")
        );
        assert_eq!(
            resolve("from=$STAGE").err().as_deref(),
            Some("'from' doesn't support variable expansion, define alias stage instead")
        );
        assert!(resolve("from=stage$").is_ok());
    }

    #[test]
    fn values_are_expanded() {
        let spec = MountSpec::parse("type=$KIND,target=${DIR}");
        let mount = spec.ok().and_then(|s| {
            s.resolve(|v| Ok::<_, String>(v.replace("$KIND", "cache").replace("${DIR}", "/c")))
                .ok()
        });
        assert_eq!(
            mount.map(|m| (m.kind, m.target)),
            Some((MountType::Cache, Some("/c".to_string())))
        );
    }
}
