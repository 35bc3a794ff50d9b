//! Where credentials come from, and where `strata login` keeps them.
//!
//! Lookup order for a registry: strata's own `auth.json` (written by `strata login`), then
//! docker's `config.json`: a `credHelpers` entry for the registry, an `auths` entry, then the
//! `credsStore` helper. Helpers are run as `docker-credential-NAME get` with the server address
//! on stdin, as docker runs them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::config::ConfigPaths;
use crate::error::{IoContext, RegistryError, Result};

/// docker's key for Docker Hub in `config.json`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The subset of docker's `config.json` (and of strata's `auth.json`) that concerns credentials.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore", skip_serializing)]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers", skip_serializing)]
    cred_helpers: BTreeMap<String, String>,
    /// Everything else in the file, kept as it was when strata rewrites its own file.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(
        default,
        rename = "identitytoken",
        skip_serializing_if = "Option::is_none"
    )]
    identity_token: Option<String>,
}

/// The key a registry has in a credentials file, as docker writes it.
pub fn server_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// A key from a credentials file reduced to `host[:port]` (docker accepts `https://host/v1/`
/// and the like).
fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_string()
    }
}

fn read_auth_file(path: &std::path::Path) -> Result<AuthFile> {
    match std::fs::read(path) {
        Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(AuthFile::default()),
        Ok(data) => serde_json::from_slice(&data).map_err(|e| {
            RegistryError::Credentials(format!("{} is not valid: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
    }
}

impl AuthFile {
    fn entry_for(&self, registry: &str) -> Option<&AuthEntry> {
        let wanted = normalize_key(registry);
        self.auths
            .iter()
            .find(|(k, _)| normalize_key(k) == wanted)
            .map(|(_, v)| v)
    }

    fn helper_for(&self, registry: &str) -> Option<&str> {
        let wanted = normalize_key(registry);
        self.cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == wanted)
            .map(|(_, v)| v.as_str())
    }
}

fn decode_entry(entry: &AuthEntry, file: &std::path::Path) -> Result<Option<Credentials>> {
    let bad = |why: &str| {
        RegistryError::Credentials(format!("{}: invalid auth entry ({why})", file.display()))
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("auth is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("auth is not user:password"))?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    if let Some(token) = entry.identity_token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken {
            username: username.unwrap_or_default(),
            token: token.to_string(),
        }));
    }
    match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() || !p.is_empty() => Ok(Some(Credentials::Basic {
            username: u,
            password: p,
        })),
        _ => Ok(None),
    }
}

/// Runs `docker-credential-NAME get` for a registry. A helper that has nothing for it ("credentials
/// not found") gives `None`; a helper that cannot run is an error naming it.
/// `search_path` replaces `PATH` for finding the helper when given.
pub fn run_helper(
    helper: &str,
    registry: &str,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<Option<Credentials>> {
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let program = format!("docker-credential-{helper}");
    let mut command = Command::new(&program);
    if let Some(path) = search_path {
        command.env("PATH", path);
    }
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is fine; its answer decides.
        let _ = stdin.write_all(server_key(registry).as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("running {program}: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's output is not echoed: it could hold a secret.
        return Err(RegistryError::Credentials(format!(
            "{program} get failed ({})",
            out.status
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
        RegistryError::Credentials(format!("{program} get gave an answer that is not JSON"))
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if answer.username == "<token>" {
        Credentials::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }
    } else {
        Credentials::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

/// The credentials to use for `registry`, from strata's login file, then docker's config.
pub fn lookup(paths: &ConfigPaths, registry: &str) -> Result<Option<Credentials>> {
    let own = paths.auth_file();
    if let Some(entry) = read_auth_file(&own)?.entry_for(registry)
        && let Some(creds) = decode_entry(entry, &own)?
    {
        tracing::debug!("using credentials for {registry} from {}", own.display());
        return Ok(Some(creds));
    }
    let docker = paths.docker_config_file();
    let config = read_auth_file(&docker)?;
    if let Some(helper) = config.helper_for(registry) {
        tracing::debug!("asking docker-credential-{helper} for {registry}");
        return run_helper(helper, registry, paths.helper_path.as_deref());
    }
    if let Some(entry) = config.entry_for(registry)
        && let Some(creds) = decode_entry(entry, &docker)?
    {
        tracing::debug!("using credentials for {registry} from {}", docker.display());
        return Ok(Some(creds));
    }
    if let Some(store) = config.creds_store.as_deref().filter(|s| !s.is_empty()) {
        tracing::debug!("asking docker-credential-{store} for {registry}");
        return run_helper(store, registry, paths.helper_path.as_deref());
    }
    Ok(None)
}

/// Saves credentials for a registry in strata's `auth.json` (mode 0600, written atomically).
pub fn save(paths: &ConfigPaths, registry: &str, creds: &Credentials) -> Result<()> {
    let path = paths.auth_file();
    let mut file = read_auth_file(&path)?;
    let wanted = normalize_key(registry);
    file.auths.retain(|k, _| normalize_key(k) != wanted);
    let entry = match creds {
        Credentials::Basic { username, password } => AuthEntry {
            auth: Some(
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
            ),
            ..AuthEntry::default()
        },
        Credentials::IdentityToken { username, token } => AuthEntry {
            username: Some(username.clone()).filter(|u| !u.is_empty()),
            identity_token: Some(token.clone()),
            ..AuthEntry::default()
        },
    };
    file.auths.insert(server_key(registry), entry);
    write_private(&path, &file)
}

/// Removes a registry's credentials from strata's `auth.json`; whether there were any.
pub fn remove(paths: &ConfigPaths, registry: &str) -> Result<bool> {
    let path = paths.auth_file();
    let mut file = read_auth_file(&path)?;
    let wanted = normalize_key(registry);
    let before = file.auths.len();
    file.auths.retain(|k, _| normalize_key(k) != wanted);
    if file.auths.len() == before {
        return Ok(false);
    }
    write_private(&path, &file)?;
    Ok(true)
}

fn write_private(path: &std::path::Path, file: &AuthFile) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let data = serde_json::to_vec_pretty(file)
        .map_err(|e| RegistryError::Credentials(format!("serializing: {e}")))?;
    let ctx = || format!("writing {}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx(ctx)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .ctx(ctx)?;
    tmp.write_all(&data).ctx(ctx)?;
    tmp.write_all(b"\n").ctx(ctx)?;
    tmp.as_file().sync_all().ctx(ctx)?;
    tmp.persist(path).map_err(|e| e.error).ctx(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn paths(dir: &std::path::Path) -> ConfigPaths {
        ConfigPaths {
            strata_dir: dir.join("strata"),
            docker_dir: dir.join("docker"),
            helper_path: None,
        }
    }

    fn write_docker_config(p: &ConfigPaths, json: &str) {
        std::fs::create_dir_all(&p.docker_dir).unwrap();
        std::fs::write(p.docker_config_file(), json).unwrap();
    }

    #[test]
    fn reads_docker_auths_in_every_key_form() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        // alice:pw1, bob:pw2
        write_docker_config(
            &p,
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "YWxpY2U6cHcx"},
                "https://reg.example:5000/v2/": {"auth": "Ym9iOnB3Mg=="},
                "tok.example": {"identitytoken": "refresh-me"}
            }, "psFormat": "table"}"#,
        );
        assert_eq!(
            lookup(&p, "docker.io").unwrap(),
            Some(Credentials::basic("alice", "pw1"))
        );
        assert_eq!(
            lookup(&p, "reg.example:5000").unwrap(),
            Some(Credentials::basic("bob", "pw2"))
        );
        assert!(matches!(
            lookup(&p, "tok.example").unwrap(),
            Some(Credentials::IdentityToken { token, .. }) if token == "refresh-me"
        ));
        assert_eq!(lookup(&p, "other.example").unwrap(), None);
    }

    #[test]
    fn strata_login_file_wins_and_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        write_docker_config(&p, r#"{"auths": {"reg.lan": {"auth": "Ym9iOnB3Mg=="}}}"#);
        save(&p, "reg.lan", &Credentials::basic("carol", "pw3")).unwrap();
        assert_eq!(
            lookup(&p, "reg.lan").unwrap(),
            Some(Credentials::basic("carol", "pw3"))
        );
        let mode = std::fs::metadata(p.auth_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let raw = std::fs::read_to_string(p.auth_file()).unwrap();
        assert!(
            raw.contains(r#""reg.lan""#) && !raw.contains("pw3"),
            "{raw}"
        );
        save(&p, "docker.io", &Credentials::basic("d", "e")).unwrap();
        assert!(
            std::fs::read_to_string(p.auth_file())
                .unwrap()
                .contains(DOCKER_HUB_KEY)
        );
        assert!(remove(&p, "reg.lan").unwrap());
        assert!(!remove(&p, "reg.lan").unwrap());
        // docker's entry is still there, and used now.
        assert_eq!(
            lookup(&p, "reg.lan").unwrap(),
            Some(Credentials::basic("bob", "pw2"))
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        write_docker_config(&p, r#"{"auths": {"reg.lan": {"auth": "!!!"}}}"#);
        let err = lookup(&p, "reg.lan").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("base64"),
            "{err}"
        );
        write_docker_config(&p, "{");
        assert!(lookup(&p, "reg.lan").is_err());
    }

    #[test]
    fn credential_helpers_are_run_from_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.path().join("helper.log");
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\necho \"$server\" >> {log}\n\
             case \"$server\" in\n\
             helped.example) echo '{{\"ServerURL\":\"helped.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}}';;\n\
             https://index.docker.io/v1/) echo '{{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"idtok\"}}';;\n\
             *) echo 'credentials not found in native keychain'; exit 1;;\n\
             esac\n",
            log = log.display()
        );
        for name in ["docker-credential-fake", "docker-credential-store"] {
            let path = bin.join(name);
            std::fs::write(&path, &script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        write_docker_config(
            &p,
            r#"{"credsStore": "store", "credHelpers": {"helped.example": "fake"}}"#,
        );
        let mut search = std::ffi::OsString::from(bin.as_os_str());
        search.push(":/usr/bin:/bin");
        let p = ConfigPaths {
            helper_path: Some(search),
            ..p
        };
        assert_eq!(
            lookup(&p, "helped.example").unwrap(),
            Some(Credentials::basic("hu", "hs"))
        );
        assert!(matches!(
            lookup(&p, "docker.io").unwrap(),
            Some(Credentials::IdentityToken { token, .. }) if token == "idtok"
        ));
        assert_eq!(lookup(&p, "nothing.example").unwrap(), None);
        let missing = ConfigPaths {
            helper_path: Some("/nonexistent".into()),
            ..p
        };
        let err = lookup(&missing, "helped.example").unwrap_err().to_string();
        assert!(err.contains("docker-credential-fake"), "{err}");
        let seen = std::fs::read_to_string(&log).unwrap();
        assert!(seen.contains("https://index.docker.io/v1/"), "{seen}");
    }
}
