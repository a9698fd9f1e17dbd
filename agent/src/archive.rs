//! Local image sources: OCI layout directories, OCI archives and `docker save`
//! tarballs, read in place. Archives are indexed once (entry offsets) and
//! blobs are streamed straight out of the tar file: nothing is extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

use crate::oci::{self, sha256_digest, Compression, Platform, ANNOTATION_REF_NAME};
use crate::reference::{ImageName, ImageRef};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{source_ref}: {what} is missing from the image")]
    Missing { source_ref: String, what: String },
    #[error("{source_ref}: {what} is not valid JSON: {err}")]
    BadJson {
        source_ref: String,
        what: String,
        err: String,
    },
    #[error("{source_ref}: {what} has digest {actual}, but {expected} was expected")]
    DigestMismatch {
        source_ref: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{source_ref}: unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        source_ref: String,
        what: String,
        media_type: String,
    },
    /// Damaged or inconsistent: not a tar, not a layout, counts that disagree.
    #[error("{source_ref}: {message}")]
    Invalid { source_ref: String, message: String },
    /// The reference asked for is not in the source.
    #[error("{source_ref}: {what} is missing from the image")]
    UnknownReference { source_ref: String, what: String },
    /// A JSON document over the `json-size` limit.
    #[error("{source_ref}: {message}")]
    TooLarge { source_ref: String, message: String },
    /// Something socle does not read: several images in one `docker save`
    /// archive, no manifest for this host's platform.
    #[error("{source_ref}: {message}")]
    Unsupported { source_ref: String, message: String },
    /// The reference does not say which image: name one.
    #[error("{source_ref}: {message}")]
    Ambiguous { source_ref: String, message: String },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// One layer to import: its blob digest (the store's key), the digest of its
/// uncompressed tar (from the image config) and where its bytes are.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub compression: Compression,
    blob: BlobLocation,
}

/// An image found in a local source, with everything but the layer bytes read.
#[derive(Debug)]
pub struct LocalImage {
    /// The name the source gives the image, if any.
    pub name: Option<ImageName>,
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
    blobs: Blobs,
}

impl LocalImage {
    /// Opens a layer's bytes as stored (still compressed).
    pub fn open_layer(&self, layer: &Layer) -> Result<Box<dyn Read + Send>> {
        self.blobs.open(&layer.blob)
    }
}

#[derive(Debug, Clone)]
enum BlobLocation {
    /// A file inside a layout directory.
    File(PathBuf),
    /// A byte range inside an archive.
    Range { offset: u64, size: u64 },
}

/// Where a source's blobs live.
#[derive(Debug)]
enum Blobs {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: HashMap<String, (u64, u64)>,
    },
}

impl Blobs {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn index_tar(path: &Path) -> Result<Blobs> {
        let file = File::open(path).map_err(Self::io(path))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        // tar's messages quote raw header bytes; keep them printable and short.
        let corrupt = |e: io::Error| {
            let detail: String = e
                .to_string()
                .chars()
                .map(|c| {
                    if c.is_control() || c == '\u{fffd}' {
                        '?'
                    } else {
                        c
                    }
                })
                .take(120)
                .collect();
            ArchiveError::Invalid {
                source_ref: path.display().to_string(),
                message: format!("not a readable tar archive ({detail})"),
            }
        };
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path().map_err(corrupt)?.to_string_lossy().to_string();
            let name = name.trim_start_matches("./").to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        if entries.is_empty() {
            return Err(ArchiveError::Invalid {
                source_ref: path.display().to_string(),
                message: "not a readable tar archive (no files in it)".into(),
            });
        }
        Ok(Blobs::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Locates a file of the layout by its relative path.
    fn locate(&self, rel: &str) -> Option<BlobLocation> {
        match self {
            Blobs::Dir(dir) => {
                let p = dir.join(rel);
                p.is_file().then_some(BlobLocation::File(p))
            }
            Blobs::Tar { entries, .. } => entries
                .get(rel.trim_start_matches("./"))
                .map(|&(offset, size)| BlobLocation::Range { offset, size }),
        }
    }

    fn open(&self, loc: &BlobLocation) -> Result<Box<dyn Read + Send>> {
        match (self, loc) {
            (_, BlobLocation::File(p)) => Ok(Box::new(File::open(p).map_err(Self::io(p))?)),
            (Blobs::Tar { path, .. }, BlobLocation::Range { offset, size }) => {
                let mut f = File::open(path).map_err(Self::io(path))?;
                f.seek(SeekFrom::Start(*offset)).map_err(Self::io(path))?;
                Ok(Box::new(f.take(*size)))
            }
            (Blobs::Dir(dir), BlobLocation::Range { .. }) => Err(ArchiveError::Io {
                path: dir.clone(),
                source: io::Error::other("byte range in a directory source"),
            }),
        }
    }

    /// A JSON document of the source, refused past `limit` bytes rather
    /// than cut off (a cut document would fail later, for a wrong reason).
    fn read_all(
        &self,
        loc: &BlobLocation,
        limit: u64,
        source_ref: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(loc)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| ArchiveError::Io {
                path: self.root().to_path_buf(),
                source,
            })?;
        if buf.len() as u64 > limit {
            return Err(ArchiveError::TooLarge {
                source_ref: source_ref.into(),
                message: format!(
                    "{what} is more than {limit} bytes, over the {} limit ({})",
                    crate::limits::human(limit),
                    JSON_LIMIT_HINT
                ),
            });
        }
        Ok(buf)
    }

    fn root(&self) -> &Path {
        match self {
            Blobs::Dir(p) => p,
            Blobs::Tar { path, .. } => path,
        }
    }
}

/// How to let a bigger JSON document in, for the errors that refuse one.
pub const JSON_LIMIT_HINT: &str = "json-size; raise it with --limit json-size=SIZE";
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Opens the image a local reference points at.
/// JSON documents (index, manifests, configs) over `json_limit` bytes are
/// refused: they are small in every real image.
pub fn open(image: &ImageRef, json_limit: u64) -> Result<LocalImage> {
    let source_ref = image.to_string();
    let Some(path) = image.path() else {
        return Err(ArchiveError::Ambiguous {
            source_ref,
            message: "not a local source".into(),
        });
    };
    if !path.exists() {
        return Err(ArchiveError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    match image {
        ImageRef::OciDir { path, reference } => {
            if !path.join("index.json").is_file() {
                return Err(ArchiveError::Invalid {
                    source_ref,
                    message: format!(
                        "{} is not an OCI image layout (no index.json)",
                        path.display()
                    ),
                });
            }
            open_oci(
                &source_ref,
                Blobs::Dir(path.clone()),
                reference.as_deref(),
                path,
                json_limit,
            )
        }
        ImageRef::OciArchive { path, reference } => {
            let blobs = Blobs::index_tar(path)?;
            open_oci(&source_ref, blobs, reference.as_deref(), path, json_limit)
        }
        ImageRef::DockerArchive { path } => {
            open_docker(&source_ref, Blobs::index_tar(path)?, json_limit)
        }
        ImageRef::Docker(_) => unreachable!("registry references have no path"),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    source_ref: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ArchiveError::BadJson {
        source_ref: source_ref.into(),
        what: what.into(),
        err: e.to_string(),
    })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Reads a blob named by a descriptor and checks its digest.
fn read_verified(
    source_ref: &str,
    blobs: &Blobs,
    what: &str,
    desc: &Descriptor,
    json_limit: u64,
) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let loc = blobs
        .locate(&blob_path(&digest))
        .ok_or_else(|| ArchiveError::Missing {
            source_ref: source_ref.into(),
            what: format!("{what} blob {digest}"),
        })?;
    if desc.size() > json_limit {
        return Err(ArchiveError::TooLarge {
            source_ref: source_ref.into(),
            message: format!(
                "{what} {digest} is {} bytes, over the {} limit ({})",
                desc.size(),
                crate::limits::human(json_limit),
                JSON_LIMIT_HINT
            ),
        });
    }
    let bytes = blobs.read_all(&loc, json_limit, source_ref, what)?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(ArchiveError::DigestMismatch {
            source_ref: source_ref.into(),
            what: what.into(),
            expected: digest,
            actual,
        });
    }
    Ok(bytes)
}

fn open_oci(
    source_ref: &str,
    blobs: Blobs,
    reference: Option<&str>,
    path: &Path,
    json_limit: u64,
) -> Result<LocalImage> {
    let index_loc = blobs
        .locate("index.json")
        .ok_or_else(|| ArchiveError::Missing {
            source_ref: source_ref.into(),
            what: "index.json".into(),
        })?;
    let index: ImageIndex = parse_json(
        source_ref,
        "index.json",
        &blobs.read_all(&index_loc, json_limit, source_ref, "index.json")?,
    )?;
    let ref_name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME).cloned())
    };
    let chosen = match reference {
        Some(r) => index
            .manifests()
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(r))
            .ok_or_else(|| {
                let known: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
                ArchiveError::UnknownReference {
                    source_ref: source_ref.into(),
                    what: format!(
                        "reference {r:?} (the index names: {})",
                        if known.is_empty() {
                            "nothing".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                }
            })?,
        None => match index.manifests().as_slice() {
            [only] => only,
            [] => {
                return Err(ArchiveError::Missing {
                    source_ref: source_ref.into(),
                    what: "a manifest in index.json".into(),
                })
            }
            many => {
                let known: Vec<String> = many.iter().filter_map(ref_name).collect();
                return Err(ArchiveError::Ambiguous {
                    source_ref: source_ref.into(),
                    message: format!(
                        "the layout holds {} images; name one with :REF (known: {})",
                        many.len(),
                        known.join(", ")
                    ),
                });
            }
        },
    };
    // The name: a full ref name annotation, or the file's stem with the ref as tag.
    let name = chosen
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_IMAGE_NAME).cloned())
        .or_else(|| {
            let r = reference.map(str::to_string).or_else(|| ref_name(chosen))?;
            if r.contains(':') || r.contains('/') {
                Some(r)
            } else {
                let stem = path.file_stem()?.to_string_lossy().to_string();
                let stem = stem.strip_suffix(".oci").unwrap_or(&stem).to_string();
                Some(format!("{stem}:{r}"))
            }
        })
        .and_then(|n| ImageName::parse(&n).ok());

    let mut desc = chosen.clone();
    // A nested index (multi-platform) resolves to the host's platform.
    if oci::is_index(desc.media_type().as_ref()) {
        let bytes = read_verified(source_ref, &blobs, "image index", &desc, json_limit)?;
        let nested: ImageIndex = parse_json(source_ref, "image index", &bytes)?;
        let host = Platform::host();
        desc =
            host.choose(nested.manifests())
                .cloned()
                .ok_or_else(|| ArchiveError::Unsupported {
                    source_ref: source_ref.into(),
                    message: format!("no manifest for platform {host} in the image index"),
                })?;
    }
    if !oci::is_manifest(desc.media_type().as_ref()) {
        return Err(ArchiveError::UnsupportedMediaType {
            source_ref: source_ref.into(),
            what: "the image manifest".into(),
            media_type: desc.media_type().to_string(),
        });
    }
    let manifest_bytes = read_verified(source_ref, &blobs, "manifest", &desc, json_limit)?;
    let manifest: ImageManifest = parse_json(source_ref, "manifest", &manifest_bytes)?;
    let config_bytes = read_verified(source_ref, &blobs, "config", manifest.config(), json_limit)?;
    let config: ImageConfiguration = parse_json(source_ref, "config", &config_bytes)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ArchiveError::Invalid {
            source_ref: source_ref.into(),
            message: format!(
                "manifest has {} layers but the config lists {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = l.digest().to_string();
        let compression = Compression::from_media_type(l.media_type()).ok_or_else(|| {
            ArchiveError::UnsupportedMediaType {
                source_ref: source_ref.into(),
                what: format!("layer {digest}"),
                media_type: l.media_type().to_string(),
            }
        })?;
        let blob = blobs
            .locate(&blob_path(&digest))
            .ok_or_else(|| ArchiveError::Missing {
                source_ref: source_ref.into(),
                what: format!("layer blob {digest}"),
            })?;
        layers.push(Layer {
            digest,
            diff_id: diff_id.clone(),
            size: l.size(),
            compression,
            blob,
        });
    }
    Ok(LocalImage {
        name,
        manifest_digest: desc.digest().to_string(),
        manifest_bytes,
        config_bytes,
        config,
        layers,
        blobs,
    })
}

/// One entry of a `docker save` manifest.json.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn open_docker(source_ref: &str, blobs: Blobs, json_limit: u64) -> Result<LocalImage> {
    let loc = blobs
        .locate("manifest.json")
        .ok_or_else(|| ArchiveError::Missing {
            source_ref: source_ref.into(),
            what: "manifest.json (is this a `docker save` archive?)".into(),
        })?;
    let entries: Vec<DockerSaveEntry> = parse_json(
        source_ref,
        "manifest.json",
        &blobs.read_all(&loc, json_limit, source_ref, "manifest.json")?,
    )?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => {
            return Err(ArchiveError::Missing {
                source_ref: source_ref.into(),
                what: "an image in manifest.json".into(),
            })
        }
        _ => {
            return Err(ArchiveError::Unsupported {
                source_ref: source_ref.into(),
                message: "archives with several images are not supported".into(),
            })
        }
    };
    let config_loc = blobs
        .locate(&entry.config)
        .ok_or_else(|| ArchiveError::Missing {
            source_ref: source_ref.into(),
            what: format!("config {}", entry.config),
        })?;
    let config_bytes = blobs.read_all(&config_loc, json_limit, source_ref, "config")?;
    let config: ImageConfiguration = parse_json(source_ref, "config", &config_bytes)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != entry.layers.len() {
        return Err(ArchiveError::Invalid {
            source_ref: source_ref.into(),
            message: format!(
                "manifest.json lists {} layers but the config lists {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (file, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let blob = blobs.locate(file).ok_or_else(|| ArchiveError::Missing {
            source_ref: source_ref.into(),
            what: format!("layer {file}"),
        })?;
        let mut head = [0u8; 4];
        let n = blobs
            .open(&blob)?
            .read(&mut head)
            .map_err(|source| ArchiveError::Io {
                path: blobs.root().to_path_buf(),
                source,
            })?;
        let compression = Compression::sniff(&head[..n]);
        let size = match &blob {
            BlobLocation::Range { size, .. } => *size,
            BlobLocation::File(p) => p.metadata().map(|m| m.len()).unwrap_or(0),
        };
        // Uncompressed layers are their own diff_id; compressed ones need one
        // hashing pass to learn the digest the store keys them by.
        let digest = if compression == Compression::None {
            diff_id.clone()
        } else {
            let mut hasher = Sha256::new();
            io::copy(&mut BufReader::new(blobs.open(&blob)?), &mut hasher).map_err(|source| {
                ArchiveError::Io {
                    path: blobs.root().to_path_buf(),
                    source,
                }
            })?;
            oci::digest_of(&hasher.finalize())
        };
        layers.push(Layer {
            digest,
            diff_id: diff_id.clone(),
            size,
            compression,
            blob,
        });
    }
    let manifest_bytes = synthesize_manifest(&config_bytes, &layers);
    let name = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        // skopeo writes docker.io/library/hello:1 where `docker save` writes hello:1.
        .map(|t| t.strip_prefix("docker.io/library/").unwrap_or(t))
        .and_then(|t| ImageName::parse(t).ok());
    Ok(LocalImage {
        name,
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest_bytes,
        config_bytes,
        config,
        layers,
        blobs,
    })
}

/// docker archives have no manifest; the image id is the digest of the OCI
/// manifest skopeo would write for the same config and layers.
fn synthesize_manifest(config_bytes: &[u8], layers: &[Layer]) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {
            "mediaType": oci::OCI_CONFIG,
            "digest": sha256_digest(config_bytes),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.compression.layer_media_type(),
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn missing_source_names_the_path() {
        let e = open(&"oci-archive:/nonexistent/x.tar".parse().unwrap(), MIB).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.tar"), "{e}");
    }

    #[test]
    fn corrupt_archive_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.tar");
        std::fs::write(&p, b"this is not a tar archive at all").unwrap();
        let e = open(
            &ImageRef::OciArchive {
                path: p.clone(),
                reference: None,
            },
            MIB,
        )
        .unwrap_err();
        assert!(e.to_string().contains("junk.tar"), "{e}");
    }
}
