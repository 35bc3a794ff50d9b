use oci::Digest;

/// Everything that can go wrong talking to a registry. Every variant names the registry and,
/// where there is one, the repository; none ever carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "unauthorized: authentication required for {registry}{}{} (run `strata login {registry}`)",
        repo_suffix(.repository), detail_suffix(.detail)
    )]
    Unauthorized {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    #[error("denied: access to {registry}{} is forbidden{}", repo_suffix(.repository), detail_suffix(.detail))]
    Denied {
        registry: String,
        repository: Option<String>,
        detail: String,
    },
    #[error("{what} not found in {registry}/{repository}{}", detail_suffix(.detail))]
    NotFound {
        registry: String,
        repository: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {method} {path} answered {status}{}", detail_suffix(.detail))]
    Status {
        registry: String,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("cannot reach registry {registry}: {reason}")]
    Transport { registry: String, reason: String },
    #[error("registry {registry} gave a bad answer for {what}: {reason}")]
    BadResponse {
        registry: String,
        what: String,
        reason: String,
    },
    #[error("{0}")]
    DigestMismatch(Box<Mismatch>),
    #[error(
        "layer {blob} from {registry}/{repository}: its uncompressed content is {actual}, but the image config says {expected}"
    )]
    DiffIdMismatch {
        registry: String,
        repository: String,
        blob: Box<Digest>,
        expected: String,
        actual: String,
    },
    #[error("{reference}: no manifest for platform {platform} (the index has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Content that does not hash to the digest (or size) that named it.
#[derive(Debug)]
pub struct Mismatch {
    pub registry: String,
    pub repository: String,
    pub what: String,
    pub expected: Digest,
    pub expected_size: u64,
    pub actual: Digest,
    pub actual_size: u64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from {}/{}: content digest mismatch: expected {} ({} bytes), got {} ({} bytes)",
            self.what,
            self.registry,
            self.repository,
            self.expected,
            self.expected_size,
            self.actual,
            self.actual_size
        )
    }
}

impl From<Mismatch> for RegistryError {
    fn from(m: Mismatch) -> Self {
        RegistryError::DigestMismatch(Box::new(m))
    }
}

fn repo_suffix(repository: &Option<String>) -> String {
    repository
        .as_deref()
        .map(|r| format!("/{r}"))
        .unwrap_or_default()
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

oci::io_context!(RegistryError);

/// The registry's own explanation from a distribution-spec error body
/// (`{"errors":[{"code":"…","message":"…"}]}`), shortened to one line.
pub(crate) fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_registry_and_repository() {
        let e = RegistryError::Unauthorized {
            registry: "localhost:5000".into(),
            repository: Some("team/app".into()),
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "unauthorized: authentication required for localhost:5000/team/app (run `strata login localhost:5000`)"
        );
        let e = RegistryError::NotFound {
            registry: "r.example".into(),
            repository: "a".into(),
            what: "manifest for tag 1".into(),
            detail: error_detail(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        };
        assert_eq!(
            e.to_string(),
            "manifest for tag 1 not found in r.example/a: MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(error_detail(b"plain text\nmore"), "plain text");
    }
}
