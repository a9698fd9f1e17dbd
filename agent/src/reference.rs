//! Image references as users type them: a transport and what it points at.
//!
//! The syntax is containers/image's, which skopeo, podman and atomic users
//! already know: `docker://` (the default: a bare `registry/repo:tag` means
//! the same), `oci:`, `oci-archive:` and `docker-archive:`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference {0:?}: empty path after the transport")]
    EmptyPath(String),
    #[error(
        "image reference {0:?}: unknown transport {1:?} (use [docker://]REGISTRY/REPO[:TAG], oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE)"
    )]
    UnknownTransport(String, String),
    #[error("image reference {0:?}: {1}")]
    BadRegistryRef(String, String),
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
    /// An image in a registry, pulled with the OCI distribution API.
    Docker(DockerRef),
}

impl ImageRef {
    /// The file or directory of a local source; `None` for a registry.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ImageRef::OciDir { path, .. }
            | ImageRef::OciArchive { path, .. }
            | ImageRef::DockerArchive { path } => Some(path),
            ImageRef::Docker(_) => None,
        }
    }
}

/// `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]` as docker parses it: the first
/// path component is a registry when it has a `.` or a `:` or is
/// `localhost`; otherwise the name is unqualified and the configured
/// search registries decide (see `registry::config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// `host[:port]`; `None` for an unqualified name.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl DockerRef {
    pub fn parse(s: &str) -> Result<DockerRef, String> {
        if s.is_empty() {
            return Err("empty image name".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                crate::oci::check_digest(d)?;
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(format!(
                    "tag {t:?} is not valid (letters, digits, '.', '_' and '-', at most 128)"
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_ascii_lowercase()), path)
            }
            _ => (None, name),
        };
        if repository.is_empty() {
            return Err("no repository after the registry".into());
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository {repository:?} must be lowercase ({:?})",
                repository.to_ascii_lowercase()
            ));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(format!(
                "repository {repository:?} is not valid (path components of a-z, 0-9, '.', '_', '-')"
            ));
        }
        let mut r = DockerRef {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        };
        r.normalize_docker_hub();
        Ok(r)
    }

    /// Docker Hub spells its single-component names `library/NAME`.
    pub fn normalize_docker_hub(&mut self) {
        if matches!(self.registry.as_deref(), Some("index.docker.io")) {
            self.registry = Some("docker.io".into());
        }
        if self.registry.as_deref() == Some("docker.io") && !self.repository.contains('/') {
            self.repository = format!("library/{}", self.repository);
        }
    }

    /// The same reference in another registry (an unqualified name resolved
    /// through the search list).
    pub fn in_registry(&self, registry: &str) -> DockerRef {
        let mut r = DockerRef {
            registry: Some(registry.to_string()),
            ..self.clone()
        };
        r.normalize_docker_hub();
        r
    }

    /// The tag or digest the manifest is fetched by (a digest wins: it pins).
    pub fn manifest_reference(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    /// `REGISTRY/REPOSITORY` (or just the repository when unqualified).
    pub fn full_repository(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The name the image is stored under: `REGISTRY/REPO:TAG`; an image
    /// pulled by digest alone gets the tag `sha256-<12 hex>`.
    pub fn image_name(&self) -> ImageName {
        let tag = match (&self.tag, &self.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => format!("sha256-{}", &d["sha256:".len()..][..12]),
            (None, None) => "latest".into(),
        };
        ImageName {
            repository: self.full_repository(),
            tag,
        }
    }
}

impl fmt::Display for DockerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.full_repository())?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":latest"),
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
            ImageRef::Docker(r) => ImageRef::Docker(r.clone()),
        }
    }

    /// Whether `s` names a source (a transport prefix) rather than a stored
    /// image. Where a stored name is expected, a registry image needs its
    /// `docker://` prefix to be pulled.
    pub fn looks_like_source(s: &str) -> bool {
        ["oci:", "oci-archive:", "docker-archive:", "docker://"]
            .iter()
            .any(|t| s.starts_with(t))
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let registry_ref = |r: &str| {
            DockerRef::parse(r)
                .map(ImageRef::Docker)
                .map_err(|e| ReferenceError::BadRegistryRef(s.to_string(), e))
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            return registry_ref(rest);
        }
        let Some((transport, rest)) = s.split_once(':') else {
            return registry_ref(s);
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
            // `transport:/path` or a transport containers/image knows but
            // socle does not pull from.
            other
                if rest.starts_with('/')
                    || [
                        "dir",
                        "docker-daemon",
                        "containers-storage",
                        "ostree",
                        "tarball",
                        "sif",
                        "atomic",
                    ]
                    .contains(&other) =>
            {
                Err(ReferenceError::UnknownTransport(
                    s.to_string(),
                    other.to_string(),
                ))
            }
            // No transport: `registry:5000/repo`, `repo:tag`, `repo`.
            _ => registry_ref(s),
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
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
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

/// The rule a new image name follows, for error messages.
pub const IMAGE_NAME_RULE: &str = "a new image name is [REGISTRY[:PORT]/]PATH[:TAG]: PATH is lowercase letters and digits separated by '.', '_', '__', '-' or '/', TAG is letters, digits, '_', '.' and '-' (not first), at most 128 characters, and the whole name at most 200";

fn is_path_component(c: &str) -> bool {
    // docker's [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let sep_len = b[i..].iter().take_while(|&&x| !alnum(x)).count();
        let sep = &c[i..i + sep_len];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
        i += sep_len;
    }
    true
}

fn is_domain(c: &str) -> bool {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(label_ok)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl ImageName {
    /// Parses a name an image is about to be stored under, and checks it
    /// follows docker's reference grammar, so the store can always hold it.
    pub fn parse_new(s: &str) -> Result<ImageName, ReferenceError> {
        let name = ImageName::parse(s)?;
        name.check_new()?;
        Ok(name)
    }

    /// Checks that this name follows [`IMAGE_NAME_RULE`].
    pub fn check_new(&self) -> Result<(), ReferenceError> {
        let bad = || ReferenceError::BadName(self.to_string(), IMAGE_NAME_RULE);
        let mut parts: Vec<&str> = self.repository.split('/').collect();
        let first = parts[0];
        let has_domain = parts.len() > 1
            && (first.contains(['.', ':'])
                || first == "localhost"
                || first != first.to_lowercase());
        if has_domain {
            if !is_domain(first) {
                return Err(bad());
            }
            parts.remove(0);
        }
        let tag = self.tag.as_bytes();
        let tag_ok = tag.len() <= 128
            && (tag[0].is_ascii_alphanumeric() || tag[0] == b'_')
            && tag
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if parts.is_empty()
            || !parts.iter().all(|p| is_path_component(p))
            || !tag_ok
            || self.to_string().len() > 200
        {
            return Err(bad());
        }
        Ok(())
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
        let e = "Quay.io/Etcd".parse::<ImageRef>().unwrap_err().to_string();
        assert!(e.contains("must be lowercase"), "{e}");
        let e = "docker://x.io/etcd:bad tag"
            .parse::<ImageRef>()
            .unwrap_err();
        assert!(e.to_string().contains("whitespace"), "{e}");
        let e = "etcd@sha256:abc"
            .parse::<ImageRef>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn registry_references_like_docker() {
        let r = |s: &str| match s.parse::<ImageRef>().unwrap() {
            ImageRef::Docker(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        };
        let a = r("docker://127.0.0.1:5000/team/etcd:3.4");
        assert_eq!(a.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(a.repository, "team/etcd");
        assert_eq!(a.tag.as_deref(), Some("3.4"));
        assert_eq!(
            a,
            r("127.0.0.1:5000/team/etcd:3.4"),
            "docker:// is the default"
        );
        let hub = r("docker.io/etcd");
        assert_eq!(hub.repository, "library/etcd");
        assert_eq!(
            hub.image_name().to_string(),
            "docker.io/library/etcd:latest"
        );
        let unq = r("etcd:3.4");
        assert_eq!(unq.registry, None);
        assert_eq!(
            unq.in_registry("docker.io").to_string(),
            "docker.io/library/etcd:3.4"
        );
        let local = r("localhost/etcd");
        assert_eq!(local.registry.as_deref(), Some("localhost"));
        let d = format!("sha256:{}", "ab".repeat(32));
        let pinned = r(&format!("quay.io/coreos/etcd@{d}"));
        assert_eq!(pinned.manifest_reference(), d);
        assert_eq!(pinned.image_name().tag, "sha256-abababababab");
    }

    #[test]
    fn names_default_to_latest_and_keep_ports() {
        let n = ImageName::parse("localhost:5000/team/etcd").unwrap();
        assert_eq!(n.repository, "localhost:5000/team/etcd");
        assert_eq!(n.tag, "latest");
        let n = ImageName::parse("hello:v2").unwrap();
        for good in [
            "hello",
            "hello:1",
            "localhost:5000/team/etcd:3.4",
            "quay.io/coreos/etcd:v3.5.17",
            "a__b/c-d.e:_x",
            "Registry.Example/x",
        ] {
            assert!(ImageName::parse_new(good).is_ok(), "{good}");
        }
        for bad in [
            ".hidden",
            "-x",
            "Hello",
            "a..b",
            "a/-b",
            "x:.tag",
            "x:-t",
            "a_/b",
            "host:port/x",
            &format!("x:{}", "t".repeat(129)),
            &"a".repeat(201),
        ] {
            let err = ImageName::parse_new(bad).unwrap_err().to_string();
            assert!(err.contains("a new image name is"), "{bad}: {err}");
        }
        assert_eq!(n.to_string(), "hello:v2");
        assert!(ImageName::parse("hello:").is_err());
    }
}
