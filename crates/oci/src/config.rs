use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DiffId;

/// The image configuration blob (OCI `application/vnd.oci.image.config.v1+json`, which Docker's
/// `application/vnd.docker.container.image.v1+json` extends). Fields docker writes but no current
/// builder carries into a child image (`container`, `container_config`, `docker_version`) are
/// dropped on purpose, as BuildKit does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "crate::json::null_as_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "crate::json::null_as_default")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub history: Vec<History>,
}

/// What a container started from the image gets by default. Docker's capitalized keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "User",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub stop_signal: String,
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub args_escaped: bool,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        rename = "OnBuild",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub on_build: Vec<String>,
    #[serde(
        rename = "Shell",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub shell: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Serializes as `{}`: the value type of docker's `ExposedPorts` and `Volumes` sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// Docker's HEALTHCHECK settings; durations in nanoseconds as Go writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(
        rename = "Test",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub test: Vec<String>,
    #[serde(
        rename = "Interval",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub interval: i64,
    #[serde(
        rename = "Timeout",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub timeout: i64,
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub start_period: i64,
    #[serde(
        rename = "StartInterval",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub start_interval: i64,
    #[serde(
        rename = "Retries",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub retries: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "crate::json::null_as_default")]
    pub diff_ids: Vec<DiffId>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One entry per instruction; entries with `empty_layer` made no layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "crate::json::null_as_default"
    )]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// History entries paired with the layer each one made (`None` for metadata-only entries).
    /// Images whose history does not account for every layer (hand-made ones) get the missing
    /// layers paired with synthetic empty entries at the end, so no layer is ever hidden.
    pub fn history_with_layers(&self) -> Vec<(History, Option<&DiffId>)> {
        let mut layers = self.rootfs.diff_ids.iter();
        let mut out: Vec<(History, Option<&DiffId>)> = self
            .history
            .iter()
            .map(|h| {
                let layer = if h.empty_layer { None } else { layers.next() };
                (h.clone(), layer)
            })
            .collect();
        for rest in layers {
            out.push((History::default(), Some(rest)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    #[test]
    fn docker_config_keeps_docker_only_fields() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],
            "Healthcheck":{"Test":["CMD","true"],"Interval":30000000000},"OnBuild":["RUN x"],
            "Shell":["/bin/sh","-c"],"ArgsEscaped":true,"ExposedPorts":{"80/tcp":{}}},
            "container_config":{"Cmd":["x"]},"docker_version":"20.10",
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ImageConfig = serde_json::from_str(json).unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.healthcheck.as_ref().unwrap().interval, 30_000_000_000);
        assert_eq!(cc.on_build, vec!["RUN x"]);
        assert!(cc.args_escaped);
        let out = crate::canonical_json(&c).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""ExposedPorts":{"80/tcp":{}}"#), "{s}");
        assert!(!s.contains("docker_version"));
    }

    #[test]
    fn go_nulls_read_as_empty() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":null,
            "OnBuild":null,"Labels":null,"User":null},"history":null,
            "rootfs":{"type":"layers","diff_ids":null}}"#;
        let c: ImageConfig = serde_json::from_str(json).unwrap();
        let cc = c.config.unwrap();
        assert!(cc.env.is_empty() && cc.cmd.is_none() && cc.user.is_empty());
        assert!(c.history.is_empty() && c.rootfs.diff_ids.is_empty());
    }

    #[test]
    fn history_pairs_layers_and_never_hides_extra_ones() {
        let d = |b: &[u8]| DiffId(Digest::of(b));
        let c = ImageConfig {
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![d(b"a"), d(b"b")],
            },
            history: vec![
                History {
                    created_by: Some("ADD".into()),
                    ..Default::default()
                },
                History {
                    empty_layer: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let pairs = c.history_with_layers();
        assert_eq!(pairs.len(), 3);
        assert!(pairs[0].1.is_some() && pairs[1].1.is_none() && pairs[2].1.is_some());
    }
}
