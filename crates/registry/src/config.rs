//! strata's registry configuration on disk, and where docker keeps its own.
//!
//! ```text
//! $STRATA_CONFIG (default $XDG_CONFIG_HOME/strata, else ~/.config/strata)
//!   auth.json          credentials saved by `strata login` (docker's {"auths": …} format, 0600)
//!   registries.json    {"insecure-registries": ["host:port", …]}
//!   certs.d/HOST/*.crt extra CA certificates for one registry (as docker's /etc/docker/certs.d)
//! $DOCKER_CONFIG (default ~/.docker)
//!   config.json        docker's credentials: auths, credsStore, credHelpers (read only)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{IoContext, RegistryError, Result};

/// Where strata's and docker's configuration live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPaths {
    /// strata's own configuration directory.
    pub strata_dir: PathBuf,
    /// docker's configuration directory (for `config.json`).
    pub docker_dir: PathBuf,
    /// Where to look for `docker-credential-*` helpers instead of `PATH` (`None`: `PATH`).
    pub helper_path: Option<std::ffi::OsString>,
}

impl ConfigPaths {
    /// The directories from the environment: `STRATA_CONFIG`, `XDG_CONFIG_HOME`,
    /// `DOCKER_CONFIG` and `HOME`.
    pub fn from_env() -> ConfigPaths {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let strata_dir = std::env::var_os("STRATA_CONFIG")
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|p| p.join("strata"))
            })
            .unwrap_or_else(|| home.join(".config").join("strata"));
        let docker_dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| home.join(".docker"));
        ConfigPaths {
            strata_dir,
            docker_dir,
            helper_path: None,
        }
    }

    pub fn auth_file(&self) -> PathBuf {
        self.strata_dir.join("auth.json")
    }

    pub fn registries_file(&self) -> PathBuf {
        self.strata_dir.join("registries.json")
    }

    pub fn docker_config_file(&self) -> PathBuf {
        self.docker_dir.join("config.json")
    }

    /// Registries marked insecure in `registries.json`.
    pub fn insecure_registries(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Registries {
            #[serde(default, rename = "insecure-registries")]
            insecure: Vec<String>,
        }
        let path = self.registries_file();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice::<Registries>(&data)
                .map(|r| r.insecure)
                .map_err(|e| RegistryError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
        }
    }

    /// PEM certificate files to trust for `host` (`host:port`): strata's `certs.d/HOST/` and
    /// docker's `/etc/docker/certs.d/HOST/`, files ending in `.crt`.
    pub fn ca_files(&self, host: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in [
            self.strata_dir.join("certs.d").join(host),
            Path::new("/etc/docker/certs.d").join(host),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            out.extend(files);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_and_ca_files_are_read_from_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ConfigPaths {
            strata_dir: dir.path().join("strata"),
            docker_dir: dir.path().join("docker"),
            helper_path: None,
        };
        assert!(paths.insecure_registries().unwrap().is_empty());
        std::fs::create_dir_all(paths.strata_dir.join("certs.d/reg.lan:5000")).unwrap();
        std::fs::write(
            paths.registries_file(),
            r#"{"insecure-registries": ["reg.lan:5000"]}"#,
        )
        .unwrap();
        assert_eq!(paths.insecure_registries().unwrap(), vec!["reg.lan:5000"]);
        std::fs::write(paths.strata_dir.join("certs.d/reg.lan:5000/ca.crt"), "x").unwrap();
        std::fs::write(
            paths.strata_dir.join("certs.d/reg.lan:5000/client.key"),
            "x",
        )
        .unwrap();
        assert_eq!(paths.ca_files("reg.lan:5000").len(), 1);
        std::fs::write(paths.registries_file(), "{not json").unwrap();
        assert!(paths.insecure_registries().is_err());
    }
}
