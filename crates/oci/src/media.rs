use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The media types strata reads and writes. Unknown ones are kept verbatim so that an index or
/// manifest that mentions them (attestations, artifacts) still round-trips.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MediaType {
    OciIndex,
    OciManifest,
    OciConfig,
    OciLayer,
    OciLayerGzip,
    OciLayerZstd,
    DockerManifestList,
    DockerManifest,
    DockerConfig,
    DockerLayer,
    DockerLayerGzip,
    Other(String),
}

impl MediaType {
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            MediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            MediaType::OciConfig => "application/vnd.oci.image.config.v1+json",
            MediaType::OciLayer => "application/vnd.oci.image.layer.v1.tar",
            MediaType::OciLayerGzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            MediaType::OciLayerZstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            MediaType::DockerManifestList => {
                "application/vnd.docker.distribution.manifest.list.v2+json"
            }
            MediaType::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            MediaType::DockerConfig => "application/vnd.docker.container.image.v1+json",
            MediaType::DockerLayer => "application/vnd.docker.image.rootfs.diff.tar",
            MediaType::DockerLayerGzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            MediaType::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> MediaType {
        [
            MediaType::OciIndex,
            MediaType::OciManifest,
            MediaType::OciConfig,
            MediaType::OciLayer,
            MediaType::OciLayerGzip,
            MediaType::OciLayerZstd,
            MediaType::DockerManifestList,
            MediaType::DockerManifest,
            MediaType::DockerConfig,
            MediaType::DockerLayer,
            MediaType::DockerLayerGzip,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .unwrap_or_else(|| MediaType::Other(s.to_string()))
    }

    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    pub fn is_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// Layer media types whose content is a (possibly compressed) filesystem tar.
    pub fn is_layer(&self) -> bool {
        matches!(
            self,
            MediaType::OciLayer
                | MediaType::OciLayerGzip
                | MediaType::OciLayerZstd
                | MediaType::DockerLayer
                | MediaType::DockerLayerGzip
        ) || matches!(self, MediaType::Other(s) if s.starts_with("application/vnd.oci.image.layer.nondistributable"))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MediaType::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_round_trip_and_unknown_are_kept() {
        for m in [MediaType::OciManifest, MediaType::DockerLayerGzip] {
            assert_eq!(MediaType::parse(m.as_str()), m);
        }
        let other = MediaType::parse("application/vnd.in-toto+json");
        assert_eq!(other.as_str(), "application/vnd.in-toto+json");
        assert!(!other.is_layer());
    }
}
