//! The OCI vocabulary every source, the store and the builder share: media
//! types, layer compression, `sha256:` digests and platforms. One place, so
//! a local archive, a registry and `image pack` agree on what they accept.

use std::fmt;

use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema 1, which socle does not read.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The index of an OCI layout: the annotation naming a manifest's reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// An image manifest socle reads (OCI, or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A manifest's media type: the header, else its own `mediaType`, else its
/// shape (OCI allows omitting it).
pub fn media_type_of(bytes: &[u8], header: Option<String>) -> String {
    if let Some(h) = header.filter(|h| !h.is_empty()) {
        return h;
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return mt.to_string();
    }
    if v.get("manifests").is_some() {
        OCI_INDEX.into()
    } else {
        OCI_MANIFEST.into()
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type names; `None` for a type socle
    /// does not unpack.
    pub fn from_media_type(mt: &MediaType) -> Option<Compression> {
        match mt.to_string().as_str() {
            OCI_LAYER | DOCKER_LAYER => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The OCI layer media type for this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// Sniffs the compression from a blob's first bytes (docker archives
    /// carry no media types).
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    digest_of(Sha256::digest(bytes).as_slice())
}

/// `sha256:<hex>` of a finished hash.
pub fn digest_of(hash: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(hash))
}

/// The hex part of a digest: without `sha256:` when it has one.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest)
}

/// 64 hex digits: a whole sha256.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks `sha256:` + 64 hex digits; the error says which part is wrong.
pub fn check_digest(digest: &str) -> Result<(), String> {
    let hex = digest
        .strip_prefix(SHA256_PREFIX)
        .ok_or_else(|| format!("digest {digest:?} is not sha256:HEX"))?;
    if !is_sha256_hex(hex) {
        return Err(format!(
            "digest {digest:?} is not sha256: and 64 hex digits"
        ));
    }
    Ok(())
}

/// An `os/arch[/variant]` an image is wanted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// Compared only when asked for.
    pub variant: Option<String>,
}

impl Platform {
    /// The host's, named as OCI names architectures.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    /// `--platform`'s value, or the host's without one.
    pub fn wanted(flag: Option<&str>) -> Result<Platform, String> {
        let Some(p) = flag else {
            return Ok(Platform::host());
        };
        let mut parts = p.split('/');
        match (parts.next(), parts.next()) {
            (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.into(),
                arch: arch.into(),
                variant: p.splitn(3, '/').nth(2).map(str::to_string),
            }),
            _ => Err(format!(
                "--platform {p:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
            )),
        }
    }

    /// Whether an index entry, as `describe` names it, is for this platform.
    pub fn fits(&self, described: &str) -> bool {
        let mut it = described.splitn(3, '/');
        let (o, a, v) = (it.next(), it.next(), it.next());
        o == Some(self.os.as_str())
            && a == Some(self.arch.as_str())
            && (self.variant.is_none() || v == self.variant.as_deref())
    }

    /// The index entry for this platform, if any.
    pub fn choose<'a>(&self, entries: &'a [Descriptor]) -> Option<&'a Descriptor> {
        entries
            .iter()
            .find(|d| describe(d).is_some_and(|s| self.fits(&s)))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `os/arch[/variant]` of an index entry; `None` for one that names no platform.
pub fn describe(d: &Descriptor) -> Option<String> {
    let p = d.platform().as_ref()?;
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }

    #[test]
    fn layer_media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mt = MediaType::from(c.layer_media_type());
            assert_eq!(Compression::from_media_type(&mt), Some(c));
        }
        let docker = MediaType::from(DOCKER_LAYER_GZIP);
        assert_eq!(
            Compression::from_media_type(&docker),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::from("application/x-squashfs")),
            None
        );
    }

    #[test]
    fn media_type_from_header_field_or_shape() {
        assert_eq!(
            media_type_of(b"{}", Some(DOCKER_MANIFEST.into())),
            DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(br#"{"mediaType":"x/y"}"#, Some(String::new())),
            "x/y"
        );
        assert_eq!(media_type_of(br#"{"manifests":[]}"#, None), OCI_INDEX);
        assert_eq!(media_type_of(b"not json", None), OCI_MANIFEST);
        assert!(is_index(DOCKER_MANIFEST_LIST) && !is_index(OCI_MANIFEST));
        assert!(is_manifest(DOCKER_MANIFEST) && !is_manifest(OCI_INDEX));
    }

    #[test]
    fn digests() {
        let d = sha256_digest(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(check_digest(&d).is_ok());
        assert_eq!(digest_hex(&d).len(), 64);
        assert_eq!(digest_hex("abc"), "abc");
        let e = check_digest("md5:00").unwrap_err();
        assert!(e.contains("is not sha256:HEX"), "{e}");
        let e = check_digest("sha256:abc").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }

    #[test]
    fn platforms() {
        let host = Platform::wanted(None).unwrap();
        assert_eq!(host, Platform::host());
        assert_eq!(host.os, "linux");
        let arm = Platform::wanted(Some("linux/arm/v7")).unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert!(arm.fits("linux/arm/v7") && !arm.fits("linux/arm/v6"));
        let any_arm = Platform::wanted(Some("linux/arm")).unwrap();
        assert!(any_arm.fits("linux/arm/v6") && !any_arm.fits("linux/arm64"));
        for bad in ["arm64", "/arm64", "linux/", ""] {
            let e = Platform::wanted(Some(bad)).unwrap_err();
            assert!(e.contains("expected OS/ARCH[/VARIANT]"), "{e}");
        }
    }
}
