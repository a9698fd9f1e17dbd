//! Image references as users type them: a transport and what it points at.
//!
//! Local transports (`oci:`, `oci-archive:`, `docker-archive:`) follow the
//! containers/image syntax that skopeo and atomic users already know.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference {0:?}: empty path after the transport")]
    EmptyPath(String),
    #[error(
        "image reference {0:?}: unknown transport {1:?} (use oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE)"
    )]
    UnknownTransport(String, String),
    #[error(
        "image reference {0:?}: pulling from registries is not supported yet; use oci:, oci-archive: or docker-archive:"
    )]
    RegistryUnsupported(String),
    #[error("image name {0:?}: {1}")]
    BadName(String, &'static str),
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally with a reference name in its index.
    OciDir {
        path: PathBuf,
        reference: Option<String>,
    },
    /// A tar archive of an OCI image layout.
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// A `docker save` tarball.
    DockerArchive { path: PathBuf },
}

impl ImageRef {
    pub fn path(&self) -> &std::path::Path {
        match self {
            ImageRef::OciDir { path, .. }
            | ImageRef::OciArchive { path, .. }
            | ImageRef::DockerArchive { path } => path,
        }
    }
}

impl ImageRef {
    /// The same reference with an absolute path, so it can be pulled again
    /// later from any working directory.
    pub fn absolute(&self) -> ImageRef {
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        match self {
            ImageRef::OciDir { path, reference } => ImageRef::OciDir {
                path: abs(path),
                reference: reference.clone(),
            },
            ImageRef::OciArchive { path, reference } => ImageRef::OciArchive {
                path: abs(path),
                reference: reference.clone(),
            },
            ImageRef::DockerArchive { path } => ImageRef::DockerArchive { path: abs(path) },
        }
    }

    /// Whether `s` names a source (a transport prefix) rather than a stored image.
    pub fn looks_like_source(s: &str) -> bool {
        ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|t| s.starts_with(t))
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(ReferenceError::RegistryUnsupported(s.to_string()));
        };
        // A path followed by an optional ":REF". Paths containing ':' are
        // ambiguous in this syntax (skopeo has the same rule).
        let path_and_ref = |rest: &str| -> Result<(PathBuf, Option<String>), ReferenceError> {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
                Some((p, _)) => (p, None),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(ReferenceError::EmptyPath(s.to_string()));
            }
            Ok((PathBuf::from(path), reference))
        };
        match transport {
            "oci" => {
                let (path, reference) = path_and_ref(rest)?;
                Ok(ImageRef::OciDir { path, reference })
            }
            "oci-archive" => {
                let (path, reference) = path_and_ref(rest)?;
                Ok(ImageRef::OciArchive { path, reference })
            }
            "docker-archive" => {
                // docker-archive:FILE[:NAME:TAG] — the optional name is only a hint.
                let path = rest.split(':').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(ReferenceError::EmptyPath(s.to_string()));
                }
                Ok(ImageRef::DockerArchive {
                    path: PathBuf::from(path),
                })
            }
            "docker" => Err(ReferenceError::RegistryUnsupported(s.to_string())),
            other if other.contains('/') || other.contains('.') => {
                Err(ReferenceError::RegistryUnsupported(s.to_string()))
            }
            other => Err(ReferenceError::UnknownTransport(
                s.to_string(),
                other.to_string(),
            )),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::OciDir { path, reference } => {
                write!(f, "oci:{}", path.display())?;
                reference.iter().try_for_each(|r| write!(f, ":{r}"))
            }
            ImageRef::OciArchive { path, reference } => {
                write!(f, "oci-archive:{}", path.display())?;
                reference.iter().try_for_each(|r| write!(f, ":{r}"))
            }
            ImageRef::DockerArchive { path } => write!(f, "docker-archive:{}", path.display()),
        }
    }
}

/// A stored image's name: `repository:tag`, the key users type to install.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ImageName {
    pub repository: String,
    pub tag: String,
}

impl ImageName {
    /// Parses `repo[:tag]`, defaulting the tag to `latest`. A `:` after the
    /// last `/` separates the tag, so `host:5000/etcd` keeps its port.
    pub fn parse(s: &str) -> Result<ImageName, ReferenceError> {
        let s = s.strip_prefix("docker://").unwrap_or(s);
        if s.is_empty() {
            return Err(ReferenceError::BadName(s.into(), "empty name"));
        }
        let s = s.split('@').next().unwrap_or(s);
        let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        if repository.is_empty() || tag.is_empty() {
            return Err(ReferenceError::BadName(
                s.into(),
                "expected REPOSITORY[:TAG]",
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::BadName(s.into(), "contains whitespace"));
        }
        Ok(ImageName {
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_transports() {
        assert_eq!(
            "oci:/tmp/layout:hello:v1".parse::<ImageRef>().unwrap(),
            ImageRef::OciDir {
                path: "/tmp/layout".into(),
                reference: Some("hello:v1".into())
            }
        );
        assert_eq!(
            "oci-archive:/tmp/a.tar".parse::<ImageRef>().unwrap(),
            ImageRef::OciArchive {
                path: "/tmp/a.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            "docker-archive:/tmp/d.tar:hello:latest"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::DockerArchive {
                path: "/tmp/d.tar".into()
            }
        );
    }

    #[test]
    fn bad_references_say_what_to_use() {
        let e = "oci:".parse::<ImageRef>().unwrap_err().to_string();
        assert!(e.contains("empty path"), "{e}");
        let e = "tarball:/x".parse::<ImageRef>().unwrap_err().to_string();
        assert!(e.contains("unknown transport \"tarball\""), "{e}");
        let e = "quay.io/etcd".parse::<ImageRef>().unwrap_err().to_string();
        assert!(e.contains("registries"), "{e}");
    }

    #[test]
    fn names_default_to_latest_and_keep_ports() {
        let n = ImageName::parse("localhost:5000/team/etcd").unwrap();
        assert_eq!(n.repository, "localhost:5000/team/etcd");
        assert_eq!(n.tag, "latest");
        let n = ImageName::parse("hello:v2").unwrap();
        assert_eq!(n.to_string(), "hello:v2");
        assert!(ImageName::parse("hello:").is_err());
    }
}
